// An invocation: one request on its way through a function's pool, from the
// moment the front routed it until its response is complete or it failed.
//
// Ownership: the pool holds the invocation while it is queued or in flight;
// the front holds it while its connection waits. The invocation holds its
// ResponseSink (the connection) until it completes, then drops it, so a
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
};

class Instance;

struct Invocation {
  enum class State { kQueued, kDispatched, kResponding, kDone };

  uint32_t id = 0;
  frame::RequestHead head;
  std::string body;
  Clock::time_point started;
  Clock::time_point deadline;
  State state = State::kQueued;
  std::shared_ptr<ResponseSink> sink;  // dropped when done
  Instance* instance = nullptr;        // while dispatched/responding
  // Position in the pool's deadline-ordered list of unanswered invocations,
  // valid while `live` is true.
  std::list<std::shared_ptr<Invocation>>::iterator live_position;
  bool live = false;
};

}  // namespace coil::runtime
