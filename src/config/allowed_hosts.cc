#include "config/allowed_hosts.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

namespace coil::config {
namespace {

constexpr uint8_t kV4Prefix = 96;  // IPv4 lives in ::ffff:0:0/96

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex_digit(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
bool is_letter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digits(std::string_view s) { return !s.empty() && std::all_of(s.begin(), s.end(), is_digit); }

// The value of a string of at most 9 digits (callers check both).
int small_number(std::string_view digits) {
  int value = 0;
  for (char c : digits) value = value * 10 + (c - '0');
  return value;
}

std::string ascii_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string_view trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\r\n";
  size_t begin = s.find_first_not_of(kSpace);
  if (begin == std::string_view::npos) return {};
  size_t end = s.find_last_not_of(kSpace);
  return s.substr(begin, end - begin + 1);
}

IpAddress from_v4(const in_addr& v4) {
  IpAddress address;
  address.bytes[10] = 0xff;
  address.bytes[11] = 0xff;
  std::memcpy(&address.bytes[12], &v4, 4);
  return address;
}

IpAddress from_v6(const in6_addr& v6) {
  IpAddress address;
  std::memcpy(address.bytes.data(), &v6, 16);
  return address;
}

bool in_network(const IpAddress& network, uint8_t prefix_length, const IpAddress& address) {
  int full = prefix_length / 8;
  if (!std::equal(network.bytes.begin(), network.bytes.begin() + full, address.bytes.begin())) return false;
  int rest = prefix_length % 8;
  if (rest == 0) return true;
  auto mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (network.bytes[full] & mask) == (address.bytes[full] & mask);
}

IpAddress masked(IpAddress address, uint8_t prefix_length) {
  for (int bit = prefix_length; bit < 128; ++bit) {
    address.bytes[bit / 8] &= static_cast<uint8_t>(~(0x80 >> (bit % 8)));
  }
  return address;
}

// The WHATWG URL rule: a host whose last label is a number is read as an IPv4 address
// by resolvers (inet_aton forms such as "2130706433" or "0x7f.1"), so it is no name.
bool ends_in_number(std::string_view name) {
  size_t dot = name.rfind('.');
  std::string_view last = dot == std::string_view::npos ? name : name.substr(dot + 1);
  if (is_digits(last)) return true;
  if (last.size() >= 2 && last[0] == '0' && (last[1] == 'x' || last[1] == 'X')) {
    return std::all_of(last.begin() + 2, last.end(), is_hex_digit);
  }
  return false;
}

bool is_valid_name(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  size_t start = 0;
  while (true) {
    size_t dot = name.find('.', start);
    std::string_view label = name.substr(start, dot == std::string_view::npos ? dot : dot - start);
    if (label.empty() || label.size() > 63) return false;
    for (char c : label) {
      if (!(is_letter(c) || is_digit(c) || c == '-' || c == '_')) return false;
    }
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

// "10.0.0.0/8", "fd00::/8", or "0.0.0.0/0" for the IPv4 part of an IPv6 network.
std::string network_text(const IpAddress& network, uint8_t prefix_length) {
  if (network.is_v4() && prefix_length >= kV4Prefix) {
    return fmt::format("{}/{}", network.to_string(), prefix_length - kV4Prefix);
  }
  return fmt::format("{}/{}", network.to_string(), prefix_length);
}

bool is_special_v4(const uint8_t* b) {
  return b[0] == 0 ||                             // "this network", 0.0.0.0
         b[0] == 10 ||                            // RFC 1918
         (b[0] == 100 && (b[1] & 0xc0) == 64) ||  // CGNAT 100.64/10
         b[0] == 127 ||                           // loopback
         (b[0] == 169 && b[1] == 254) ||          // link-local, cloud metadata
         (b[0] == 172 && (b[1] & 0xf0) == 16) ||  // RFC 1918
         (b[0] == 192 && b[1] == 168) ||          // RFC 1918
         b[0] >= 224;                             // multicast, reserved, broadcast
}

bool port_matches(const AllowedHost& rule, uint16_t port) {
  return port != 0 && port >= rule.port_min && port <= rule.port_max;
}

bool scheme_matches(const AllowedHost& rule, const std::string& scheme) {
  return rule.scheme == "*" || rule.scheme == scheme;
}

bool is_address_rule(const AllowedHost& rule) {
  return rule.host_kind == AllowedHost::HostKind::kAddress || rule.host_kind == AllowedHost::HostKind::kCidr;
}

// Parsing of one entry; every error names the entry as written.
class EntryParser {
 public:
  explicit EntryParser(std::string_view entry) : entry_(entry) {}

  Result<AllowedHost> parse() {
    std::string_view text = trim(entry_);
    if (text.empty()) return fail("an entry must look like \"scheme://host[:port]\"");
    if (text.find("{{") != std::string_view::npos) return fail("variable templates are not supported yet");
    if (ascii_lower(text) == "insecure:allow-all") {
      return fail(
          "coil does not support \"insecure:allow-all\"; list the hosts the function may reach "
          "(or \"*://*:*\" to allow every host)");
    }
    size_t separator = text.find("://");
    if (separator == std::string_view::npos) {
      return fail(fmt::format("a scheme is missing (e.g. \"https://{}\" or \"*://{}\")", text, text));
    }

    AllowedHost rule;
    rule.text = std::string(entry_);
    if (Status status = parse_scheme(text.substr(0, separator), rule); !status) return status;

    std::string_view rest = text.substr(separator + 3);
    // Spin accepts "http://a.com:80/": one trailing '/' is an empty path, not a path.
    if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
    if (rest.empty()) return fail("the host is missing");

    std::string_view host_text;
    std::optional<std::string_view> port_text;
    bool bracketed = rest.front() == '[';
    if (bracketed) {
      size_t close = rest.find(']');
      if (close == std::string_view::npos) return fail("'[' without a matching ']'");
      host_text = rest.substr(1, close - 1);
      std::string_view after = rest.substr(close + 1);
      if (after.empty()) {
        // no port
      } else if (after.front() == ':') {
        port_text = after.substr(1);
      } else if (after.front() == '/' && is_digits(after.substr(1))) {
        return fail(fmt::format("write the prefix length inside the brackets: \"[{}{}]\"", host_text, after));
      } else if (after.front() == '/') {
        return fail("a path is not allowed");
      } else {
        return fail(fmt::format("unexpected \"{}\" after ']'", after));
      }
    } else {
      size_t slash = rest.find('/');
      std::string_view before_slash = rest.substr(0, slash);
      size_t port_colon;
      if (std::count(before_slash.begin(), before_slash.end(), ':') >= 2) {
        // Spin's bare IPv6 network "fd00::/8:80": the port follows the prefix length.
        if (slash == std::string_view::npos) {
          return fail("an IPv6 address must be written in brackets, e.g. \"http://[::1]:8080\"");
        }
        port_colon = rest.find(':', slash);
      } else {
        port_colon = rest.find(':');
      }
      host_text = rest.substr(0, port_colon);
      if (port_colon != std::string_view::npos) port_text = rest.substr(port_colon + 1);
    }
    if (port_text && port_text->find('/') != std::string_view::npos) return fail("a path is not allowed");

    if (Status status = parse_host(host_text, bracketed, rule); !status) return status;
    if (Status status = parse_port(port_text, rule); !status) return status;
    return rule;
  }

 private:
  Status fail(std::string_view what) const { return Status::error(fmt::format("\"{}\": {}", entry_, what)); }

  Status parse_scheme(std::string_view scheme, AllowedHost& rule) const {
    if (scheme.empty()) return fail("the scheme is missing (e.g. \"https\", or \"*\" for any)");
    if (scheme != "*" && !std::all_of(scheme.begin(), scheme.end(), is_letter)) {
      return fail(fmt::format("scheme \"{}\" must be letters only, or \"*\"", scheme));
    }
    rule.scheme = ascii_lower(scheme);
    return Status::ok();
  }

  Status parse_host(std::string_view host_text, bool bracketed, AllowedHost& rule) const {
    using Kind = AllowedHost::HostKind;
    if (host_text.empty()) return fail("the host is missing");
    std::string host = ascii_lower(host_text);

    if (bracketed) {
      size_t slash = host.find('/');
      std::string address_text = host.substr(0, slash);
      if (address_text.find(':') == std::string::npos) {
        if (parse_ip_literal(address_text)) {
          return fail(
              fmt::format("brackets are only for IPv6 addresses; write \"{}\" without them", host_text));
        }
        return fail(fmt::format("\"{}\" is not an IPv6 address", host_text));
      }
      return parse_address(host, slash, rule);
    }

    if (host == "*") {
      rule.host_kind = Kind::kAny;
      rule.host = host;
      return Status::ok();
    }
    if (host == "self" || host == "self.alt") {
      rule.host_kind = Kind::kSelf;
      rule.host = host;
      return Status::ok();
    }
    if (size_t slash = host.find('/'); slash != std::string::npos) {
      std::string_view address_text = std::string_view(host).substr(0, slash);
      if (!parse_ip_literal(address_text)) return fail("a path is not allowed");
      return parse_address(host, slash, rule);
    }
    if (host.starts_with("*.")) {
      std::string domain = normalise_host(host.substr(2));
      if (host.find('*', 1) != std::string::npos) {
        return fail("a wildcard is only allowed as the whole host (\"*\") or its first label (\"*.\")");
      }
      if (domain.empty() || domain.find(':') != std::string::npos) {
        return fail(fmt::format("\"{}\" is not a valid domain", host_text.substr(2)));
      }
      if (ends_in_number(domain)) return fail("\"*.\" applies to domain names, not to IP addresses");
      rule.host_kind = Kind::kSuffix;
      rule.host = domain;
      return Status::ok();
    }
    if (host.find('*') != std::string::npos) {
      return fail("a wildcard is only allowed as the whole host (\"*\") or its first label (\"*.\")");
    }
    std::string name = normalise_host(host);
    if (name.empty() || name.find(':') != std::string::npos) {
      return fail(fmt::format("\"{}\" is not a valid host name", host_text));
    }
    if (parse_ip_literal(name)) return parse_address(name, std::string::npos, rule);
    if (ends_in_number(name)) {
      return fail(
          fmt::format("\"{}\" is not a host name, and IPv4 addresses must be written as four decimal numbers "
                      "(e.g. \"127.0.0.1\")",
                      host_text));
    }
    rule.host_kind = Kind::kName;
    rule.host = name;
    return Status::ok();
  }

  // `text` is an address, or a network when `slash` is its '/' (the address before it
  // is known to be a literal of either family).
  Status parse_address(std::string_view text, size_t slash, AllowedHost& rule) const {
    std::optional<IpAddress> address = parse_ip_literal(text.substr(0, slash));
    if (!address) return fail(fmt::format("\"{}\" is not an IP address", text.substr(0, slash)));
    if (slash == std::string_view::npos) {
      rule.host_kind = AllowedHost::HostKind::kAddress;
      rule.network = *address;
      rule.prefix_length = 128;
      rule.host = address->to_string();
      return Status::ok();
    }
    std::string_view prefix = text.substr(slash + 1);
    if (prefix.find('/') != std::string_view::npos) return fail("a path is not allowed");
    bool v4_text = text.substr(0, slash).find(':') == std::string_view::npos;
    int max = v4_text ? 32 : 128;
    if (!is_digits(prefix) || prefix.size() > 3 || small_number(prefix) > max) {
      return fail(fmt::format("prefix length \"{}\" must be a number from 0 to {}", prefix, max));
    }
    int length = small_number(prefix) + (v4_text ? kV4Prefix : 0);
    rule.host_kind = AllowedHost::HostKind::kCidr;
    rule.prefix_length = static_cast<uint8_t>(length);
    rule.network = masked(*address, rule.prefix_length);
    rule.host = network_text(rule.network, rule.prefix_length);
    return Status::ok();
  }

  Status parse_port(std::optional<std::string_view> port_text, AllowedHost& rule) const {
    if (!port_text) {
      std::optional<uint16_t> port = default_port(rule.scheme);
      if (!port) {
        return fail(fmt::format("no default port for scheme \"{}\"; add one (\":N\", \":A..B\" or \":*\")",
                                rule.scheme));
      }
      rule.port_min = rule.port_max = *port;
      return Status::ok();
    }
    if (port_text->empty()) return fail("the port after ':' is empty");
    if (*port_text == "*") {
      rule.port_min = 1;
      rule.port_max = 65535;
      return Status::ok();
    }
    if (size_t dots = port_text->find(".."); dots != std::string_view::npos) {
      Result<uint16_t> first = parse_port_number(port_text->substr(0, dots));
      if (!first) return first.status();
      Result<uint16_t> end = parse_port_number(port_text->substr(dots + 2));
      if (!end) return end.status();
      if (*first >= *end) {
        return fail(
            fmt::format("port range {} is empty: its end {} is excluded, so it must be greater than {}",
                        *port_text, *end, *first));
      }
      rule.port_min = *first;
      rule.port_max = static_cast<uint16_t>(*end - 1);
      return Status::ok();
    }
    Result<uint16_t> port = parse_port_number(*port_text);
    if (!port) return port.status();
    rule.port_min = rule.port_max = *port;
    return Status::ok();
  }

  Result<uint16_t> parse_port_number(std::string_view text) const {
    if (!is_digits(text)) return fail(fmt::format("port \"{}\" is not a number", text));
    if (text.size() > 5 || small_number(text) < 1 || small_number(text) > 65535) {
      return fail(fmt::format("port {} is out of range (1-65535)", text));
    }
    return static_cast<uint16_t>(small_number(text));
  }

  std::string_view entry_;
};

}  // namespace

bool IpAddress::is_v4() const {
  static constexpr std::array<uint8_t, 12> kMapped = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::equal(kMapped.begin(), kMapped.end(), bytes.begin());
}

std::string IpAddress::to_string() const {
  char text[INET6_ADDRSTRLEN] = {};
  if (is_v4()) {
    ::inet_ntop(AF_INET, &bytes[12], text, sizeof text);
  } else {
    ::inet_ntop(AF_INET6, bytes.data(), text, sizeof text);
  }
  return text;
}

std::optional<IpAddress> parse_ip_literal(std::string_view text) {
  std::string terminated(text);  // inet_pton wants a C string
  if (terminated.find(':') == std::string::npos) {
    in_addr v4{};
    if (::inet_pton(AF_INET, terminated.c_str(), &v4) != 1) return std::nullopt;
    return from_v4(v4);
  }
  in6_addr v6{};
  if (::inet_pton(AF_INET6, terminated.c_str(), &v6) != 1) return std::nullopt;
  return from_v6(v6);
}

std::optional<IpAddress> ip_address_from(const sockaddr_storage& address) {
  // Copied out rather than cast, so no sockaddr_storage is read through another type.
  if (address.ss_family == AF_INET) {
    sockaddr_in v4{};
    std::memcpy(&v4, &address, sizeof v4);
    return from_v4(v4.sin_addr);
  }
  if (address.ss_family == AF_INET6) {
    sockaddr_in6 v6{};
    std::memcpy(&v6, &address, sizeof v6);
    return from_v6(v6.sin6_addr);
  }
  return std::nullopt;
}

std::optional<uint16_t> default_port(std::string_view scheme) {
  if (scheme == "http") return 80;
  if (scheme == "https") return 443;
  if (scheme == "redis") return 6379;
  if (scheme == "mysql") return 3306;
  if (scheme == "postgres") return 5432;
  if (scheme == "mqtt") return 1883;
  return std::nullopt;
}

Result<AllowedHost> parse_allowed_host(std::string_view entry) { return EntryParser(entry).parse(); }

std::string normalise_host(std::string_view host) {
  std::string lower = ascii_lower(host);
  if (lower.starts_with('[')) {
    if (!lower.ends_with(']')) return "";
    lower = lower.substr(1, lower.size() - 2);
    if (lower.find(':') == std::string::npos || !parse_ip_literal(lower)) return "";
    return lower;
  }
  if (lower.find(':') != std::string::npos) return parse_ip_literal(lower) ? lower : "";
  if (lower.ends_with('.')) lower.pop_back();
  return is_valid_name(lower) ? lower : "";
}

bool admits(const std::vector<AllowedHost>& rules, const Destination& destination) {
  using Kind = AllowedHost::HostKind;
  std::string host = normalise_host(destination.host);
  if (host.empty() || destination.port == 0) return false;
  std::string scheme = ascii_lower(destination.scheme);
  std::optional<IpAddress> literal = parse_ip_literal(host);

  for (const AllowedHost& rule : rules) {
    if (!scheme_matches(rule, scheme) || !port_matches(rule, destination.port)) continue;
    bool matches = false;
    switch (rule.host_kind) {
      case Kind::kAny:
        matches = true;
        break;
      case Kind::kSelf:
        matches = host == "self";
        break;
      case Kind::kName:
        matches = !literal && host == rule.host;
        break;
      case Kind::kSuffix:
        matches = !literal && host.size() > rule.host.size() + 1 && host.ends_with(rule.host) &&
                  host[host.size() - rule.host.size() - 1] == '.';
        break;
      case Kind::kAddress:
      case Kind::kCidr:
        matches = literal && in_network(rule.network, rule.prefix_length, *literal);
        break;
    }
    if (matches) return true;
  }
  return false;
}

bool address_admitted(const std::vector<AllowedHost>& rules, const Destination& destination,
                      const IpAddress& address) {
  if (!is_special_address(address)) return true;
  std::string scheme = ascii_lower(destination.scheme);
  return std::any_of(rules.begin(), rules.end(), [&](const AllowedHost& rule) {
    return is_address_rule(rule) && scheme_matches(rule, scheme) && port_matches(rule, destination.port) &&
           in_network(rule.network, rule.prefix_length, address);
  });
}

bool address_admitted(const std::vector<AllowedHost>& rules, const Destination& destination,
                      const sockaddr_storage& address) {
  std::optional<IpAddress> ip = ip_address_from(address);
  return ip && address_admitted(rules, destination, *ip);
}

bool is_special_address(const IpAddress& address) {
  const auto& b = address.bytes;
  if (address.is_v4()) return is_special_v4(&b[12]);
  // NAT64 (RFC 6052 well-known prefix) reaches the IPv4 address in its last 4 bytes.
  static constexpr std::array<uint8_t, 12> kNat64 = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
  if (std::equal(kNat64.begin(), kNat64.end(), b.begin())) return is_special_v4(&b[12]);
  bool zero_until_last = std::all_of(b.begin(), b.begin() + 15, [](uint8_t x) { return x == 0; });
  if (zero_until_last && (b[15] == 0 || b[15] == 1)) return true;  // ::, ::1
  return (b[0] & 0xfe) == 0xfc ||                                  // unique local fc00::/7
         (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) ||                // link-local fe80::/10
         (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) ||                // site-local fec0::/10 (deprecated)
         b[0] == 0xff;                                             // multicast
}

bool is_special_address(const sockaddr_storage& address) {
  std::optional<IpAddress> ip = ip_address_from(address);
  return !ip || is_special_address(*ip);
}

}  // namespace coil::config
