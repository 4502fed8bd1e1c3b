"""Shared fixtures and helpers for coil's end-to-end tests.

Every test starts its own `build/coil up DIR --listen 127.0.0.1:0` in its own
temp dir (see the `coil` fixture), reads coil's stderr in a background thread
and synchronises on log lines (`Coil.wait_for_line`) rather than on sleeps.
Tests of `coil server` and the commands that drive it (deploy, ls, ...) use the
`coil_server` fixture the same way.

Run with Debian's pytest: /usr/bin/python3 -m pytest tests/e2e
"""

import hashlib
import http.client
import json
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import textwrap
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COIL_BIN = os.environ.get("COIL_BIN") or str(REPO / "build" / "coil")

LISTEN_RE = re.compile(r"^coil: listening on http://127\.0\.0\.1:(\d+)$")
START_TIMEOUT = 30.0


# --------------------------------------------------------------------------
# manifests and function code
# --------------------------------------------------------------------------

def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string here
    raise TypeError(f"unsupported TOML value {v!r}")


def fn_toml(name, route, entrypoint="app:handle_request", env=None, volumes=(), **opts):
    """One [[function]] table of a coil.toml; `volumes`: dicts, one [[function.volume]] each."""
    lines = ["[[function]]", f"name = {_toml_value(name)}",
             f"entrypoint = {_toml_value(entrypoint)}",
             f"route = {_toml_value(route)}"]
    for k, v in opts.items():
        lines.append(f"{k} = {_toml_value(v)}")
    if env:
        lines.append("[function.environment]")
        for k, v in env.items():
            lines.append(f"{k} = {_toml_value(v)}")
    for volume in volumes:
        lines.append("[[function.volume]]")
        for k, v in volume.items():
            lines.append(f"{k} = {_toml_value(str(v) if isinstance(v, Path) else v)}")
    return "\n".join(lines) + "\n\n"


def gate_volume(host_dir):
    """A read-only volume at /gates showing the test's `host_dir` live: the sandbox
    hides the host's files, so this is how a test lets a function go on."""
    Path(host_dir).mkdir(parents=True, exist_ok=True)
    return {"mount": "/gates", "kind": "readonly", "source": str(host_dir)}


def manifest(*functions):
    return "".join(functions)


# A handler that describes the request it got as JSON.
ECHO_APP = '''
import hashlib, json, os
from spin_http import Response

def handle_request(request):
    body = request.body
    is_bytes = isinstance(body, (bytes, bytearray))
    info = {
        "method": request.method,
        "uri": request.uri,
        "headers": request.headers,
        "headers_type": type(request.headers).__name__,
        "body_type": type(body).__name__,
        "body_len": len(body) if is_bytes else None,
        "body_sha256": hashlib.sha256(body).hexdigest() if is_bytes else None,
        "body_hex": body.hex() if is_bytes and len(body) <= 4096 else None,
        "pid": os.getpid(),
    }
    return Response(200, [("content-type", "application/json")], json.dumps(info))
'''


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def write_files(directory, files):
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        p = directory / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(textwrap.dedent(content).lstrip("\n"))
    return directory


# --------------------------------------------------------------------------
# /proc helpers (process tree)
# --------------------------------------------------------------------------

def _read_stat(pid):
    """(ppid, state, starttime) of a pid, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("utf-8", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rest = data[data.rfind(")") + 2:].split()
    # rest[0] = state (field 3), rest[1] = ppid (field 4), starttime = field 22
    return int(rest[1]), rest[0], int(rest[19])


def process_table():
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _read_stat(int(name))
            if st is not None:
                table[int(name)] = st
    return table


def descendants(root_pid):
    """{pid: starttime} of every live descendant of root_pid."""
    table = process_table()
    children = {}
    for pid, (ppid, _state, _start) in table.items():
        children.setdefault(ppid, []).append(pid)
    out = {}
    stack = [root_pid]
    while stack:
        p = stack.pop()
        for c in children.get(p, []):
            if c not in out:
                out[c] = table[c][2]
                stack.append(c)
    return out


def alive(pid, starttime):
    """True if this exact process (pid + start time) still runs (zombies count as dead)."""
    st = _read_stat(pid)
    return st is not None and st[2] == starttime and st[1] not in ("Z", "X")


def wait_gone(procs, timeout):
    """Poll /proc until none of procs ({pid: starttime}) is alive; return survivors."""
    deadline = time.monotonic() + timeout
    while True:
        left = {p: s for p, s in procs.items() if alive(p, s)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def describe(pids):
    out = []
    for p in pids:
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            cmd = "?"
        out.append(f"{p}: {cmd}")
    return "\n".join(out)


_OUR_POPENS = set()  # pids of the coil processes the tests started themselves


def _set_child_subreaper():
    """Make this pytest process the subreaper of everything it starts: a process that
    coil leaks (outliving coil) is then re-parented to us, where leaked_children() sees it."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_CHILD_SUBREAPER = 36
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


@pytest.fixture(scope="session", autouse=True)
def _state_home(tmp_path_factory):
    """coil keeps persistent volumes under $XDG_STATE_HOME/coil: never the real home in tests."""
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state"))
    yield


@pytest.fixture(scope="session", autouse=True)
def _subreaper():
    _set_child_subreaper()
    yield


def _our_children():
    me = os.getpid()
    return {pid: st[2] for pid, st in process_table().items()
            if st[0] == me and st[1] not in ("Z", "X") and pid not in _OUR_POPENS}


def _reap(pids):
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def leaked_children(exclude=None, settle=0.0):
    """Live processes re-parented to this pytest process (so leaked by a coil that exited),
    minus `exclude` ({pid: starttime} from an earlier call). Waits up to `settle` seconds
    for them to disappear (e.g. killed but not yet dead). Zombies are reaped."""
    exclude = exclude or {}
    deadline = time.monotonic() + settle
    while True:
        me = os.getpid()
        table = process_table()
        _reap([pid for pid, st in table.items()
               if st[0] == me and st[1] == "Z" and pid not in _OUR_POPENS])
        left = {p: s for p, s in _our_children().items() if exclude.get(p) != s}
        if not left or time.monotonic() >= deadline:
            return {p: describe([p]) for p in left}
        time.sleep(0.05)


# --------------------------------------------------------------------------
# the coil process
# --------------------------------------------------------------------------

class CoilStartError(AssertionError):
    pass


class Coil:
    """A running `coil up`, with its stderr collected line by line."""

    def __init__(self, args, cwd, directory, env=None):
        self.args = args
        self.dir = Path(directory)
        self.lines = []          # stderr lines, without the newline
        self.stdout_lines = []
        self._cond = threading.Condition()
        self._eof = False
        self._seen = {}          # every descendant ever seen: {pid: starttime}
        self.port = None
        self.proc = subprocess.Popen(
            args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True)
        _OUR_POPENS.add(self.proc.pid)
        self._t_err = threading.Thread(target=self._reader, args=(self.proc.stderr, self.lines, True),
                                       daemon=True)
        self._t_out = threading.Thread(target=self._reader, args=(self.proc.stdout, self.stdout_lines, False),
                                       daemon=True)
        self._t_err.start()
        self._t_out.start()

    def _reader(self, stream, sink, is_stderr):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self._cond:
                sink.append(line)
                self._cond.notify_all()
        with self._cond:
            if is_stderr:
                self._eof = True
            self._cond.notify_all()

    # ---- log waiting ----------------------------------------------------
    @property
    def pid(self):
        return self.proc.pid

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def mark(self):
        """Index of the next log line; pass as since= to look only at later lines."""
        with self._cond:
            return len(self.lines)

    def log(self, tail=None):
        with self._cond:
            lines = list(self.lines)
        if tail:
            lines = lines[-tail:]
        return "\n".join(lines)

    def find_lines(self, regex, since=0):
        rx = re.compile(regex)
        with self._cond:
            return [m for m in (rx.search(l) for l in self.lines[since:]) if m]

    def count_lines(self, regex, since=0):
        return len(self.find_lines(regex, since))

    def wait_for_lines(self, regex, count, timeout=10.0, since=0):
        """Wait until `count` lines (from index `since`) match regex; return the matches."""
        rx = re.compile(regex)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [m for m in (rx.search(l) for l in self.lines[since:]) if m]
                if len(found) >= count:
                    return found[:count]
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    break
                self._cond.wait(min(left, 0.5))
        why = "coil's stderr closed" if self._eof else f"{timeout}s passed"
        raise AssertionError(
            f"{why} before {count} log line(s) matched {regex!r} (found {len(found)}); "
            f"last log lines:\n{self.log(tail=60)}")

    def wait_for_line(self, regex, timeout=10.0, since=0):
        return self.wait_for_lines(regex, 1, timeout, since)[0]

    def assert_no_line(self, regex, within, since=0):
        """Watch the log for `within` seconds and fail if a line matches."""
        rx = re.compile(regex)
        deadline = time.monotonic() + within
        with self._cond:
            while True:
                for l in self.lines[since:]:
                    if rx.search(l):
                        raise AssertionError(f"unexpected log line matching {regex!r}: {l!r}\n"
                                             f"log:\n{self.log(tail=60)}")
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    return
                self._cond.wait(left)

    # ---- process control ----------------------------------------------
    def wait_listening(self, timeout=START_TIMEOUT):
        try:
            m = self.wait_for_line(LISTEN_RE.pattern, timeout=timeout)
        except AssertionError as e:
            rc = self.proc.poll()
            raise CoilStartError(f"coil did not start (exit code {rc}): {e}") from None
        self.port = int(m.group(1))
        return self.port

    def descendants(self):
        d = descendants(self.proc.pid)
        self._seen.update(d)
        return d

    def host_pid_in_sandbox(self, name, inner):
        """The host pid of the process of function `name` whose pid in its sandbox is `inner`
        (what os.getpid() says there): the descendant of coil in the template's pid
        namespace with that innermost pid (NSpid)."""
        ready = rf"^coil: template {name} ready in [\d.]+ms \(pid (\d+)\)$"
        self.wait_for_line(ready)
        template = int(self.find_lines(ready)[-1].group(1))  # the latest, should it have been rebuilt
        ns = os.readlink(f"/proc/{template}/ns/pid")
        for pid in self.descendants():
            try:
                if os.readlink(f"/proc/{pid}/ns/pid") != ns:
                    continue
                with open(f"/proc/{pid}/status") as f:
                    nspid = next(line.split()[1:] for line in f if line.startswith("NSpid:"))
            except (FileNotFoundError, ProcessLookupError, StopIteration):
                continue
            if int(nspid[-1]) == inner:
                return pid
        raise AssertionError(f"no process of {name} with pid {inner} in its sandbox; log:\n{self.log(tail=30)}")

    def signal(self, sig):
        self.descendants()
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=15.0):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"coil did not exit within {timeout}s; log:\n{self.log(tail=60)}")

    def stop(self, timeout=15.0):
        """SIGTERM, wait for exit, return the exit code."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.signal(signal.SIGTERM)
        rc = self.wait_exit(timeout)
        self._join_readers()
        return rc

    def _join_readers(self):
        self._t_err.join(timeout=5)
        self._t_out.join(timeout=5)

    def kill(self):
        """SIGKILL coil and every descendant it ever had (teardown hygiene)."""
        if self.proc.poll() is None:
            self.descendants()
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for pid, start in list(self._seen.items()):
            if alive(pid, start):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._join_readers()

    # ---- HTTP convenience ---------------------------------------------
    def request(self, method, path, body=None, headers=None, timeout=10.0):
        return http_request(self.port, method, path, body=body, headers=headers, timeout=timeout)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def raw(self, timeout=10.0):
        return RawConn(self.port, timeout=timeout)


def _kill_leaked():
    """Teardown hygiene: SIGKILL whatever coil leaked to us (see leaked_children)."""
    for pid in _our_children():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    leaked_children(settle=2.0)


def _stop_all(started):
    """A fixture's teardown: kill what it started (and anything leaked), then show
    each coil's stderr in the test's output."""
    for c in started:
        c.kill()
    _kill_leaked()
    for c in started:
        log = c.log()
        if log:
            print(f"----- coil stderr ({' '.join(c.args)}) -----\n{log}")


def _coil_args(directory, entry, extra, listen=True):
    args = [COIL_BIN, "up", str(directory)]
    if entry:
        args.append(entry)
    if listen:
        args += ["--listen", "127.0.0.1:0"]
    args += [str(a) for a in extra]
    return args


def _check_binary():
    if not (os.path.isfile(COIL_BIN) and os.access(COIL_BIN, os.X_OK)):
        pytest.fail(f"coil binary not found at {COIL_BIN} (build it, or set COIL_BIN)", pytrace=False)


@pytest.fixture
def coil(tmp_path, request):
    """start(files, *extra_args, entry=None, dirname="fn") -> running Coil.

    files: {relative path: content} written into tmp_path/dirname (dedented).
    extra_args: extra `coil up` flags. entry: "module:attr" for manifest-less mode.
    """
    _check_binary()
    started = []

    def start(files, *extra, entry=None, dirname="fn", wait=True):
        directory = write_files(tmp_path / dirname, files)
        c = Coil(_coil_args(directory, entry, extra), cwd=tmp_path, directory=directory)
        started.append(c)
        if wait:
            c.wait_listening()
        return c

    yield start

    _stop_all(started)


@pytest.fixture
def coil_fail(tmp_path):
    """run(files, *extra_args, entry=None, dirname="fn") -> (exit code, stderr text).

    The manifest, if any, is written to tmp_path/dirname/coil.toml.

    For starts that must be refused: fails the test if coil is still running after 30 s.
    """
    _check_binary()

    def run(files, *extra, entry=None, dirname="fn", timeout=30.0):
        directory = write_files(tmp_path / dirname, files)
        args = _coil_args(directory, entry, extra)
        p = subprocess.Popen(args, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
        _OUR_POPENS.add(p.pid)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kids = descendants(p.pid)
            p.kill()
            for pid, st in kids.items():
                if alive(pid, st):
                    os.kill(pid, signal.SIGKILL)
            try:
                out, err = p.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                err = b"(stderr still held open by a leaked process)"
            pytest.fail(f"coil was expected to refuse to start but still ran after {timeout}s; "
                        f"stderr:\n{err.decode(errors='replace')}")
        return p.returncode, err.decode("utf-8", "replace")

    return run


# --------------------------------------------------------------------------
# coil server, and the commands that talk to it
# --------------------------------------------------------------------------

_DEFAULT_KEY = object()  # "use the server's key" (None means: send no Authorization header)


class CliResult:
    """What one run of a client command (`coil deploy`, `coil ls`, ...) did."""

    def __init__(self, args, returncode, stdout, stderr):
        self.args = args
        self.returncode = returncode
        self.stdout_bytes = stdout
        self.stdout = stdout.decode("utf-8", "replace")
        self.stderr = stderr.decode("utf-8", "replace")

    def __repr__(self):
        return (f"<coil {' '.join(self.args)}: exit {self.returncode}\n"
                f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}>")


class CoilServer(Coil):
    """A running `coil server`: its API key, its --data directory, and clients for it."""

    def __init__(self, args, cwd, data, key, env=None):
        super().__init__(args, cwd=cwd, directory=data, env=env)
        self.data = Path(data)
        self.key = key

    def api(self, method, path, body=None, headers=None, key=_DEFAULT_KEY, timeout=120.0):
        """A control-API request; key=None sends no Authorization header."""
        pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        key = self.key if key is _DEFAULT_KEY else key
        if key is not None:
            pairs.append(("Authorization", f"Bearer {key}"))
        return self.request(method, path, body=body, headers=pairs, timeout=timeout)

    def deploy(self, bundle, name=None, entrypoint=None, key=_DEFAULT_KEY, timeout=120.0):
        """POST /v1/deploy without streaming: the answer is one JSON document."""
        query = "&".join(f"{k}={urllib.parse.quote(v, safe='')}"
                         for k, v in (("name", name), ("entrypoint", entrypoint)) if v is not None)
        return self.api("POST", "/v1/deploy" + (f"?{query}" if query else ""), body=bundle,
                        headers={"Content-Type": "application/gzip", "Accept": "application/json"},
                        key=key, timeout=timeout)

    def cli_env(self, key=_DEFAULT_KEY):
        """The environment a client command gets: COIL_SERVER is this server, COIL_API_KEY
        its key (key=None: no key at all)."""
        env = {k: v for k, v in os.environ.items() if k not in ("COIL_SERVER", "COIL_API_KEY")}
        env["COIL_SERVER"] = self.url
        key = self.key if key is _DEFAULT_KEY else key
        if key is not None:
            env["COIL_API_KEY"] = key
        return env

    def cli(self, *args, input=b"", key=_DEFAULT_KEY, timeout=180.0):
        """Run `build/coil ARGS` against this server and wait for it."""
        args = [str(a) for a in args]
        p = subprocess.Popen([COIL_BIN, *args], cwd=self.dir.parent, env=self.cli_env(key),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
        _OUR_POPENS.add(p.pid)
        try:
            out, err = p.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            pytest.fail(f"coil {' '.join(args)} still ran after {timeout}s; stderr:\n"
                        f"{err.decode(errors='replace')}")
        return CliResult(args, p.returncode, out, err)

    def cli_background(self, *args, key=_DEFAULT_KEY):
        """Start `build/coil ARGS` (e.g. `logs NAME -f`) and return the Popen; the caller
        stops it."""
        p = subprocess.Popen([COIL_BIN, *[str(a) for a in args]], cwd=self.dir.parent,
                             env=self.cli_env(key), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
        _OUR_POPENS.add(p.pid)
        return p


@pytest.fixture
def coil_server(tmp_path):
    """start(*extra_args, data=None, key_via="file", wait=True) -> running CoilServer.

    Runs `build/coil server --data DATA --listen 127.0.0.1:0` plus extra_args (e.g.
    "--domain", "coil.test"), with this test's API key (CoilServer.key, random per test)
    given by --key-file (key_via="file") or by the environment variable COIL_API_KEY
    ("env"). data: default tmp_path/"data"; every start in a test shares it unless told
    otherwise, so a second start is a restart on the same state.
    """
    _check_binary()
    key = "coil-test-key-" + secrets.token_hex(16)
    key_file = tmp_path / "api-key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    started = []

    def start(*extra, data=None, key_via="file", wait=True):
        data = Path(data) if data is not None else tmp_path / "data"
        args = [COIL_BIN, "server", "--data", str(data), "--listen", "127.0.0.1:0"]
        env = {k: v for k, v in os.environ.items() if k != "COIL_API_KEY"}
        if key_via == "file":
            args += ["--key-file", str(key_file)]
        elif key_via == "env":
            env["COIL_API_KEY"] = key
        else:
            raise ValueError(f"key_via: {key_via!r}")
        args += [str(a) for a in extra]
        s = CoilServer(args, cwd=tmp_path, data=data, key=key, env=env)
        started.append(s)
        if wait:
            s.wait_listening()
        return s

    yield start

    _stop_all(started)


# --------------------------------------------------------------------------
# HTTP clients
# --------------------------------------------------------------------------

class Resp:
    def __init__(self, status, reason, headers, body, version="HTTP/1.1"):
        self.status = status
        self.reason = reason
        self.header_list = headers          # [(name, value)] as received
        self.body = body
        self.version = version

    def header(self, name, default=None):
        vals = self.headers_all(name)
        return vals[0] if vals else default

    def headers_all(self, name):
        return [v for k, v in self.header_list if k.lower() == name.lower()]

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Resp {self.status} {self.header_list!r} {self.body[:200]!r}>"


def http_request(port, method, path, body=None, headers=None, timeout=10.0, conn=None):
    """One request with http.client. headers: dict or list of pairs (repeats allowed)."""
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        names = {k.lower() for k, _ in pairs}
        conn.putrequest(method, path, skip_host="host" in names,
                        skip_accept_encoding="accept-encoding" in names)
        if body is not None and "content-length" not in names and "transfer-encoding" not in names:
            pairs.append(("Content-Length", str(len(body))))
        for k, v in pairs:
            conn.putheader(k, v)
        conn.endheaders(body)
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, r.reason, r.getheaders(), data)
    finally:
        if own:
            conn.close()


class RawConn:
    """A raw TCP client that can send arbitrary bytes and parse HTTP/1.1 responses."""

    def __init__(self, port, timeout=10.0, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def leave(self, how):
        """Goes away as a client does: "close" (a FIN) or "reset" (abort())."""
        if how == "close":
            self.close()
        else:
            self.abort()

    def abort(self):
        """Closes with a reset (SO_LINGER 0): unlike a FIN, which may be a half-close
        (the client still reads), a reset says that the client is gone."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError(f"connection closed by coil; unparsed bytes: {self.buf[:300]!r}")
        self.buf += chunk

    def _read_until(self, delim):
        while delim not in self.buf:
            self._fill()
        i = self.buf.index(delim) + len(delim)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self, timeout=None):
        """Read a status line + headers. Returns Resp with empty body."""
        self.sock.settimeout(timeout or self.timeout)
        head = self._read_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        version, status = parts[0], int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = []
        for l in lines[1:]:
            if l:
                k, _, v = l.partition(":")
                headers.append((k.strip(), v.strip()))
        return Resp(status, reason, headers, b"", version)

    def read_body_sha256(self, length):
        """Reads a body of `length` bytes (after read_head) in small reads, as a client
        slower than the app would, without keeping it; returns its sha256 (hex)."""
        digest = hashlib.sha256(self.buf[:length])
        got = min(len(self.buf), length)
        self.buf = self.buf[length:]
        buffer = bytearray(16384)
        while got < length:
            n = self.sock.recv_into(buffer, min(len(buffer), length - got))
            if not n:
                raise EOFError(f"connection closed by coil after {got} of {length} body bytes")
            digest.update(memoryview(buffer)[:n])
            got += n
        return digest.hexdigest()

    def read_response(self, timeout=None, method="GET"):
        """Read one full response (1xx responses are returned on their own)."""
        r = self.read_head(timeout)
        if 100 <= r.status < 200 or r.status in (204, 304) or method == "HEAD":
            return r
        te = (r.header("transfer-encoding") or "").lower()
        cl = r.header("content-length")
        if "chunked" in te:
            body = b""
            while True:
                size_line = self._read_until(b"\r\n")
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    # trailers
                    while self._read_until(b"\r\n") != b"\r\n":
                        pass
                    break
                body += self._read_exact(size)
                self._read_exact(2)
            r.body = body
        elif cl is not None:
            r.body = self._read_exact(int(cl))
        else:
            r.body = self.read_to_close()
        return r

    def read_to_close(self, timeout=None):
        self.sock.settimeout(timeout or self.timeout)
        try:
            while True:
                self._fill()
        except EOFError:
            pass
        except ConnectionResetError:
            pass
        out, self.buf = self.buf, b""
        return out

    def wait_closed(self, timeout):
        """True if coil closes the connection (EOF or reset) within timeout and sends nothing more."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return not self.buf
                self.buf += chunk
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return not self.buf


def wait_port_closed(port, timeout):
    """Poll until connecting to the port is refused; True if it happened within timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=1)
        except ConnectionRefusedError:
            return True
        except OSError:
            return True
        s.close()
        time.sleep(0.05)
    return False


class BgRequest(threading.Thread):
    """An HTTP request run in a background thread; .result is a Resp or the exception."""

    def __init__(self, port, method, path, body=None, headers=None, timeout=30.0):
        super().__init__(daemon=True)
        self.args = (port, method, path, body, headers, timeout)
        self.result = None
        self.sent = threading.Event()
        self.start()

    def run(self):
        port, method, path, body, headers, timeout = self.args
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            conn.putrequest(method, path)
            for k, v in (headers or {}).items():
                conn.putheader(k, v)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            self.sent.set()
            r = conn.getresponse()
            self.result = Resp(r.status, r.reason, r.getheaders(), r.read())
            conn.close()
        except Exception as e:  # noqa: BLE001 - handed to the test
            self.result = e
            self.sent.set()

    def response(self, timeout=30.0):
        self.join(timeout)
        assert not self.is_alive(), f"background request {self.args[1:3]} did not finish in {timeout}s"
        if isinstance(self.result, Exception):
            raise self.result
        return self.result
