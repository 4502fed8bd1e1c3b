// Proxy headers: what a reverse proxy in front of coil (nginx, Caddy, a load
// balancer that terminates TLS) says about the client it forwards.
//
// A request's scheme and client address are the front's own view, unless the
// peer is a trusted proxy (--forwarded-allow-ips): then X-Forwarded-Proto
// gives the scheme (so that an ASGI app behind TLS builds https:// URLs and
// redirects) and X-Forwarded-For the client, as uvicorn's proxy headers do.
//
// Off by default. uvicorn trusts 127.0.0.1 unasked; coil does not, because
// its functions reach coil's own front through the host (an outbound host of
// "self") from 127.0.0.1, and could otherwise pose as any client, over https,
// to the other functions.
#pragma once

#include <boost/asio/ip/address.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "protocol/frame.h"

namespace coil::http {

class TrustedProxies {
 public:
  // "" (none), "*" (every peer), or a comma-separated list of IP addresses.
  static Result<TrustedProxies> parse(std::string_view list);

  bool empty() const { return !any_ && addresses_.empty(); }
  // An IPv4 peer seen on an IPv6 socket (::ffff:a.b.c.d) is its IPv4 address.
  bool trusts(const boost::asio::ip::address& peer) const;

 private:
  bool any_ = false;
  std::vector<boost::asio::ip::address> addresses_;
};

// What the proxy headers of one request say; empty strings when a header is
// absent or unusable.
struct Forwarded {
  std::string scheme;  // "http" or "https"
  std::string client;  // "ip:0" or "[ipv6]:0" (a proxy does not say the port)
};

// Reads X-Forwarded-Proto and X-Forwarded-For from `headers` (names
// lower-cased). Of several values (a chain of proxies, or the header
// repeated) the last is taken: the one the proxy next to coil wrote. A value
// that is not a scheme coil knows, or not an IP address, is ignored.
Forwarded read_forwarded(const std::vector<frame::Header>& headers);

}  // namespace coil::http
