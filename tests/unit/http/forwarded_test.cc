#include "http/forwarded.h"

#include <gtest/gtest.h>

namespace coil::http {
namespace {

boost::asio::ip::address ip(const char* text) { return boost::asio::ip::make_address(text); }

TEST(TrustedProxies, EmptyTrustsNobody) {
  Result<TrustedProxies> proxies = TrustedProxies::parse("");
  ASSERT_TRUE(proxies) << proxies.message();
  EXPECT_TRUE(proxies->empty());
  EXPECT_FALSE(proxies->trusts(ip("127.0.0.1")));
}

TEST(TrustedProxies, ListedAddressesOnly) {
  Result<TrustedProxies> proxies = TrustedProxies::parse("127.0.0.1, ::1,10.0.0.7");
  ASSERT_TRUE(proxies) << proxies.message();
  EXPECT_TRUE(proxies->trusts(ip("127.0.0.1")));
  EXPECT_TRUE(proxies->trusts(ip("::1")));
  EXPECT_TRUE(proxies->trusts(ip("10.0.0.7")));
  EXPECT_FALSE(proxies->trusts(ip("10.0.0.8")));
  EXPECT_FALSE(proxies->trusts(ip("127.0.0.2")));
}

TEST(TrustedProxies, AnIpv4PeerOnAnIpv6SocketIsItsIpv4Address) {
  Result<TrustedProxies> proxies = TrustedProxies::parse("127.0.0.1");
  ASSERT_TRUE(proxies) << proxies.message();
  EXPECT_TRUE(proxies->trusts(ip("::ffff:127.0.0.1")));
}

TEST(TrustedProxies, StarTrustsEveryPeer) {
  Result<TrustedProxies> proxies = TrustedProxies::parse("*");
  ASSERT_TRUE(proxies) << proxies.message();
  EXPECT_TRUE(proxies->trusts(ip("192.0.2.1")));
  EXPECT_TRUE(proxies->trusts(ip("2001:db8::1")));
}

TEST(TrustedProxies, ANameIsRefusedWithItsText) {
  Result<TrustedProxies> proxies = TrustedProxies::parse("127.0.0.1,proxy.local");
  ASSERT_FALSE(proxies);
  EXPECT_NE(proxies.message().find("\"proxy.local\" is not an IP address"), std::string::npos) << proxies.message();
}

TEST(ReadForwarded, SchemeAndClient) {
  Forwarded f = read_forwarded({{"host", "example.com"}, {"x-forwarded-proto", "https"},
                                {"x-forwarded-for", "203.0.113.9"}});
  EXPECT_EQ(f.scheme, "https");
  EXPECT_EQ(f.client, "203.0.113.9:0");
}

TEST(ReadForwarded, TheLastValueIsTheNearestProxys) {
  Forwarded f = read_forwarded({{"x-forwarded-for", "198.51.100.1, 10.0.0.2"},
                                {"x-forwarded-for", "203.0.113.9 "},
                                {"x-forwarded-proto", "http, HTTPS"}});
  EXPECT_EQ(f.scheme, "https");
  EXPECT_EQ(f.client, "203.0.113.9:0");
}

TEST(ReadForwarded, Ipv6ClientsAreBracketed) {
  EXPECT_EQ(read_forwarded({{"x-forwarded-for", "2001:db8::5"}}).client, "[2001:db8::5]:0");
  EXPECT_EQ(read_forwarded({{"x-forwarded-for", "::ffff:203.0.113.9"}}).client, "203.0.113.9:0");
}

TEST(ReadForwarded, UnusableValuesAreIgnored) {
  Forwarded f = read_forwarded({{"x-forwarded-proto", "gopher"}, {"x-forwarded-for", "unknown"}});
  EXPECT_EQ(f.scheme, "");
  EXPECT_EQ(f.client, "");
  f = read_forwarded({{"x-forwarded-for", "203.0.113.9:4711"}});  // a port is not part of the header
  EXPECT_EQ(f.client, "");
  f = read_forwarded({});
  EXPECT_EQ(f.scheme, "");
  EXPECT_EQ(f.client, "");
}

}  // namespace
}  // namespace coil::http
