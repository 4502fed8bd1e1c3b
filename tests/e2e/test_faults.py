"""Faults, timeouts, scaling, shutdown, process hygiene and logs."""

import http.client
import os
import re
import resource
import select
import shutil
import signal
import subprocess
import time

import pytest

from conftest import COIL_BIN, LISTEN_RE, BgRequest, RawConn, describe, fn_toml, gate_volume, manifest, wait_gone, wait_port_closed

FAULT_APP = '''
import ctypes, os, sys, time
from spin_http import Response

print("template importing")
GATE = os.environ.get("GATE", "")

def handle_request(request):
    # the part after the route's prefix ("/...": the whole path)
    path = request.headers.get("spin-path-info") or request.uri.split("?")[0]
    if path == "/pid":
        return Response(200, None, str(os.getpid()))
    if path == "/raise":
        raise ValueError("secret-marker-4711")
    if path == "/exit":
        os._exit(3)
    if path == "/segv":
        ctypes.string_at(0)
    if path == "/spin":
        print("spinning", flush=True)
        while True:
            pass
    if path == "/sleep":
        print("sleeping", flush=True)
        time.sleep(1e9)
    if path == "/cgil":
        print("in C", flush=True)
        ctypes.PyDLL(None).sleep(100)  # a C call that keeps the GIL
    if path == "/ccall":
        print("in C", flush=True)
        ctypes.CDLL(None).sleep(100)  # a blocking C call (ctypes.CDLL releases the GIL)
    if path == "/block":
        print("blocking pid=%d" % os.getpid(), flush=True)
        while not os.path.exists(GATE):
            time.sleep(0.005)
        return Response(200, None, str(os.getpid()))
    if path == "/print":
        print("hello from print")
        print("two\\nlines")
        sys.stderr.write("hello from stderr\\n")
        return Response(200, None, str(os.getpid()))
    return Response(200, None, "ok")
'''


def start(coil, tmp_path, *functions, flags=()):
    """functions: (name, route, opts) tuples; GATE (a file the test creates) is set in every
    function's environment."""
    gates = tmp_path / "gates"
    toml = manifest(*(fn_toml(name, route, env={"GATE": "/gates/open"}, volumes=(gate_volume(gates),), **opts)
                      for name, route, opts in functions))
    c = coil({"coil.toml": toml, "app.py": FAULT_APP}, *flags)
    c.gate = gates / "open"
    return c


def one(coil, tmp_path, name="f", flags=(), **opts):
    return start(coil, tmp_path, (name, "/...", opts), flags=flags)


def instance_started(name):
    return rf"^coil: instance {name} pid=\d+ started$"


def instance_exited(name, reason=r"[^)]*"):
    return rf"^coil: instance {name} pid=\d+ exited \({reason}\)$"


# ---------------------------------------------------------------- faults


def spawn_coil(argv, **popen):
    """Starts coil outside the fixtures (a binary elsewhere, other limits); returns
    the process, in a session of its own, and its port once it listens."""
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True, **popen)
    for raw in p.stderr:
        m = LISTEN_RE.match(raw.decode(errors="replace").rstrip("\n"))
        if m:
            return p, int(m.group(1))
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(10)
    raise AssertionError("coil did not start")

def test_handler_exception_is_500_with_traceback_in_log_only(coil, tmp_path):
    c = one(coil, tmp_path, name="faulty")
    mark = c.mark()
    r = c.get("/raise")
    assert r.status == 500, r
    assert r.body == b"internal error in function faulty\n"
    assert b"Traceback" not in r.body and b"secret-marker" not in r.body
    c.wait_for_line(r"^\[faulty pid=\d+\] Traceback \(most recent call last\):$", since=mark, timeout=5)
    c.wait_for_line(r"^\[faulty pid=\d+\] ValueError: secret-marker-4711$", since=mark, timeout=5)
    assert c.get("/pid").status == 200


@pytest.mark.parametrize("path,reason", [("/exit", "status 3"), ("/segv", "signal 11")], ids=["os_exit", "sigsegv"])
def test_instance_death_is_502_and_replaced(coil, tmp_path, path, reason):
    c = one(coil, tmp_path, name="crash", max_instances=1)
    r = c.get("/pid")
    assert r.status == 200
    pid1 = int(r.body)
    mark = c.mark()
    r = c.get(path)
    assert r.status == 502, r
    assert r.body == b"instance of crash died during the request\n"
    c.wait_for_line(instance_exited("crash", reason), since=mark, timeout=5)
    r = c.get("/pid")
    assert r.status == 200, r
    assert int(r.body) != pid1, "the dead instance was not replaced"
    c.wait_for_line(instance_started("crash"), since=mark, timeout=5)


@pytest.mark.parametrize("path,marker", [("/spin", "spinning"), ("/sleep", "sleeping"), ("/cgil", "in C"),
                                         ("/ccall", "in C")],
                         ids=["busy_loop", "sleep", "c_call_holding_gil", "c_call"])
def test_timeout_is_504_and_instance_replaced(coil, tmp_path, path, marker):
    c = one(coil, tmp_path, name="slow", timeout_ms=1500, max_instances=1)
    pid1 = int(c.get("/pid").body)
    mark = c.mark()
    t0 = time.monotonic()
    r = c.get(path, timeout=15)
    elapsed = time.monotonic() - t0
    assert r.status == 504, r
    assert r.body == b"timeout after 1500 ms\n"
    assert 1.4 <= elapsed <= 4.0, f"504 after {elapsed:.2f}s for timeout_ms=1500"
    c.wait_for_line(rf"^\[slow pid=\d+\] {marker}$", since=mark, timeout=1)
    c.wait_for_line(instance_exited("slow"), since=mark, timeout=5)
    t0 = time.monotonic()
    r = c.get("/pid")
    assert r.status == 200, r
    assert int(r.body) != pid1
    assert time.monotonic() - t0 < 1.5


def test_timeout_counts_queueing(coil, tmp_path):
    c = one(coil, tmp_path, name="q", timeout_ms=1500, max_instances=1, max_queue=4)
    busy = BgRequest(c.port, "GET", "/block")
    c.wait_for_line(r"^\[q pid=\d+\] blocking", timeout=10)
    # this one waits in the queue until `busy` is killed at its deadline (~1.5 s), then blocks
    # on its own instance: if its 1500 ms started when it was queued, it ends at ~1.5 s,
    # if they started only when an instance took it, at ~3 s.
    t0 = time.monotonic()
    r = c.get("/block", timeout=15)
    elapsed = time.monotonic() - t0
    assert r.status == 504, r
    assert r.body == b"timeout after 1500 ms\n"
    assert 1.4 <= elapsed <= 2.3, f"504 after {elapsed:.2f}s: queueing time not counted in timeout_ms"
    assert busy.response().status == 504


def test_stuck_function_does_not_disturb_others(coil, tmp_path):
    c = start(coil, tmp_path, ("stuck", "/stuck/...", {"timeout_ms": 2500, "max_instances": 2}),
              ("other", "/other/...", {}))
    mark = c.mark()
    stuck = BgRequest(c.port, "GET", "/stuck/spin", timeout=20)
    c.wait_for_line(r"^\[stuck pid=\d+\] spinning$", since=mark, timeout=10)
    for _ in range(5):
        t0 = time.monotonic()
        r = c.get("/other/pid")
        assert r.status == 200, r
        assert time.monotonic() - t0 < 1.0
    # the same function, on its second instance
    t0 = time.monotonic()
    r = c.get("/stuck/pid")
    assert r.status == 200, r
    assert time.monotonic() - t0 < 1.5
    assert stuck.is_alive(), "the stuck request finished early"
    assert stuck.response().status == 504
    assert c.get("/other/pid").status == 200


# ---------------------------------------------------------------- queueing and scaling

def test_queue_full_is_503_with_retry_after(coil, tmp_path):
    c = one(coil, tmp_path, name="q", max_instances=1, max_queue=1, timeout_ms=20000)
    first = BgRequest(c.port, "GET", "/block")
    c.wait_for_line(r"^\[q pid=\d+\] blocking", timeout=10)
    # two more: one fits the queue, the other must be refused at once (which one is up to coil)
    a, b = RawConn(c.port, timeout=20), RawConn(c.port, timeout=20)
    try:
        a.send(b"GET /block?a HTTP/1.1\r\nHost: x\r\n\r\n")
        b.send(b"GET /block?b HTTP/1.1\r\nHost: x\r\n\r\n")
        ready, _, _ = select.select([a.sock, b.sock], [], [], 5)
        assert ready, "no 503 within 5 s with max_instances=1 and max_queue=1"
        refused, queued = (a, b) if ready[0] is a.sock else (b, a)
        r = refused.read_response()
        assert r.status == 503, r
        assert r.header("retry-after") == "1"
        assert r.body == b"q is overloaded, retry later\n"
        # the queued one is still waiting: nothing to read yet
        assert select.select([queued.sock], [], [], 0.2)[0] == []
        c.gate.touch()
        assert first.response().status == 200
        r2 = queued.read_response(timeout=10)
        assert r2.status == 200, r2
    finally:
        a.close()
        b.close()
    c.wait_for_line(r"^coil: access q GET /block\?[ab] 503 ", timeout=5)


def test_max_instances_is_respected(coil, tmp_path):
    c = one(coil, tmp_path, name="m", max_instances=2, max_queue=10, timeout_ms=20000)
    mark = c.mark()
    reqs = [BgRequest(c.port, "GET", f"/block?{i}") for i in range(4)]
    for r in reqs:
        assert r.sent.wait(5)
    c.wait_for_lines(r"^\[m pid=\d+\] blocking", 2, since=mark, timeout=10)
    with pytest.raises(AssertionError):  # no third instance picks up a request
        c.wait_for_lines(r"^\[m pid=\d+\] blocking", 3, since=mark, timeout=0.7)
    c.gate.touch()
    pids = set()
    for r in reqs:
        resp = r.response()
        assert resp.status == 200, resp
        pids.add(int(resp.body))
    assert len(pids) <= 2, pids
    assert c.count_lines(instance_started("m")) == 2, c.log(tail=40)


def test_idle_instance_exits(coil, tmp_path):
    c = one(coil, tmp_path, name="idle", idle_timeout_ms=500)
    mark = c.mark()
    assert c.get("/pid").status == 200
    c.wait_for_line(instance_started("idle"), since=mark, timeout=5)
    t0 = time.monotonic()
    c.wait_for_line(instance_exited("idle", "idle"), since=mark, timeout=5)
    assert time.monotonic() - t0 >= 0.3
    # and a new one is started on demand
    mark = c.mark()
    assert c.get("/pid").status == 200
    c.wait_for_line(instance_started("idle"), since=mark, timeout=5)


def test_min_instances_kept(coil, tmp_path):
    c = one(coil, tmp_path, name="warm", min_instances=2, max_instances=4, idle_timeout_ms=300, timeout_ms=20000)
    # started without any request
    c.wait_for_lines(instance_started("warm"), 2, timeout=10)
    # idle_timeout_ms does not take them below min_instances
    c.assert_no_line(instance_exited("warm"), within=1.0)
    # scale up to three, then back down to two
    mark = c.mark()
    reqs = [BgRequest(c.port, "GET", f"/block?{i}") for i in range(3)]
    c.wait_for_lines(r"^\[warm pid=\d+\] blocking", 3, since=mark, timeout=10)
    c.gate.touch()
    assert sorted(r.response().status for r in reqs) == [200, 200, 200]
    assert c.count_lines(instance_started("warm")) == 3
    c.wait_for_line(instance_exited("warm", "idle"), since=mark, timeout=5)
    with pytest.raises(AssertionError):
        c.wait_for_lines(instance_exited("warm"), 2, since=mark, timeout=1.0)


# ---------------------------------------------------------------- shutdown and processes

def test_sigterm_finishes_in_flight_request_then_exits_0(coil, tmp_path):
    c = one(coil, tmp_path, name="g", timeout_ms=20000)
    inflight = BgRequest(c.port, "GET", "/block")
    c.wait_for_line(r"^\[g pid=\d+\] blocking", timeout=10)
    kids = c.descendants()
    c.signal(signal.SIGTERM)
    assert wait_port_closed(c.port, 5), "coil still accepts connections after SIGTERM"
    assert c.proc.poll() is None, "coil exited before its in-flight request finished"
    c.gate.touch()
    r = inflight.response(timeout=10)
    assert r.status == 200, r
    assert r.body.isdigit()
    assert c.wait_exit(10) == 0
    left = wait_gone(kids, 5)
    assert not left, "processes survived a clean shutdown:\n" + describe(left)


def test_sigterm_shutdown_is_bounded(coil, tmp_path):
    c = one(coil, tmp_path, name="b", timeout_ms=60000, flags=("--shutdown-timeout-ms", "1000"))
    stuck = BgRequest(c.port, "GET", "/spin")
    c.wait_for_line(r"^\[b pid=\d+\] spinning$", timeout=10)
    kids = c.descendants()
    c.signal(signal.SIGTERM)
    assert c.wait_exit(10) == 0  # the spinning handler does not hold the exit up
    left = wait_gone(kids, 5)
    assert not left, "processes survived shutdown:\n" + describe(left)
    stuck.join(10)


def test_sigint_exits_0(coil, tmp_path):
    c = one(coil, tmp_path, name="i")
    assert c.get("/pid").status == 200
    c.signal(signal.SIGINT)
    assert c.wait_exit(10) == 0


def test_sigkill_of_host_leaves_no_orphans(coil, tmp_path):
    c = start(coil, tmp_path, ("one", "/one/...", {"min_instances": 1}), ("two", "/two/...", {"min_instances": 1}))
    c.wait_for_line(instance_started("one"), timeout=10)
    c.wait_for_line(instance_started("two"), timeout=10)
    assert c.get("/one/pid").status == 200
    assert c.get("/two/pid").status == 200
    kids = c.descendants()
    # zygote + two templates + two instances at least
    assert len(kids) >= 5, "expected zygote, templates and instances under coil:\n" + describe(kids)
    c.proc.kill()
    c.proc.wait(10)
    left = wait_gone(kids, 5)
    assert not left, "orphans survived SIGKILL of the host:\n" + describe(left)


# ---------------------------------------------------------------- logs

def test_function_output_is_prefixed(coil, tmp_path):
    c = one(coil, tmp_path, name="logs", max_instances=2, timeout_ms=20000)
    # the template's import-time output
    c.wait_for_line(r"^\[logs pid=\d+\] template importing$", timeout=5)
    mark = c.mark()
    r = c.get("/print")
    assert r.status == 200
    out = c.wait_for_line(r"^\[logs pid=(\d+)\] hello from print$", since=mark, timeout=5)
    err = c.wait_for_line(r"^\[logs pid=(\d+)\] hello from stderr$", since=mark, timeout=5)
    c.wait_for_line(r"^\[logs pid=\d+\] two$", since=mark, timeout=5)
    c.wait_for_line(r"^\[logs pid=\d+\] lines$", since=mark, timeout=5)
    assert out.group(1) == err.group(1)
    # a second instance (forked from the template) does not repeat the template's output
    busy = BgRequest(c.port, "GET", "/block")
    c.wait_for_line(r"^\[logs pid=\d+\] blocking", since=mark, timeout=10)
    assert c.get("/print").status == 200
    c.wait_for_lines(r"^\[logs pid=\d+\] hello from print$", 2, since=mark, timeout=5)
    c.gate.touch()
    assert busy.response().status == 200
    assert c.stop() == 0
    assert c.count_lines(r"^\[logs pid=\d+\] template importing$") == 1, c.log()


def test_access_log_line_per_request(coil, tmp_path):
    c = one(coil, tmp_path, name="acc")
    mark = c.mark()
    assert c.get("/pid?x=1").status == 200
    c.wait_for_line(r"^coil: access acc GET /pid\?x=1 200 \d+(\.\d+)?ms$", since=mark, timeout=5)
    assert c.request("POST", "/raise", body=b"abc").status == 500
    c.wait_for_line(r"^coil: access acc POST /raise 500 \d+(\.\d+)?ms$", since=mark, timeout=5)
    assert c.request("DELETE", "/pid").status == 200
    c.wait_for_line(r"^coil: access acc DELETE /pid 200 \d+(\.\d+)?ms$", since=mark, timeout=5)
    assert c.count_lines(r"^coil: access ", since=mark) == 3


def test_template_and_instance_lifecycle_lines(coil, tmp_path):
    c = start(coil, tmp_path, ("alpha", "/a", {}), ("beta", "/b", {}))
    assert c.count_lines(r"^coil: listening on ") == 1
    listening = next(i for i, l in enumerate(c.lines) if l.startswith("coil: listening on"))
    for name in ("alpha", "beta"):
        assert any(re.match(rf"^coil: template {name} ready in \d+(\.\d+)?ms \(pid \d+\)$", l)
                   for l in c.lines[:listening]), c.log()
    assert c.count_lines(r"^coil: instance ") == 0  # scale to zero: no instance before a request
    mark = c.mark()
    assert c.get("/a").status == 200
    c.wait_for_line(instance_started("alpha"), since=mark, timeout=5)
    assert c.count_lines(instance_started("beta")) == 0


def test_a_dead_template_is_rebuilt_when_a_request_needs_it(coil, tmp_path):
    c = one(coil, tmp_path, name="reborn")
    m = c.wait_for_line(r"^coil: template reborn ready in [\d.]+ms \(pid (\d+)\)$")
    first_template = int(m.group(1))
    assert c.get("/pid").status == 200
    mark = c.mark()
    os.kill(first_template, signal.SIGKILL)
    c.wait_for_line(rf"^coil: template reborn \(pid {first_template}\) exited", since=mark, timeout=10)
    # its instances died with it (PDEATHSIG); the next request brings a new template up
    r = c.get("/pid")
    assert r.status == 200, r
    m = c.wait_for_line(r"^coil: template reborn ready in [\d.]+ms \(pid (\d+)\)$", since=mark, timeout=10)
    assert int(m.group(1)) != first_template


def test_coil_runs_from_a_directory_whose_name_is_not_utf8(tmp_path):
    """coil and coil-python.so copied together anywhere run functions, even
    from a directory whose name is not valid UTF-8."""
    odd = tmp_path / os.fsdecode(b"bin-\xff")
    odd.mkdir()
    shutil.copy2(COIL_BIN, odd / "coil")
    shutil.copy2(os.path.join(os.path.dirname(COIL_BIN), "coil-python.so"), odd / "coil-python.so")
    app = tmp_path / "fn"
    app.mkdir()
    (app / "app.py").write_text("from spin_http import Response\n"
                                "def handle_request(request):\n    return Response(200, None, b'odd ok')\n")
    p, port = spawn_coil([str(odd / "coil"), "up", str(app), "app:handle_request", "--listen", "127.0.0.1:0"])
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/")
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, b"odd ok")
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)


def test_the_open_files_limit_is_raised_for_client_connections(tmp_path):
    """Each client connection is a descriptor: coil raises its soft limit to the hard
    one (started here with 1024 of 8192, a common default), functions keeping theirs."""
    app = tmp_path / "fn"
    app.mkdir()
    (app / "app.py").write_text("import resource\nfrom spin_http import Response\n"
                                "def handle_request(request):\n"
                                "    return Response(200, None, str(resource.getrlimit(resource.RLIMIT_NOFILE)[0]))\n")
    p, port = spawn_coil([COIL_BIN, "up", str(app), "app:handle_request", "--listen", "127.0.0.1:0"],
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 8192)))
    try:
        limits = open(f"/proc/{p.pid}/limits").read()
        assert re.search(r"^Max open files\s+8192\s+8192\s", limits, re.M), limits
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/")
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, b"1024")  # the function's max_open_files
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)


def test_missing_python_runtime_is_named(tmp_path):
    """coil runs Python through coil-python.so, installed next to it: a coil
    binary copied without it refuses to start and says what is missing."""
    alone = tmp_path / "bin"
    alone.mkdir()
    shutil.copy2(COIL_BIN, alone / "coil")
    app = tmp_path / "fn"
    app.mkdir()
    (app / "app.py").write_text("def handle_request(request):\n    return None\n")
    p = subprocess.run([str(alone / "coil"), "up", str(app), "app:handle_request", "--listen", "127.0.0.1:0"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    err = p.stderr.decode(errors="replace")
    assert p.returncode != 0
    assert f"coil-python.so, coil's runtime for Python, is missing next to the coil binary " \
           f"({alone / 'coil-python.so'}" in err, err
