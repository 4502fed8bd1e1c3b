// WebSocketSession: a client connection upgraded to the WebSocket protocol,
// bridged to an ASGI application's websocket scope.
//
// The front hands over the socket when a request to an ASGI function asks
// for `Upgrade: websocket`. The session submits the request to the pool
// (scheme "ws"); the application's accept arrives as a 101 response head,
// and only then does the session complete the handshake (Boost.Beast's
// websocket stream: framing, masking, ping/pong, close). A refusal (any
// other status) is sent as a plain HTTP response. Messages then flow both
// ways as body frames; either side's close ends the session.
//
// Lifetime: held by its pending Asio operations and, while the application
// is running, by its invocation (as the ResponseSink).
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <deque>
#include <memory>
#include <string>

#include "runtime/invocation.h"
#include "runtime/invocation_target.h"

namespace coil::http {

class Server;

class WebSocketSession : public runtime::ResponseSink, public std::enable_shared_from_this<WebSocketSession> {
 public:
  using Request = boost::beast::http::request<boost::beast::http::empty_body>;

  WebSocketSession(Server& server, boost::asio::ip::tcp::socket socket,
                   std::shared_ptr<runtime::InvocationTarget> target,
                   std::shared_ptr<runtime::Invocation> invocation, Request request);
  ~WebSocketSession() override;

  // Submits the session's request to the function.
  void start();
  // The server is being destroyed: forget it.
  void orphan() { server_ = nullptr; }

  // runtime::ResponseSink
  void on_response_head(const frame::ResponseHead& head, std::string_view body, bool end) override;
  void on_response_body(std::string_view body, bool end) override;
  void on_failure(uint16_t status, const std::string& message) override;
  void on_websocket_message(std::string_view data, bool text, bool more) override;
  void on_websocket_close(uint16_t code, const std::string& reason) override;
  void on_messages_taken(uint64_t bytes) override;

 private:
  struct Outgoing {
    std::string data;
    bool text = false;
    bool close = false;
    uint16_t code = 1000;
  };

  void read();
  void write_next();
  void client_gone(uint16_t code);
  void refuse(uint16_t status, const std::vector<frame::Header>& headers, std::string_view body);
  void log_access(uint16_t status);

  Server* server_;  // null once the server is gone (see Server::~Server)
  boost::beast::websocket::stream<boost::asio::ip::tcp::socket> ws_;
  std::shared_ptr<runtime::InvocationTarget> target_;
  std::shared_ptr<runtime::Invocation> invocation_;
  Request request_;
  boost::beast::flat_buffer read_buffer_;
  std::deque<Outgoing> outgoing_;
  size_t outgoing_bytes_ = 0;
  // Messages a client may leave unread before the session is closed: two of
  // the largest.
  static constexpr size_t kMaxUnsent = 2 * frame::kMaxWebSocketMessage;
  std::string partial_;  // the parts of an application's message so far
  // Flow control toward the application: bytes of client messages it has
  // not taken yet; past kMaxWebSocketMessage the client is not read.
  uint64_t untaken_ = 0;
  bool read_paused_ = false;
  bool paused_once_ = false;  // the pause is logged once per session
  bool writing_ = false;
  bool accepted_ = false;
  bool finished_ = false;  // the application's side is over (closed or failed)
  std::string raw_response_;
  std::chrono::steady_clock::time_point started_;
};

}  // namespace coil::http
