#include "http/websocket_session.h"

#include <fmt/format.h>

#include <boost/asio/write.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <algorithm>

#include "common/log.h"
#include "http/response_writer.h"
#include "http/server.h"

namespace coil::http {
namespace websocket = boost::beast::websocket;

WebSocketSession::WebSocketSession(Server& server, boost::asio::ip::tcp::socket socket,
                                   std::shared_ptr<runtime::InvocationTarget> target,
                                   std::shared_ptr<runtime::Invocation> invocation, Request request)
    : server_(&server),
      ws_(std::move(socket)),
      target_(std::move(target)),
      invocation_(std::move(invocation)),
      request_(std::move(request)),
      started_(std::chrono::steady_clock::now()) {}

WebSocketSession::~WebSocketSession() {
  if (server_ == nullptr) return;
  server_->detach(this);
  if (invocation_ && !finished_) target_->abandon(invocation_);
}

void WebSocketSession::start() {
  server_->attach(this);
  invocation_->websocket = true;
  invocation_->started = std::chrono::steady_clock::now();
  invocation_->sink = shared_from_this();
  target_->submit(invocation_);
}

void WebSocketSession::log_access(uint16_t status) {
  if (server_ == nullptr) return;
  log::access(target_->name(), invocation_->head.method, invocation_->head.target, status,
              std::chrono::steady_clock::now() - started_);
}

void WebSocketSession::on_response_head(const frame::ResponseHead& head, std::string_view body, bool) {
  if (accepted_ || finished_) return;
  if (head.status != 101) {
    refuse(head.status, head.headers, body);
    return;
  }
  accepted_ = true;
  // The application's headers (sec-websocket-protocol among them) go into the
  // handshake response; Beast writes the protocol's own.
  auto headers = head.headers;
  ws_.set_option(websocket::stream_base::decorator([headers](websocket::response_type& response) {
    // Beast adds its own banner (library and version) unless a Server field is
    // there: coil names itself, unless the application gave one.
    response.set(boost::beast::http::field::server, "coil");
    response.set(boost::beast::http::field::date, http_date());  // as on every other response
    for (const auto& [name, value] : headers) response.set(name, value);
  }));
  // permessage-deflate (RFC 7692) when the client offers it, as under
  // uvicorn, with the settings the websockets library's own server uses (a
  // 2^12-byte window, memory level 5; uvicorn 0.17 keeps zlib's defaults):
  // compression state is kept per connection, and a chatty session of small
  // JSON messages gains about as much with the smaller one.
  websocket::permessage_deflate deflate;
  deflate.server_enable = true;
  deflate.server_max_window_bits = 12;
  deflate.memLevel = 5;
  ws_.set_option(deflate);
  ws_.set_option(websocket::stream_base::timeout::suggested(boost::beast::role_type::server));
  // A client's pings (and pongs) keep the session from idling out
  // (stream_idle_timeout_ms), as its messages do. Beast answers the pings.
  ws_.control_callback([self = weak_from_this()](websocket::frame_type kind, boost::beast::string_view) {
    auto session = self.lock();
    if (session && kind != websocket::frame_type::close && !session->finished_ && session->server_ != nullptr) {
      session->target_->client_alive(session->invocation_);
    }
  });
  ws_.read_message_max(frame::kMaxWebSocketMessage);
  ws_.async_accept(request_, [self = shared_from_this()](boost::system::error_code ec) {
    self->log_access(ec ? 400 : 101);
    if (ec) {
      self->client_gone(1006);
      return;
    }
    self->read();
    self->write_next();
  });
}

void WebSocketSession::refuse(uint16_t status, const std::vector<frame::Header>& headers, std::string_view body) {
  finished_ = true;
  log_access(status);
  std::string out;
  append_head(out, status, headers, BodyFraming::kContentLength, body.size(), false);
  out.append(body);
  raw_response_ = std::move(out);
  boost::asio::async_write(ws_.next_layer(), boost::asio::buffer(raw_response_),
                           [self = shared_from_this()](boost::system::error_code, size_t) {
                             boost::system::error_code ignored;
                             self->ws_.next_layer().shutdown(boost::asio::ip::tcp::socket::shutdown_both, ignored);
                             self->ws_.next_layer().close(ignored);
                           });
}

void WebSocketSession::on_response_body(std::string_view body, bool) { on_websocket_message(body, false, false); }

void WebSocketSession::on_failure(uint16_t status, const std::string& message) {
  if (finished_) return;
  if (!accepted_) {
    refuse(status, {{"content-type", "text/plain; charset=utf-8"}}, message);
    return;
  }
  log::info("{} websocket {}: closing: {}", target_->name(), invocation_->head.target,
            std::string_view(message).substr(0, message.find('\n')));
  // 1001 "going away" when coil stops or the session timed out; 1011 for a
  // failure of the function.
  on_websocket_close(status == 503 || status == 504 ? 1001 : 1011, "");
}

void WebSocketSession::on_websocket_message(std::string_view data, bool text, bool more) {
  if (finished_) return;
  if (more || !partial_.empty()) {
    // A message in parts (frame.h): whole before it is sent. The instance
    // sends none over kMaxWebSocketMessage; one that did is cut off here.
    if (partial_.size() + data.size() > frame::kMaxWebSocketMessage) {
      log::info("{} websocket {}: the application sent a message over {} bytes; closing", target_->name(),
                invocation_->head.target, frame::kMaxWebSocketMessage);
      partial_.clear();
      on_websocket_close(1009, "");
      if (server_ != nullptr) target_->abandon(invocation_);
      return;
    }
    partial_.append(data);
    if (more) return;
    std::string message = std::move(partial_);
    partial_.clear();
    on_websocket_message(message, text, false);
    return;
  }
  if (outgoing_bytes_ + data.size() > kMaxUnsent) {
    log::info("{} websocket {}: the client left {} bytes unread; closing",
              target_->name(), invocation_->head.target, outgoing_bytes_);
    client_gone(1008);
    boost::system::error_code ignored;
    ws_.next_layer().close(ignored);
    return;
  }
  outgoing_bytes_ += data.size();
  outgoing_.push_back(Outgoing{std::string(data), text, false, 0});
  write_next();
}

void WebSocketSession::on_websocket_close(uint16_t code, const std::string& reason) {
  if (finished_) return;
  finished_ = true;
  // Codes that must never be sent in a close frame (RFC 6455 7.4): 1005,
  // 1006 and 1015 only report what happened, and below 1000 or in
  // 1016-2999 nothing is defined. The application's intent is a normal close.
  bool sendable = (code >= 1000 && code <= 1014 && code != 1004 && code != 1005 && code != 1006) ||
                  (code >= 3000 && code <= 4999);
  if (!sendable) code = 1000;
  Outgoing close{reason, false, true, code};
  outgoing_.push_back(std::move(close));
  write_next();
}

void WebSocketSession::write_next() {
  if (writing_ || outgoing_.empty() || !accepted_ || !ws_.is_open()) return;
  writing_ = true;
  Outgoing& next = outgoing_.front();
  auto done = [self = shared_from_this()](boost::system::error_code ec, size_t = 0) {
    self->writing_ = false;
    if (!self->outgoing_.front().close) self->outgoing_bytes_ -= self->outgoing_.front().data.size();
    self->outgoing_.pop_front();
    if (ec) {
      self->client_gone(1006);
      return;
    }
    self->write_next();
  };
  if (next.close) {
    ws_.async_close(websocket::close_reason(static_cast<websocket::close_code>(next.code), next.data),
                    [done](boost::system::error_code ec) mutable { done(ec); });
  } else {
    ws_.text(next.text);
    ws_.async_write(boost::asio::buffer(next.data), std::move(done));
  }
}

void WebSocketSession::read() {
  ws_.async_read(read_buffer_, [self = shared_from_this()](boost::system::error_code ec, size_t) {
    if (ec) {
      uint16_t code = 1006;  // closed without a close frame
      if (ec == websocket::error::closed) code = self->ws_.reason().code;
      self->client_gone(code);
      return;
    }
    auto data = self->read_buffer_.cdata();
    std::string_view message(static_cast<const char*>(data.data()), data.size());
    if (!self->finished_ && self->server_) self->target_->send_websocket_message(self->invocation_, message,
                                                                                  self->ws_.got_text());
    self->untaken_ += message.size();
    self->read_buffer_.consume(self->read_buffer_.size());
    if (self->untaken_ > frame::kMaxWebSocketMessage) {
      self->read_paused_ = true;  // until the application takes some (on_messages_taken)
      if (!self->paused_once_) {
        self->paused_once_ = true;
        log::info("{} websocket {}: the application has {} bytes of messages it has not taken; the client "
                  "waits", self->target_->name(), self->invocation_->head.target, self->untaken_);
      }
      return;
    }
    self->read();
  });
}

void WebSocketSession::on_messages_taken(uint64_t bytes) {
  untaken_ -= std::min(untaken_, bytes);
  if (read_paused_ && untaken_ <= frame::kMaxWebSocketMessage / 2) {
    read_paused_ = false;
    read();
  }
}

void WebSocketSession::client_gone(uint16_t code) {
  if (finished_ || server_ == nullptr) return;
  finished_ = true;
  target_->send_websocket_close(invocation_, code);
  target_->abandon(invocation_);
}

}  // namespace coil::http
