#include "python/page_hints.h"
#include "python/codec.h"

#include <boost/container/small_vector.hpp>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "protocol/frame.h"
#include "protocol/wire.h"

namespace coil::python {
namespace {

PyObject* bytes_of(std::string_view s) { return PyBytes_FromStringAndSize(s.data(), static_cast<Py_ssize_t>(s.size())); }
PyObject* str_of(std::string_view s) {
  return PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "surrogateescape");
}
// A percent-decoded path that is not UTF-8 gets U+FFFD for each bad byte, as
// uvicorn's unquote() gives it (lone surrogates would make every framework
// that encodes the path again, in a URL or a JSON body, fail with a 500).
// raw_path keeps the bytes.
PyObject* path_str_of(std::string_view s) {
  return PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace");
}

// A new tuple made of new references (`items` may hold nullptr when making
// one failed: then every other is released and the result is nullptr).
PyObject* tuple_of(std::initializer_list<PyObject*> items) {
  PyObject* tuple = nullptr;
  bool complete = true;
  for (PyObject* item : items) complete = complete && item != nullptr;
  if (complete) tuple = PyTuple_New(static_cast<Py_ssize_t>(items.size()));
  Py_ssize_t i = 0;
  for (PyObject* item : items) {
    if (tuple != nullptr) {
      PyTuple_SET_ITEM(tuple, i++, item);
    } else {
      Py_XDECREF(item);
    }
  }
  return tuple;
}

PyObject* headers_list(std::span<const frame::HeaderView> headers) {
  PyObject* list = PyList_New(static_cast<Py_ssize_t>(headers.size()));
  if (list == nullptr) return nullptr;
  for (size_t i = 0; i < headers.size(); ++i) {
    PyObject* pair = tuple_of({bytes_of(headers[i].first), bytes_of(headers[i].second)});
    if (pair == nullptr) {
      Py_DECREF(list);
      return nullptr;
    }
    PyList_SET_ITEM(list, static_cast<Py_ssize_t>(i), pair);
  }
  return list;
}

// A value most requests share (an HTTP method, version or scheme): its str is
// made once and shared by their scopes.
struct CommonText {
  std::string_view text;
  PyObject* str;
};

// The interned keys, and the shared values, of ASGI scopes; made once.
struct ScopeKeys {
  PyObject *type, *asgi, *http_version, *method, *scheme, *path, *raw_path, *query_string, *root_path, *headers,
      *client, *server, *state, *subprotocols, *http, *websocket, *asgi_versions;
  // A scope of each type with every key set (to None), in the order the
  // scope lists them: a request's scope is a copy with the values replaced,
  // which is cheaper than inserting the keys one by one into an empty dict.
  PyObject *http_prototype, *websocket_prototype;
  std::vector<CommonText> common;  // methods, versions, schemes
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
    k->http_prototype = PyDict_New();
    k->websocket_prototype = PyDict_New();
    for (PyObject* key : {k->type, k->asgi, k->http_version, k->method, k->scheme, k->path, k->raw_path,
                          k->query_string, k->root_path, k->headers, k->client, k->server, k->state}) {
      if (key == nullptr || k->http_prototype == nullptr || PyDict_SetItem(k->http_prototype, key, Py_None) != 0) {
        Py_CLEAR(k->http_prototype);
      }
    }
    for (PyObject* key : {k->type, k->asgi, k->http_version, k->scheme, k->path, k->raw_path, k->query_string,
                          k->root_path, k->headers, k->client, k->server, k->state, k->subprotocols}) {
      if (key == nullptr || k->websocket_prototype == nullptr ||
          PyDict_SetItem(k->websocket_prototype, key, Py_None) != 0) {
        Py_CLEAR(k->websocket_prototype);
      }
    }
    for (std::string_view text : {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "1.1", "1.0", "http",
                                  "https", "ws", "wss"}) {
      k->common.push_back({text, PyUnicode_InternFromString(std::string(text).c_str())});
    }
    // Only out of memory leaves one missing: then there are none (and _coil
    // is not created, see prepare_codec()).
    bool complete = true;
    for (PyObject* object : {k->type, k->asgi, k->http_version, k->method, k->scheme, k->path, k->raw_path,
                             k->query_string, k->root_path, k->headers, k->client, k->server, k->state,
                             k->subprotocols, k->http, k->websocket, k->asgi_versions, k->http_prototype,
                             k->websocket_prototype}) {
      complete = complete && object != nullptr;
    }
    for (const CommonText& common : k->common) complete = complete && common.str != nullptr;
    return complete ? k : nullptr;
  }();
  // Made once per interpreter, where _coil is created (prepare_codec()).
  if (keys == nullptr && !PyErr_Occurred()) PyErr_NoMemory();
  return keys;
}

// `text` as a str: the shared one when it is a common value, else a new one.
PyObject* common_str_of(const ScopeKeys* k, std::string_view text) {
  for (const CommonText& common : k->common) {
    if (common.text == text) {
      Py_INCREF(common.str);
      return common.str;
    }
  }
  return str_of(text);
}

// "ip:port" or "[ipv6]:port" as the (host, port) pair of an ASGI scope;
// None when it is neither.
PyObject* address_of(std::string_view text) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon + 1 == text.size()) Py_RETURN_NONE;
  unsigned long port = 0;
  for (size_t i = colon + 1; i < text.size(); ++i) {
    if (text[i] < '0' || text[i] > '9') Py_RETURN_NONE;
    port = port * 10 + static_cast<unsigned long>(text[i] - '0');
    if (port > 65535) Py_RETURN_NONE;
  }
  std::string_view host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return tuple_of({PyUnicode_DecodeUTF8(host.data(), static_cast<Py_ssize_t>(host.size()), nullptr),
                   PyLong_FromUnsignedLong(port)});
}

// The scope's `server`: the address the host listens on, the same for nearly
// every request, so the last one made is kept and shared (a tuple of a str and
// an int: nothing an app can change).
PyObject* server_address_of(std::string_view text) {
  static std::string last_text;
  static PyObject* last = nullptr;
  if (last == nullptr || text != last_text) {
    PyObject* made = address_of(text);
    if (made == nullptr) return nullptr;
    Py_XSETREF(last, made);
    last_text.assign(text);
  }
  Py_INCREF(last);
  return last;
}

// The subprotocols a WebSocket client offers (Sec-WebSocket-Protocol,
// comma-separated, possibly repeated), in order.
PyObject* subprotocols_of(std::span<const frame::HeaderView> headers) {
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
// the prefix of a route "/x/..." and root_path is "/x", the part of the path
// the route matched (today's reading of the spec; "/users/42" for a route
// "/users/:id/..."), unless `root_path_in_path` is false (Starlette < 0.33):
// then path is what follows the prefix. `state`: the lifespan state, copied.
PyObject* scope_of(const frame::RequestHeadView& head, PyObject* state, bool root_path_in_path) {
  const ScopeKeys* k = scope_keys();
  if (k == nullptr) return nullptr;
  bool websocket = head.scheme == "ws" || head.scheme == "wss";
  std::string_view target = head.target;
  size_t question = target.find('?');
  std::string_view raw_path = target.substr(0, question);
  std::string_view query = question == std::string_view::npos ? std::string_view() : target.substr(question + 1);
  std::string_view root_path, path = head.prefix;
  std::string prefixed_path;
  if (head.route.ends_with("/...")) {
    root_path = head.prefix;
    if (root_path_in_path) {
      prefixed_path.reserve(root_path.size() + head.path_info.size());
      prefixed_path.append(root_path).append(head.path_info);
      path = prefixed_path;
    } else {
      path = head.path_info.empty() ? std::string_view("/") : head.path_info;
    }
  }
  PyObject* scope = PyDict_Copy(websocket ? k->websocket_prototype : k->http_prototype);
  if (scope == nullptr) return nullptr;
  bool ok = set_constant(scope, k->type, websocket ? k->websocket : k->http) &&
            set_item(scope, k->asgi, PyDict_Copy(k->asgi_versions)) &&  // an app may change its own
            set_item(scope, k->http_version, common_str_of(k, head.version)) &&
            (websocket || set_item(scope, k->method, common_str_of(k, head.method))) &&
            set_item(scope, k->scheme, common_str_of(k, head.scheme)) && set_item(scope, k->path, path_str_of(path)) &&
            set_item(scope, k->raw_path, bytes_of(raw_path)) && set_item(scope, k->query_string, bytes_of(query)) &&
            set_item(scope, k->root_path, path_str_of(root_path)) &&
            set_item(scope, k->headers, headers_list(head.headers)) &&
            set_item(scope, k->client, address_of(head.client)) &&
            set_item(scope, k->server, server_address_of(head.server)) &&
            set_item(scope, k->state, PyDict_Copy(state)) &&
            (!websocket || set_item(scope, k->subprotocols, subprotocols_of(head.headers)));
  if (!ok) {
    Py_DECREF(scope);
    return nullptr;
  }
  return scope;
}

PyObject* bool_of(bool value) { return Py_NewRef(value ? Py_True : Py_False); }
PyObject* type_of(const frame::Frame& f) { return PyLong_FromLong(static_cast<long>(f.type)); }

PyObject* frame_tuple(const frame::Frame& f, PyObject* state, bool root_path_in_path) {
  switch (f.type) {
    case frame::Type::kRequestHead: {
      frame::RequestHeadView head;  // views into f.payload, used at once
      std::string_view body;
      if (!frame::decode_request_head(f.payload, head, body)) {
        PyErr_SetString(PyExc_ValueError, "truncated request head frame");
        return nullptr;
      }
      // Text fields may hold any bytes a client sent (a percent-decoded path,
      // a Host header): decoded with "replace" or surrogateescape, they never fail.
      return tuple_of({type_of(f), PyLong_FromUnsignedLong(f.stream), bool_of(f.end()),
                       scope_of(head, state, root_path_in_path), bytes_of(body)});
    }
    case frame::Type::kRequestBody:
      return tuple_of({type_of(f), PyLong_FromUnsignedLong(f.stream), bool_of(f.end()), bytes_of(f.payload),
                       bool_of((f.flags & frame::kFlagText) != 0), bool_of((f.flags & frame::kFlagMore) != 0)});
    case frame::Type::kWsClose: {
      uint16_t code = 1005;
      std::string reason;
      if (!frame::decode_ws_close(f.payload, code, reason)) code = 1005;  // no status received
      return tuple_of({type_of(f), PyLong_FromUnsignedLong(f.stream), PyLong_FromLong(code), str_of(reason)});
    }
    case frame::Type::kCancel:
      return tuple_of({type_of(f), PyLong_FromUnsignedLong(f.stream), bytes_of(f.payload)});
    case frame::Type::kDrained: {
      uint64_t bytes = 0;
      if (!frame::decode_drained(f.payload, bytes)) {
        PyErr_SetString(PyExc_ValueError, "corrupt drained frame");
        return nullptr;
      }
      return tuple_of({type_of(f), PyLong_FromUnsignedLong(f.stream), PyLong_FromUnsignedLongLong(bytes)});
    }
    default:
      return tuple_of({type_of(f), PyLong_FromUnsignedLong(f.stream)});
  }
}

// Whether `type` is one a host sends an instance (frame.h); any other byte
// there means the stream is corrupt.
bool sent_to_instances(uint8_t type) {
  switch (static_cast<frame::Type>(type)) {
    case frame::Type::kRequestHead:
    case frame::Type::kRequestBody:
    case frame::Type::kCancel:
    case frame::Type::kWsClose:
    case frame::Type::kDrained:
    case frame::Type::kInputClosed:
      return true;
    default:
      return false;
  }
}

// The complete frames at the start of `data`, and how many bytes they took.
PyObject* decode_frames(std::string_view data, PyObject* state, bool root_path_in_path) {
  PyObject* frames = PyList_New(0);
  if (frames == nullptr) return nullptr;
  size_t consumed = 0;
  while (data.size() - consumed >= frame::kHeaderSize) {
    const char* p = data.data() + consumed;
    const auto* u = reinterpret_cast<const unsigned char*>(p);
    uint32_t length = wire::get_u32(p);
    if (length > frame::kMaxPayload || !sent_to_instances(u[4])) {
      Py_DECREF(frames);
      PyErr_SetString(PyExc_ValueError, "corrupt frame stream");
      return nullptr;
    }
    if (data.size() - consumed < frame::kHeaderSize + length) break;
    frame::Frame f{static_cast<frame::Type>(u[4]), u[5], wire::get_u32(p + 8),
                   std::string_view(p + frame::kHeaderSize, length)};
    consumed += frame::kHeaderSize + length;
    PyObject* item = frame_tuple(f, state, root_path_in_path);
    if (item == nullptr || PyList_Append(frames, item) != 0) {
      Py_XDECREF(item);
      Py_DECREF(frames);
      return nullptr;
    }
    Py_DECREF(item);
  }
  return tuple_of({frames, PyLong_FromSsize_t(static_cast<Py_ssize_t>(consumed))});
}

PyObject* decode(PyObject*, PyObject* args) {
  PyObject *buffer, *state;
  int root_path_in_path;
  if (!PyArg_ParseTuple(args, "YO!p", &buffer, &PyDict_Type, &state, &root_path_in_path)) return nullptr;
  // Exported while it is read: app code that runs meanwhile (a finalizer,
  // during an allocation) cannot resize it under the views.
  Py_buffer exported;
  if (PyObject_GetBuffer(buffer, &exported, PyBUF_SIMPLE) != 0) return nullptr;
  PyObject* result = decode_frames(
      std::string_view(static_cast<const char*>(exported.buf), static_cast<size_t>(exported.len)), state,
      root_path_in_path != 0);
  PyBuffer_Release(&exported);
  return result;
}

// Appends `data` to the bytearray `out`.
bool append_to(PyObject* out, std::string_view data) {
  Py_ssize_t size = PyByteArray_GET_SIZE(out);
  if (PyByteArray_Resize(out, size + static_cast<Py_ssize_t>(data.size())) != 0) return false;
  std::memcpy(PyByteArray_AS_STRING(out) + size, data.data(), data.size());
  return true;
}

// Where a response frame is encoded before it is appended to the instance's
// output: one buffer, kept between calls (no Python code runs while it is in
// use), so that a small response costs no allocation.
std::string& scratch() {
  static std::string buffer;
  buffer.clear();
  return buffer;
}

// Appends `encoded` (the scratch buffer) to `out`; a large one is given back
// rather than kept for the next small frame.
bool appended(PyObject* out, std::string& encoded) {
  bool ok = append_to(out, encoded);
  if (encoded.capacity() > 64 * 1024) std::string().swap(encoded);
  return ok;
}

bool buffer_view(PyObject* obj, Py_buffer& view) { return PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) == 0; }

// The bytes-like objects a response head's headers are made of, viewed in
// place while the head is encoded: bytes (what nearly every app sends) are
// read directly, anything else through the buffer protocol.
//
// App code can run while the headers are read (a pair that is a generator,
// a finalizer during an allocation), and it may change the app's own lists.
// So the headers and each pair are first made tuples (an exact tuple is taken
// as it is), which are held until the head is encoded: a viewed bytes object
// is owned by an immutable tuple, and a bytearray cannot be resized while its
// buffer is exported.
class HeaderViews {
 public:
  HeaderViews() = default;
  HeaderViews(const HeaderViews&) = delete;
  HeaderViews& operator=(const HeaderViews&) = delete;
  ~HeaderViews() {
    for (auto& view : buffers_) PyBuffer_Release(view.get());
    for (PyObject* tuple : held_) Py_DECREF(tuple);
  }

  // Reads `headers` (an iterable of (name, value) pairs). False, with a
  // Python error set, when it is not one.
  bool read(PyObject* headers) {
    PyObject* all = hold(tuple_from(headers, "response headers must be an iterable of (name, value) pairs"));
    if (all == nullptr) return false;
    Py_ssize_t count = PyTuple_GET_SIZE(all);
    pairs_.reserve(static_cast<size_t>(count));
    for (Py_ssize_t i = 0; i < count; ++i) {
      // An exact tuple is immutable and owned by `all`: it is read in place.
      PyObject* pair = PyTuple_GET_ITEM(all, i);
      if (!PyTuple_CheckExact(pair)) pair = hold(tuple_from(pair, "a header must be a (name, value) pair"));
      if (pair == nullptr) return false;
      if (PyTuple_GET_SIZE(pair) != 2) {
        PyErr_SetString(PyExc_ValueError, "a header must be a (name, value) pair");
        return false;
      }
      std::string_view name, value;
      if (!view(PyTuple_GET_ITEM(pair, 0), name) || !view(PyTuple_GET_ITEM(pair, 1), value)) return false;
      pairs_.emplace_back(name, value);
    }
    return true;
  }

  std::span<const frame::HeaderView> pairs() const { return pairs_; }

 private:
  // `object` as a tuple; a TypeError saying `what` when it is not iterable
  // (an error raised by an iterator's own code is left as it is).
  static PyObject* tuple_from(PyObject* object, const char* what) {
    if (Py_TYPE(object)->tp_iter == nullptr && !PySequence_Check(object)) {
      PyErr_Format(PyExc_TypeError, "%s, not %.100s", what, Py_TYPE(object)->tp_name);
      return nullptr;
    }
    return PySequence_Tuple(object);
  }

  // Keeps a new reference (or nullptr) until the destructor.
  PyObject* hold(PyObject* tuple) {
    if (tuple != nullptr) held_.push_back(tuple);
    return tuple;
  }

  bool view(PyObject* object, std::string_view& out) {
    if (PyBytes_Check(object)) {
      out = std::string_view(PyBytes_AS_STRING(object), static_cast<size_t>(PyBytes_GET_SIZE(object)));
      return true;
    }
    auto buffer = std::make_unique<Py_buffer>();
    if (PyObject_GetBuffer(object, buffer.get(), PyBUF_SIMPLE) != 0) return false;
    out = std::string_view(static_cast<const char*>(buffer->buf), static_cast<size_t>(buffer->len));
    buffers_.push_back(std::move(buffer));
    return true;
  }

  // Inline capacity for the usual response: no allocation per head.
  boost::container::small_vector<frame::HeaderView, 16> pairs_;
  std::vector<std::unique_ptr<Py_buffer>> buffers_;  // exported buffers never move
  boost::container::small_vector<PyObject*, 4> held_;  // the tuples made (new references)
};

// The arguments of the per-response calls, read without PyArg's format
// parsing (they run for every response): `out` a bytearray, a stream id, a
// status, and a truth value.
bool args_count(Py_ssize_t given, Py_ssize_t wanted, const char* function) {
  if (given == wanted) return true;
  PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", function, wanted, given);
  return false;
}
bool bytearray_arg(PyObject* arg, PyObject*& out) {
  if (!PyByteArray_Check(arg)) {
    PyErr_Format(PyExc_TypeError, "a bytearray is required, not %.100s", Py_TYPE(arg)->tp_name);
    return false;
  }
  out = arg;
  return true;
}
bool stream_arg(PyObject* arg, unsigned int& stream) {
  unsigned long value = PyLong_AsUnsignedLong(arg);
  if (value == static_cast<unsigned long>(-1) && PyErr_Occurred()) return false;
  if (value > UINT32_MAX) {
    PyErr_SetString(PyExc_OverflowError, "stream id out of range");
    return false;
  }
  stream = static_cast<unsigned int>(value);
  return true;
}
// A response status: an integer in 100-599.
bool status_arg(PyObject* arg, int& status) {
  int overflow = 0;
  long value = PyLong_AsLongAndOverflow(arg, &overflow);
  if (value == -1 && PyErr_Occurred()) return false;
  if (overflow != 0 || value < 100 || value > 599) {
    PyErr_Format(PyExc_ValueError, "status %R is not in 100-599", arg);
    return false;
  }
  status = static_cast<int>(value);
  return true;
}
bool truth_arg(PyObject* arg, int& value) {
  value = PyObject_IsTrue(arg);
  return value >= 0;
}

// put_response(out, stream, status, headers, body, end)
PyObject* put_response(PyObject*, PyObject* const* args, Py_ssize_t count) {
  PyObject* out;
  unsigned int stream;
  int end;
  if (!args_count(count, 6, "put_response") || !bytearray_arg(args[0], out) || !stream_arg(args[1], stream) ||
      !truth_arg(args[5], end)) {
    return nullptr;
  }
  Py_ssize_t body_size;
  if (!append_response_frame(out, stream, args[2], args[3], args[4], end != 0, body_size)) return nullptr;
  Py_RETURN_NONE;
}

// put_body(out, stream, body, end)
PyObject* put_body(PyObject*, PyObject* const* args, Py_ssize_t count) {
  PyObject* out;
  unsigned int stream;
  int end;
  if (!args_count(count, 4, "put_body") || !bytearray_arg(args[0], out) || !stream_arg(args[1], stream) ||
      !truth_arg(args[3], end)) {
    return nullptr;
  }
  Py_ssize_t body_size;
  if (!append_body_frame(out, stream, args[2], end != 0, body_size)) return nullptr;
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
  if (message.size() > frame::kMaxWebSocketMessage) {
    PyErr_SetString(PyExc_ValueError, "WebSocket message larger than 16 MiB");
    ok = false;
  } else {
    std::string encoded;
    frame::append_ws_message(encoded, frame::Type::kResponseBody, stream, message, text);
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

// encode_head(status, headers)
PyObject* encode_head(PyObject*, PyObject* const* args, Py_ssize_t count) {
  if (!args_count(count, 2, "encode_head")) return nullptr;
  return encode_response_head(args[0], args[1]);
}

PyMethodDef kCodecMethods[] = {
    {"dict_version", dict_version, METH_O, "The version tag of a dict: it changes whenever the dict does."},
    {"first_request_report", first_request_report, METH_NOARGS,
     "The pages this instance's first request copied (see src/python/page_hints.h), as bytes."},
    {"put_ws_message", put_ws_message, METH_VARARGS, "Append a WebSocket message frame to a bytearray."},
    {"put_ws_close", put_ws_close, METH_VARARGS, "Append a WebSocket close frame to a bytearray."},
    {"decode", decode, METH_VARARGS, "Parse the complete frames at the start of a bytearray."},
    {"put_response", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(put_response)), METH_FASTCALL,
     "Append a response head (and body) to a bytearray."},
    {"encode_head", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(encode_head)), METH_FASTCALL,
     "A response's status and headers, encoded as the exchange sends them (bytes)."},
    {"put_body", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(put_body)), METH_FASTCALL,
     "Append response body frames to a bytearray."},
    {"put_frame", put_frame, METH_VARARGS, "Append one frame with END set to a bytearray."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

PyObject* encode_response_head(PyObject* status, PyObject* headers) {
  int code;
  if (!status_arg(status, code)) return nullptr;
  HeaderViews views;
  if (!views.read(headers)) return nullptr;
  if (frame::encoded_size(views.pairs()) > frame::kMaxResponseHead) {
    PyErr_Format(PyExc_ValueError, "response headers larger than %zu bytes", frame::kMaxResponseHead);
    return nullptr;
  }
  std::string& encoded = scratch();
  frame::encode_response_head(encoded, static_cast<uint16_t>(code), views.pairs());
  PyObject* head = PyBytes_FromStringAndSize(encoded.data(), static_cast<Py_ssize_t>(encoded.size()));
  if (encoded.capacity() > 64 * 1024) std::string().swap(encoded);  // as appended() does
  return head;
}

bool append_encoded_response_frame(PyObject* out, uint32_t stream, PyObject* head, PyObject* body, bool end,
                                   Py_ssize_t& body_size) {
  if (!PyBytes_Check(head)) {
    PyErr_Format(PyExc_TypeError, "an encoded response head must be bytes, not %.100s", Py_TYPE(head)->tp_name);
    return false;
  }
  Py_buffer body_view;
  if (!buffer_view(body, body_view)) return false;
  std::string& encoded = scratch();
  frame::append_response(encoded, stream,
                         std::string_view(PyBytes_AS_STRING(head), static_cast<size_t>(PyBytes_GET_SIZE(head))),
                         std::string_view(static_cast<const char*>(body_view.buf), static_cast<size_t>(body_view.len)),
                         end);
  body_size = body_view.len;
  PyBuffer_Release(&body_view);
  return appended(out, encoded);
}

bool append_response_frame(PyObject* out, uint32_t stream, PyObject* status, PyObject* headers, PyObject* body,
                           bool end, Py_ssize_t& body_size) {
  // Through an encoded head, the one place a head is checked and encoded: a
  // bytes object more, on a path that is rare (coil's own 500s, WebSocket
  // accepts and refusals).
  PyObject* head = encode_response_head(status, headers);
  if (head == nullptr) return false;
  bool ok = append_encoded_response_frame(out, stream, head, body, end, body_size);
  Py_DECREF(head);
  return ok;
}

bool append_body_frame(PyObject* out, uint32_t stream, PyObject* body, bool end, Py_ssize_t& body_size) {
  Py_buffer view;
  if (!buffer_view(body, view)) return false;
  std::string& encoded = scratch();
  frame::append_body(encoded, frame::Type::kResponseBody, stream,
                     std::string_view(static_cast<const char*>(view.buf), static_cast<size_t>(view.len)), end);
  body_size = view.len;
  PyBuffer_Release(&view);
  return appended(out, encoded);
}

PyMethodDef* codec_methods() { return kCodecMethods; }

bool prepare_codec() { return scope_keys() != nullptr; }

}  // namespace coil::python
