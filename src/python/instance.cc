#include "python/page_hints.h"
#include "python/instance.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <deque>
#include <optional>
#include <unordered_map>

#include "common/ascii.h"
#include "router/route_table.h"
#include "protocol/frame.h"
#include "python/child_process.h"
#include "python/interpreter.h"

namespace coil::python {
namespace {

struct Pending {
  frame::RequestHead head;
  std::string body;
  bool complete = false;
  bool cancelled = false;
};

PyObject* decode_text(const std::string& s) {
  return PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "surrogateescape");
}

PyObject* decode_latin1(const std::string& s) {
  return PyUnicode_DecodeLatin1(s.data(), static_cast<Py_ssize_t>(s.size()), nullptr);
}

bool set_header(PyObject* dict, const char* name, const std::string& value) {
  PyObject* v = decode_latin1(value);
  if (v == nullptr) return false;
  int rc = PyDict_SetItemString(dict, name, v);
  Py_DECREF(v);
  return rc == 0;
}

// The Spin model's request headers: names lower-case, repeated headers
// joined with ", ", plus the spin-* headers Spin injects.
PyObject* build_headers(const frame::RequestHead& head) {
  PyObject* dict = PyDict_New();
  if (dict == nullptr) return nullptr;
  for (const auto& [name, value] : head.headers) {
    if (name == "connection") continue;  // hop-by-hop: Spin does not pass it on
    PyObject* key = PyUnicode_DecodeLatin1(name.data(), static_cast<Py_ssize_t>(name.size()), nullptr);
    PyObject* val = decode_latin1(value);
    if (key == nullptr || val == nullptr) {
      Py_XDECREF(key);
      Py_XDECREF(val);
      Py_DECREF(dict);
      return nullptr;
    }
    PyObject* existing = PyDict_GetItemWithError(dict, key);  // borrowed
    if (existing != nullptr) {
      PyObject* joined = PyUnicode_FromFormat("%U, %U", existing, val);
      Py_DECREF(val);
      val = joined;
    }
    int rc = val ? PyDict_SetItem(dict, key, val) : -1;
    Py_DECREF(key);
    Py_XDECREF(val);
    if (rc != 0) {
      Py_DECREF(dict);
      return nullptr;
    }
  }
  std::string_view route = head.route;
  std::string component_route(route);
  if (route.size() >= 4 && route.substr(route.size() - 4) == "/...") {
    component_route = std::string(route.substr(0, route.size() - 4));
  }
  std::string host = head.host.empty() ? "localhost" : head.host;
  // As Spin, from the path the client sent (escapes kept); the decoded
  // values where no raw one maps onto them (router::raw_match).
  std::optional<router::RawMatch> raw = router::raw_match(head.target, head.route, head.prefix, head.path_info);
  const std::string& path_info = raw ? raw->path_info : head.path_info;
  const auto& captures = raw ? raw->captures : head.captures;
  bool ok = set_header(dict, "spin-full-url", head.scheme + "://" + host + head.target) &&
            set_header(dict, "spin-path-info", path_info) &&
            set_header(dict, "spin-matched-route", head.route) &&
            set_header(dict, "spin-base-path", "/") &&
            set_header(dict, "spin-raw-component-route", head.route) &&
            set_header(dict, "spin-component-route", component_route) &&
            set_header(dict, "spin-client-addr", head.client);
  // Spin >= 2.5: one header per ":name" of the route.
  for (const auto& capture : captures) {
    if (!ok) break;
    ok = set_header(dict, router::capture_header(capture.first).c_str(), capture.second);
  }
  if (!ok) {
    Py_DECREF(dict);
    return nullptr;
  }
  return dict;
}

void append_error(std::string& out, uint32_t stream, uint16_t status, const std::string& message) {
  frame::ResponseHead head{status, {{"content-type", "text/plain; charset=utf-8"}}};
  frame::append_response(out, stream, head, message + "\n", true);
}

// Converts the invoker's (status, headers, body) into a response frame.
// Returns false (with a Python error set) if the value has another shape.
bool append_result(std::string& out, uint32_t stream, PyObject* result) {
  if (!PyTuple_Check(result) || PyTuple_GET_SIZE(result) != 3) {
    PyErr_SetString(PyExc_TypeError, "invoker must return (status, headers, body)");
    return false;
  }
  frame::ResponseHead head;
  long status = PyLong_AsLong(PyTuple_GET_ITEM(result, 0));
  if (status == -1 && PyErr_Occurred()) return false;
  head.status = static_cast<uint16_t>(status);
  PyObject* headers = PyTuple_GET_ITEM(result, 1);
  PyObject* body = PyTuple_GET_ITEM(result, 2);
  if (!PyList_Check(headers) || !PyBytes_Check(body)) {
    PyErr_SetString(PyExc_TypeError, "invoker returned headers or body of the wrong type");
    return false;
  }
  Py_ssize_t count = PyList_GET_SIZE(headers);
  head.headers.reserve(static_cast<size_t>(count));
  for (Py_ssize_t i = 0; i < count; ++i) {
    PyObject* pair = PyList_GET_ITEM(headers, i);
    const char *name, *value;
    Py_ssize_t name_len, value_len;
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
        (name = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 0), &name_len)) == nullptr ||
        (value = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 1), &value_len)) == nullptr) {
      if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "header must be a (str, str) pair");
      return false;
    }
    head.headers.emplace_back(std::string(name, static_cast<size_t>(name_len)),
                              std::string(value, static_cast<size_t>(value_len)));
  }
  if (frame::encoded_size(head.headers) > frame::kMaxResponseHead) {
    PyErr_Format(PyExc_ValueError, "response headers larger than %zu bytes", frame::kMaxResponseHead);
    return false;
  }
  std::string_view bytes(PyBytes_AS_STRING(body), static_cast<size_t>(PyBytes_GET_SIZE(body)));
  if (bytes.size() > frame::kBodyChunk) {
    // The body travels in several frames, and the front frames a response
    // it gets in parts by its declared length (else chunked): declare the
    // exact one, so that the client gets a Content-Length as for any
    // complete response.
    std::erase_if(head.headers, [](const frame::Header& h) { return ascii::iequals(h.first, "content-length"); });
    head.headers.emplace_back("content-length", std::to_string(bytes.size()));
  }
  frame::append_response(out, stream, head, bytes, true);
  return true;
}

void handle(std::string& out, uint32_t stream, Pending& request, PyObject* invoke,
            PyObject* invalid_response, const std::string& function) {
  PyObject* method = decode_text(request.head.method);
  PyObject* uri = decode_text(request.head.target);
  PyObject* headers = build_headers(request.head);
  PyObject* body = PyBytes_FromStringAndSize(request.body.data(), static_cast<Py_ssize_t>(request.body.size()));
  PyObject* result = nullptr;
  if (method && uri && headers && body) {
    result = PyObject_CallFunctionObjArgs(invoke, method, uri, headers, body, nullptr);
  }
  Py_XDECREF(method);
  Py_XDECREF(uri);
  Py_XDECREF(headers);
  Py_XDECREF(body);
  if (result != nullptr && append_result(out, stream, result)) {
    Py_DECREF(result);
    return;
  }
  Py_XDECREF(result);
  if (PyErr_ExceptionMatches(invalid_response)) {
    std::string why = take_exception_summary();
    std::fprintf(stderr, "coil: invalid response from function %s: %s\n", function.c_str(),
                 why.substr(why.find(": ") + 2).c_str());
    append_error(out, stream, 500, "invalid response from function " + function);
    return;
  }
  PyErr_Print();  // the traceback goes to the function's log, never to the client
  append_error(out, stream, 500, "internal error in function " + function);
}

// Writes `out` to the host (GIL released) and clears it; exits if the host is gone.
void send_all(int socket, std::string& out) {
  bool ok;
  Py_BEGIN_ALLOW_THREADS
  ok = write_all(socket, out.data(), out.size());
  Py_END_ALLOW_THREADS
  if (!ok) _exit(errno == EPIPE ? 0 : 1);
  out.clear();
}

}  // namespace

void run_handler_instance(int socket, PyObject* invoke, const std::string& function) {
  PyObject* invalid_response = import_attr("coil._runtime", "InvalidResponse");
  if (invalid_response == nullptr) {
    PyErr_Print();
    _exit(1);
  }
  frame::Reader reader;
  std::string out;
  frame::append(out, frame::Type::kReady, frame::kFlagEnd, 0, {});
  if (!write_all(socket, out.data(), out.size())) _exit(0);
  out.clear();
  std::unordered_map<uint32_t, Pending> pending;
  std::deque<uint32_t> order;  // streams in the order their heads arrived
  bool answered_one = false;

  for (;;) {
    char* area = reader.write_area();
    ssize_t n;
    Py_BEGIN_ALLOW_THREADS
    n = ::read(socket, area, reader.write_space());
    Py_END_ALLOW_THREADS
    if (n == 0) _exit(0);  // the host closed the socket: scale-down or shutdown
    if (n < 0) {
      if (errno == EINTR) continue;
      _exit(1);
    }
    reader.commit(static_cast<size_t>(n));

    Status error;
    while (auto f = reader.next(error)) {
      switch (f->type) {
        case frame::Type::kRequestHead: {
          Pending& p = pending[f->stream];
          std::string_view body;
          if (Status s = frame::decode_request_head(f->payload, p.head, body); !s) {
            std::fprintf(stderr, "coil: %s\n", s.message().c_str());
            _exit(1);
          }
          p.body.assign(body);
          p.complete = f->end();
          order.push_back(f->stream);
          break;
        }
        case frame::Type::kRequestBody: {
          auto it = pending.find(f->stream);
          if (it == pending.end()) break;  // cancelled and already dropped
          it->second.body.append(f->payload);
          it->second.complete = f->end();
          break;
        }
        case frame::Type::kCancel: {
          auto it = pending.find(f->stream);
          if (it != pending.end()) it->second.cancelled = true;
          break;
        }
        default:
          std::fprintf(stderr, "coil: unexpected frame type %d from the host\n", static_cast<int>(f->type));
          _exit(1);
      }
    }
    if (!error) {
      std::fprintf(stderr, "coil: %s\n", error.message().c_str());
      _exit(1);
    }
    reader.consume_returned();

    while (!order.empty()) {
      auto it = pending.find(order.front());
      if (!it->second.cancelled && !it->second.complete) break;
      if (it->second.cancelled) {
        // Every stream ends with exactly one final frame, so that the host's
        // count of streams in flight on this instance stays exact.
        frame::append(out, frame::Type::kReset, frame::kFlagEnd, it->first, {});
      } else {
        // The host takes the oldest unanswered request to be the one running
        // (that is whom a timeout kills, and why the others can be sent
        // again): answers go out before the next request starts.
        if (!out.empty()) send_all(socket, out);
        handle(out, it->first, it->second, invoke, invalid_response, function);
        answered_one = true;
      }
      pending.erase(it);
      order.pop_front();
    }

    if (!out.empty()) send_all(socket, out);
    if (answered_one) {
      // After the first answer went out, not before: what the first request
      // copied, for the template's next standbys (page_hints.h).
      answered_one = false;
      if (std::string hints = page_hints::first_request_report(); !hints.empty()) {
        frame::append(out, frame::Type::kPageHints, frame::kFlagEnd, 0, hints);
        send_all(socket, out);
      }
    }
  }
}

}  // namespace coil::python
