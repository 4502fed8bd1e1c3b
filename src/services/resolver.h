// Resolver: how the host turns the names a function asks for into addresses
// (for the outbound proxy). The seam for tests and for operators: a hosts
// file (`coil up --hosts-file FILE`, lines "ADDRESS NAME [NAME...]") is
// consulted first; other names go to the system resolver (getaddrinfo, on
// Asio's resolver thread, so the event loop never blocks).
//
// The proxy checks the addresses returned here and connects to one of them,
// never resolving again: what was checked is what is reached.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace coil::services {

class Resolver : public std::enable_shared_from_this<Resolver> {
 public:
  using Addresses = std::vector<boost::asio::ip::address>;
  using Callback = std::function<void(Result<Addresses>)>;

  // `hosts_file` "" = none. Errors name the file and line.
  static Result<std::shared_ptr<Resolver>> create(boost::asio::io_context& io, const std::string& hosts_file);

  // This machine's own addresses (every interface's, from getifaddrs at
  // creation): the proxy refuses them unless an address entry names them, so
  // that a function cannot reach the host's services through its public
  // address either.
  bool is_local(const boost::asio::ip::address& address) const;

  // `host` is normalised (lower-case, no trailing dot, no brackets). A strict
  // IP literal resolves to itself. Calls back on the event loop.
  void resolve(const std::string& host, Callback callback);

 private:
  explicit Resolver(boost::asio::io_context& io) : io_(io), resolver_(io) {}

  boost::asio::io_context& io_;
  boost::asio::ip::tcp::resolver resolver_;
  std::map<std::string, Addresses> hosts_;
  Addresses local_;
};

}  // namespace coil::services
