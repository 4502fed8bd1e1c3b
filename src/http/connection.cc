#include "http/connection.h"

#include <fmt/format.h>

#include <strings.h>

#include <boost/asio/write.hpp>
#include <optional>
#include <utility>

#include "common/ascii.h"
#include "common/log.h"
#include "http/response_writer.h"
#include "http/server.h"
#include "http/websocket_session.h"
#include "router/route_table.h"

namespace coil::http {
namespace {

using SteadyClock = std::chrono::steady_clock;
constexpr auto kLingerTime = std::chrono::seconds(2);

std::string endpoint_string(const boost::asio::ip::tcp::endpoint& endpoint) {
  auto address = endpoint.address();
  if (address.is_v6()) return fmt::format("[{}]:{}", address.to_string(), endpoint.port());
  return fmt::format("{}:{}", address.to_string(), endpoint.port());
}

bool body_forbidden(uint16_t status) { return status < 200 || status == 204 || status == 304; }

// 205 Reset Content has no content either, but is framed (RFC 9110 15.3.6):
// it is sent with Content-Length: 0 whatever the function gave.
bool body_dropped(uint16_t status) { return body_forbidden(status) || status == 205; }

}  // namespace

Connection::Connection(Server& server, boost::asio::ip::tcp::socket socket)
    : server_(&server), socket_(std::move(socket)), parser_(server.options().limits) {
  boost::system::error_code ec;
  auto remote = socket_.remote_endpoint(ec);
  if (!ec) {
    client_ = endpoint_string(remote);
    behind_proxy_ = server.options().trusted_proxies.trusts(remote.address());
  }
  auto local = socket_.local_endpoint(ec);
  if (!ec) local_ = endpoint_string(local);
  socket_.set_option(boost::asio::ip::tcp::no_delay(true), ec);
  deadline_ = SteadyClock::now() + server_->options().keepalive_timeout;
  server_->attach(this);
}

Connection::~Connection() {
  if (server_ == nullptr) return;
  server_->detach(this);
  if (invocation_ && target_) target_->abandon(invocation_);
}

void Connection::start() { read(); }

void Connection::read() {
  if (reading_ || phase_ == Phase::kClosed) return;
  if (read_closed_) {
    on_read_closed();
    return;
  }
  reading_ = true;
  socket_.async_read_some(boost::asio::buffer(read_buffer_),
                          [self = shared_from_this()](boost::system::error_code ec, size_t n) {
                            self->reading_ = false;
                            if (self->phase_ == Phase::kClosed) return;
                            if (ec == boost::asio::error::eof) {
                              self->on_read_closed();
                              return;
                            }
                            if (ec) {
                              self->close();
                              return;
                            }
                            if (self->phase_ == Phase::kLingering) {
                              self->read();  // discard
                              return;
                            }
                            self->input_.append(self->read_buffer_, n);
                            if (self->phase_ == Phase::kIdle) {
                              self->phase_ = Phase::kHead;
                              self->deadline_ = SteadyClock::now() + self->server_->options().header_timeout;
                            }
                            if (self->phase_ == Phase::kHead || self->phase_ == Phase::kBody) {
                              self->process();
                            } else if (self->watch_disconnect_ && self->input_pos_ == self->input_.size()) {
                              // Keep watching for the client going away, but only while nothing is
                              // buffered: a pipelined request waits unread (it may be an upgrade,
                              // which must take the socket over with no read pending).
                              self->read();
                            }
                          });
}

void Connection::process() {
  while (phase_ == Phase::kHead || phase_ == Phase::kBody) {
    if (body_paused_) return;  // on_messages_taken() goes on
    if (input_pos_ == input_.size()) {
      input_.clear();
      input_pos_ = 0;
      read();
      return;
    }
    size_t consumed = 0;
    auto outcome = parser_.feed(std::string_view(input_).substr(input_pos_), consumed);
    input_pos_ += consumed;
    if (phase_ == Phase::kBody) {
      if (continue_deferred_ && body_received_ + parser_.body_size() > 0) {
        // The client sent its body without waiting for "100 Continue": the
        // body deadline runs as for any body.
        continue_deferred_ = false;
        deadline_ = SteadyClock::now() + server_->options().header_timeout;
      }
      if (!duplex_ && body_received_ + parser_.body_size() >= body_checkpoint_ + kBodyProgress) {
        body_checkpoint_ = body_received_ + parser_.body_size();
        deadline_ = SteadyClock::now() + server_->options().header_timeout;
      }
      if (discard_body_) {
        parser_.take_body();
        body_received_ += consumed;  // what was dropped: bytes read, chunk framing included
        if (parser_.chunked() && body_received_ > kMaxDiscardedBody) {
          // A chunked body past the bound. The response is written: lingering
          // (not a reset) lets the client read it.
          linger();
          return;
        }
      } else if (streaming_body_ && outcome != RequestParser::Outcome::kDone && parser_.body_size() > 0) {
        body_received_ += parser_.body_size();
        body_untaken_ += parser_.body_size();
        target_->send_body(invocation_, parser_.take_body(), false);
        if (body_untaken_ > kBodyWindow && phase_ == Phase::kBody) {
          // Reading goes on when the app takes its body (on_messages_taken).
          body_paused_ = true;
          deadline_ = SteadyClock::time_point::max();
        }
      }
    }
    switch (outcome) {
      case RequestParser::Outcome::kNeedMore:
        if (input_pos_ == input_.size()) {
          input_.clear();
          input_pos_ = 0;
        } else if (input_pos_ > 64 * 1024) {
          input_.erase(0, input_pos_);
          input_pos_ = 0;
        }
        if (!body_paused_) read();
        return;
      case RequestParser::Outcome::kHeadDone:
        if (!on_head()) return;
        break;
      case RequestParser::Outcome::kDone:
        if (discard_body_) {
          discard_body_ = false;
          next_request();
        } else {
          on_request();
        }
        return;
      case RequestParser::Outcome::kError:
        if (discard_body_) {
          linger();  // its request has its answer: nothing more to say
          return;
        }
        if (duplex_) {
          // The response is on the wire: cutting the connection is all that is left.
          log::info("{} {} {}: the request body broke off while the response streamed: {}", function_,
                    parser_.method(), parser_.target(), parser_.error_reason());
          close();
          return;
        }
        respond_error(parser_.error_status(),
                      parser_.error_status() == 400 ? "bad request: " + parser_.error_reason()
                                                    : parser_.error_reason(),
                      true);
        return;
    }
  }
}

bool Connection::on_head() {
  request_started_ = SteadyClock::now();
  // The response state of the previous request on this connection goes: a
  // function may answer this one before its body is read (on_request()).
  response_complete_ = false;
  response_chunked_ = false;
  response_until_close_ = false;
  response_remaining_.reset();
  duplex_ = false;
  head_request_ = parser_.method() == "HEAD";
  keep_alive_ = parser_.keep_alive() && !server_->draining();
  function_ = "-";
  bool has_body = parser_.chunked() || parser_.content_length().value_or(0) > 0;

  // RFC 9112 3.2: an HTTP/1.1 request has exactly one Host, and any Host is
  // a valid host[:port] (empty only where the target has no authority).
  const std::string* host_field = nullptr;
  for (const auto& [name, value] : parser_.headers()) {
    if (name != "host") continue;
    if (host_field != nullptr) {
      respond_error(400, "bad request: more than one Host header", true);
      return false;
    }
    host_field = &value;
  }
  if (host_field == nullptr && parser_.version() >= 11) {
    respond_error(400, "bad request: no Host header", true);
    return false;
  }
  if (host_field != nullptr && !host_field->empty() && !valid_host(*host_field)) {
    respond_error(400, "bad request: invalid Host header", true);
    return false;
  }
  if (parser_.target() == "*") {
    // Asterisk-form (RFC 9112 3.2.4) asks about the server, not a function:
    // the front answers OPTIONS * itself. The methods a path allows are its
    // function's to say (OPTIONS /path goes to it), so there is no Allow.
    if (parser_.method() != "OPTIONS") {
      respond_error(400, "bad request: the target '*' is only for OPTIONS", true);
    } else {
      if (has_body) keep_alive_ = false;  // the body is not read
      response_status_ = 200;
      append_head(output_, 200, {}, BodyFraming::kContentLength, 0, keep_alive_, parser_.version() < 11);
      phase_ = Phase::kResponding;
      response_complete_ = true;
      flush();
    }
    return false;
  }
  Result<std::string> path = router::decode_path(parser_.target());
  if (!path) {
    respond_error(400, "bad request: " + path.message(), true);
    return false;
  }
  // An absolute-form target's host comes first (RFC 9112 3.2.2).
  std::string_view host = !parser_.authority().empty() ? std::string_view(parser_.authority())
                          : host_field != nullptr      ? std::string_view(*host_field)
                                                       : std::string_view();
  auto match = server_->dispatcher().route(host, *path);
  if (!match) {
    respond_error(404, "no route for " + *path, has_body);
    return false;
  }
  target_ = std::move(match->target);
  runtime::InvocationTarget& target = *target_;
  function_ = target.name();
  if (auto refusal = target.screen(parser_.target(), parser_.headers())) {
    respond_error(refusal->status, refusal->body, true, {}, refusal->content_type);
    return false;
  }
  if (parser_.content_length().value_or(0) > target.max_body_bytes()) {
    respond_error(413, fmt::format("body larger than {} bytes", target.max_body_bytes()), true);
    return false;
  }

  auto invocation = std::make_shared<runtime::Invocation>();
  invocation->id = server_->next_invocation_id();
  frame::RequestHead& head = invocation->head;
  head.method = parser_.method();
  head.target = parser_.target();
  head.version = parser_.version() >= 11 ? "1.1" : "1.0";
  head.scheme = "http";
  head.client = client_;
  head.server = local_;
  head.route = std::move(match->route);
  head.prefix = std::move(match->prefix);
  head.path_info = std::move(match->path_info);
  head.captures = std::move(match->captures);
  head.host = host;
  head.headers = parser_.take_headers();
  if (!parser_.authority().empty()) {
    // The target's host is the request's (RFC 9112 3.2.2): the function sees it as its Host header.
    std::erase_if(head.headers, [](const frame::Header& h) { return h.first == "host"; });
    head.headers.insert(head.headers.begin(), {"host", parser_.authority()});
  }
  if (behind_proxy_) {
    // What the proxy saw: the scheme its client used, and who that client is.
    Forwarded forwarded = read_forwarded(head.headers);
    if (!forwarded.scheme.empty()) head.scheme = std::move(forwarded.scheme);
    if (!forwarded.client.empty()) head.client = std::move(forwarded.client);
  }
  invocation_ = std::move(invocation);
  streaming_body_ = target.streams_request_body();
  watch_disconnect_ = target.watches_disconnect();
  if (streaming_body_ && asks_for_websocket(invocation_->head)) return upgrade_to_websocket();
  body_received_ = 0;
  body_checkpoint_ = 0;
  body_untaken_ = 0;
  body_paused_ = false;

  if (parser_.done()) {
    on_request();
    return false;
  }
  parser_.begin_body(target.max_body_bytes());
  phase_ = Phase::kBody;
  deadline_ = SteadyClock::now() + server_->options().header_timeout;
  continue_deferred_ = false;
  if (parser_.expects_continue() && parser_.version() >= 11) {
    if (streaming_body_) {
      // An ASGI app may answer without reading the body (a 401, a 413 of
      // its own): the client is invited to send it only once the app asks
      // for it (on_body_wanted), as uvicorn does. Until then the body
      // deadline does not run; timeout_ms bounds the app.
      continue_deferred_ = true;
      deadline_ = SteadyClock::time_point::max();
    } else {
      write("HTTP/1.1 100 Continue\r\n\r\n");
    }
  }
  if (streaming_body_) {
    // The function gets the request now and its body as it arrives.
    invocation_->body_complete = false;
    invocation_->started = SteadyClock::now();
    invocation_->sink = shared_from_this();
    target.submit(invocation_);
    return phase_ == Phase::kBody;  // submit() may have answered already
  }
  return true;
}

bool Connection::asks_for_websocket(const frame::RequestHead& head) {
  bool upgrade = false, connection_upgrade = false;
  for (const auto& [name, value] : head.headers) {
    if (name == "upgrade" && ascii::icontains(value, "websocket")) upgrade = true;
    if (name == "connection" && ascii::icontains(value, "upgrade")) connection_upgrade = true;
  }
  return upgrade && connection_upgrade;
}

// Hands the socket over to a WebSocketSession; this connection ends here.
bool Connection::upgrade_to_websocket() {
  frame::RequestHead& head = invocation_->head;
  std::string_view key, version;
  for (const auto& [name, value] : head.headers) {
    if (name == "sec-websocket-key") key = value;
    if (name == "sec-websocket-version") version = value;
  }
  if (head.method != "GET" || parser_.version() < 11 || key.empty() || version != "13" || !parser_.done() ||
      reading_ || input_pos_ != input_.size()) {
    invocation_.reset();
    respond_error(400, "bad request: invalid WebSocket handshake", true);
    return false;
  }
  head.scheme = head.scheme == "https" ? "wss" : "ws";
  WebSocketSession::Request request;
  request.method(boost::beast::http::verb::get);
  request.target(head.target);
  request.version(11);
  for (const auto& [name, value] : head.headers) request.insert(name, value);
  auto session = std::make_shared<WebSocketSession>(*server_, std::move(socket_), target_,
                                                    std::move(invocation_), std::move(request));
  phase_ = Phase::kClosed;
  session->start();
  return false;
}

void Connection::on_request() {
  runtime::InvocationTarget& target = *target_;
  if (streaming_body_ && invocation_->sink) {
    // Already submitted at the head: this is the end of the body.
    if (duplex_) {
      duplex_ = false;
      discard_body_ = false;
      phase_ = Phase::kResponding;
    } else {
      phase_ = Phase::kWaiting;
    }
    target.send_body(invocation_, parser_.take_body(), true);
  } else {
    invocation_->body = parser_.take_body();
    invocation_->started = SteadyClock::now();
    invocation_->sink = shared_from_this();
    phase_ = Phase::kWaiting;
    target.submit(invocation_);
  }
  if (watch_disconnect_ && (phase_ == Phase::kWaiting || phase_ == Phase::kResponding) &&
      input_pos_ == input_.size()) {
    read();
  }
}

namespace {

// The function's own Content-Length, when it gave a valid one.
std::optional<uint64_t> declared_length(const frame::ResponseHead& head) {
  for (const auto& [name, value] : head.headers) {
    if (name.size() != 14 || strncasecmp(name.c_str(), "content-length", 14) != 0) continue;
    if (value.empty() || value.size() > 18) return std::nullopt;
    uint64_t length = 0;
    for (char c : value) {
      if (c < '0' || c > '9') return std::nullopt;
      length = length * 10 + static_cast<uint64_t>(c - '0');
    }
    return length;
  }
  return std::nullopt;
}

}  // namespace

bool Connection::rest_of_body_droppable() const {
  // Known to be short, or chunked (then bounded as it comes). Not for a
  // client that waits for "100 Continue": it may send the body or not.
  std::optional<uint64_t> length = parser_.content_length();
  uint64_t received = body_received_ + parser_.body_size();
  return !continue_deferred_ && (length ? *length - received <= kMaxDiscardedBody : parser_.chunked());
}

void Connection::on_response_head(const frame::ResponseHead& head, std::string_view body, bool end) {
  if (phase_ == Phase::kBody) {
    // The function answered before reading the whole body.
    if (streaming_body_ && !end && invocation_ && target_ && !continue_deferred_) {
      // An app streaming its answer while it still reads its body (an echo
      // of an upload, or a start before the read): both go on at once, as
      // under uvicorn. The head promises keep-alive: the body is most likely
      // read by the response's end, and if it is not, end_duplex() drops the
      // rest or closes the connection after the response.
      duplex_ = true;
      deadline_ = SteadyClock::time_point::max();
    } else {
      // The rest is read and dropped after the response if it can be
      // (rest_of_body_droppable()), so that the connection lives on; else
      // the head says that the connection closes after the response.
      discard_body_ = rest_of_body_droppable();
      if (!discard_body_) keep_alive_ = false;
      if (streaming_body_ && !end && invocation_ && target_) {
        // The client holds its body back until "100 Continue", which cannot
        // follow a final response: the app is told that no body comes
        // (receive() says http.disconnect) rather than left waiting.
        log::info("{} {} {}: the function started its response before asking for the body its client holds "
                  "back (Expect: 100-continue); the body is not read",
                  function_, parser_.method(), parser_.target());
        target_->input_closed(invocation_);
      }
      phase_ = Phase::kResponding;
    }
  } else if (phase_ != Phase::kWaiting) {
    return;
  } else {
    phase_ = Phase::kResponding;
  }
  response_status_ = head.status;
  body_buffered_ = body.size();  // counted whether or not it goes on the wire (HEAD)
  // Connection headers are coil's to write, but a function asking for the
  // connection to close (to make its client reconnect) is obeyed.
  for (const auto& [name, value] : head.headers) {
    if (ascii::iequals(name, "connection") && ascii::icontains(value, "close")) keep_alive_ = false;
  }
  // Framing is coil's decision: a complete response gets its exact length; a
  // streamed one keeps the length the function declared (and is cut off if
  // the function breaks it), or else is chunked (HTTP/1.1) or ends with the
  // connection (HTTP/1.0).
  BodyFraming framing = BodyFraming::kContentLength;
  uint64_t length = body.size();
  std::optional<uint64_t> declared = declared_length(head);
  response_remaining_.reset();
  if (body_forbidden(head.status)) {
    framing = BodyFraming::kNone;
  } else if (head.status == 205) {
    length = 0;
  } else if (head_request_ && declared) {
    length = *declared;
  } else if (!end && declared) {
    length = *declared;
    response_remaining_ = *declared;
    response_declared_ = *declared;
    response_overflowed_ = false;
  } else if (!end) {
    if (parser_.version() >= 11) {
      framing = BodyFraming::kChunked;
      response_chunked_ = true;
    } else {
      framing = BodyFraming::kUntilClose;
      response_until_close_ = true;
      keep_alive_ = false;
    }
  }
  if (end && declared && *declared != body.size() && framing == BodyFraming::kContentLength &&
      head.status != 205 && !head_request_) {
    // A complete response is sent with its real length; the app's mistake is
    // named (uvicorn raises it in the app).
    log::info("{} {} {}: the function's content-length ({}) is not its body's length ({}); sent with {}",
              function_, parser_.method(), parser_.target(), *declared, body.size(), body.size());
  }
  append_head(output_, head.status, head.headers, framing, length, keep_alive_, parser_.version() < 11);
  if (head_request_ || body_dropped(head.status)) {
    // no body bytes on the wire
  } else if (response_chunked_) {
    append_chunk(output_, body);
  } else {
    append_counted(body);
  }
  if (end) {
    if (response_chunked_ && !head_request_) append_last_chunk(output_);
    response_complete_ = true;
    check_declared_length();
  }
  flush();
}

void Connection::end_duplex() {
  // A response that ends before its body: the rest is dropped if it can be;
  // else the connection closes after the response, although its head did not
  // say so (a server may close after any response: RFC 9112 9.6).
  duplex_ = false;
  discard_body_ = keep_alive_ && rest_of_body_droppable();
  if (!discard_body_) keep_alive_ = false;
  phase_ = Phase::kResponding;
}

bool Connection::client_too_slow() {
  if (unsent_bytes() <= kMaxUnsentResponse) return false;
  log::info("{} {} {}: the client left {} bytes of the response unread; aborting it", function_,
            parser_.method(), parser_.target(), unsent_bytes());
  close();  // abandons the invocation: the function is told its client left
  return true;
}

void Connection::on_response_body(std::string_view body, bool end) {
  if (phase_ != Phase::kResponding && !duplex_) return;
  if (client_too_slow()) return;
  body_buffered_ += body.size();
  if (!head_request_ && !body_dropped(response_status_)) {
    if (response_chunked_) {
      append_chunk(output_, body);
      if (end) append_last_chunk(output_);
    } else {
      append_counted(body);
    }
  }
  if (end) {
    response_complete_ = true;
    check_declared_length();
    if (duplex_) end_duplex();
  }
  flush();
}

void Connection::append_counted(std::string_view body) {
  if (response_remaining_) {
    if (body.size() > *response_remaining_) {
      body = body.substr(0, *response_remaining_);
      keep_alive_ = false;  // the function sent more than it declared: the rest is dropped
      if (!response_overflowed_) {
        response_overflowed_ = true;
        log::info("{} {} {}: the function sent more body than its content-length ({}); the rest is dropped",
                  function_, parser_.method(), parser_.target(), response_declared_);
      }
    }
    *response_remaining_ -= body.size();
  }
  output_.append(body);
}

void Connection::check_declared_length() {
  // A declared length that the body fell short of cannot be completed
  // honestly: the connection closes, and the client sees a short body.
  if (response_remaining_ && *response_remaining_ > 0) {
    keep_alive_ = false;
    log::info("{} {} {}: the function's body ended {} bytes short of its content-length ({}); the connection "
              "closes",
              function_, parser_.method(), parser_.target(), *response_remaining_, response_declared_);
  }
}

void Connection::on_failure(uint16_t status, const std::string& message) {
  if (duplex_) end_duplex();  // the head is out: the response is aborted below
  if (phase_ == Phase::kWaiting || phase_ == Phase::kBody || phase_ == Phase::kHead) {
    // Before the whole request was read (a streamed body), the rest of it
    // will not be: close after answering.
    bool close_after = phase_ != Phase::kWaiting;
    invocation_.reset();
    respond_error(status, message, close_after, status == 503 ? "retry-after: 1\r\n" : "");
    return;
  }
  if (phase_ == Phase::kResponding) {
    // The head is out: the only honest signal left is to cut the connection.
    log::info("{} {} {}: response aborted: {}", function_, parser_.method(), parser_.target(),
              std::string_view(message).substr(0, message.find('\n')));
    invocation_.reset();
    keep_alive_ = false;
    close_after_write_ = true;
    response_complete_ = true;
    flush();
  }
}

void Connection::on_ended_for_closed_client() {
  // What was written stays written; the access line says what was sent, or
  // 499 (see close()).
  invocation_.reset();
  if (duplex_) end_duplex();
  if (phase_ == Phase::kResponding) log_access(response_status_);
  else if (phase_ == Phase::kWaiting) log_access(kClientClosedRequest);
  close();
}

void Connection::respond_error(uint16_t status, std::string_view message, bool close_after,
                               std::string_view extra_headers, std::string_view content_type) {
  if (invocation_ && invocation_->sink) {
    // Already submitted (a streamed body that went wrong): the function
    // learns that the client is gone.
    target_->abandon(invocation_);
    invocation_.reset();
  }
  response_status_ = status;
  if (close_after) keep_alive_ = false;
  std::string body(message);
  if (body.empty() || body.back() != '\n') body.push_back('\n');
  append_text_response(output_, status, body, keep_alive_, !head_request_, extra_headers,
                       parser_.head_done() && parser_.version() < 11, content_type);
  phase_ = Phase::kResponding;
  response_complete_ = true;
  if (request_started_ == SteadyClock::time_point{}) request_started_ = SteadyClock::now();
  flush();
}

void Connection::write(std::string_view data) {
  output_.append(data);
  flush();
}

void Connection::flush() {
  if (write_in_progress_ || phase_ == Phase::kClosed) return;
  if (output_.empty()) {
    report_drained(std::exchange(body_buffered_, 0));  // body that does not go on the wire (HEAD)
    on_written();
    return;
  }
  writing_.swap(output_);
  output_.clear();
  written_ = 0;
  body_writing_ = std::exchange(body_buffered_, 0);
  write_in_progress_ = true;
  write_progress_ = SteadyClock::now();
  write_more();
}

// One async_write_some after another, rather than one async_write: each
// step that moves bytes counts as progress for check_deadline(), so a slow
// client that keeps reading is not taken for one that stopped.
void Connection::write_more() {
  socket_.async_write_some(boost::asio::buffer(writing_.data() + written_, writing_.size() - written_),
                           [self = shared_from_this()](boost::system::error_code ec, size_t n) {
                             if (ec) {
                               self->write_in_progress_ = false;
                               self->writing_.clear();
                               self->written_ = 0;
                               self->close();
                               return;
                             }
                             self->written_ += n;
                             self->write_progress_ = SteadyClock::now();
                             if (self->written_ < self->writing_.size()) {
                               self->write_more();
                               return;
                             }
                             self->write_in_progress_ = false;
                             self->writing_.clear();
                             self->written_ = 0;
                             self->report_drained(std::exchange(self->body_writing_, 0));
                             // Writes what came meanwhile; with nothing to write, reports
                             // body that never goes on the wire (HEAD) and finishes.
                             self->flush();
                           });
}

void Connection::on_body_wanted() {
  if (!continue_deferred_ || phase_ != Phase::kBody) return;
  continue_deferred_ = false;
  deadline_ = SteadyClock::now() + server_->options().header_timeout;
  write("HTTP/1.1 100 Continue\r\n\r\n");
}

void Connection::on_messages_taken(uint64_t bytes) {
  body_untaken_ -= std::min(bytes, body_untaken_);
  if (!body_paused_ || body_untaken_ > kBodyWindow || phase_ != Phase::kBody) return;
  body_paused_ = false;
  // The pause was the app's: the client's body deadline starts afresh.
  body_checkpoint_ = body_received_;
  if (!duplex_) deadline_ = SteadyClock::now() + server_->options().header_timeout;
  process();
}

void Connection::report_drained(uint64_t bytes) {
  if (bytes == 0 || !invocation_ || response_complete_ || (phase_ != Phase::kResponding && !duplex_)) return;
  target_->response_drained(invocation_, bytes, unsent_bytes());
}

void Connection::on_written() {
  if (phase_ == Phase::kResponding && response_complete_) {
    finish_response(response_status_);
  } else if (close_after_write_) {
    linger();
  }
}

void Connection::finish_response(uint16_t status) {
  log_access(status);
  if (invocation_) {
    invocation_.reset();
  }
  request_started_ = {};
  head_request_ = false;
  duplex_ = false;
  if (discard_body_ && keep_alive_ && !close_after_write_ && !response_until_close_) {
    // The rest of the body goes where the function's would have: nowhere.
    phase_ = Phase::kBody;
    body_paused_ = false;
    deadline_ = SteadyClock::now() + server_->options().header_timeout;
    body_checkpoint_ = 0;
    body_received_ = 0;
    process();
    return;
  }
  discard_body_ = false;
  next_request();
}

void Connection::next_request() {
  if (!keep_alive_ || close_after_write_ || response_until_close_) {
    linger();
    return;
  }
  parser_.reset();
  phase_ = Phase::kIdle;
  deadline_ = SteadyClock::now() + server_->options().keepalive_timeout;
  if (input_pos_ < input_.size()) {
    // A pipelined request is already here.
    phase_ = Phase::kHead;
    deadline_ = SteadyClock::now() + server_->options().header_timeout;
    process();
  } else {
    input_.clear();
    input_pos_ = 0;
    read();
  }
}

void Connection::log_access(uint16_t status) {
  log::access(function_, parser_.method(), parser_.target(), status, SteadyClock::now() - request_started_);
}

void Connection::check_deadline(SteadyClock::time_point now) {
  if (write_in_progress_ && now - write_progress_ >= server_->options().header_timeout) {
    log::info("{} {} {}: the client read nothing for {} ms; closing", function_, parser_.method(),
              parser_.target(), server_->options().header_timeout.count());
    close();
    return;
  }
  if (now < deadline_) return;
  switch (phase_) {
    case Phase::kIdle:
    case Phase::kLingering:
      close();
      break;
    case Phase::kHead:
    case Phase::kBody:
      if (discard_body_) {
        close();  // the client stopped sending a body whose response it has
      } else {
        respond_error(408, "request timeout", true);
      }
      break;
    default:
      break;
  }
}

void Connection::drain() {
  if (phase_ == Phase::kIdle) {
    close();
    return;
  }
  keep_alive_ = false;
}

void Connection::linger() {
  if (phase_ == Phase::kClosed || phase_ == Phase::kLingering) return;
  phase_ = Phase::kLingering;
  deadline_ = SteadyClock::now() + kLingerTime;
  boost::system::error_code ignored;
  socket_.shutdown(boost::asio::ip::tcp::socket::shutdown_send, ignored);
  read();
}

void Connection::on_read_closed() {
  read_closed_ = true;
  if (phase_ == Phase::kWaiting || phase_ == Phase::kResponding) {
    keep_alive_ = false;  // the response is the last; read() ends the connection after it
    // It may have left, or only half-closed: the target may tell the app,
    // and the response still goes.
    if (invocation_ && target_) target_->input_closed(invocation_);
    return;
  }
  close();
}

void Connection::close() {
  if (phase_ == Phase::kClosed) return;
  bool responding = phase_ == Phase::kResponding || duplex_;
  phase_ = Phase::kClosed;
  if (invocation_ && server_ != nullptr) {
    // A request that never got its whole answer still has its access line:
    // the status sent, or 499 (nginx's "client closed request") if none was.
    log_access(responding ? response_status_ : kClientClosedRequest);
    target_->abandon(invocation_);
    invocation_.reset();
  }
  boost::system::error_code ignored;
  socket_.close(ignored);
}

}  // namespace coil::http
