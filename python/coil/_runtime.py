"""Loading a function and adapting it to coil's calling convention.

The C++ side (src/python/) calls load() once in a template, then calls the
returned invoker for every request in every instance forked from it. The
invoker contract, per kind:

  "handler"  invoke(method: str, uri: str, headers: dict[str, str], body: bytes)
             -> (status: int, headers: list[tuple[str, str]], body: bytes)
             Raises InvalidResponse when the function returned something that
             is not a valid response; any other exception is the function's.
"""
import importlib
import os
import sys

from coil._http import Request, Response


class LoadError(Exception):
    """The entrypoint cannot be served; the message says why."""


class InvalidResponse(Exception):
    """The function returned something that is not a valid response."""


def load(entrypoint):
    """Imports `module:attr` and returns (kind, invoker)."""
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
        raise LoadError(f"'{entrypoint}' is a {type(target).__name__}, not a callable")
    return "handler", _handler_invoker(target)


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
    # request; comparing the raw mapping first keeps that free when (as
    # almost always) the last request left it alone.
    environ = os.environ
    raw = environ._data
    raw_snapshot = dict(raw)
    snapshot = dict(environ)

    def invoke(method, uri, headers, body):
        if raw != raw_snapshot:
            environ.clear()
            environ.update(snapshot)
        response = handler(Request(method, uri, headers, body))
        if not isinstance(response, Response):
            raise InvalidResponse(f"handler returned {type(response).__name__}, not a Response")
        status = response.status
        if type(status) is not int or not 100 <= status <= 599:
            raise InvalidResponse(f"response status {status!r} is not an integer in 100-599")
        return status, _encode_headers(response.headers), _encode_body(response.body)

    return invoke
