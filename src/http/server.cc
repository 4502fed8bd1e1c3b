#include "http/server.h"

#include <boost/asio/ip/address.hpp>

#include "common/log.h"
#include "http/connection.h"
#include "http/websocket_session.h"

namespace coil::http {
namespace {
constexpr auto kHousekeepingInterval = std::chrono::milliseconds(100);
// How long accepting pauses when the process is out of file descriptors.
constexpr auto kAcceptRetry = std::chrono::milliseconds(100);
}

Server::Server(boost::asio::io_context& io, ServerOptions options, Dispatcher& dispatcher)
    : io_(io),
      options_(std::move(options)),
      dispatcher_(dispatcher),
      acceptor_(io),
      housekeeping_timer_(io),
      accept_retry_timer_(io) {}

// Asio handlers that hold connections or sessions may run (or be destroyed)
// after the server: they must not reach it any more.
Server::~Server() {
  for (Connection* connection : connections_) connection->orphan();
  for (WebSocketSession* session : sessions_) session->orphan();
}

Status Server::listen() {
  boost::system::error_code ec;
  auto address = boost::asio::ip::make_address(options_.host, ec);
  if (ec) return Status::error("--listen: \"" + options_.host + "\" is not an IP address");
  boost::asio::ip::tcp::endpoint endpoint(address, options_.port);
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(boost::asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(boost::asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return Status::error("cannot listen on " + options_.host + ":" + std::to_string(options_.port) + ": " +
                         ec.message());
  }
  local_port_ = acceptor_.local_endpoint().port();
  return Status::ok();
}

void Server::start() {
  accept();
  housekeeping();
}

void Server::accept() {
  acceptor_.async_accept([this](boost::system::error_code ec, boost::asio::ip::tcp::socket socket) {
    if (ec == boost::asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (ec == boost::asio::error::no_descriptors || ec == boost::system::errc::too_many_files_open_in_system ||
        ec == boost::asio::error::no_buffer_space || ec == boost::asio::error::no_memory) {
      // The connection stays in the backlog and the listening socket stays
      // readable: accepting again at once would spin. Wait for connections
      // to close (keep-alive and header timeouts close idle ones), serving
      // the ones already open meanwhile.
      auto now = std::chrono::steady_clock::now();
      if (now - fd_shortage_logged_ >= std::chrono::seconds(10)) {
        fd_shortage_logged_ = now;
        log::info("cannot accept connections: {}; retrying every {} ms", ec.message(), kAcceptRetry.count());
      }
      accept_retry_timer_.expires_after(kAcceptRetry);
      accept_retry_timer_.async_wait([this](boost::system::error_code timer_ec) {
        if (!timer_ec) accept();
      });
      return;
    }
    if (!ec) std::make_shared<Connection>(*this, std::move(socket))->start();
    // Other errors (ECONNABORTED: the client left first) are about one connection.
    accept();
  });
}

void Server::housekeeping() {
  housekeeping_timer_.expires_after(kHousekeepingInterval);
  housekeeping_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    auto now = std::chrono::steady_clock::now();
    // check_deadline() may close a connection, which detaches it: iterate
    // over a copy.
    std::vector<Connection*> connections(connections_.begin(), connections_.end());
    for (Connection* connection : connections) {
      if (connections_.count(connection)) connection->check_deadline(now);
    }
    dispatcher_.tick(now);
    log::flush();
    if (draining_) check_drained();
    housekeeping();
  });
}

void Server::shutdown(std::function<void()> done) {
  if (draining_) return;
  draining_ = true;
  on_drained_ = std::move(done);
  drain_deadline_ = std::chrono::steady_clock::now() + options_.shutdown_timeout;
  boost::system::error_code ignored;
  acceptor_.close(ignored);
  accept_retry_timer_.cancel();
  std::vector<Connection*> connections(connections_.begin(), connections_.end());
  for (Connection* connection : connections) {
    if (connections_.count(connection)) connection->drain();
  }
  check_drained();
}

void Server::check_drained() {
  // A request in flight is counted by its connection and by its function's
  // pool (which also holds requests whose client left): the larger count.
  size_t busy = 0;
  for (Connection* connection : connections_) busy += connection->busy() ? 1 : 0;
  size_t unanswered = std::max(busy, dispatcher_.unanswered());
  bool timed_out = std::chrono::steady_clock::now() >= drain_deadline_;
  if ((unanswered == 0 || timed_out) && on_drained_) {
    if (unanswered > 0) log::info("shutdown timeout: {} requests still in flight are dropped", unanswered);
    housekeeping_timer_.cancel();
    log::flush();
    std::exchange(on_drained_, nullptr)();
  }
}

}  // namespace coil::http
