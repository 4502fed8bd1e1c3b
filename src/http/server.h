// Server: the HTTP front. Accepts connections, owns them, routes their
// requests to function pools, and runs the periodic housekeeping
// (connection deadlines, idle instances, log flushing).
//
// Single-threaded: everything runs on one io_context thread. Per-function
// work happens in other processes; the front's work per request is parsing,
// routing and copying bytes, which one core does at well over 100k req/s.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "common/status.h"
#include "http/request_parser.h"
#include "http/dispatcher.h"
#include "http/forwarded.h"

namespace coil::http {

struct ServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 3000;
  std::chrono::milliseconds header_timeout{30000};
  std::chrono::milliseconds keepalive_timeout{60000};
  std::chrono::milliseconds shutdown_timeout{10000};
  ParseLimits limits;
  TrustedProxies trusted_proxies;  // none: requests carry the front's own view
};

class Connection;
class WebSocketSession;

class Server {
 public:
  // `dispatcher` outlives the server.
  Server(boost::asio::io_context& io, ServerOptions options, Dispatcher& dispatcher);
  ~Server();

  // Binds and listens; on success local_port() is the bound port.
  Status listen();
  uint16_t local_port() const { return local_port_; }
  void start();
  // Stops accepting, lets requests in flight finish (bounded by the shutdown
  // timeout), then calls `done`.
  void shutdown(std::function<void()> done);

  const ServerOptions& options() const { return options_; }
  Dispatcher& dispatcher() { return dispatcher_; }
  uint32_t next_invocation_id() { return ++invocation_ids_; }
  bool draining() const { return draining_; }

  // Connections register themselves for the deadline sweep, and sessions so
  // that the server can tell them it is gone.
  void attach(Connection* connection) { connections_.insert(connection); }
  void detach(Connection* connection) { connections_.erase(connection); }
  void attach(WebSocketSession* session) { sessions_.insert(session); }
  void detach(WebSocketSession* session) { sessions_.erase(session); }

 private:
  void accept();
  void housekeeping();
  void check_drained();

  boost::asio::io_context& io_;
  ServerOptions options_;
  Dispatcher& dispatcher_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::steady_timer housekeeping_timer_;
  boost::asio::steady_timer accept_retry_timer_;  // see accept(): out of file descriptors
  std::chrono::steady_clock::time_point fd_shortage_logged_;
  uint16_t local_port_ = 0;
  uint32_t invocation_ids_ = 0;
  std::unordered_set<Connection*> connections_;
  std::unordered_set<WebSocketSession*> sessions_;
  bool draining_ = false;
  std::chrono::steady_clock::time_point drain_deadline_;
  std::function<void()> on_drained_;
};

}  // namespace coil::http
