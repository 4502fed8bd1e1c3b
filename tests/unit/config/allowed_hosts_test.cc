// Unit tests for allowed_outbound_hosts: parsing, matching by name, and the address check.
#include "config/allowed_hosts.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <cstring>
#include <string>
#include <vector>

namespace coil::config {
namespace {

using Kind = AllowedHost::HostKind;

AllowedHost parsed(std::string_view entry) {
  Result<AllowedHost> result = parse_allowed_host(entry);
  EXPECT_TRUE(result.is_ok()) << entry << ": " << result.message();
  return result.is_ok() ? result.value() : AllowedHost{};
}

std::vector<AllowedHost> rules(std::initializer_list<std::string_view> entries) {
  std::vector<AllowedHost> out;
  for (std::string_view entry : entries) out.push_back(parsed(entry));
  return out;
}

// The error message for an entry that must be rejected.
std::string error_of(std::string_view entry) {
  Result<AllowedHost> result = parse_allowed_host(entry);
  EXPECT_FALSE(result.is_ok()) << entry << " was accepted";
  return result.is_ok() ? std::string() : result.message();
}

IpAddress ip(std::string_view text) {
  std::optional<IpAddress> address = parse_ip_literal(text);
  EXPECT_TRUE(address.has_value()) << text;
  return address.value_or(IpAddress{});
}

sockaddr_storage socket_address(std::string_view text) {
  sockaddr_storage storage{};
  std::string terminated(text);
  if (terminated.find(':') == std::string::npos) {
    sockaddr_in v4{};
    v4.sin_family = AF_INET;
    EXPECT_EQ(::inet_pton(AF_INET, terminated.c_str(), &v4.sin_addr), 1) << text;
    std::memcpy(&storage, &v4, sizeof v4);
  } else {
    sockaddr_in6 v6{};
    v6.sin6_family = AF_INET6;
    EXPECT_EQ(::inet_pton(AF_INET6, terminated.c_str(), &v6.sin6_addr), 1) << text;
    std::memcpy(&storage, &v6, sizeof v6);
  }
  return storage;
}

bool admitted(const std::vector<AllowedHost>& list, std::string scheme, std::string host, uint16_t port) {
  return admits(list, Destination{std::move(scheme), std::move(host), port});
}

// --- Parsing -------------------------------------------------------------------------

TEST(AllowedHostsParse, NameWithDefaultPort) {
  AllowedHost rule = parsed("https://API.Example.com");
  EXPECT_EQ(rule.scheme, "https");
  EXPECT_EQ(rule.host_kind, Kind::kName);
  EXPECT_EQ(rule.host, "api.example.com");
  EXPECT_EQ(rule.port_min, 443);
  EXPECT_EQ(rule.port_max, 443);
  EXPECT_EQ(rule.text, "https://API.Example.com");
}

TEST(AllowedHostsParse, EveryDefaultPort) {
  EXPECT_EQ(parsed("http://a.com").port_min, 80);
  EXPECT_EQ(parsed("https://a.com").port_min, 443);
  EXPECT_EQ(parsed("redis://a.com").port_min, 6379);
  EXPECT_EQ(parsed("mysql://a.com").port_min, 3306);
  EXPECT_EQ(parsed("postgres://a.com").port_min, 5432);
  EXPECT_EQ(parsed("mqtt://a.com").port_min, 1883);
  EXPECT_EQ(parsed("MQTT://a.com").port_min, 1883);
}

TEST(AllowedHostsParse, SchemeIsLowerCasedOrStar) {
  EXPECT_EQ(parsed("HTTP://a.com").scheme, "http");
  EXPECT_EQ(parsed("*://a.com:80").scheme, "*");
}

TEST(AllowedHostsParse, TrailingDotOfANameIsDropped) {
  EXPECT_EQ(parsed("http://example.com.").host, "example.com");
  EXPECT_EQ(parsed("http://*.example.com.").host, "example.com");
}

TEST(AllowedHostsParse, OneTrailingSlashIsTolerated) {
  AllowedHost rule = parsed("http://a.com:8080/");
  EXPECT_EQ(rule.host, "a.com");
  EXPECT_EQ(rule.port_min, 8080);
  EXPECT_EQ(parsed("http://a.com/").port_min, 80);
  EXPECT_EQ(parsed("http://10.0.0.0/").host_kind, Kind::kAddress);
  EXPECT_EQ(parsed("http://10.0.0.0/8/").host, "10.0.0.0/8");
}

TEST(AllowedHostsParse, SurroundingWhitespaceIsIgnored) {
  EXPECT_EQ(parsed("  http://a.com  ").host, "a.com");
}

TEST(AllowedHostsParse, Wildcards) {
  AllowedHost any = parsed("*://*:*");
  EXPECT_EQ(any.scheme, "*");
  EXPECT_EQ(any.host_kind, Kind::kAny);
  EXPECT_EQ(any.port_min, 1);
  EXPECT_EQ(any.port_max, 65535);

  AllowedHost suffix = parsed("*://*.Ex.com:*");
  EXPECT_EQ(suffix.host_kind, Kind::kSuffix);
  EXPECT_EQ(suffix.host, "ex.com");
}

TEST(AllowedHostsParse, PortRangeExcludesItsEnd) {
  AllowedHost rule = parsed("http://a.com:8000..8002");
  EXPECT_EQ(rule.port_min, 8000);
  EXPECT_EQ(rule.port_max, 8001);
  AllowedHost one = parsed("http://a.com:1..2");
  EXPECT_EQ(one.port_min, 1);
  EXPECT_EQ(one.port_max, 1);
}

TEST(AllowedHostsParse, Self) {
  AllowedHost rule = parsed("http://self");
  EXPECT_EQ(rule.host_kind, Kind::kSelf);
  EXPECT_EQ(rule.port_min, 80);
  EXPECT_EQ(parsed("https://self.alt").host_kind, Kind::kSelf);
  EXPECT_EQ(parsed("http://SELF:3000").host_kind, Kind::kSelf);
}

TEST(AllowedHostsParse, Addresses) {
  AllowedHost v4 = parsed("http://127.0.0.1:8080");
  EXPECT_EQ(v4.host_kind, Kind::kAddress);
  EXPECT_EQ(v4.host, "127.0.0.1");
  EXPECT_EQ(v4.network, ip("127.0.0.1"));
  EXPECT_EQ(v4.prefix_length, 128);
  EXPECT_EQ(v4.port_min, 8080);

  AllowedHost v6 = parsed("http://[0:0::1]:8080");
  EXPECT_EQ(v6.host_kind, Kind::kAddress);
  EXPECT_EQ(v6.host, "::1");
  EXPECT_EQ(v6.port_min, 8080);

  EXPECT_EQ(parsed("http://[::1]").port_min, 80);
  EXPECT_EQ(parsed("http://[FE80::A]").host, "fe80::a");
  // IPv4-mapped IPv6 is the IPv4 address.
  AllowedHost mapped = parsed("http://[::ffff:127.0.0.1]:8080");
  EXPECT_EQ(mapped.host, "127.0.0.1");
  EXPECT_EQ(mapped.network, v4.network);
}

TEST(AllowedHostsParse, Networks) {
  AllowedHost v4 = parsed("http://10.0.0.0/8:8080");
  EXPECT_EQ(v4.host_kind, Kind::kCidr);
  EXPECT_EQ(v4.host, "10.0.0.0/8");
  EXPECT_EQ(v4.prefix_length, 96 + 8);
  EXPECT_EQ(v4.port_min, 8080);

  AllowedHost defaulted = parsed("http://192.168.0.0/16");
  EXPECT_EQ(defaulted.host, "192.168.0.0/16");
  EXPECT_EQ(defaulted.port_min, 80);

  // Bits after the prefix are ignored, as in Spin.
  EXPECT_EQ(parsed("http://10.1.2.3/8").host, "10.0.0.0/8");

  AllowedHost v6 = parsed("http://[FD00::/8]:8080");
  EXPECT_EQ(v6.host_kind, Kind::kCidr);
  EXPECT_EQ(v6.host, "fd00::/8");
  EXPECT_EQ(v6.prefix_length, 8);
  EXPECT_EQ(v6.port_min, 8080);

  AllowedHost spin_form = parsed("*://ff00::/8:80");
  EXPECT_EQ(spin_form.host, "ff00::/8");
  EXPECT_EQ(spin_form.port_min, 80);
  EXPECT_EQ(parsed("http://fd00::/8").host, "fd00::/8");
  EXPECT_EQ(parsed("http://fd00::/8").port_min, 80);

  EXPECT_EQ(parsed("http://0.0.0.0/0").host, "0.0.0.0/0");
  EXPECT_EQ(parsed("http://[::/0]").host, "::/0");
}

TEST(AllowedHostsParse, PathIsRejected) {
  EXPECT_EQ(error_of("http://a.com/path"), "\"http://a.com/path\": a path is not allowed");
  EXPECT_EQ(error_of("http://a.com:80/path"), "\"http://a.com:80/path\": a path is not allowed");
  EXPECT_EQ(error_of("http://*.a.com/x"), "\"http://*.a.com/x\": a path is not allowed");
  EXPECT_EQ(error_of("http://a.com//"), "\"http://a.com//\": a path is not allowed");
  EXPECT_EQ(error_of("http://a.com/x:80"), "\"http://a.com/x:80\": a path is not allowed");
  EXPECT_EQ(error_of("http://[::1]:80/x"), "\"http://[::1]:80/x\": a path is not allowed");
  EXPECT_EQ(error_of("http://[::1]/x"), "\"http://[::1]/x\": a path is not allowed");
  EXPECT_EQ(error_of("http://10.0.0.0/8/x"), "\"http://10.0.0.0/8/x\": a path is not allowed");
}

TEST(AllowedHostsParse, PortErrors) {
  EXPECT_EQ(error_of("http://a.com:99999"), "\"http://a.com:99999\": port 99999 is out of range (1-65535)");
  EXPECT_EQ(error_of("http://a.com:0"), "\"http://a.com:0\": port 0 is out of range (1-65535)");
  EXPECT_EQ(error_of("http://a.com:123456789012"),
            "\"http://a.com:123456789012\": port 123456789012 is out of range (1-65535)");
  EXPECT_EQ(error_of("http://a.com:http"), "\"http://a.com:http\": port \"http\" is not a number");
  EXPECT_EQ(error_of("http://a.com:-1"), "\"http://a.com:-1\": port \"-1\" is not a number");
  EXPECT_EQ(error_of("http://a.com:"), "\"http://a.com:\": the port after ':' is empty");
  EXPECT_EQ(error_of("http://a.com:8002..8000"),
            "\"http://a.com:8002..8000\": port range 8002..8000 is empty: its end 8000 is excluded, so it "
            "must be greater than 8002");
  EXPECT_EQ(error_of("http://a.com:80..80"),
            "\"http://a.com:80..80\": port range 80..80 is empty: its end 80 is excluded, so it must be "
            "greater than 80");
  EXPECT_EQ(error_of("http://a.com:80..70000"),
            "\"http://a.com:80..70000\": port 70000 is out of range (1-65535)");
  EXPECT_EQ(error_of("http://a.com:80..*"), "\"http://a.com:80..*\": port \"*\" is not a number");
}

TEST(AllowedHostsParse, PortIsRequiredWithoutADefault) {
  EXPECT_EQ(error_of("ftp://a.com"),
            "\"ftp://a.com\": no default port for scheme \"ftp\"; add one (\":N\", \":A..B\" or \":*\")");
  EXPECT_EQ(error_of("*://a.com"),
            "\"*://a.com\": no default port for scheme \"*\"; add one (\":N\", \":A..B\" or \":*\")");
  EXPECT_EQ(error_of("*://127.0.0.0/24"),
            "\"*://127.0.0.0/24\": no default port for scheme \"*\"; add one (\":N\", \":A..B\" or \":*\")");
  EXPECT_EQ(parsed("ftp://a.com:21").port_min, 21);
}

TEST(AllowedHostsParse, AllowAllIsRefusedWithAnAlternative) {
  std::string message = error_of("insecure:allow-all");
  EXPECT_EQ(message,
            "\"insecure:allow-all\": coil does not support \"insecure:allow-all\"; list the hosts the "
            "function may reach (or \"*://*:*\" to allow every host)");
}

TEST(AllowedHostsParse, TemplatesAreNotSupportedYet) {
  EXPECT_EQ(error_of("https://{{ api_host }}"),
            "\"https://{{ api_host }}\": variable templates are not supported yet");
  EXPECT_EQ(error_of("https://a.com:{{port}}"),
            "\"https://a.com:{{port}}\": variable templates are not supported yet");
}

TEST(AllowedHostsParse, SchemeErrors) {
  EXPECT_EQ(error_of("a.com:80"),
            "\"a.com:80\": a scheme is missing (e.g. \"https://a.com:80\" or \"*://a.com:80\")");
  EXPECT_EQ(error_of("://a.com"), "\"://a.com\": the scheme is missing (e.g. \"https\", or \"*\" for any)");
  EXPECT_EQ(error_of("h2c+tls://a.com:1"),
            "\"h2c+tls://a.com:1\": scheme \"h2c+tls\" must be letters only, or \"*\"");
  EXPECT_EQ(error_of(""), "\"\": an entry must look like \"scheme://host[:port]\"");
  EXPECT_EQ(error_of("   "), "\"   \": an entry must look like \"scheme://host[:port]\"");
}

TEST(AllowedHostsParse, HostErrors) {
  EXPECT_EQ(error_of("http://"), "\"http://\": the host is missing");
  EXPECT_EQ(error_of("http://:80"), "\"http://:80\": the host is missing");
  EXPECT_EQ(
      error_of("http://a*.com"),
      "\"http://a*.com\": a wildcard is only allowed as the whole host (\"*\") or its first label (\"*.\")");
  EXPECT_EQ(
      error_of("http://*.*.com"),
      "\"http://*.*.com\": a wildcard is only allowed as the whole host (\"*\") or its first label (\"*.\")");
  EXPECT_EQ(error_of("http://*."), "\"http://*.\": \"\" is not a valid domain");
  EXPECT_EQ(error_of("http://*.10.0.0.1"),
            "\"http://*.10.0.0.1\": \"*.\" applies to domain names, not to IP addresses");
  EXPECT_EQ(error_of("http://user@a.com"), "\"http://user@a.com\": \"user@a.com\" is not a valid host name");
  EXPECT_EQ(error_of("http://a..com"), "\"http://a..com\": \"a..com\" is not a valid host name");
  EXPECT_EQ(error_of("http://a.com?x=1"), "\"http://a.com?x=1\": \"a.com?x=1\" is not a valid host name");
  EXPECT_EQ(error_of("http://2130706433"),
            "\"http://2130706433\": \"2130706433\" is not a host name, and IPv4 addresses must be written "
            "as four decimal numbers (e.g. \"127.0.0.1\")");
  EXPECT_EQ(error_of("http://0x7f.1"),
            "\"http://0x7f.1\": \"0x7f.1\" is not a host name, and IPv4 addresses must be written as four "
            "decimal numbers (e.g. \"127.0.0.1\")");
}

TEST(AllowedHostsParse, AddressErrors) {
  EXPECT_EQ(error_of("http://::1"),
            "\"http://::1\": an IPv6 address must be written in brackets, e.g. \"http://[::1]:8080\"");
  EXPECT_EQ(error_of("http://::1:80"),
            "\"http://::1:80\": an IPv6 address must be written in brackets, e.g. \"http://[::1]:8080\"");
  EXPECT_EQ(error_of("http://[::1"), "\"http://[::1\": '[' without a matching ']'");
  EXPECT_EQ(error_of("http://[::1]x"), "\"http://[::1]x\": unexpected \"x\" after ']'");
  EXPECT_EQ(error_of("http://[127.0.0.1]"),
            "\"http://[127.0.0.1]\": brackets are only for IPv6 addresses; write \"127.0.0.1\" without them");
  EXPECT_EQ(error_of("http://[a.com]"), "\"http://[a.com]\": \"a.com\" is not an IPv6 address");
  EXPECT_EQ(error_of("http://[::g]"), "\"http://[::g]\": \"::g\" is not an IP address");
  EXPECT_EQ(error_of("http://[fe80::1%eth0]"),
            "\"http://[fe80::1%eth0]\": \"fe80::1%eth0\" is not an IP address");
  EXPECT_EQ(error_of("http://[fd00::]/8"),
            "\"http://[fd00::]/8\": write the prefix length inside the brackets: \"[fd00::/8]\"");
  EXPECT_EQ(error_of("http://10.0.0.0/33"),
            "\"http://10.0.0.0/33\": prefix length \"33\" must be a number from 0 to 32");
  EXPECT_EQ(error_of("http://[fd00::/129]"),
            "\"http://[fd00::/129]\": prefix length \"129\" must be a number from 0 to 128");
  EXPECT_EQ(error_of("http://10.0.0.0/abc"),
            "\"http://10.0.0.0/abc\": prefix length \"abc\" must be a number from 0 to 32");
}

// --- normalise_host ---------------------------------------------------------------

TEST(AllowedHostsNormalise, NamesAndLiterals) {
  EXPECT_EQ(normalise_host("Example.COM"), "example.com");
  EXPECT_EQ(normalise_host("example.com."), "example.com");
  EXPECT_EQ(normalise_host("[::1]"), "::1");
  EXPECT_EQ(normalise_host("[FE80::1]"), "fe80::1");
  EXPECT_EQ(normalise_host("::1"), "::1");
  EXPECT_EQ(normalise_host("127.0.0.1"), "127.0.0.1");
  EXPECT_EQ(normalise_host("my_host-1.internal"), "my_host-1.internal");
  // Other IPv4 forms are names here (never addresses).
  EXPECT_EQ(normalise_host("2130706433"), "2130706433");
  EXPECT_EQ(normalise_host("0x7f.1"), "0x7f.1");
  EXPECT_EQ(normalise_host("017700000001"), "017700000001");
}

TEST(AllowedHostsNormalise, InvalidHostsBecomeEmpty) {
  const std::vector<std::string_view> invalid = {"",
                                                 ".",
                                                 "allowed.com@evil.com",
                                                 "a.com/x",
                                                 "a com",
                                                 "a.com\r\n",
                                                 std::string_view("a\0b", 3),
                                                 "a%2ecom",
                                                 "a..com",
                                                 "example.com..",
                                                 "[127.0.0.1]",
                                                 "[::1",
                                                 "::1]",
                                                 "[fe80::1%eth0]",
                                                 "fe80::1%25eth0",
                                                 "a:b",
                                                 "exämple.com",
                                                 "*.a.com"};
  for (std::string_view host : invalid) {
    EXPECT_EQ(normalise_host(host), "") << host;
  }
  EXPECT_EQ(normalise_host(std::string(63, 'a') + ".com"), std::string(63, 'a') + ".com");
  EXPECT_EQ(normalise_host(std::string(64, 'a') + ".com"), "");
  std::string long_name;
  for (int i = 0; i < 50; ++i) long_name += "abcd.";
  long_name += "com";  // 253 characters
  EXPECT_EQ(normalise_host(long_name), long_name);
  EXPECT_EQ(normalise_host("a" + long_name), "");
}

// --- admits -------------------------------------------------------------------------

TEST(AllowedHostsMatch, EmptyListAdmitsNothing) {
  EXPECT_FALSE(admitted({}, "http", "example.com", 80));
  EXPECT_FALSE(admitted({}, "https", "self", 443));
}

TEST(AllowedHostsMatch, SuffixWildcardIsStrictlyBelowTheDomain) {
  auto list = rules({"*://*.example.com:*"});
  EXPECT_TRUE(admitted(list, "http", "a.example.com", 80));
  EXPECT_TRUE(admitted(list, "https", "a.b.example.com", 8443));
  EXPECT_FALSE(admitted(list, "http", "example.com", 80));
  EXPECT_FALSE(admitted(list, "http", "evilexample.com", 80));
  EXPECT_FALSE(admitted(list, "http", "example.com.evil.com", 80));
  EXPECT_FALSE(admitted(list, "http", ".example.com", 80));
}

TEST(AllowedHostsMatch, SpinChecklistExamples) {
  auto suffix = rules({"*://*.ex.com:*"});
  EXPECT_TRUE(admitted(suffix, "http", "a.ex.com", 80));
  EXPECT_FALSE(admitted(suffix, "http", "ex.com", 80));
  auto range = rules({"http://a.com:8000..8002"});
  EXPECT_TRUE(admitted(range, "http", "a.com", 8000));
  EXPECT_TRUE(admitted(range, "http", "a.com", 8001));
  EXPECT_FALSE(admitted(range, "http", "a.com", 8002));
  EXPECT_FALSE(admitted(range, "http", "a.com", 7999));
}

TEST(AllowedHostsMatch, NameIsExactAndCaseInsensitive) {
  auto list = rules({"https://API.example.com"});
  EXPECT_TRUE(admitted(list, "https", "api.example.com", 443));
  EXPECT_TRUE(admitted(list, "HTTPS", "Api.Example.Com", 443));
  EXPECT_TRUE(admitted(list, "https", "api.example.com.", 443));
  EXPECT_FALSE(admitted(list, "https", "api.example.com..", 443));
  EXPECT_FALSE(admitted(list, "https", "x.api.example.com", 443));
  EXPECT_FALSE(admitted(list, "https", "example.com", 443));
}

TEST(AllowedHostsMatch, SchemeMustMatchUnlessStar) {
  auto https_only = rules({"https://a.com:8443"});
  EXPECT_TRUE(admitted(https_only, "https", "a.com", 8443));
  EXPECT_FALSE(admitted(https_only, "http", "a.com", 8443));
  auto any_scheme = rules({"*://a.com:8443"});
  EXPECT_TRUE(admitted(any_scheme, "http", "a.com", 8443));
  EXPECT_TRUE(admitted(any_scheme, "https", "a.com", 8443));
}

TEST(AllowedHostsMatch, Ports) {
  auto defaulted = rules({"https://a.com"});
  EXPECT_TRUE(admitted(defaulted, "https", "a.com", 443));
  EXPECT_FALSE(admitted(defaulted, "https", "a.com", 8443));
  auto star = rules({"https://a.com:*"});
  EXPECT_TRUE(admitted(star, "https", "a.com", 1));
  EXPECT_TRUE(admitted(star, "https", "a.com", 65535));
  EXPECT_FALSE(admitted(star, "https", "a.com", 0));
  EXPECT_FALSE(admitted(rules({"*://*:*"}), "http", "a.com", 0));
}

TEST(AllowedHostsMatch, StarAdmitsEveryValidHostButNoInvalidOne) {
  auto list = rules({"*://*:*"});
  EXPECT_TRUE(admitted(list, "http", "example.com", 80));
  EXPECT_TRUE(admitted(list, "https", "10.0.0.1", 443));
  EXPECT_TRUE(admitted(list, "https", "[::1]", 443));
  EXPECT_TRUE(admitted(list, "http", "self", 80));
  EXPECT_FALSE(admitted(list, "http", "", 80));
  EXPECT_FALSE(admitted(list, "http", "a b", 80));
}

TEST(AllowedHostsMatch, UserInfoIsNeverAdmitted) {
  auto list = rules({"http://allowed.com", "http://*.allowed.com"});
  EXPECT_EQ(normalise_host("allowed.com@evil.com"), "");
  EXPECT_FALSE(admitted(list, "http", "allowed.com@evil.com", 80));
  EXPECT_FALSE(admitted(list, "http", "x.allowed.com@evil.com", 80));
  EXPECT_FALSE(admitted(list, "http", "evil.com#.allowed.com", 80));
}

TEST(AllowedHostsMatch, Ipv6InBrackets) {
  auto list = rules({"http://[::1]:8080", "http://[fd00::/8]:80"});
  EXPECT_TRUE(admitted(list, "http", "[::1]", 8080));
  EXPECT_TRUE(admitted(list, "http", "::1", 8080));
  EXPECT_TRUE(admitted(list, "http", "[0:0:0:0:0:0:0:1]", 8080));
  EXPECT_FALSE(admitted(list, "http", "[::1]", 80));
  EXPECT_TRUE(admitted(list, "http", "[FD12:3456::1]", 80));
  EXPECT_FALSE(admitted(list, "http", "[fe80::1]", 80));
}

TEST(AllowedHostsMatch, AddressEntriesMatchOnlyStrictLiterals) {
  auto list = rules({"http://127.0.0.1", "http://10.0.0.0/8"});
  EXPECT_TRUE(admitted(list, "http", "127.0.0.1", 80));
  EXPECT_TRUE(admitted(list, "http", "10.200.0.1", 80));
  // Forms inet_aton would read as 127.0.0.1 / 10.0.0.1 are names, not addresses.
  for (std::string_view host :
       {"2130706433", "0x7f000001", "0x7f.1", "127.1", "0177.0.0.1", "017700000001", "10.1", "167772161"}) {
    EXPECT_FALSE(admitted(list, "http", std::string(host), 80)) << host;
  }
  EXPECT_FALSE(admitted(list, "http", "localhost", 80));
}

TEST(AllowedHostsMatch, NamesNeverMatchLiterals) {
  // Parsing turns every literal into an address entry; entries built by hand that spell
  // a literal as a name or suffix still never admit it.
  AllowedHost name;
  name.scheme = "http";
  name.host_kind = Kind::kName;
  name.host = "127.0.0.1";
  name.port_min = name.port_max = 80;
  AllowedHost suffix = name;
  suffix.host_kind = Kind::kSuffix;
  suffix.host = "0.1";
  EXPECT_FALSE(admitted({name, suffix}, "http", "127.0.0.1", 80));
  EXPECT_FALSE(admitted({AllowedHost{}}, "http", "127.0.0.1", 80));  // a default entry admits nothing
}

TEST(AllowedHostsMatch, Ipv4MappedIpv6IsTheIpv4Address) {
  auto v4_entry = rules({"http://127.0.0.1:8080"});
  EXPECT_TRUE(admitted(v4_entry, "http", "[::ffff:127.0.0.1]", 8080));
  EXPECT_TRUE(admitted(v4_entry, "http", "[::ffff:7f00:1]", 8080));
  auto mapped_entry = rules({"http://[::ffff:10.0.0.1]:80"});
  EXPECT_TRUE(admitted(mapped_entry, "http", "10.0.0.1", 80));
}

TEST(AllowedHostsMatch, SelfMatchesOnlyTheHostSelf) {
  auto list = rules({"http://self", "https://self.alt"});
  EXPECT_TRUE(admitted(list, "http", "self", 80));
  EXPECT_TRUE(admitted(list, "https", "SELF", 443));
  EXPECT_FALSE(admitted(list, "http", "self", 8080));
  EXPECT_FALSE(admitted(list, "http", "self.alt", 80));
  EXPECT_FALSE(admitted(list, "http", "myself", 80));
  EXPECT_FALSE(admitted(list, "http", "127.0.0.1", 80));
}

// --- Addresses ------------------------------------------------------------------------

TEST(AllowedHostsAddress, SpecialAddresses) {
  for (std::string_view text : {"127.0.0.1",
                                "127.255.0.9",
                                "10.1.2.3",
                                "172.16.0.1",
                                "172.31.255.255",
                                "192.168.1.1",
                                "169.254.169.254",
                                "0.0.0.0",
                                "0.1.2.3",
                                "100.64.0.1",
                                "100.127.255.255",
                                "224.0.0.1",
                                "239.255.255.250",
                                "240.0.0.1",
                                "255.255.255.255",
                                "::",
                                "::1",
                                "fe80::1",
                                "febf::1",
                                "fec0::1",
                                "fd00::1",
                                "fc00::1",
                                "ff02::1",
                                "::ffff:10.0.0.1",
                                "::ffff:127.0.0.1",
                                "::ffff:169.254.169.254",
                                "64:ff9b::a9fe:a9fe",
                                "64:ff9b::7f00:1"}) {
    EXPECT_TRUE(is_special_address(ip(text))) << text;
    EXPECT_TRUE(is_special_address(socket_address(text))) << text;
  }
}

TEST(AllowedHostsAddress, PublicAddresses) {
  for (std::string_view text :
       {"93.184.216.34", "8.8.8.8", "1.1.1.1", "172.32.0.1", "172.15.255.255", "100.63.255.255",
        "100.128.0.1", "169.253.0.1", "192.167.1.1", "223.255.255.255", "2606:2800::1",
        "2001:4860:4860::8888", "::ffff:93.184.216.34", "64:ff9b::5db8:d822"}) {
    EXPECT_FALSE(is_special_address(ip(text))) << text;
    EXPECT_FALSE(is_special_address(socket_address(text))) << text;
  }
}

TEST(AllowedHostsAddress, UnknownFamilyIsSpecialAndRefused) {
  sockaddr_storage unix_address{};
  unix_address.ss_family = AF_UNIX;
  EXPECT_TRUE(is_special_address(unix_address));
  EXPECT_FALSE(address_admitted(rules({"*://*:*"}), Destination{"http", "a.com", 80}, unix_address));
  EXPECT_FALSE(ip_address_from(unix_address).has_value());
}

TEST(AllowedHostsAddress, PublicAddressIsAdmitted) {
  auto list = rules({"https://example.com"});
  Destination destination{"https", "example.com", 443};
  EXPECT_TRUE(address_admitted(list, destination, ip("93.184.216.34")));
  EXPECT_TRUE(address_admitted(list, destination, socket_address("2606:2800::1")));
}

TEST(AllowedHostsAddress, NameResolvingToSpecialAddressIsRefused) {
  auto list = rules({"*://*:*", "http://localhost:3000"});
  for (std::string_view text :
       {"127.0.0.1", "10.1.2.3", "169.254.169.254", "::1", "fd00::1", "::ffff:10.0.0.1"}) {
    EXPECT_FALSE(address_admitted(list, Destination{"http", "localhost", 3000}, ip(text))) << text;
    EXPECT_FALSE(address_admitted(list, Destination{"http", "localhost", 3000}, socket_address(text)))
        << text;
  }
}

TEST(AllowedHostsAddress, AddressEntryAdmitsItsOwnAddressOnItsPortOnly) {
  auto list = rules({"http://127.0.0.1:8080"});
  Destination on_port{"http", "127.0.0.1", 8080};
  EXPECT_TRUE(admits(list, on_port));
  EXPECT_TRUE(address_admitted(list, on_port, ip("127.0.0.1")));
  EXPECT_TRUE(address_admitted(list, on_port, socket_address("127.0.0.1")));
  // The mapped form is the same address.
  EXPECT_TRUE(address_admitted(list, on_port, socket_address("::ffff:127.0.0.1")));

  Destination other_port{"http", "127.0.0.1", 8081};
  EXPECT_FALSE(admits(list, other_port));
  EXPECT_FALSE(address_admitted(list, other_port, ip("127.0.0.1")));
  EXPECT_FALSE(address_admitted(list, Destination{"https", "127.0.0.1", 8080}, ip("127.0.0.1")));
  EXPECT_FALSE(address_admitted(list, on_port, ip("127.0.0.2")));
  EXPECT_FALSE(address_admitted(list, on_port, ip("::1")));
}

TEST(AllowedHostsAddress, AddressEntryAdmitsANameThatResolvesToIt) {
  // "db.internal" passes by name through "*://*:*"; its private address is admitted only
  // because an address entry names that network with the same scheme and port.
  auto list = rules({"*://*:*", "http://10.0.0.0/8:5432"});
  Destination destination{"http", "db.internal", 5432};
  EXPECT_TRUE(admits(list, destination));
  EXPECT_TRUE(address_admitted(list, destination, ip("10.9.8.7")));
  EXPECT_FALSE(address_admitted(list, destination, ip("192.168.1.1")));
  EXPECT_FALSE(address_admitted(list, Destination{"http", "db.internal", 5433}, ip("10.9.8.7")));
}

TEST(AllowedHostsAddress, Ipv6NetworkEntry) {
  auto list = rules({"https://[fd00::/8]:*"});
  Destination destination{"https", "svc.internal", 443};
  EXPECT_TRUE(address_admitted(list, destination, ip("fd12::1")));
  EXPECT_FALSE(address_admitted(list, destination, ip("fe80::1")));
  EXPECT_FALSE(address_admitted(list, destination, ip("::1")));
}

TEST(AllowedHostsAddress, NameAndSuffixEntriesNeverAdmitSpecialAddresses) {
  auto list = rules({"http://metadata.google.internal", "http://*.internal"});
  Destination destination{"http", "metadata.google.internal", 80};
  EXPECT_TRUE(admits(list, destination));
  EXPECT_FALSE(address_admitted(list, destination, ip("169.254.169.254")));
}

TEST(AllowedHostsAddress, LiteralsRoundTrip) {
  EXPECT_EQ(ip("10.0.0.1").to_string(), "10.0.0.1");
  EXPECT_TRUE(ip("10.0.0.1").is_v4());
  EXPECT_EQ(ip("::ffff:10.0.0.1"), ip("10.0.0.1"));
  EXPECT_EQ(ip("2606:2800:0::1").to_string(), "2606:2800::1");
  EXPECT_FALSE(ip("2606:2800::1").is_v4());
  for (std::string_view text : {"", "1.2.3", "1.2.3.4.5", "01.2.3.4", "0x7f.0.0.1", "2130706433", "256.0.0.1",
                                "[::1]", "fe80::1%eth0", " 1.2.3.4"}) {
    EXPECT_FALSE(parse_ip_literal(text).has_value()) << text;
  }
}

}  // namespace
}  // namespace coil::config
