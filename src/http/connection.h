// Connection: one client connection of the HTTP front, from accept to close.
//
// Requests on a connection are handled one at a time, in order (pipelined
// requests wait in the input buffer until the response before them is
// written), so responses can never be reordered. The connection is the
// ResponseSink of the invocation it waits for.
//
// Deadlines (checked by the server's sweep, see check_deadline()):
//   idle between requests:  keepalive timeout, then closed silently;
//   reading a request head: header timeout from its first byte, then 408 —
//     a client trickling bytes cannot extend it;
//   reading a body:         the body must progress by kBodyProgress bytes
//     (or finish) within each header-timeout window, else 408 (or, for a
//     body dropped after its response, see kMaxDiscardedBody, a silent close);
//     not while the response streams beside it (duplex_: the app's
//     stream_idle_timeout_ms bounds the exchange then);
//   writing a response:     each write must complete within the header
//     timeout, else the connection closes (a client that stopped reading).
//
// A read EOF (the client shut down its sending side) after a complete request
// only means that no more requests come (RFC 9112 9.6): the requests already
// received are answered, then the connection closes. Idle or in the middle
// of a request, it ends the connection. A half-close and a full close look
// the same from here: the target hears of it (input_closed(): an ASGI app gets
// http.disconnect, as under uvicorn), and the response still goes; only a
// failed write (or a reset) shows that the client is gone.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "http/request_parser.h"
#include "runtime/invocation.h"
#include "runtime/invocation_target.h"

namespace coil::http {

class Server;

class Connection : public runtime::ResponseSink, public std::enable_shared_from_this<Connection> {
 public:
  static constexpr size_t kBodyProgress = 64 * 1024;
  // A streamed body (ASGI) runs at most this far ahead of what its app has
  // taken (on_messages_taken): past it the client is not read, so that an
  // app not reading yet (busy, or checking something first) does not make
  // its instance hold every upload in memory. Meanwhile the body deadline
  // does not run: the wait is the app's, bounded by its timeout_ms.
  static constexpr uint64_t kBodyWindow = 1 << 20;
  // While a response is awaited, input beyond this is not read (backpressure
  // on pipelining clients).
  static constexpr size_t kMaxBuffered = 64 * 1024;
  // Response bytes a client may leave unread before its response is aborted
  // and the connection closed. Flow control (frame.h) keeps a function's
  // response well under it; this is the bound for one that ignores it.
  static constexpr size_t kMaxUnsentResponse = 8 * 1024 * 1024;
  // The access-log status of a request whose client left before any answer.
  static constexpr uint16_t kClientClosedRequest = 499;
  // A function that answers before it has read the whole body: after the
  // response, at most this much more of the request is read and dropped, so
  // that the connection serves the client's next request (as uvicorn and
  // nginx do). A Content-Length rest longer than this gets "Connection:
  // close" instead; a chunked one, whose length is unknown when the response
  // goes with keep-alive, ends the connection when it passes this bound
  // (framing included).
  static constexpr uint64_t kMaxDiscardedBody = 1 << 20;

  Connection(Server& server, boost::asio::ip::tcp::socket socket);
  ~Connection() override;

  void start();
  // Enforces the deadline of the current phase (see above).
  void check_deadline(std::chrono::steady_clock::time_point now);
  // Closes at once if idle; otherwise after the current response.
  void drain();
  // The server is being destroyed: forget it (pending Asio handlers may
  // outlive it until the io_context goes).
  void orphan() { server_ = nullptr; }
  // True while a request is being answered or a response is being written.
  bool busy() const {
    return write_in_progress_ || duplex_ || phase_ == Phase::kWaiting || phase_ == Phase::kResponding;
  }

  // runtime::ResponseSink
  void on_response_head(const frame::ResponseHead& head, std::string_view body, bool end) override;
  void on_response_body(std::string_view body, bool end) override;
  void on_failure(uint16_t status, const std::string& message) override;
  void on_ended_for_closed_client() override;

 private:
  // kLingering: the last response is written and our side shut down; input
  // is read and discarded until the client closes (or a short deadline), so
  // that closing with unread input does not reset the connection and destroy
  // the response before the client reads it (RFC 9112, section 9.6).
  enum class Phase { kIdle, kHead, kBody, kWaiting, kResponding, kLingering, kClosed };

  void read();
  void process();
  bool on_head();
  static bool asks_for_websocket(const frame::RequestHead& head);
  bool upgrade_to_websocket();
  void on_request();
  // The response is complete while the body is still being read: the rest
  // of the body is dropped after it, or the connection ends (see on_head).
  void end_duplex();
  // Whether the rest of a body whose response went first can be read and
  // dropped (kMaxDiscardedBody), so that the connection lives on.
  bool rest_of_body_droppable() const;
  void finish_response(uint16_t status);
  // After a response (and a discarded body): the next request, or the end.
  void next_request();
  void respond_error(uint16_t status, std::string_view message, bool close_after,
                     std::string_view extra_headers = {},
                     std::string_view content_type = "text/plain; charset=utf-8");
  void write(std::string_view data);
  void append_counted(std::string_view body);
  void check_declared_length();
  // Aborts the response if the client leaves too much of it unread.
  bool client_too_slow();
  void flush();
  void write_more();
  void on_written();
  // Flow control: tells the target that `bytes` of the response body reached
  // the client, while the function may still be sending it.
  void report_drained(uint64_t bytes);
  size_t unsent_bytes() const override { return output_.size() + writing_.size() - written_; }
  void on_body_wanted() override;
  void on_messages_taken(uint64_t bytes) override;
  // The read side saw EOF: see the header comment.
  void on_read_closed();
  void close();
  void linger();
  void log_access(uint16_t status);

  Server* server_;  // null once the server is gone (see Server::~Server)
  boost::asio::ip::tcp::socket socket_;
  std::string client_;
  bool behind_proxy_ = false;  // the peer is a trusted proxy (http/forwarded.h)
  std::string local_;
  RequestParser parser_;
  Phase phase_ = Phase::kIdle;
  std::chrono::steady_clock::time_point deadline_;
  std::chrono::steady_clock::time_point request_started_;
  size_t body_checkpoint_ = 0;
  size_t body_received_ = 0;     // body bytes already handed on (streamed bodies), or dropped
  bool streaming_body_ = false;  // the function gets the body as it arrives (ASGI)
  bool watch_disconnect_ = false;  // keep reading while waiting, to see the client leave
  bool continue_deferred_ = false;  // "100 Continue" waits for the function to want the body
  uint64_t body_untaken_ = 0;  // streamed body bytes handed on that the app has not taken
  bool body_paused_ = false;   // reading stopped at kBodyWindow
  bool discard_body_ = false;  // the response went first: the rest of the body is dropped after it
  // Full duplex (ASGI): the response streams while the request body is still
  // read and passed on. phase_ stays kBody (the request side) until the body
  // ends (then kResponding) or the response ends (then the rest is dropped,
  // as for any body whose response went first). The client's body deadline
  // does not run meanwhile: the app's stream_idle_timeout_ms bounds the
  // exchange, as it bounds any stream.
  bool duplex_ = false;

  char read_buffer_[16 * 1024];
  std::string input_;
  size_t input_pos_ = 0;
  bool reading_ = false;
  bool read_closed_ = false;  // the client sends nothing more (read EOF)

  std::string output_;
  std::string writing_;
  bool write_in_progress_ = false;
  bool close_after_write_ = false;
  size_t written_ = 0;  // bytes of writing_ already on their way
  std::chrono::steady_clock::time_point write_progress_;  // when the write in progress last moved bytes
  uint64_t body_buffered_ = 0;  // response body bytes (as the function sent them) in output_
  uint64_t body_writing_ = 0;   // and in writing_

  // The request being served.
  std::shared_ptr<runtime::InvocationTarget> target_;  // set from the head until the connection ends
  std::string function_;
  std::shared_ptr<runtime::Invocation> invocation_;
  bool keep_alive_ = true;
  bool head_request_ = false;
  bool response_chunked_ = false;
  bool response_until_close_ = false;
  std::optional<uint64_t> response_remaining_;  // body bytes still due under a declared length
  uint64_t response_declared_ = 0;               // that declared length, for the log
  bool response_overflowed_ = false;             // the function sent more than it declared
  bool response_complete_ = false;
  uint16_t response_status_ = 0;
};

}  // namespace coil::http
