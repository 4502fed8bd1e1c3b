#include "python/exchange.h"

// structmember.h: PyMemberDef's T_* types (Python 3.11 has no Py_T_* names yet).
#include <structmember.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <utility>

#include "python/codec.h"

namespace coil::python {
namespace {

constexpr Py_ssize_t kResponseWindow = 1 << 20;
constexpr Py_ssize_t kResponseSlice = 256 << 10;

// Interned names, made once per interpreter where _coil is created
// (add_exchange_types), and inherited by every instance.
struct Names {
  PyObject* type;
  PyObject* status;
  PyObject* headers;
  PyObject* body;
  PyObject* more_body;
  PyObject* out;
  PyObject* heads;
  PyObject* put_heads_soon;
  PyObject* message;
  PyObject* wake;
  PyObject* schedule_flush;
  PyObject* send_slow_path;
  PyObject* wait_for_room;
  PyObject* empty_bytes;
  PyObject* empty_tuple;
};
Names names;

bool make_names() {
  if (names.type != nullptr) return true;  // made already
  auto intern = [](const char* text) { return PyUnicode_InternFromString(text); };
  names = {intern("type"),
           intern("status"),
           intern("headers"),
           intern("body"),
           intern("more_body"),
           intern("out"),
           intern("heads"),
           intern("put_heads_soon"),
           intern("message"),
           intern("wake"),
           intern("schedule_flush"),
           intern("send_slow_path"),
           intern("wait_for_room"),
           PyBytes_FromStringAndSize(nullptr, 0),
           PyTuple_New(0)};
  for (PyObject* made : {names.type, names.status, names.headers, names.body, names.more_body, names.out,
                         names.heads, names.put_heads_soon, names.message, names.wake, names.schedule_flush,
                         names.send_slow_path, names.wait_for_room, names.empty_bytes, names.empty_tuple}) {
    if (made == nullptr) return false;
  }
  return true;
}

// Whether `object` is exactly the str `text` (ASCII). A str subclass is not:
// it may compare as it likes, so it takes the Python path.
bool is_text(PyObject* object, std::string_view text) {
  return PyUnicode_CheckExact(object) && PyUnicode_IS_ASCII(object) &&
         static_cast<size_t>(PyUnicode_GET_LENGTH(object)) == text.size() &&
         std::memcmp(PyUnicode_DATA(object), text.data(), text.size()) == 0;
}

bool is_set(PyObject* object) { return object != nullptr && object != Py_None; }

// ---------------------------------------------------------------- StreamBase

struct StreamBase {
  PyObject ob_base;  // PyObject_HEAD
  PyObject* server;
  PyObject* waiter;
  PyObject* task;
  unsigned int stream;
  char disconnected;
  char finished;
  char running;
};

int stream_traverse_fields(StreamBase* self, visitproc visit, void* arg) {
  Py_VISIT(self->server);
  Py_VISIT(self->waiter);
  Py_VISIT(self->task);
  return 0;
}
void stream_clear_fields(StreamBase* self) {
  Py_CLEAR(self->server);
  Py_CLEAR(self->waiter);
  Py_CLEAR(self->task);
}

int stream_traverse(PyObject* self, visitproc visit, void* arg) {
  return stream_traverse_fields(reinterpret_cast<StreamBase*>(self), visit, arg);
}
int stream_clear(PyObject* self) {
  stream_clear_fields(reinterpret_cast<StreamBase*>(self));
  return 0;
}
void stream_dealloc(PyObject* self) {
  PyObject_GC_UnTrack(self);
  stream_clear(self);
  Py_TYPE(self)->tp_free(self);
}

// Sets the fields StreamBase.__init__ sets from (server, stream).
bool init_stream(StreamBase* self, PyObject* server, PyObject* stream) {
  unsigned long id = PyLong_AsUnsignedLong(stream);
  if (id == static_cast<unsigned long>(-1) && PyErr_Occurred()) return false;
  if (id > UINT32_MAX) {
    PyErr_SetString(PyExc_OverflowError, "stream id out of range");
    return false;
  }
  Py_XSETREF(self->server, Py_NewRef(server));
  Py_CLEAR(self->waiter);
  Py_CLEAR(self->task);
  self->stream = static_cast<unsigned int>(id);
  self->disconnected = 0;
  self->finished = 0;
  self->running = 0;
  return true;
}

int stream_init(PyObject* self, PyObject* args, PyObject* kwargs) {
  PyObject *server, *stream;
  if (kwargs != nullptr && PyDict_GET_SIZE(kwargs) != 0) {
    PyErr_SetString(PyExc_TypeError, "StreamBase() takes no keyword arguments");
    return -1;
  }
  if (!PyArg_UnpackTuple(args, "StreamBase", 2, 2, &server, &stream)) return -1;
  return init_stream(reinterpret_cast<StreamBase*>(self), server, stream) ? 0 : -1;
}

PyMemberDef kStreamMembers[] = {
    {"server", T_OBJECT, offsetof(StreamBase, server), 0, "The instance's _Server."},
    {"stream", T_UINT, offsetof(StreamBase, stream), READONLY, "The stream id (frame.h)."},
    {"waiter", T_OBJECT, offsetof(StreamBase, waiter), 0, "The future a receive() waits on, or None."},
    {"task", T_OBJECT, offsetof(StreamBase, task), 0, "The task running the app, or None."},
    {"disconnected", T_BOOL, offsetof(StreamBase, disconnected), 0, "The host is done with the stream."},
    {"finished", T_BOOL, offsetof(StreamBase, finished), 0, "The stream's final frame is written."},
    {"running", T_BOOL, offsetof(StreamBase, running), 0, "The task has taken its first step."},
    {nullptr, 0, 0, 0, nullptr},
};

PyTypeObject stream_base_type = [] {
  PyTypeObject type{PyVarObject_HEAD_INIT(nullptr, 0)};
  type.tp_name = "_coil.StreamBase";
  type.tp_basicsize = sizeof(StreamBase);
  type.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC;
  type.tp_doc = "The fields of every ASGI stream of an instance (src/python/exchange.h).";
  type.tp_traverse = stream_traverse;
  type.tp_clear = stream_clear;
  type.tp_dealloc = stream_dealloc;
  type.tp_members = kStreamMembers;
  type.tp_init = stream_init;
  type.tp_new = PyType_GenericNew;
  return type;
}();

// -------------------------------------------------------------- ExchangeBase

struct ExchangeBase {
  StreamBase base;
  PyObject* out;
  PyObject* heads;
  PyObject* chunks;
  PyObject* head;  // the encoded head (bytes) from http.response.start until it is written
  PyObject* room;
  Py_ssize_t unsent;
  Py_ssize_t body_taken;
  char body_done;
  char started;
  char head_sent;
  char body_wanted;
  char client_done;
  char complete;
};

int exchange_traverse(PyObject* object, visitproc visit, void* arg) {
  auto* self = reinterpret_cast<ExchangeBase*>(object);
  Py_VISIT(self->out);
  Py_VISIT(self->heads);
  Py_VISIT(self->chunks);
  Py_VISIT(self->head);
  Py_VISIT(self->room);
  return stream_traverse_fields(&self->base, visit, arg);
}
int exchange_clear(PyObject* object) {
  auto* self = reinterpret_cast<ExchangeBase*>(object);
  Py_CLEAR(self->out);
  Py_CLEAR(self->heads);
  Py_CLEAR(self->chunks);
  Py_CLEAR(self->head);
  Py_CLEAR(self->room);
  stream_clear_fields(&self->base);
  return 0;
}
void exchange_dealloc(PyObject* self) {
  PyObject_GC_UnTrack(self);
  exchange_clear(self);
  Py_TYPE(self)->tp_free(self);
}

int exchange_init(PyObject* object, PyObject* args, PyObject* kwargs) {
  auto* self = reinterpret_cast<ExchangeBase*>(object);
  PyObject *server, *stream, *body, *end;
  if (kwargs != nullptr && PyDict_GET_SIZE(kwargs) != 0) {
    PyErr_SetString(PyExc_TypeError, "ExchangeBase() takes no keyword arguments");
    return -1;
  }
  if (!PyArg_UnpackTuple(args, "ExchangeBase", 4, 4, &server, &stream, &body, &end)) return -1;
  if (!init_stream(&self->base, server, stream)) return -1;
  PyObject* out = PyObject_GetAttr(server, names.out);
  if (out == nullptr) return -1;
  if (!PyByteArray_CheckExact(out)) {
    Py_DECREF(out);
    PyErr_SetString(PyExc_TypeError, "server.out must be a bytearray");
    return -1;
  }
  Py_XSETREF(self->out, out);
  PyObject* heads = PyObject_GetAttr(server, names.heads);
  if (heads == nullptr) return -1;
  if (!PyList_CheckExact(heads)) {
    Py_DECREF(heads);
    PyErr_SetString(PyExc_TypeError, "server.heads must be a list");
    return -1;
  }
  Py_XSETREF(self->heads, heads);
  int ended = PyObject_IsTrue(end);
  int has_body = ended < 0 ? -1 : PyObject_IsTrue(body);
  if (ended < 0 || has_body < 0) return -1;
  PyObject* chunks = (has_body || ended) ? PyList_New(1) : PyList_New(0);
  if (chunks == nullptr) return -1;
  if (has_body || ended) PyList_SET_ITEM(chunks, 0, Py_NewRef(body));
  Py_XSETREF(self->chunks, chunks);
  Py_CLEAR(self->head);
  Py_CLEAR(self->room);
  self->unsent = 0;
  self->body_taken = 0;
  self->body_done = static_cast<char>(ended);
  self->started = 0;
  self->head_sent = 0;
  self->body_wanted = 0;
  self->client_done = 0;
  self->complete = 0;
  return 0;
}

// What put() does; `more` already a truth value. The fields it reads are held
// while it runs: app code can run inside (a body's buffer, wake(),
// schedule_flush()) and may replace them.
bool put(ExchangeBase* self, PyObject* body, bool more) {
  if (self->out == nullptr || self->base.server == nullptr) {  // made with __new__ alone, or server deleted
    PyErr_SetString(PyExc_RuntimeError, "the exchange has no server");
    return false;
  }
  PyObject* out = Py_NewRef(self->out);
  PyObject* server = Py_NewRef(self->base.server);
  Py_ssize_t size = 0;
  bool ok;
  if (!self->head_sent) {
    PyObject* head = Py_NewRef(self->head != nullptr ? self->head : Py_None);
    ok = append_encoded_response_frame(out, self->base.stream, head, body, !more, size);
    Py_DECREF(head);
    if (ok) {
      self->head_sent = 1;
      Py_CLEAR(self->head);
    }
  } else {
    ok = append_body_frame(out, self->base.stream, body, !more, size);
  }
  if (ok) {
    self->unsent += size;
    if (!more) {
      self->base.finished = 1;
      self->complete = 1;
      if (is_set(self->base.waiter)) {  // a receive() waits: it returns http.disconnect
        PyObject* done = PyObject_CallMethodNoArgs(reinterpret_cast<PyObject*>(self), names.wake);
        ok = done != nullptr;
        Py_XDECREF(done);
      }
      if (ok && self->room != nullptr && PyList_Check(self->room) && PyList_GET_SIZE(self->room) > 0) {
        // send()s of other tasks waiting for room: the stream is over
        PyObject* done = PyObject_CallMethod(reinterpret_cast<PyObject*>(self), "drained", "i", 0);
        ok = done != nullptr;
        Py_XDECREF(done);
      }
    }
  }
  if (ok) {
    PyObject* done = PyObject_CallMethodNoArgs(server, names.schedule_flush);
    ok = done != nullptr;
    Py_XDECREF(done);
  }
  Py_DECREF(server);
  Py_DECREF(out);
  return ok;
}

// What head_waiting() does: the exchange joins server.heads, the responses
// started and not yet written, and the first to join in a turn of the loop
// has server.put_heads_soon() called, which writes at the end of the turn
// the heads that no body part took along by then.
bool note_head_waiting(ExchangeBase* self) {
  if (self->heads == nullptr || self->base.server == nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "the exchange has no server");
    return false;
  }
  if (PyList_Append(self->heads, reinterpret_cast<PyObject*>(self)) != 0) return false;
  if (PyList_GET_SIZE(self->heads) != 1) return true;
  PyObject* server = Py_NewRef(self->base.server);
  PyObject* done = PyObject_CallMethodNoArgs(server, names.put_heads_soon);
  Py_DECREF(server);
  if (done == nullptr) {
    // Nothing will write the heads: the list is left empty, so that the next
    // start schedules again (the invariant: heads not empty, a call scheduled).
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyList_SetSlice(self->heads, 0, PyList_GET_SIZE(self->heads), nullptr);
    PyErr_Restore(type, value, traceback);
    return false;
  }
  Py_DECREF(done);
  return true;
}

PyObject* exchange_head_waiting(PyObject* self, PyObject*) {
  if (!note_head_waiting(reinterpret_cast<ExchangeBase*>(self))) return nullptr;
  Py_RETURN_NONE;
}

// put_head(): the head alone, the stream going on (put_waiting_heads, and the
// first head of a response started twice).
PyObject* exchange_put_head(PyObject* object, PyObject*) {
  auto* self = reinterpret_cast<ExchangeBase*>(object);
  if (self->out == nullptr || self->head == nullptr || self->head_sent) {
    PyErr_SetString(PyExc_RuntimeError, "the exchange has no head to write");
    return nullptr;
  }
  PyObject* out = Py_NewRef(self->out);
  PyObject* head = Py_NewRef(self->head);
  Py_ssize_t size = 0;
  bool ok = append_encoded_response_frame(out, self->base.stream, head, names.empty_bytes, false, size);
  Py_DECREF(head);
  Py_DECREF(out);
  if (!ok) return nullptr;
  self->head_sent = 1;
  Py_CLEAR(self->head);
  Py_RETURN_NONE;
}

// put(body, more)
PyObject* exchange_put(PyObject* self, PyObject* const* args, Py_ssize_t count) {
  if (count != 2) {
    PyErr_Format(PyExc_TypeError, "put() takes 2 arguments (%zd given)", count);
    return nullptr;
  }
  int more = PyObject_IsTrue(args[1]);
  if (more < 0 || !put(reinterpret_cast<ExchangeBase*>(self), args[0], more != 0)) return nullptr;
  Py_RETURN_NONE;
}

// What the fast path of send() made of a message.
enum class Taken {
  kDone,         // taken: the send is complete
  kWaitForRoom,  // taken, and the window is full: wait_for_room() runs next
  kSlow,         // not taken: send_slow_path(message) runs
  kError,        // a Python error is set
};

// `message[key]` as a new reference; nullptr with no error set when absent.
PyObject* item(PyObject* message, PyObject* key) { return Py_XNewRef(PyDict_GetItemWithError(message, key)); }

// The fast path of send(): the same outcome as _Exchange.send_slow_path for
// the messages it takes, and kSlow for every other message and for every
// mistake send_slow_path names (a start sent twice, a body before the start
// or after the end). What raises here is what the Python path would raise
// the same way: an invalid status or headers (from the codec), or an
// exception from app code (a key's __eq__, more_body's __bool__).
Taken take(ExchangeBase* self, PyObject* message) {
  if (!PyDict_CheckExact(message)) return Taken::kSlow;
  // Borrowed, and used before any other lookup (a key's __eq__ may run then).
  PyObject* type = PyDict_GetItemWithError(message, names.type);
  if (type == nullptr) return PyErr_Occurred() ? Taken::kError : Taken::kSlow;
  if (is_text(type, "http.response.start")) {
    if (self->started) return Taken::kSlow;
    PyObject* status = item(message, names.status);
    if (status == nullptr) return PyErr_Occurred() ? Taken::kError : Taken::kSlow;
    PyObject* headers = item(message, names.headers);
    if (headers == nullptr && PyErr_Occurred()) {
      Py_DECREF(status);
      return Taken::kError;
    }
    // Encoded now, as uvicorn does: an invalid status or headers raise from
    // this send(), and later changes to the app's header list do not go out.
    PyObject* head = encode_response_head(status, headers != nullptr ? headers : names.empty_tuple);
    Py_DECREF(status);
    Py_XDECREF(headers);
    if (head == nullptr) return Taken::kError;
    if (self->started) {  // app code in the encoding sent a start meanwhile
      Py_DECREF(head);
      return Taken::kSlow;
    }
    Py_XSETREF(self->head, head);
    self->started = 1;
    return note_head_waiting(self) ? Taken::kDone : Taken::kError;
  }
  if (!is_text(type, "http.response.body")) return Taken::kSlow;
  if (!self->started || (self->complete && !self->base.disconnected)) return Taken::kSlow;
  if (self->base.finished || self->base.disconnected) return Taken::kDone;
  PyObject* body = item(message, names.body);
  if (body == nullptr && PyErr_Occurred()) return Taken::kError;
  if (body == nullptr || body == Py_None) Py_XSETREF(body, Py_NewRef(names.empty_bytes));  // None: as uvicorn
  if (!PyBytes_CheckExact(body) || PyBytes_GET_SIZE(body) > kResponseSlice) {
    Py_DECREF(body);
    return Taken::kSlow;
  }
  PyObject* more_body = item(message, names.more_body);
  int more = 0;
  if (more_body != nullptr) {
    more = PyObject_IsTrue(more_body);
    Py_DECREF(more_body);
  } else if (PyErr_Occurred()) {
    more = -1;
  }
  bool ok = more >= 0 && put(self, body, more != 0);
  Py_DECREF(body);
  if (!ok) return Taken::kError;
  return (more && self->unsent > kResponseWindow) ? Taken::kWaitForRoom : Taken::kDone;
}

// ---------------------------------------------------------------- PendingSend

// What send(message) returns: an awaitable that takes the message when it is
// first awaited, then runs the coroutine the message needs, if any. It keeps
// a coroutine's rules: a step while one runs raises ValueError, a second
// awaiter RuntimeError, and one never awaited warns when it is collected.
struct PendingSend {
  PyObject ob_base;    // PyObject_HEAD
  PyObject* exchange;  // nullptr once the message was looked at
  PyObject* message;
  PyObject* inner;  // the coroutine awaited in turn (send_slow_path or wait_for_room)
  char running;     // a step is under way (app code may run inside it)
};

int pending_traverse(PyObject* object, visitproc visit, void* arg) {
  auto* self = reinterpret_cast<PendingSend*>(object);
  Py_VISIT(self->exchange);
  Py_VISIT(self->message);
  Py_VISIT(self->inner);
  return 0;
}
int pending_clear(PyObject* object) {
  auto* self = reinterpret_cast<PendingSend*>(object);
  Py_CLEAR(self->exchange);
  Py_CLEAR(self->message);
  Py_CLEAR(self->inner);
  return 0;
}

// A send made and never awaited: the mistake a coroutine reports too.
void pending_finalize(PyObject* object) {
  auto* self = reinterpret_cast<PendingSend*>(object);
  if (self->exchange == nullptr) return;
  PyObject *type, *value, *traceback;
  PyErr_Fetch(&type, &value, &traceback);
  if (PyErr_WarnEx(PyExc_RuntimeWarning, "ASGI send() was never awaited: its message was not sent", 1) < 0) {
    PyErr_WriteUnraisable(nullptr);
  }
  PyErr_Restore(type, value, traceback);
}

void pending_dealloc(PyObject* self) {
  if (PyObject_CallFinalizerFromDealloc(self) < 0) return;  // resurrected by a warning filter
  PyObject_GC_UnTrack(self);
  pending_clear(self);
  PyObject_GC_Del(self);
}

// Runs `call` on the inner coroutine, held for the call, and forgets it
// when the call ended it (anything but a yielded value).
template <typename Call>
auto on_inner(PendingSend* self, Call call) {
  PyObject* inner = Py_NewRef(self->inner);
  self->running = 1;
  auto [outcome, ended] = call(inner);
  self->running = 0;
  if (ended && self->inner == inner) Py_CLEAR(self->inner);
  Py_DECREF(inner);
  return outcome;
}

bool refuse_if_running(PendingSend* self) {
  if (!self->running) return false;
  PyErr_SetString(PyExc_ValueError, "coroutine already executing");
  return true;
}

// One step, as a coroutine's send(value) (the am_send protocol).
PySendResult pending_step(PyObject* object, PyObject* value, PyObject** result) {
  auto* self = reinterpret_cast<PendingSend*>(object);
  if (refuse_if_running(self)) return PYGEN_ERROR;
  if (self->exchange != nullptr) {
    if (value != Py_None) {
      PyErr_SetString(PyExc_TypeError, "can't send non-None value to a just-started coroutine");
      return PYGEN_ERROR;
    }
    PyObject* exchange = self->exchange;
    PyObject* message = self->message;
    self->exchange = nullptr;
    self->message = nullptr;
    self->running = 1;
    Taken taken = take(reinterpret_cast<ExchangeBase*>(exchange), message);
    PyObject* inner = nullptr;
    if (taken == Taken::kSlow) {
      inner = PyObject_CallMethodOneArg(exchange, names.send_slow_path, message);
    } else if (taken == Taken::kWaitForRoom) {
      inner = PyObject_CallMethodNoArgs(exchange, names.wait_for_room);
    }
    self->running = 0;
    Py_DECREF(exchange);
    Py_DECREF(message);
    if (taken == Taken::kError) return PYGEN_ERROR;
    if (taken == Taken::kDone) {
      *result = Py_NewRef(Py_None);
      return PYGEN_RETURN;
    }
    if (inner == nullptr) return PYGEN_ERROR;
    Py_XSETREF(self->inner, inner);
  }
  if (self->inner == nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
    return PYGEN_ERROR;
  }
  return on_inner(self, [&](PyObject* inner) {
    PySendResult outcome = PyIter_Send(inner, value, result);
    return std::pair{outcome, outcome != PYGEN_NEXT};
  });
}

// Raises StopIteration(value), as a coroutine that returned `value` does.
void stop_iteration(PyObject* value) {
  if (value == Py_None) {
    PyErr_SetNone(PyExc_StopIteration);
  } else {
    PyObject* error = PyObject_CallOneArg(PyExc_StopIteration, value);
    if (error != nullptr) {
      PyErr_SetObject(PyExc_StopIteration, error);
      Py_DECREF(error);
    }
  }
  Py_DECREF(value);
}

PyObject* pending_next(PyObject* self) {
  PyObject* result = nullptr;
  PySendResult outcome = pending_step(self, Py_None, &result);
  if (outcome == PYGEN_NEXT) return result;
  if (outcome == PYGEN_RETURN) {
    if (result == Py_None) {
      Py_DECREF(result);  // exhausted, returning None: no exception needed
    } else {
      stop_iteration(result);
    }
  }
  return nullptr;
}

PyObject* pending_send(PyObject* self, PyObject* value) {
  PyObject* result = nullptr;
  PySendResult outcome = pending_step(self, value, &result);
  if (outcome == PYGEN_NEXT) return result;
  if (outcome == PYGEN_RETURN) stop_iteration(result);
  return nullptr;
}

// Raises what throw(type[, value[, traceback]]) names, as a coroutine that
// has not started, or has ended, does.
void raise_thrown(PyObject* type, PyObject* value, PyObject* traceback) {
  if (traceback == Py_None) traceback = nullptr;
  if (traceback != nullptr && !PyTraceBack_Check(traceback)) {
    PyErr_SetString(PyExc_TypeError, "throw() third argument must be a traceback object");
    return;
  }
  if (PyExceptionInstance_Check(type)) {
    if (value != nullptr && value != Py_None) {
      PyErr_SetString(PyExc_TypeError, "instance exception may not have a separate value");
      return;
    }
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(type)), type);
  } else if (PyExceptionClass_Check(type)) {
    PyErr_SetObject(type, value);
  } else {
    PyErr_Format(PyExc_TypeError,
                 "exceptions must be classes or instances deriving from BaseException, not %s",
                 Py_TYPE(type)->tp_name);
    return;
  }
  if (traceback != nullptr) {
    PyObject *error_type, *error, *error_traceback;
    PyErr_Fetch(&error_type, &error, &error_traceback);
    PyErr_NormalizeException(&error_type, &error, &error_traceback);
    if (error != nullptr) PyException_SetTraceback(error, traceback);
    Py_XSETREF(error_traceback, Py_NewRef(traceback));
    PyErr_Restore(error_type, error, error_traceback);
  }
}

// throw(): into the coroutine awaited in turn; before the first step, or
// after the last, it is raised here (a message not yet looked at is never
// taken).
PyObject* pending_throw(PyObject* object, PyObject* args) {
  auto* self = reinterpret_cast<PendingSend*>(object);
  PyObject *type, *value = nullptr, *traceback = nullptr;
  if (!PyArg_UnpackTuple(args, "throw", 1, 3, &type, &value, &traceback)) return nullptr;
  if (refuse_if_running(self)) return nullptr;
  Py_CLEAR(self->exchange);
  Py_CLEAR(self->message);
  if (self->inner == nullptr) {
    raise_thrown(type, value, traceback);
    return nullptr;
  }
  return on_inner(self, [&](PyObject* inner) {
    PyObject* method = PyObject_GetAttrString(inner, "throw");
    PyObject* result = method != nullptr ? PyObject_Call(method, args, nullptr) : nullptr;
    Py_XDECREF(method);
    return std::pair{result, result == nullptr};  // it ended: returned (StopIteration) or raised
  });
}

PyObject* pending_close(PyObject* object, PyObject*) {
  auto* self = reinterpret_cast<PendingSend*>(object);
  if (refuse_if_running(self)) return nullptr;
  Py_CLEAR(self->exchange);
  Py_CLEAR(self->message);
  if (self->inner == nullptr) Py_RETURN_NONE;
  return on_inner(self, [&](PyObject* inner) {
    return std::pair{PyObject_CallMethod(inner, "close", nullptr), true};
  });
}

// `await pending`: the first awaiter gets the send itself. While the send
// waits inside its inner coroutine, a second awaiter is refused, as with a
// coroutine.
PyObject* pending_await(PyObject* object) {
  auto* self = reinterpret_cast<PendingSend*>(object);
  if (self->inner != nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "coroutine is being awaited already");
    return nullptr;
  }
  return Py_NewRef(object);
}

// For reprs (a Task running a send shows it by name).
PyObject* pending_name(PyObject*, void*) { return PyUnicode_FromString("send"); }
PyObject* pending_qualname(PyObject*, void*) { return PyUnicode_FromString("ExchangeBase.send"); }

PyGetSetDef kPendingGetSet[] = {
    {"__name__", pending_name, nullptr, nullptr, nullptr},
    {"__qualname__", pending_qualname, nullptr, nullptr, nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyMethodDef kPendingMethods[] = {
    {"send", pending_send, METH_O, "Resumes the send, as a coroutine's send()."},
    {"throw", pending_throw, METH_VARARGS, "Raises into the send, as a coroutine's throw()."},
    {"close", pending_close, METH_NOARGS, "Ends the send, as a coroutine's close()."},
    {nullptr, nullptr, 0, nullptr},
};

PyAsyncMethods kPendingAsync = {pending_await, nullptr, nullptr, pending_step};

PyTypeObject pending_send_type = [] {
  PyTypeObject type{PyVarObject_HEAD_INIT(nullptr, 0)};
  type.tp_name = "_coil.PendingSend";
  type.tp_basicsize = sizeof(PendingSend);
  type.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC;
  type.tp_doc = "An ASGI send() of an HTTP exchange, taken when it is awaited (src/python/exchange.h).";
  type.tp_traverse = pending_traverse;
  type.tp_clear = pending_clear;
  type.tp_dealloc = pending_dealloc;
  type.tp_finalize = pending_finalize;
  type.tp_as_async = &kPendingAsync;
  type.tp_getset = kPendingGetSet;
  type.tp_iternext = pending_next;
  type.tp_iter = PyObject_SelfIter;  // `yield from send(m)` in a generator-based coroutine
  type.tp_methods = kPendingMethods;
  return type;
}();

// The PendingSend of send(message).
PyObject* pending_send_of(PyObject* self, PyObject* message) {
  PendingSend* pending = PyObject_GC_New(PendingSend, &pending_send_type);
  if (pending == nullptr) return nullptr;
  pending->exchange = Py_NewRef(self);
  pending->message = Py_NewRef(message);
  pending->inner = nullptr;
  pending->running = 0;
  PyObject_GC_Track(pending);
  return reinterpret_cast<PyObject*>(pending);
}

// The exchange called, send(message): what the app is given as its send
// callable, message by position or by name, as for `async def send(message)`.
PyObject* exchange_call(PyObject* self, PyObject* args, PyObject* kwargs) {
  Py_ssize_t given = PyTuple_GET_SIZE(args);
  if (given == 1 && (kwargs == nullptr || PyDict_GET_SIZE(kwargs) == 0)) {
    return pending_send_of(self, PyTuple_GET_ITEM(args, 0));
  }
  if (given == 0 && kwargs != nullptr && PyDict_GET_SIZE(kwargs) == 1) {
    PyObject* message = PyDict_GetItemWithError(kwargs, names.message);
    if (message != nullptr) return pending_send_of(self, message);
    if (PyErr_Occurred()) return nullptr;
  }
  PyErr_Format(PyExc_TypeError, "send() takes one argument, message (%zd given)",
               given + (kwargs != nullptr ? PyDict_GET_SIZE(kwargs) : 0));
  return nullptr;
}

PyMethodDef kExchangeMethods[] = {
    {"head_waiting", exchange_head_waiting, METH_NOARGS,
     "Has the response head written at the end of this turn of the loop unless a body part takes it first."},
    {"put_head", exchange_put_head, METH_NOARGS, "Appends the response head alone; the stream goes on."},
    {"put", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(exchange_put)), METH_FASTCALL,
     "Appends a response body part (and the head, the first time); ends the stream when not more."},
    {nullptr, nullptr, 0, nullptr},
};

PyMemberDef kExchangeMembers[] = {
    {"chunks", T_OBJECT, offsetof(ExchangeBase, chunks), 0, "Body parts not yet received (a list)."},
    {"head", T_OBJECT, offsetof(ExchangeBase, head), 0,
     "The encoded response head (bytes), from http.response.start until it is written."},
    {"room", T_OBJECT, offsetof(ExchangeBase, room), 0,
     "The futures of the send()s waiting for the window (a list), or None."},
    {"unsent", T_PYSSIZET, offsetof(ExchangeBase, unsent), 0,
     "Body bytes sent that the client has not taken."},
    {"body_taken", T_PYSSIZET, offsetof(ExchangeBase, body_taken), 0,
     "Request body bytes the app took, not yet reported to the host."},
    {"body_done", T_BOOL, offsetof(ExchangeBase, body_done), 0, "The request body has all arrived."},
    {"started", T_BOOL, offsetof(ExchangeBase, started), 0, "http.response.start was sent."},
    {"head_sent", T_BOOL, offsetof(ExchangeBase, head_sent), 0, "The response head is written."},
    {"body_wanted", T_BOOL, offsetof(ExchangeBase, body_wanted), 0,
     "The host was told the app waits for the body."},
    {"client_done", T_BOOL, offsetof(ExchangeBase, client_done), 0, "The client closed its sending side."},
    {"complete", T_BOOL, offsetof(ExchangeBase, complete), 0, "The app sent its whole response."},
    {nullptr, 0, 0, 0, nullptr},
};

PyTypeObject exchange_base_type = [] {
  PyTypeObject type{PyVarObject_HEAD_INIT(nullptr, 0)};
  type.tp_name = "_coil.ExchangeBase";
  type.tp_basicsize = sizeof(ExchangeBase);
  type.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC;
  type.tp_doc = "An ASGI HTTP request's stream, with its send() (src/python/exchange.h).";
  type.tp_traverse = exchange_traverse;
  type.tp_clear = exchange_clear;
  type.tp_dealloc = exchange_dealloc;
  type.tp_methods = kExchangeMethods;
  type.tp_call = exchange_call;
  type.tp_members = kExchangeMembers;
  type.tp_base = &stream_base_type;
  type.tp_init = exchange_init;
  type.tp_new = PyType_GenericNew;
  return type;
}();

}  // namespace

bool add_exchange_types(PyObject* module) {
  if (!make_names()) return false;
  if (PyType_Ready(&stream_base_type) != 0 || PyType_Ready(&exchange_base_type) != 0 ||
      PyType_Ready(&pending_send_type) != 0) {
    return false;
  }
  return PyModule_AddObjectRef(module, "StreamBase", reinterpret_cast<PyObject*>(&stream_base_type)) == 0 &&
         PyModule_AddObjectRef(module, "ExchangeBase", reinterpret_cast<PyObject*>(&exchange_base_type)) ==
             0 &&
         PyModule_AddIntConstant(module, "RESPONSE_WINDOW", kResponseWindow) == 0 &&
         PyModule_AddIntConstant(module, "RESPONSE_SLICE", kResponseSlice) == 0;
}

}  // namespace coil::python
