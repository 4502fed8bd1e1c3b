"""Loading a function and adapting it to coil's calling convention.

The C++ side (src/python/) calls load() once in a template; what it returns is
used in every instance forked from it:

  ("handler", invoke)   the Spin handler model, served by the C++ instance loop:
      invoke(method: str, uri: str, headers: dict[str, str], body: bytes)
        -> (status: int, headers: list[tuple[str, str]], body: bytes)
      Raises InvalidResponse when the function returned something that is not
      a valid response; any other exception is the function's.
  ("asgi", instance)    an ASGI 3 application: instance(fd) runs the instance's
      event loop on the instance socket and never returns; instance.prepare()
      does ahead, in a standby, what needs no socket (see coil._asgi).
"""
import importlib
import os
import sys
import types

import _coil
from coil._http import Request, Response


class LoadError(Exception):
    """The entrypoint cannot be served; the message says why."""


class InvalidResponse(Exception):
    """The function returned something that is not a valid response."""


def run_hooks(which):
    """Runs the registered coil.before_snapshot or coil.after_restore hooks, in order.
    A failing hook raises LoadError naming it (its traceback is the cause)."""
    import coil

    hooks = coil._before_snapshot if which == "before_snapshot" else coil._after_restore
    for hook in list(hooks):
        try:
            hook()
        except BaseException as e:  # noqa: BLE001 - reported, the process then exits
            name = getattr(hook, "__qualname__", repr(hook))
            raise LoadError(f"{which} hook {name} failed: {type(e).__name__}: {e}") from e


def load(entrypoint, options=None):
    """Imports `module:attr` and returns (kind, target); see the module doc."""
    options = options or {}
    module_name, _, attr = entrypoint.partition(":")
    try:
        module = importlib.import_module(module_name)
    except BaseException as e:  # noqa: BLE001 - any import failure refuses the function
        raise LoadError(f"cannot import '{entrypoint}': {type(e).__name__}: {e}") from e
    try:
        target = getattr(module, attr)
    except AttributeError:
        raise LoadError(f"cannot import '{entrypoint}': module '{module_name}' has no attribute '{attr}'") from None
    if not callable(target):
        raise LoadError(f"'{entrypoint}' is not callable (its type is {type(target).__name__})")

    asgi = is_asgi_application(target)
    kind = options.get("kind", "auto")
    if kind == "asgi" and not asgi:
        raise LoadError(f'kind = "asgi", but \'{entrypoint}\' is not an ASGI 3 application '
                        f"(an async callable app(scope, receive, send))")
    if kind == "handler" and asgi:
        raise LoadError(f'kind = "handler", but \'{entrypoint}\' is an ASGI application (async); '
                        f"a handler is a plain function handle_request(request)")
    if not asgi and options.get("root_path_in_path", ""):
        raise LoadError(f"root_path_in_path is set, but '{entrypoint}' is a handler, not an ASGI application; "
                        f"the setting only applies to ASGI apps (a handler sees the full path in request.uri)")
    if asgi:
        from coil import _asgi

        in_path = root_path_in_path(entrypoint, target, options.get("root_path_in_path", ""),
                                    options.get("served_under_prefix", "true") == "true")
        return "asgi", _asgi.Instance(target, options.get("function", attr), in_path)
    return "handler", _handler_invoker(target)


def is_asgi_application(target):
    """An ASGI 3 application is a coroutine function, or an object whose
    __call__ is one (Starlette, FastAPI, Quart, Django's ASGIHandler)."""
    if is_coroutine_function(target):
        return True
    call = getattr(target, "__call__", None)
    return call is not None and is_coroutine_function(call)


_CO_COROUTINE = 0x80  # inspect.CO_COROUTINE


def is_coroutine_function(f):
    """What inspect.iscoroutinefunction answers (bound methods and
    functools.partial unwrapped, then the code's CO_COROUTINE flag), without
    importing inspect: its 34 modules, 2.4 MiB of objects, would be in every
    template, and a fork's cost grows with a template's memory."""
    while isinstance(f, types.MethodType):
        f = f.__func__
    functools = sys.modules.get("functools")  # no partial exists unless it is imported
    while functools is not None and isinstance(f, functools.partial):
        f = f.func
    code = getattr(f, "__code__", None)
    return isinstance(code, types.CodeType) and bool(code.co_flags & _CO_COROUTINE)


def root_path_in_path(entrypoint, app, option, under_prefix=True):
    """Whether scope["path"] keeps the route prefix (today's reading of the
    ASGI spec, which Quart and Starlette >= 0.33 expect) or has it stripped
    (what Starlette < 0.33, Debian's 0.26 under FastAPI 0.92, expects).
    `option` is the manifest's "true" or "false", else the framework found
    behind `app` (see framework_app) decides, and a line at start says so
    when a user may need to know: the prefix stripped, or no framework found,
    for a function that may be served under a prefix (`under_prefix`: any
    route but "/...")."""
    if option in ("true", "false"):
        return option == "true"
    framework = framework_app(app)
    version = _starlette_version() if _is_starlette_app(framework) else None
    if version is not None and version < (0, 33):
        if under_prefix:
            print(f"coil: {entrypoint} is a Starlette {sys.modules['starlette'].__version__} app "
                  f"({type(framework).__name__}): under a prefix route, scope[\"path\"] has the prefix stripped, "
                  f"as Starlette < 0.33 expects (root_path_in_path = true keeps it)", file=sys.stderr)
        return False
    if framework is None and under_prefix:
        print(f"coil: {entrypoint}: no framework app recognised behind it: under a prefix route, "
              f"scope[\"path\"] keeps the prefix, as the ASGI spec has it (root_path_in_path = false strips it)",
              file=sys.stderr)
    return True


def _starlette_version():
    """(major, minor) of the imported Starlette; None if it cannot be read."""
    try:
        return tuple(int(part) for part in sys.modules["starlette"].__version__.split(".")[:2])
    except (KeyError, AttributeError, ValueError):
        return None


_WRAPPED_APP_ATTRIBUTES = (
    "app",             # Starlette's and uvicorn's middleware, Sentry, OpenTelemetry
    "application",     # what other wrappers name it
    "other_asgi_app",  # python-socketio's ASGIApp
    "__wrapped__",     # functools.wraps
)
_FRAMEWORK_SEARCH_LIMIT = 64  # objects looked at, at most


def framework_app(app):
    """The framework application nearest to `app`, looking through the
    middleware and functions that wrap it: the attributes middleware keeps
    the app it wraps in, a bound method's object, and a function's closure
    and the module globals its code names. The recognised frameworks are
    Starlette (FastAPI and any subclass), Quart and Django's ASGIHandler;
    None when no such application is found."""
    seen = set()
    todo = [app]
    while todo and len(seen) < _FRAMEWORK_SEARCH_LIMIT:
        candidate = todo.pop(0)
        if id(candidate) in seen:
            continue
        seen.add(id(candidate))
        if _is_framework_app(candidate):
            return candidate
        if isinstance(candidate, types.MethodType):
            todo.append(candidate.__self__)
            todo.append(candidate.__func__)
            continue
        functools = sys.modules.get("functools")
        if functools is not None and isinstance(candidate, functools.partial):
            todo.append(candidate.func)
            todo.extend(candidate.args)
            todo.extend(candidate.keywords.values())
            continue
        if isinstance(candidate, types.FunctionType):
            todo.extend(cell.cell_contents for cell in candidate.__closure__ or () if _cell_is_set(cell))
            names = candidate.__globals__
            todo.extend(names[name] for name in candidate.__code__.co_names if callable(names.get(name)))
        for attribute in _WRAPPED_APP_ATTRIBUTES:
            wrapped = getattr(candidate, attribute, None)
            if wrapped is not None and callable(wrapped):
                todo.append(wrapped)
    return None


def _cell_is_set(cell):
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def _is_starlette_app(obj):
    applications = sys.modules.get("starlette.applications")
    routing = sys.modules.get("starlette.routing")
    return ((applications is not None and isinstance(obj, applications.Starlette))
            or (routing is not None and isinstance(obj, routing.Router)))


def _is_framework_app(obj):
    if _is_starlette_app(obj):
        return True
    quart = sys.modules.get("quart.app")
    if quart is not None and isinstance(obj, quart.Quart):
        return True
    django = sys.modules.get("django.core.handlers.asgi")
    return django is not None and isinstance(obj, django.ASGIHandler)


def _encode_body(body):
    if body is None:
        return b""
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    raise InvalidResponse(f"response body must be bytes, str or None, not {type(body).__name__}")


def _encode_headers(headers):
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, dict) else headers
    out = []
    try:
        for name, value in items:
            out.append((str(name), str(value)))
    except (TypeError, ValueError):
        raise InvalidResponse("response headers must be a dict or a list of (name, value) pairs") from None
    return out


def _handler_invoker(handler):
    # Spin resets os.environ to the component's environment before every
    # request. The raw mapping's version tag says whether the last request
    # changed it (almost never): comparing the mappings instead would write
    # to every variable's objects, copying their pages in each instance.
    environ = os.environ
    raw = environ._data
    snapshot = dict(environ)
    version = _coil.dict_version(raw)

    def invoke(method, uri, headers, body):
        nonlocal version
        if _coil.dict_version(raw) != version:
            environ.clear()
            environ.update(snapshot)
            version = _coil.dict_version(raw)
        response = handler(Request(method, uri, headers, body))
        if not isinstance(response, Response):
            raise InvalidResponse(f"handler returned {type(response).__name__}, not a Response")
        status = response.status
        if type(status) is not int or not 100 <= status <= 599:
            raise InvalidResponse(f"response status {status!r} is not an integer in 100-599")
        return status, _encode_headers(response.headers), _encode_body(response.body)

    return invoke
