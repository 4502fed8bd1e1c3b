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

// The interned keys and constant values of ASGI scopes, made once.
struct ScopeKeys {
  PyObject *type, *asgi, *http_version, *method, *scheme, *path, *raw_path, *query_string, *root_path, *headers,
      *client, *server, *state, *subprotocols, *http, *websocket, *asgi_versions;
};

const ScopeKeys* scope_keys() {
  static const ScopeKeys* keys = [] {
    auto* k = new ScopeKeys;
    k->type = PyUnicode_InternFromString("type");
    k->asgi = PyUnicode_InternFromString("asgi");
    k->http_version = PyUnicode_InternFromString("http_version");
    k->method = PyUnicode_InternFromString("method");
    k->scheme = PyUnicode_InternFromString("scheme");
    k->path = PyUnicode_InternFromString("path");
    k->raw_path = PyUnicode_InternFromString("raw_path");
    k->query_string = PyUnicode_InternFromString("query_string");
    k->root_path = PyUnicode_InternFromString("root_path");
    k->headers = PyUnicode_InternFromString("headers");
    k->client = PyUnicode_InternFromString("client");
    k->server = PyUnicode_InternFromString("server");
    k->state = PyUnicode_InternFromString("state");
    k->subprotocols = PyUnicode_InternFromString("subprotocols");
    k->http = PyUnicode_InternFromString("http");
    k->websocket = PyUnicode_InternFromString("websocket");
    k->asgi_versions = Py_BuildValue("{ssss}", "version", "3.0", "spec_version", "2.3");
    return k;
  }();
  // Made once (in the zygote); only out of memory can leave one missing.
  for (PyObject* key : {keys->type, keys->asgi, keys->http_version, keys->method, keys->scheme, keys->path,
                        keys->raw_path, keys->query_string, keys->root_path, keys->headers, keys->client, keys->server,
                        keys->state, keys->subprotocols, keys->http, keys->websocket, keys->asgi_versions}) {
    if (key == nullptr) {
      if (!PyErr_Occurred()) PyErr_NoMemory();
      return nullptr;
    }
  }
  return keys;
}

// "ip:port" or "[ipv6]:port" as the (host, port) pair of an ASGI scope;
// None when it is neither.
PyObject* address_of(const std::string& text) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon + 1 == text.size()) Py_RETURN_NONE;
  unsigned long port = 0;
  for (size_t i = colon + 1; i < text.size(); ++i) {
    if (text[i] < '0' || text[i] > '9') Py_RETURN_NONE;
    port = port * 10 + static_cast<unsigned long>(text[i] - '0');
    if (port > 65535) Py_RETURN_NONE;
  }
  std::string_view host(text.data(), colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return Py_BuildValue("(s#k)", host.data(), static_cast<Py_ssize_t>(host.size()), port);
}

// The subprotocols a WebSocket client offers (Sec-WebSocket-Protocol,
// comma-separated, possibly repeated), in order.
PyObject* subprotocols_of(const std::vector<frame::Header>& headers) {
  PyObject* list = PyList_New(0);
  if (list == nullptr) return nullptr;
  for (const auto& [name, value] : headers) {
    if (name != "sec-websocket-protocol") continue;
    size_t start = 0;
    while (start <= value.size()) {
      size_t comma = value.find(',', start);
      if (comma == std::string::npos) comma = value.size();
      std::string_view item(value.data() + start, comma - start);
      while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
      while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
      if (!item.empty()) {
        PyObject* text = PyUnicode_DecodeLatin1(item.data(), static_cast<Py_ssize_t>(item.size()), nullptr);
        if (text == nullptr || PyList_Append(list, text) != 0) {
          Py_XDECREF(text);
          Py_DECREF(list);
          return nullptr;
        }
        Py_DECREF(text);
      }
      start = comma + 1;
    }
  }
  return list;
}

// Sets scope[key] = value, taking the reference to `value` (a new one, or
// nullptr when making it failed).
bool set_item(PyObject* scope, PyObject* key, PyObject* value) {
  if (value == nullptr) return false;
  int rc = PyDict_SetItem(scope, key, value);
  Py_DECREF(value);
  return rc == 0;
}

// Sets scope[key] = value, `value` borrowed (a constant).
bool set_constant(PyObject* scope, PyObject* key, PyObject* value) { return PyDict_SetItem(scope, key, value) == 0; }

// The ASGI scope of a request head (HTTP 2.3 / WebSocket 2.3). `path` keeps
// the prefix of a route "/x/..." and root_path is "/x" (today's reading of
// the spec), unless `root_path_in_path` is false (Starlette < 0.33): then
// path is what follows the prefix. `state`: the lifespan state, copied.
PyObject* scope_of(const frame::RequestHead& head, PyObject* state, bool root_path_in_path) {
  const ScopeKeys* k = scope_keys();
  if (k == nullptr) return nullptr;
  bool websocket = head.scheme == "ws";
  std::string_view target(head.target);
  size_t question = target.find('?');
  std::string_view raw_path = target.substr(0, question);
  std::string_view query = question == std::string_view::npos ? std::string_view() : target.substr(question + 1);
  std::string root_path, path;
  if (head.route.size() >= 4 && head.route.compare(head.route.size() - 4, 4, "/...") == 0) {
    root_path = head.route.substr(0, head.route.size() - 4);
    path = root_path_in_path ? root_path + head.path_info : (head.path_info.empty() ? "/" : head.path_info);
  } else {
    path = head.route;
  }
  PyObject* scope = PyDict_New();
  if (scope == nullptr) return nullptr;
  bool ok = set_constant(scope, k->type, websocket ? k->websocket : k->http) &&
            set_constant(scope, k->asgi, k->asgi_versions) &&
            set_item(scope, k->http_version, str_of(head.version)) &&
            (websocket || set_item(scope, k->method, str_of(head.method))) &&
            set_item(scope, k->scheme, str_of(head.scheme)) && set_item(scope, k->path, str_of(path)) &&
            set_item(scope, k->raw_path, bytes_of(raw_path)) && set_item(scope, k->query_string, bytes_of(query)) &&
            set_item(scope, k->root_path, str_of(root_path)) &&
            set_item(scope, k->headers, headers_list(head.headers)) &&
            set_item(scope, k->client, address_of(head.client)) &&
            set_item(scope, k->server, address_of(head.server)) &&
            set_item(scope, k->state, PyDict_Copy(state)) &&
            (!websocket || set_item(scope, k->subprotocols, subprotocols_of(head.headers)));
  if (!ok) {
    Py_DECREF(scope);
    return nullptr;
  }
  return scope;
}

PyObject* frame_tuple(const frame::Frame& f, PyObject* state, bool root_path_in_path) {
  switch (f.type) {
    case frame::Type::kRequestHead: {
      frame::RequestHead head;
      std::string_view body;
      if (!frame::decode_request_head(f.payload, head, body)) {
        PyErr_SetString(PyExc_ValueError, "truncated request head frame");
        return nullptr;
      }
      // Text fields may hold any bytes a client sent (a percent-decoded path,
      // a Host header): decoded with surrogateescape, they never fail.
      return Py_BuildValue("(iIONN)", static_cast<int>(f.type), f.stream, f.end() ? Py_True : Py_False,
                           scope_of(head, state, root_path_in_path), bytes_of(body));
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

PyObject* decode(PyObject*, PyObject* args) {
  PyObject *arg, *state;
  int root_path_in_path;
  if (!PyArg_ParseTuple(args, "YO!p", &arg, &PyDict_Type, &state, &root_path_in_path)) return nullptr;
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
    PyObject* item = frame_tuple(f, state, root_path_in_path != 0);
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

// The version tag of a dict (PEP 509; CPython 3.11 keeps it in every dict
// and changes it on every modification). Reading it writes nothing, where
// comparing two dicts increments the reference count of every key and
// value (a copy of their pages, in a forked instance).
PyObject* dict_version(PyObject*, PyObject* d) {
  if (!PyDict_Check(d)) {
    PyErr_SetString(PyExc_TypeError, "dict_version() takes a dict");
    return nullptr;
  }
  return PyLong_FromUnsignedLongLong(reinterpret_cast<PyDictObject*>(d)->ma_version_tag);
}

PyMethodDef kCodecMethods[] = {
    {"dict_version", dict_version, METH_O, "The version tag of a dict: it changes whenever the dict does."},
    {"first_request_report", first_request_report, METH_NOARGS,
     "The pages this instance's first request copied (see src/python/page_hints.h), as bytes."},
    {"put_ws_message", put_ws_message, METH_VARARGS, "Append a WebSocket message frame to a bytearray."},
    {"put_ws_close", put_ws_close, METH_VARARGS, "Append a WebSocket close frame to a bytearray."},
    {"decode", decode, METH_VARARGS, "Parse the complete frames at the start of a bytearray."},
    {"put_response", put_response, METH_VARARGS, "Append a response head (and body) to a bytearray."},
    {"put_body", put_body, METH_VARARGS, "Append response body frames to a bytearray."},
    {"put_frame", put_frame, METH_VARARGS, "Append one frame with END set to a bytearray."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

PyMethodDef* codec_methods() { return kCodecMethods; }

}  // namespace coil::python
