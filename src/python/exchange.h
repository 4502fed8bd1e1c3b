// The per-request objects of the ASGI server (python/coil/_asgi.py) start
// as C types: a request's fields, its construction and the usual send() cost
// no Python bytecode. The Python classes derive from them and keep
// everything else (receive(), cancellation, the unusual messages).
//
//   _coil.StreamBase(server, stream)
//       What every stream has: server, stream (read-only), waiter, task
//       (objects, None when unset), disconnected, finished, running (bools).
//       Base of _Stream.
//   _coil.ExchangeBase(server, stream, body, end)
//       An HTTP request's stream, base of _Exchange. Adds chunks (a list: the
//       body parts not yet received, [body] to start with when body or end),
//       head (the encoded response head, bytes, from http.response.start
//       until it is written; see codec.h), room (objects), unsent,
//       body_taken (ints), body_done
//       (= end), started, head_sent, body_wanted, client_done, complete
//       (bools). server.out, the instance's output bytearray, and server.heads
//       (a list) are read once here.
//       .put(body, more)  Appends a response body part (the head with it
//           when it has not gone yet), counts it in unsent, ends the stream
//           when not more (finished, complete, self.wake() when a receive()
//           waits, self.drained(0) when send()s of other tasks wait for
//           room), then calls server.schedule_flush().
//       .put_head()  Appends the head alone; the stream goes on.
//       .head_waiting()  Joins server.heads, the responses started in this turn
//           of the loop whose head no body part took along yet; the first to join
//           has server.put_heads_soon() called (which writes, at the end of the
//           turn, the heads still waiting, each alone). http.response.start
//           does this.
//       The exchange called, exchange(message), is the app's send (a class
//           attribute _is_coroutine makes asyncio.iscoroutinefunction() take it;
//           message by position or as message=). Returns an awaitable that acts
//           when it is awaited, not when it is made, as a coroutine does (and
//           passes asyncio.iscoroutine(), so create_task() takes it; a step
//           while one runs, a second awaiter and one never awaited are
//           treated as for a coroutine): an http.response.start, or a body
//           part of bytes up to RESPONSE_SLICE, is taken here; any other
//           message, and every mistake of order it names, goes to the Python
//           coroutine self.send_slow_path(message), which the awaitable then
//           runs. A body part that leaves more than RESPONSE_WINDOW unsent
//           waits in self.wait_for_room().
//
//   _coil.RESPONSE_WINDOW, _coil.RESPONSE_SLICE: flow control of a response
//   body (src/protocol/frame.h): the bytes that may be on their way to a
//   stream's client before send() waits, and the slice a larger body goes in.
#pragma once

#include <Python.h>

namespace coil::python {

// Adds the types and constants above to the `_coil` module. False, with a
// Python error set, on failure.
bool add_exchange_types(PyObject* module);

}  // namespace coil::python
