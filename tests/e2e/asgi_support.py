"""Helpers shared by the ASGI end-to-end tests (tests/e2e/test_asgi_*.py).

Synchronisation between a test and the app it serves goes through files
("gates": the app polls for a file the test creates) and through the app's
own log lines (`print(..., flush=True)` shows up on coil's stderr as
`[NAME pid=N] ...`), never through sleeps.
"""

import asyncio
import json
import socket
import uuid
from pathlib import Path

import pytest

from conftest import Coil, _check_binary, _coil_args, _kill_leaked, fn_toml, write_files

# The app side of a gate: wait (without blocking the event loop) until the test
# creates the file GATE_DIR/NAME. A deadline keeps a broken run from hanging forever.
APP_GATE = '''
import asyncio as _asyncio, os as _os, time as _time

GATE_DIR = _os.environ.get("GATE_DIR", "/nonexistent")


async def gate(name, limit=30.0):
    p = _os.path.join(GATE_DIR, name)
    deadline = _time.monotonic() + limit
    while not _os.path.exists(p):
        if _time.monotonic() > deadline:
            raise RuntimeError("gate %s never opened" % name)
        await _asyncio.sleep(0.005)
'''


def asgi_manifest(name="app", route="/...", entrypoint="main:app", gate_dir=None, env=None, **opts):
    """gate_dir: the test's gate directory (or "@GATE_DIR@"), mounted read-only at /gates."""
    env = dict(env or {})
    volumes = ()
    if gate_dir is not None:
        env["GATE_DIR"] = "/gates"
        volumes = ({"mount": "/gates", "kind": "readonly", "source": str(gate_dir)},)
    return fn_toml(name, route, entrypoint=entrypoint, env=env or None, volumes=volumes, **opts)


class Gates:
    """Files the test creates to let the app go on (see APP_GATE)."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def new(self, prefix="g"):
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    def open(self, name):
        (self.dir / name).touch()


def fn_line(name, text_regex):
    """A regex for one line that the function printed."""
    return rf"^\[{name} pid=(\d+)\] {text_regex}"


# ---------------------------------------------------------------- module-scoped servers

class ModuleServer:
    """One `coil up` shared by the tests of a module (framework tests: the app is the same,
    one start instead of one per test keeps the suite fast)."""

    def __init__(self, tmp_path_factory, files, *extra, entry=None, name="shared"):
        _check_binary()
        base = tmp_path_factory.mktemp(name)
        self.gates = Gates(base / "gates")
        files = {k: (v.replace("@GATE_DIR@", str(self.gates.dir)) if isinstance(v, str) else v)
                 for k, v in files.items()}
        directory = write_files(base / "fn", files)
        self.coil = Coil(_coil_args(directory, entry, extra), cwd=base, directory=directory)
        try:
            self.coil.wait_listening()
        except BaseException:
            self.close()
            raise

    def close(self):
        self.coil.kill()
        _kill_leaked()
        log = self.coil.log()
        if log:
            print(f"----- coil stderr ({' '.join(self.coil.args)}) -----\n{log}")


def module_server(tmp_path_factory, files, *extra, entry=None, name="shared"):
    """Generator body for a module-scoped fixture: `yield from module_server(...)`."""
    s = ModuleServer(tmp_path_factory, files, *extra, entry=entry, name=name)
    try:
        yield s
    finally:
        s.close()


# ---------------------------------------------------------------- raw HTTP helpers

def read_chunk(raw, timeout=10.0):
    """Read one chunk of a chunked body from a conftest.RawConn; b"" for the last chunk
    (its trailers are consumed too)."""
    raw.sock.settimeout(timeout)
    size_line = raw._read_until(b"\r\n")
    size = int(size_line.split(b";")[0].strip(), 16)
    if size == 0:
        while raw._read_until(b"\r\n") != b"\r\n":
            pass
        return b""
    data = raw._read_exact(size)
    assert raw._read_exact(2) == b"\r\n", "chunk not followed by CRLF"
    return data


def read_chunked_bytes(raw, n, timeout=10.0):
    """Read chunks until at least n body bytes came (a sender may split its messages)."""
    out = b""
    while len(out) < n:
        c = read_chunk(raw, timeout)
        assert c, f"body ended after {out!r}, expected {n} bytes"
        out += c
    return out


def read_chunked_rest(raw, timeout=10.0):
    out = b""
    while True:
        c = read_chunk(raw, timeout)
        if not c:
            return out
        out += c


def parse_complete_response(data):
    """If `data` holds one complete HTTP/1.1 response, return (status, headers, body);
    else None (no head, or a body cut short: chunked without its last chunk, or fewer
    bytes than Content-Length)."""
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head = data[:head_end].decode("latin-1").split("\r\n")
    try:
        status = int(head[0].split(" ")[1])
    except (IndexError, ValueError):
        return None
    headers = []
    for line in head[1:]:
        k, _, v = line.partition(":")
        headers.append((k.strip().lower(), v.strip()))
    hd = dict(headers)
    rest = data[head_end + 4:]
    if "chunked" in hd.get("transfer-encoding", "").lower():
        body = b""
        while True:
            i = rest.find(b"\r\n")
            if i < 0:
                return None
            try:
                size = int(rest[:i].split(b";")[0], 16)
            except ValueError:
                return None
            rest = rest[i + 2:]
            if size == 0:
                return (status, headers, body) if rest.startswith(b"\r\n") or b"\r\n\r\n" in rest else None
            if len(rest) < size + 2:
                return None
            body += rest[:size]
            rest = rest[size + 2:]
    if "content-length" in hd:
        n = int(hd["content-length"])
        return (status, headers, rest[:n]) if len(rest) >= n else None
    # neither: delimited by close; it is complete only if the server meant it that way,
    # which we cannot tell: treat as complete.
    return status, headers, rest


def read_until_closed(raw, timeout=15.0):
    """Read until coil closes the connection; fail if it is still open after `timeout`.
    Returns every byte received (including what RawConn had buffered)."""
    raw.sock.settimeout(timeout)
    data, raw.buf = raw.buf, b""
    try:
        while True:
            chunk = raw.sock.recv(65536)
            if not chunk:
                return data
            data += chunk
    except socket.timeout:
        pytest.fail(f"connection still open after {timeout}s; received so far: {data[:500]!r}")
    except (ConnectionResetError, BrokenPipeError):
        return data


def get_json(c, path, **kw):
    r = c.get(path, **kw)
    assert r.status == 200, r
    return r.json()


# ---------------------------------------------------------------- websockets

def ws_run(coro, timeout=30.0):
    """Run a coroutine (a websockets client session) to completion with a deadline."""
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


def ws_url(c, path):
    return f"ws://127.0.0.1:{c.port}{path}"


# ---------------------------------------------------------------- scope description

# App-side helper that turns a scope into JSON, tagging bytes so that the test can
# tell b"x" from "x" (and tuples/lists both become lists).
APP_DESCRIBE = '''
def _tag(v):
    if isinstance(v, (bytes, bytearray)):
        return {"bytes": bytes(v).decode("latin-1")}
    if isinstance(v, (list, tuple)):
        return [_tag(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _tag(x) for k, x in v.items()}
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return {"repr": repr(v)}


def describe_scope(scope):
    out = {k: _tag(v) for k, v in scope.items() if k not in ("extensions",)}
    out["_types"] = {k: type(v).__name__ for k, v in scope.items()}
    return out
'''


def B(s):
    """The tagged form APP_DESCRIBE gives to bytes."""
    if isinstance(s, bytes):
        s = s.decode("latin-1")
    return {"bytes": s}


def jdump(o):
    return json.dumps(o, indent=1, sort_keys=True)
