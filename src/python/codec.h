// The frame codec exposed to Python as functions of the `_coil` module, for
// instance loops written in Python (the ASGI server, python/coil/_asgi.py).
//
//   _coil.decode(buffer: bytearray, state: dict, root_path_in_path: bool)
//       -> (frames: list, consumed: int)
//       Parses the complete frames at the start of `buffer`. Each frame is a
//       tuple whose first two items are (type, stream):
//         (1, stream, end, scope: dict, body: bytes)   a request head: its
//             complete ASGI scope, "http" or "websocket" (HTTP/WebSocket spec
//             2.3), with a copy of `state` (the lifespan state); root_path is
//             the part of the path a "/x/..." route matched (head.prefix),
//             which `path` keeps unless root_path_in_path is false
//             (Starlette < 0.33)
//         (2, stream, end, body: bytes, text: bool, more: bool)   request body, or
//             a WebSocket message (or a part of one: more, see frame.h)
//         (9, stream, code: int, reason: str)  WebSocket closed by the client
//         (5, stream, reason: bytes)           cancel (b"disconnect" or b"timeout")
//         (11, stream, bytes: int)             the client took that much more of
//             the stream's response body (flow control, see frame.h)
//       Raises ValueError on a corrupt stream.
//   _coil.put_response(out: bytearray, stream, status, headers, body, end)
//       headers: an iterable of (bytes-like, bytes-like) pairs.
//   _coil.put_body(out: bytearray, stream, body, end)
//   _coil.put_frame(out: bytearray, type, stream, payload)   (flags = END)
//   _coil.put_ws_message(out: bytearray, stream, data, text: bool)
//   _coil.put_ws_close(out: bytearray, stream, code, reason: str)
//   _coil.dict_version(d: dict) -> int   changes whenever `d` does (PEP 509)
#pragma once

#include <Python.h>

#include <cstdint>

namespace coil::python {

// The codec's entries of the _coil method table (terminated by a null entry).
PyMethodDef* codec_methods();

// Makes the Python objects every ASGI scope shares (the interned keys, the
// prototype scopes, the common values) now: called where _coil is created,
// in each template's interpreter (and the zygote's), so that every instance
// inherits them instead of making its own on its first request. False, with a Python error set,
// when out of memory.
bool prepare_codec();

// What _coil.put_response and _coil.put_body do, for C callers (the ASGI
// exchange, exchange.h): append a response frame (a head with `body` as its
// first part; or a body part) to the bytearray `out`. `status` must be an int
// in 100-599, `headers` an iterable of (bytes-like, bytes-like) pairs, `body`
// bytes-like. `body_size` gets the body's length in bytes. False, with a
// Python error set, when an argument is invalid or memory is out.
bool append_response_frame(PyObject* out, uint32_t stream, PyObject* status, PyObject* headers, PyObject* body,
                           bool end, Py_ssize_t& body_size);
bool append_body_frame(PyObject* out, uint32_t stream, PyObject* body, bool end, Py_ssize_t& body_size);

// What _coil.encode_head does: `status` and `headers` (as above) encoded as a
// response head's fields (frame::encode_response_head), a new bytes object;
// nullptr, with a Python error set, when they are not valid. The ASGI
// exchange encodes its head at http.response.start, as uvicorn does: the app
// hears of a mistake there, and what it changes in its headers afterwards
// does not go out.
PyObject* encode_response_head(PyObject* status, PyObject* headers);
// A response frame from such an encoded head (bytes) and `body`'s first part.
bool append_encoded_response_frame(PyObject* out, uint32_t stream, PyObject* head, PyObject* body, bool end,
                                   Py_ssize_t& body_size);

}  // namespace coil::python
