#include "python/page_hints.h"
#include "python/codec.h"

#include <cstring>
#include <string>
#include <string_view>

#include "protocol/frame.h"

namespace coil::python {
namespace {

PyObject* bytes_of(std::string_view s) { return PyBytes_FromStringAndSize(s.data(), static_cast<Py_ssize_t>(s.size())); }
PyObject* str_of(const std::string& s) {
  return PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "surrogateescape");
}

PyObject* headers_list(const std::vector<frame::Header>& headers) {
  PyObject* list = PyList_New(static_cast<Py_ssize_t>(headers.size()));
  if (list == nullptr) return nullptr;
  for (size_t i = 0; i < headers.size(); ++i) {
    PyObject* pair = Py_BuildValue("(y#y#)", headers[i].first.data(), static_cast<Py_ssize_t>(headers[i].first.size()),
                                   headers[i].second.data(), static_cast<Py_ssize_t>(headers[i].second.size()));
    if (pair == nullptr) {
      Py_DECREF(list);
      return nullptr;
    }
    PyList_SET_ITEM(list, static_cast<Py_ssize_t>(i), pair);
  }
  return list;
}

PyObject* frame_tuple(const frame::Frame& f) {
  switch (f.type) {
    case frame::Type::kRequestHead: {
      frame::RequestHead head;
      std::string_view body;
      if (!frame::decode_request_head(f.payload, head, body)) {
        PyErr_SetString(PyExc_ValueError, "truncated request head frame");
        return nullptr;
      }
      PyObject* headers = headers_list(head.headers);
      if (headers == nullptr) return nullptr;
      // Text fields may hold any bytes a client sent (a percent-decoded path,
      // a Host header): decoded with surrogateescape, they never fail.
      return Py_BuildValue("(iIONNNNNNNNNNN)", static_cast<int>(f.type), f.stream, f.end() ? Py_True : Py_False,
                           str_of(head.method), bytes_of(head.target), str_of(head.version), str_of(head.scheme),
                           str_of(head.client), str_of(head.server), str_of(head.host), str_of(head.route),
                           str_of(head.path_info), headers, bytes_of(body));
    }
    case frame::Type::kRequestBody:
      return Py_BuildValue("(iIONO)", static_cast<int>(f.type), f.stream, f.end() ? Py_True : Py_False,
                           bytes_of(f.payload), (f.flags & frame::kFlagText) ? Py_True : Py_False);
    case frame::Type::kWsClose: {
      uint16_t code = 1005;
      std::string reason;
      if (!frame::decode_ws_close(f.payload, code, reason)) code = 1005;  // no status received
      return Py_BuildValue("(iIiN)", static_cast<int>(f.type), f.stream, static_cast<int>(code), str_of(reason));
    }
    case frame::Type::kCancel:
      return Py_BuildValue("(iIy#)", static_cast<int>(f.type), f.stream, f.payload.data(),
                           static_cast<Py_ssize_t>(f.payload.size()));
    default:
      return Py_BuildValue("(iI)", static_cast<int>(f.type), f.stream);
  }
}

PyObject* decode(PyObject*, PyObject* arg) {
  if (!PyByteArray_Check(arg)) {
    PyErr_SetString(PyExc_TypeError, "decode() takes a bytearray");
    return nullptr;
  }
  std::string_view data(PyByteArray_AS_STRING(arg), static_cast<size_t>(PyByteArray_GET_SIZE(arg)));
  PyObject* frames = PyList_New(0);
  if (frames == nullptr) return nullptr;
  size_t consumed = 0;
  while (data.size() - consumed >= frame::kHeaderSize) {
    const char* p = data.data() + consumed;
    const auto* u = reinterpret_cast<const unsigned char*>(p);
    uint32_t length = uint32_t{u[0]} | uint32_t{u[1]} << 8 | uint32_t{u[2]} << 16 | uint32_t{u[3]} << 24;
    if (length > frame::kMaxPayload || u[4] < 1 || u[4] > static_cast<uint8_t>(frame::Type::kWsClose)) {
      Py_DECREF(frames);
      PyErr_SetString(PyExc_ValueError, "corrupt frame stream");
      return nullptr;
    }
    if (data.size() - consumed < frame::kHeaderSize + length) break;
    frame::Frame f{static_cast<frame::Type>(u[4]), u[5],
                   uint32_t{u[8]} | uint32_t{u[9]} << 8 | uint32_t{u[10]} << 16 | uint32_t{u[11]} << 24,
                   std::string_view(p + frame::kHeaderSize, length)};
    consumed += frame::kHeaderSize + length;
    PyObject* item = frame_tuple(f);
    if (item == nullptr || PyList_Append(frames, item) != 0) {
      Py_XDECREF(item);
      Py_DECREF(frames);
      return nullptr;
    }
    Py_DECREF(item);
  }
  return Py_BuildValue("(Nn)", frames, static_cast<Py_ssize_t>(consumed));
}

// Appends `data` to the bytearray `out`.
bool append_to(PyObject* out, std::string_view data) {
  Py_ssize_t size = PyByteArray_GET_SIZE(out);
  if (PyByteArray_Resize(out, size + static_cast<Py_ssize_t>(data.size())) != 0) return false;
  std::memcpy(PyByteArray_AS_STRING(out) + size, data.data(), data.size());
  return true;
}

bool buffer_view(PyObject* obj, Py_buffer& view) { return PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) == 0; }

PyObject* put_response(PyObject*, PyObject* args) {
  PyObject *out, *headers, *body;
  unsigned int stream;
  int status, end;
  if (!PyArg_ParseTuple(args, "YIiOOp", &out, &stream, &status, &headers, &body, &end)) return nullptr;
  if (status < 100 || status > 599) {
    PyErr_Format(PyExc_ValueError, "status %d is not in 100-599", status);
    return nullptr;
  }
  frame::ResponseHead head;
  head.status = static_cast<uint16_t>(status);
  PyObject* iterator = PyObject_GetIter(headers);
  if (iterator == nullptr) return nullptr;
  while (PyObject* pair = PyIter_Next(iterator)) {
    PyObject* seq = PySequence_Fast(pair, "a header must be a (name, value) pair");
    Py_DECREF(pair);
    if (seq == nullptr || PySequence_Fast_GET_SIZE(seq) != 2) {
      if (seq != nullptr) PyErr_SetString(PyExc_ValueError, "a header must be a (name, value) pair");
      Py_XDECREF(seq);
      Py_DECREF(iterator);
      return nullptr;
    }
    Py_buffer name, value;
    if (!buffer_view(PySequence_Fast_GET_ITEM(seq, 0), name)) {
      Py_DECREF(seq);
      Py_DECREF(iterator);
      return nullptr;
    }
    if (!buffer_view(PySequence_Fast_GET_ITEM(seq, 1), value)) {
      PyBuffer_Release(&name);
      Py_DECREF(seq);
      Py_DECREF(iterator);
      return nullptr;
    }
    head.headers.emplace_back(std::string(static_cast<const char*>(name.buf), static_cast<size_t>(name.len)),
                              std::string(static_cast<const char*>(value.buf), static_cast<size_t>(value.len)));
    PyBuffer_Release(&name);
    PyBuffer_Release(&value);
    Py_DECREF(seq);
  }
  Py_DECREF(iterator);
  if (PyErr_Occurred()) return nullptr;
  if (frame::encoded_size(head.headers) > frame::kMaxResponseHead) {
    PyErr_Format(PyExc_ValueError, "response headers larger than %zu bytes", frame::kMaxResponseHead);
    return nullptr;
  }
  Py_buffer body_view;
  if (!buffer_view(body, body_view)) return nullptr;
  std::string encoded;
  frame::append_response(encoded, stream, head,
                         std::string_view(static_cast<const char*>(body_view.buf), static_cast<size_t>(body_view.len)),
                         end != 0);
  PyBuffer_Release(&body_view);
  if (!append_to(out, encoded)) return nullptr;
  Py_RETURN_NONE;
}

PyObject* put_body(PyObject*, PyObject* args) {
  PyObject *out, *body;
  unsigned int stream;
  int end;
  if (!PyArg_ParseTuple(args, "YIOp", &out, &stream, &body, &end)) return nullptr;
  Py_buffer view;
  if (!buffer_view(body, view)) return nullptr;
  std::string encoded;
  frame::append_body(encoded, frame::Type::kResponseBody, stream,
                     std::string_view(static_cast<const char*>(view.buf), static_cast<size_t>(view.len)), end != 0);
  PyBuffer_Release(&view);
  if (!append_to(out, encoded)) return nullptr;
  Py_RETURN_NONE;
}

PyObject* put_frame(PyObject*, PyObject* args) {
  PyObject* out;
  int type;
  unsigned int stream;
  const char* payload;
  Py_ssize_t payload_size;
  if (!PyArg_ParseTuple(args, "YiIs#", &out, &type, &stream, &payload, &payload_size)) return nullptr;
  std::string encoded;
  frame::append(encoded, static_cast<frame::Type>(type), frame::kFlagEnd, stream,
                std::string_view(payload, static_cast<size_t>(payload_size)));
  if (!append_to(out, encoded)) return nullptr;
  Py_RETURN_NONE;
}

PyObject* put_ws_message(PyObject*, PyObject* args) {
  PyObject *out, *data;
  unsigned int stream;
  int text;
  if (!PyArg_ParseTuple(args, "YIOp", &out, &stream, &data, &text)) return nullptr;
  Py_buffer view;
  if (!buffer_view(data, view)) return nullptr;
  std::string_view message(static_cast<const char*>(view.buf), static_cast<size_t>(view.len));
  bool ok = true;
  if (message.size() > frame::kMaxPayload - 64) {
    PyErr_SetString(PyExc_ValueError, "WebSocket message larger than 1 MiB");
    ok = false;
  } else {
    std::string encoded;
    frame::append(encoded, frame::Type::kResponseBody, text ? frame::kFlagText : 0, stream, message);
    ok = append_to(out, encoded);
  }
  PyBuffer_Release(&view);
  if (!ok) return nullptr;
  Py_RETURN_NONE;
}

PyObject* put_ws_close(PyObject*, PyObject* args) {
  PyObject* out;
  unsigned int stream;
  int code;
  const char* reason;
  Py_ssize_t reason_size;
  if (!PyArg_ParseTuple(args, "YIis#", &out, &stream, &code, &reason, &reason_size)) return nullptr;
  std::string encoded;
  frame::append_ws_close(encoded, stream, static_cast<uint16_t>(code),
                         std::string_view(reason, static_cast<size_t>(reason_size)));
  if (!append_to(out, encoded)) return nullptr;
  Py_RETURN_NONE;
}

PyObject* first_request_report(PyObject*, PyObject*) {
  std::string report = page_hints::first_request_report();
  return PyBytes_FromStringAndSize(report.data(), static_cast<Py_ssize_t>(report.size()));
}

PyMethodDef kCodecMethods[] = {
    {"first_request_report", first_request_report, METH_NOARGS,
     "The pages this instance's first request copied (see src/python/page_hints.h), as bytes."},
    {"put_ws_message", put_ws_message, METH_VARARGS, "Append a WebSocket message frame to a bytearray."},
    {"put_ws_close", put_ws_close, METH_VARARGS, "Append a WebSocket close frame to a bytearray."},
    {"decode", decode, METH_O, "Parse the complete frames at the start of a bytearray."},
    {"put_response", put_response, METH_VARARGS, "Append a response head (and body) to a bytearray."},
    {"put_body", put_body, METH_VARARGS, "Append response body frames to a bytearray."},
    {"put_frame", put_frame, METH_VARARGS, "Append one frame with END set to a bytearray."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

PyMethodDef* codec_methods() { return kCodecMethods; }

}  // namespace coil::python
