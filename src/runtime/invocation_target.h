// InvocationTarget: what the HTTP front hands a routed request to — a
// function's pool, or one of the host's own endpoints (the control API of
// coil server). The front holds the target (shared) for as long as it has a
// request on it, so a target removed from routing meanwhile (a deleted
// function) still answers what it took.
//
// Contract: as FunctionPool's methods of the same names (function_pool.h);
// single-threaded, on the host's event loop.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/invocation.h"

namespace coil::runtime {

class InvocationTarget {
 public:
  virtual ~InvocationTarget() = default;
  // Who answers, for the access log ("hello", "control-api").
  virtual const std::string& name() const = 0;
  // Larger request bodies are refused with 413 before they are read.
  virtual uint64_t max_body_bytes() const = 0;
  // Whether requests are submitted as soon as their head is here, their body
  // following through send_body(), rather than once complete. Only such
  // targets are offered WebSocket upgrades.
  virtual bool streams_request_body() const = 0;
  // Takes a request. Always answers it eventually through its sink.
  virtual void submit(std::shared_ptr<Invocation> invocation) = 0;
  virtual void send_body(const std::shared_ptr<Invocation>& invocation, std::string_view chunk, bool end) = 0;
  virtual void send_websocket_message(const std::shared_ptr<Invocation>& /*invocation*/, std::string_view /*data*/,
                                      bool /*text*/) {}
  virtual void send_websocket_close(const std::shared_ptr<Invocation>& /*invocation*/, uint16_t /*code*/) {}
  // The client showed it is there without sending a message (a WebSocket
  // ping or pong): the stream is not idle.
  virtual void client_alive(const std::shared_ptr<Invocation>& /*invocation*/) {}
  // The client is gone: the invocation is forgotten.
  virtual void abandon(const std::shared_ptr<Invocation>& invocation) = 0;
  // The client closed its sending side (a FIN) while its request was in flight,
  // which it does when it leaves, and also when it only half-closes (RFC 9112
  // 9.6, `printf ... | nc -N`). The response still goes to it; a target may
  // tell the app (ASGI's http.disconnect).
  virtual void input_closed(const std::shared_ptr<Invocation>& /*invocation*/) {}
  // Flow control (see frame.h): `bytes` more of the response body given to
  // the invocation's sink reached its client, and `unsent` bytes of it wait
  // in the sink still. Called by the front as writes to the client complete,
  // while the response is not complete.
  virtual void response_drained(const std::shared_ptr<Invocation>& /*invocation*/, uint64_t /*bytes*/,
                                size_t /*unsent*/) {}

  // A request this target refuses from its head alone (the control API
  // without its key): the front answers it at once, reads no body, and
  // closes the connection.
  struct Refusal {
    uint16_t status = 0;
    std::string content_type;
    std::string body;
  };
  virtual std::optional<Refusal> screen(std::string_view /*target*/, const std::vector<frame::Header>& /*headers*/) {
    return std::nullopt;
  }
  // Whether the front keeps reading the connection while it waits for the
  // answer, to see the client leave (and abandon() the request): targets
  // whose answers can stream for long (ASGI, log following).
  virtual bool watches_disconnect() const { return streams_request_body(); }
};

}  // namespace coil::runtime
