// allowed_outbound_hosts (Spin's syntax): which destinations a function may
// reach through the egress proxy.
//
// An entry is "scheme://host[:port]" and nothing after the authority except
// one tolerated trailing '/' (Spin accepts "http://a.com:80/" too):
//   scheme  "*" or letters; case-insensitive, stored lower-case.
//   host    "*"              any host;
//           "*.example.com"  any name strictly below example.com ("a.example.com",
//                            "b.a.example.com"; never "example.com" nor "xexample.com");
//                            names only, never an IP literal;
//           "example.com"    that name (case-insensitive, one trailing dot ignored);
//           "10.1.2.3", "[::1]"           one address (IPv6 always in brackets);
//           "10.0.0.0/8", "[fd00::/8]"    a network; the port follows the prefix
//                            ("http://10.0.0.0/8:8080", "http://[fd00::/8]:8080"). Spin's
//                            bare IPv6 form "fd00::/8:8080" is accepted too; "[fd00::]/8" is
//                            not. Bits after the prefix are ignored (10.1.2.3/8 = 10.0.0.0/8);
//           "self", "self.alt"  the app itself (both mean the same here).
//   port    omitted  the scheme's default (default_port()); an error for "*" and any
//                    scheme without one;
//           "*"      any port (1-65535);
//           "8080"   that port (1-65535);
//           "A..B"   A up to B-1 (B excluded, as in Spin; A < B).
// Rejected with a message: "insecure:allow-all" (list hosts, or "*://*:*"), variable
// templates ("{{ ... }}"), hosts written as a single number or in octal/hex ("2130706433",
// "0x7f.1"). An empty list admits nothing.
//
// IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are the IPv4 address they map, everywhere:
// "[::ffff:127.0.0.1]" as an entry is the entry "127.0.0.1", a destination
// "[::ffff:127.0.0.1]" is admitted by a "127.0.0.1" entry, and it is special exactly when
// 127.0.0.1 is. Consequently an IPv6 network that contains ::ffff:0:0/96 (e.g. "[::/0]")
// contains every IPv4 address too.
//
// Checking a request is two steps, both required:
//   1. admits(): by the name or literal the client sent, before any resolution;
//   2. address_admitted(): on every address the name resolved to, before connecting,
//      so that a permitted name cannot lead to loopback, the metadata service or the
//      host's private networks unless an address entry names them.
//
// All functions are pure and thread-safe.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace coil::config {

// An IPv4 or IPv6 address as 16 bytes; IPv4 is held IPv4-mapped (::ffff:a.b.c.d), so
// the two spellings of one IPv4 address compare equal.
struct IpAddress {
  std::array<uint8_t, 16> bytes{};

  bool is_v4() const;             // within ::ffff:0:0/96
  std::string to_string() const;  // dotted quad for IPv4, RFC 5952 text for IPv6
  friend bool operator==(const IpAddress&, const IpAddress&) = default;
};

// A strict literal, as inet_pton() reads it: dotted-quad IPv4 (no octal, hex or short
// forms) or IPv6 text without brackets or zone. Anything else is nullopt.
std::optional<IpAddress> parse_ip_literal(std::string_view text);

// The address of an AF_INET or AF_INET6 socket address; nullopt for any other family.
std::optional<IpAddress> ip_address_from(const sockaddr_storage& address);

// http 80, https 443, redis 6379, mysql 3306, postgres 5432, mqtt 1883 (lower-case
// scheme); nullopt for any other scheme.
std::optional<uint16_t> default_port(std::string_view scheme);

struct AllowedHost {
  enum class HostKind { kAny, kSuffix, kName, kAddress, kCidr, kSelf };

  std::string scheme;  // lower-case, or "*"
  // Defaults to a name no destination has, so a default-constructed entry admits nothing.
  HostKind host_kind = HostKind::kName;
  // kName: lower-case, no trailing dot. kSuffix: the domain after "*.", same form.
  // kAddress/kCidr: canonical text ("10.0.0.0/8", "fd00::/8", "::1"). kSelf: "self" or
  // "self.alt". kAny: "*".
  std::string host;
  // kAddress/kCidr: the address or network, and how many leading bits of `network`
  // must match out of 128 (kAddress: 128; an IPv4 /8 is 96 + 8 = 104).
  IpAddress network;
  uint8_t prefix_length = 0;
  // Inclusive: "A..B" becomes [A, B-1], "*" [1, 65535].
  uint16_t port_min = 0;
  uint16_t port_max = 0;
  std::string text;  // the entry as written, for messages
};

// Parses one entry. An error reads "\"ENTRY\": what is wrong", e.g.
// "\"http://a.com/path\": a path is not allowed"; the caller adds where the entry is.
Result<AllowedHost> parse_allowed_host(std::string_view entry);

// A destination as the proxy sees it, before resolving anything.
struct Destination {
  std::string scheme;  // "http" for a plain proxied request, "https" for CONNECT (to any port)
  std::string host;    // as the client sent it; normalise_host() is applied again by the checks
  uint16_t port = 0;   // 0 is never admitted
};

// The host in the form the checks compare: lower-case, one trailing dot removed, IPv6
// brackets removed. Returns "" for anything that is neither a strict IP literal nor a
// name of labels of 1-63 characters from [a-z0-9_-] (253 at most in all); so "" for
// userinfo ("a.com@evil.com"), paths, spaces, control or non-ASCII characters, '%'
// (zones, percent-encoding), empty labels, and brackets around anything but IPv6.
// Numbers in other forms ("2130706433", "0x7f.1", "127.1") are names here, not addresses.
std::string normalise_host(std::string_view host);

// Whether some entry admits the destination by its name or literal: scheme equal or "*";
// port within the range; host per kind: kAny anything valid, kSelf the host "self" only,
// kName/kSuffix names only (never an IP literal), kAddress/kCidr only a strict IP literal
// inside them. An invalid host (normalise_host() is "") and port 0 are never admitted.
bool admits(const std::vector<AllowedHost>& rules, const Destination& destination);

// Whether the proxy may connect to `address`, one of the addresses the destination's
// host resolved to (or the literal itself). Precondition: admits() was true for the
// destination. A public address is admitted; a special one (is_special_address()) only
// when a kAddress/kCidr entry whose scheme and port match the destination contains it.
// So "http://localhost:3000" must be allowed as "http://127.0.0.1:3000".
bool address_admitted(const std::vector<AllowedHost>& rules, const Destination& destination,
                      const IpAddress& address);
// As above; an address of a family other than AF_INET/AF_INET6 is refused.
bool address_admitted(const std::vector<AllowedHost>& rules, const Destination& destination,
                      const sockaddr_storage& address);

// An address no function reaches by accident: unspecified/"this network" 0.0.0.0/8,
// 10/8, 100.64/10 (CGNAT), 127/8, 169.254/16, 172.16/12, 192.168/16, 224/4 (multicast),
// 240/4 (reserved, with broadcast 255.255.255.255); ::, ::1, fc00::/7, fe80::/10,
// fec0::/10, ff00::/8; and IPv4-mapped (::ffff:0:0/96) or NAT64 (64:ff9b::/96) forms of
// a special IPv4 address.
bool is_special_address(const IpAddress& address);
// As above; an address of a family other than AF_INET/AF_INET6 counts as special.
bool is_special_address(const sockaddr_storage& address);

}  // namespace coil::config
