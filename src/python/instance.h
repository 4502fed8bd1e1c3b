// The instance loop: serves requests of one function over its instance
// socket, for the synchronous "handler" kind (one request at a time, in
// arrival order).
//
// Contract: runs in a process forked from a template, with the GIL held;
// never returns. Exits 0 when the host closes the socket, 1 if the stream is
// corrupt. Requests pipelined by the host are answered strictly in the order
// their heads arrived, and each answer is written before the next request
// starts: so the oldest unanswered request is always the one running, which
// is what lets the host kill the right one on a timeout and re-dispatch the
// requests queued behind it (they have not started). Many requests still
// arrive with one read.
#pragma once

#include <Python.h>

#include <string>

namespace coil::python {

[[noreturn]] void run_handler_instance(int socket, PyObject* invoke, const std::string& function);

}  // namespace coil::python
