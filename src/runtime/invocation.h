// An invocation: one request on its way through a function's pool, from the
// moment the front routed it until its response is complete or it failed.
//
// Ownership: the pool holds the invocation while it is queued or in flight;
// the front holds it while its connection waits. The invocation holds its
// ResponseSink (the connection) until it is answered, then drops it, so a
// connection waiting for a response stays alive and the cycle is broken on
// completion. Single-threaded: everything runs on the host's event loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/frame.h"

namespace coil::runtime {

using Clock = std::chrono::steady_clock;

// Where a response goes. Calls arrive in order: one on_response_head, then
// on_response_body until `end`; or a single on_failure instead of both (if
// the head was already delivered, on_failure means: abort the response).
class ResponseSink {
 public:
  virtual ~ResponseSink() = default;
  virtual void on_response_head(const frame::ResponseHead& head, std::string_view body, bool end) = 0;
  virtual void on_response_body(std::string_view body, bool end) = 0;
  // A response the host makes itself (502, 503, 504...). `message` is the
  // plain-text body, written for the client.
  virtual void on_failure(uint16_t status, const std::string& message) = 0;
  // The function ended the stream unfinished after it was told that the
  // client closed its sending side (Invocation::input_closed): most likely
  // the client left, and the app stopped for it. Not the function's failure:
  // the exchange ends quietly (the connection closes).
  virtual void on_ended_for_closed_client() { on_failure(502, "response aborted"); }
  // WebSocket streams, once accepted (a 101 head): a message (or a part of
  // one, `more` parts following) from the application, and the application
  // closing the socket.
  virtual void on_websocket_message(std::string_view /*data*/, bool /*text*/, bool /*more*/) {}
  virtual void on_websocket_close(uint16_t /*code*/, const std::string& /*reason*/) {}
  // The application took `bytes` more of the client's input: WebSocket
  // messages, or a streamed request body (flow control toward the
  // application, frame.h).
  virtual void on_messages_taken(uint64_t /*bytes*/) {}
  // Response bytes given to the sink that its client has not taken yet.
  virtual size_t unsent_bytes() const { return 0; }
  // The function waits for the request body (a client waiting for
  // "100 Continue" may send it now).
  virtual void on_body_wanted() {}
};

class Instance;
class DeadlineQueue;

struct Invocation {
  enum class State { kQueued, kDispatched, kResponding, kDone };

  uint32_t id = 0;
  frame::RequestHead head;
  std::string body;            // body bytes not yet handed to an instance
  bool body_complete = true;   // false while the body still streams in
  bool websocket = false;      // a WebSocket session (head.scheme "ws" or "wss")
  Clock::time_point started;
  State state = State::kQueued;
  std::shared_ptr<ResponseSink> sink;  // set until the client has its answer
  Instance* instance = nullptr;        // while dispatched/responding
  bool cancel_sent = false;      // the instance was told to drop the stream
  bool disconnect_sent = false;  // an ASGI instance was told the client left (the app runs on)
  // The client closed its sending side (a FIN) while its request was in flight;
  // every instance the request is dispatched to is told (kInputClosed).
  bool input_closed = false;

  // Owned by the DeadlineQueue the invocation is in (at most one).
  Clock::time_point deadline;
  DeadlineQueue* deadline_queue = nullptr;
  std::list<std::shared_ptr<Invocation>>::iterator deadline_position;
};

// A FIFO of invocations whose deadlines are all "time of entry + one fixed
// span", hence in deadline order: the head is always the next to expire, so
// one timer serves the whole queue and entering or leaving costs O(1).
class DeadlineQueue {
 public:
  explicit DeadlineQueue(Clock::duration span) : span_(span) {}

  // Enters `invocation` (leaving any queue it was in) with deadline now + span.
  void push(const std::shared_ptr<Invocation>& invocation, Clock::time_point now) {
    remove(*invocation);
    invocation->deadline = now + span_;
    entries_.push_back(invocation);
    invocation->deadline_queue = this;
    invocation->deadline_position = std::prev(entries_.end());
  }
  // Removes `invocation` from whichever queue holds it.
  static void remove(Invocation& invocation) {
    if (DeadlineQueue* queue = invocation.deadline_queue) {
      queue->entries_.erase(invocation.deadline_position);
      invocation.deadline_queue = nullptr;
    }
  }
  bool empty() const { return entries_.empty(); }
  size_t size() const { return entries_.size(); }
  const std::shared_ptr<Invocation>& front() const { return entries_.front(); }
  auto begin() const { return entries_.begin(); }
  auto end() const { return entries_.end(); }

 private:
  Clock::duration span_;
  std::list<std::shared_ptr<Invocation>> entries_;
};

}  // namespace coil::runtime
