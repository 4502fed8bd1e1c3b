// OutboundProxy: a function's only way out of its sandbox, enforced by the
// host (Spin's allowed_outbound_hosts).
//
// The listening socket lives inside the function's network namespace
// (127.0.0.1:3128 there, created by the zygote; see sandbox/contain.h), and
// the function's environment points HTTP_PROXY/HTTPS_PROXY/ALL_PROXY at it,
// so urllib, requests and httpx use it unchanged. The host accepts on it
// from outside and, for each connection:
//   - `CONNECT host:port` (HTTPS): checked as scheme "https"; then a tunnel;
//   - `METHOD http://host[:port]/path` (plain HTTP): checked as "http"; the
//     request goes on in origin form with `Connection: close`, so that one
//     upstream connection carries exactly the request that was checked.
// Each destination is checked twice: its name against the rules
// (config::admits), then every address the host resolved it to
// (config::address_admitted: loopback, private and link-local addresses
// only when an entry names them). The proxy connects to an address it
// checked, never resolving again (no DNS rebinding). Redirects are new
// requests and so are checked again.
//
// A refusal is answered `403 Destination Not Allowed` with a body naming the
// destination, and logged: "coil: outbound FN denied DESTINATION: why".
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "common/unique_fd.h"
#include "config/allowed_hosts.h"
#include "services/resolver.h"

namespace coil::services {

struct OutboundOptions {
  std::string function;
  std::vector<config::AllowedHost> rules;
  std::shared_ptr<Resolver> resolver;
  // Where "self" (coil's own front) is; unset until coil listens.
  std::shared_ptr<boost::asio::ip::tcp::endpoint> self;
  size_t max_connections = 256;  // per function; beyond: 503
};

class ProxySession;

class OutboundProxy : public std::enable_shared_from_this<OutboundProxy> {
 public:
  OutboundProxy(boost::asio::io_context& io, unique_fd listener, OutboundOptions options);
  ~OutboundProxy();
  void start();
  // Stops accepting and closes every connection (the sandbox is gone).
  void stop();

  void detach(ProxySession* session) { sessions_.erase(session); }

 private:
  void accept();

  boost::asio::io_context& io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::steady_timer retry_;  // after an accept error
  std::shared_ptr<const OutboundOptions> options_;  // shared with the sessions
  std::unordered_set<ProxySession*> sessions_;
  bool stopped_ = false;
};

}  // namespace coil::services
