"""ASGI lifespan: startup/shutdown in every instance (never in the template), one trial
instance at `coil up`, lifespan.startup.failed refusing the start, apps without lifespan
support, and the lifespan state reaching requests as a copy."""

import re
import signal

import pytest

from asgi_support import APP_GATE, Gates, asgi_manifest, fn_line
from conftest import BgRequest, manifest

LIFESPAN_APP = APP_GATE + r'''
import json, os

MODE = os.environ.get("MODE", "ok")


def log(*a):
    print(*a, flush=True)


async def lifespan(scope, receive, send):
    if MODE == "raise":             # an app that does not support lifespan
        raise RuntimeError("lifespan not supported here")
    if MODE == "return":            # another one: ignores the scope
        return
    while True:
        m = await receive()
        if m["type"] == "lifespan.startup":
            if MODE == "fail":
                await send({"type": "lifespan.startup.failed",
                            "message": "database unreachable: marker-3141"})
                return
            # The 2nd process the template forks fails its startup, the others work:
            # pids of the function's namespace are given in fork order (1 is the
            # template, 2 the trial instance, 3 the first standby).
            if MODE == "second-fails" and os.getpid() == 3:
                await send({"type": "lifespan.startup.failed",
                            "message": "down for a moment: marker-2718"})
                return
            if MODE == "chatty":   # more than a pipe holds
                for _ in range(100):
                    log("chatter " + "x" * 1000)
            scope["state"]["startup_pid"] = os.getpid()
            scope["state"]["items"] = ["from-lifespan"]
            log("startup pid=%d" % os.getpid())
            await send({"type": "lifespan.startup.complete"})
        elif m["type"] == "lifespan.shutdown":
            log("shutdown pid=%d" % os.getpid())
            if MODE == "shutdown-fails":
                await send({"type": "lifespan.shutdown.failed", "message": "could not flush: marker-1618"})
                return
            if MODE == "shutdown-raises":
                raise ValueError("cleanup broke: marker-1414")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send)
    assert scope["type"] == "http"
    while (await receive()).get("more_body"):
        pass
    path = scope["path"]
    state = scope.get("state")
    if path.startswith("/block/"):
        log("blocking pid=%d" % os.getpid())
        await gate(path[len("/block/"):])
    if path == "/mutate":
        state["mutated"] = True
        state["items"].append("mutated")   # shallow copy: nested objects are shared, keys are not
    body = json.dumps({"pid": os.getpid(), "state": state}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
    if path.startswith("/background/"):
        # work after the response (what BackgroundTasks do)
        log("background started pid=%d" % os.getpid())
        await gate(path[len("/background/"):])
        log("background done pid=%d" % os.getpid())
'''


def start(coil, tmp_path, mode="ok", **opts):
    gates = Gates(tmp_path / "gates")
    toml = asgi_manifest("life", "/...", gate_dir=gates.dir, env={"MODE": mode}, **opts)
    c = coil({"coil.toml": toml, "main.py": LIFESPAN_APP})
    c.gates = gates
    return c


def test_trial_instance_runs_startup_at_coil_up(coil, tmp_path):
    toml = manifest(asgi_manifest("life", "/...", env={"MODE": "ok"}),
                    asgi_manifest("life-two", "/two/...", env={"MODE": "ok"}))
    c = coil({"coil.toml": toml, "main.py": LIFESPAN_APP})
    # no request sent: the startups come from the trial instances started by `coil up`,
    # one per ASGI function
    for name in ("life", "life-two"):
        m = c.wait_for_line(fn_line(name, r"startup pid=(\d+)$"), timeout=15)
        # the line's prefix is the host pid of the process that printed it: an instance,
        # not the template (which is pid 1 of the function's pid namespace)
        assert c.find_lines(rf"^coil: instance {name} pid={m.group(1)} started$"), c.log()
        assert m.group(2) != "1", "lifespan startup ran in the template"


def test_startup_and_shutdown_run_in_each_instance(coil, tmp_path):
    c = start(coil, tmp_path, max_instances=2, max_concurrency=1, timeout_ms=20000)
    g = c.gates.new()
    a = BgRequest(c.port, "GET", f"/block/{g}")
    b = BgRequest(c.port, "GET", f"/block/{g}")
    blocked = c.wait_for_lines(fn_line("life", r"blocking pid=(\d+)$"), 2, timeout=15)
    pids = {int(m.group(2)) for m in blocked}
    assert len(pids) == 2, "max_concurrency=1: the two requests must be on two instances"
    c.gates.open(g)
    for req in (a, b):
        r = req.response()
        assert r.status == 200, r
        d = r.json()
        # the state of the request comes from a startup that ran in the serving instance
        # (after the fork, not in the template)
        assert d["state"]["startup_pid"] == d["pid"], d
        assert d["state"]["items"] == ["from-lifespan"]
    startups = {int(m.group(2)) for m in c.find_lines(fn_line("life", r"startup pid=(\d+)$"))}
    assert pids <= startups, f"startup did not run in instances {pids - startups}"
    assert c.stop() == 0
    shutdowns = {int(m.group(2)) for m in c.find_lines(fn_line("life", r"shutdown pid=(\d+)$"))}
    assert pids <= shutdowns, f"shutdown did not run in instances {pids - shutdowns}:\n{c.log()}"


@pytest.mark.parametrize("mode", ["ok", "chatty"])
def test_a_standby_that_never_served_runs_shutdown_when_coil_stops(coil, tmp_path, mode):
    """The standby ran lifespan startup ahead of need; when coil stops before it serves,
    its shutdown runs too (an app that registers itself at startup deregisters), and what
    it printed reaches the log, even more than its output pipe holds."""
    c = start(coil, tmp_path, mode)
    # The standby is asked for as soon as the trial instance has started: the template
    # has forked it before it reads the stop.
    trial = c.wait_for_line(r"^coil: instance life pid=(\d+) started$", timeout=15)
    c.wait_for_line(rf"^\[life pid={trial.group(1)}\] startup pid=", timeout=15)
    assert c.stop() == 0
    startups = {m.group(2) for m in c.find_lines(fn_line("life", r"startup pid=(\d+)$"))}
    shutdowns = {m.group(2) for m in c.find_lines(fn_line("life", r"shutdown pid=(\d+)$"))}
    assert len(startups) == 2, f"expected the trial instance's and the standby's startup:\n{c.log()}"
    assert shutdowns == startups, f"no shutdown in {startups - shutdowns}:\n{c.log()}"
    assert not c.find_lines(r"still running after|are killed"), c.log()
    if mode == "chatty":
        assert len(c.find_lines(fn_line("life", r"chatter x+$"))) == 200, "each startup's 100 lines"


def test_shutdown_runs_when_an_idle_instance_exits(coil, tmp_path):
    c = start(coil, tmp_path, idle_timeout_ms=300, min_instances=0)
    m = c.wait_for_line(fn_line("life", r"startup pid=(\d+)$"), timeout=15)
    host_pid, pid = m.group(1), m.group(2)  # as coil logs it; as the function sees it
    c.wait_for_line(fn_line("life", rf"shutdown pid={pid}$"), timeout=15)
    c.wait_for_line(rf"^coil: instance life pid={host_pid} exited", timeout=15)
    # the next request starts a new instance, with its own startup
    mark = c.mark()
    d = c.get("/x").json()
    assert d["state"]["startup_pid"] == d["pid"]
    assert str(d["pid"]) != pid
    c.wait_for_line(fn_line("life", rf"startup pid={d['pid']}$"), since=mark, timeout=5)


def test_a_standby_whose_startup_fails_gives_way_to_a_fresh_instance(coil, tmp_path):
    """Startup runs ahead in the standby; when it fails there (a database down for a
    moment), the standby ends and says why, and the cold start forks an instance that
    runs startup afresh."""
    c = start(coil, tmp_path, "second-fails", idle_timeout_ms=300, min_instances=0)
    # 1st startup: the trial instance; 2nd: the standby, which fails and ends.
    c.wait_for_line(r"a standby of life exited before it served \(status 1\).*marker-2718", timeout=15)
    m = c.wait_for_line(fn_line("life", r"startup pid=(\d+)$"), timeout=15)
    c.wait_for_line(rf"^coil: instance life pid={m.group(1)} exited", timeout=15)
    d = c.get("/x").json()  # no instance, no standby: forked, 3rd startup works
    assert d["state"]["startup_pid"] == d["pid"], d
    assert d["state"]["items"] == ["from-lifespan"]


def test_startup_failed_refuses_to_start(coil_fail, tmp_path):
    toml = asgi_manifest("life", "/...", env={"MODE": "fail"})
    rc, err = coil_fail({"coil.toml": toml, "main.py": LIFESPAN_APP})
    assert rc == 2, err
    assert "database unreachable: marker-3141" in err, err
    assert not re.search(r"^coil: listening", err, re.M), err


def test_startup_failed_refuses_to_start_without_manifest(coil_fail):
    # no manifest, so no environment: the mode is written into the code
    app = LIFESPAN_APP.replace('MODE = os.environ.get("MODE", "ok")', 'MODE = "fail"')
    rc, err = coil_fail({"main.py": app}, entry="main:app")
    assert rc == 2, err
    assert "database unreachable: marker-3141" in err, err


FASTAPI_FAILING_STARTUP = '''
from fastapi import FastAPI

app = FastAPI()


@app.on_event("startup")
async def connect():
    raise RuntimeError("cannot reach the database: marker-2236")


@app.get("/")
async def root():
    return {"message": "Hello World"}
'''


def test_framework_startup_exception_refuses_to_start(coil_fail):
    # Starlette turns the exception into lifespan.startup.failed (with the traceback as message)
    rc, err = coil_fail({"coil.toml": asgi_manifest("fa", "/..."), "main.py": FASTAPI_FAILING_STARTUP})
    assert rc == 2, err
    assert "cannot reach the database: marker-2236" in err, err


BLOCKING_STARTUP = '''
import time

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        print("startup blocks the loop", flush=True)
        time.sleep(3600)  # a sync call: asyncio's own timeout cannot fire
'''


def test_a_startup_that_blocks_the_event_loop_fails_the_start(coil_fail):
    # The host bounds the trial instance's start itself (35 s): coil up does not hang.
    rc, err = coil_fail({"coil.toml": asgi_manifest("blk", "/..."), "main.py": BLOCKING_STARTUP}, timeout=60)
    assert rc == 2, err
    assert "startup blocks the loop" in err, err
    assert "the first instance did not finish starting within 35 s" in err, err


@pytest.mark.parametrize("mode", ["raise", "return"])
def test_apps_without_lifespan_support_still_run(coil, tmp_path, mode):
    c = start(coil, tmp_path, mode=mode)
    r = c.get("/x")
    assert r.status == 200, r
    d = r.json()
    assert "startup_pid" not in (d["state"] or {})
    assert c.get("/y").status == 200
    assert c.stop() == 0
    # An app that raises on the lifespan scope is named once per instance, in one
    # line: no "Task exception was never retrieved" traceback.
    assert not c.find_lines("Task exception was never retrieved"), c.log()
    if mode == "raise":
        assert c.find_lines(r"ASGI lifespan appears unsupported by \S+ \(RuntimeError: lifespan not supported "
                            r"here\); serving without it$"), c.log()


def test_state_is_a_copy_for_each_request(coil, tmp_path):
    c = start(coil, tmp_path, max_instances=1)
    first = c.get("/mutate").json()
    assert first["state"]["mutated"] is True
    second = c.get("/look").json()
    assert second["pid"] == first["pid"]
    assert "mutated" not in second["state"], "a key set by one request leaked into the next one's state"
    assert second["state"]["startup_pid"] == second["pid"]


@pytest.mark.parametrize("mode,message", [("shutdown-fails", "could not flush: marker-1618"),
                                          ("shutdown-raises", "ValueError: cleanup broke: marker-1414")])
def test_a_failing_lifespan_shutdown_is_reported(coil, tmp_path, mode, message):
    c = start(coil, tmp_path, mode=mode, idle_timeout_ms=300, min_instances=0)
    host_pid = c.wait_for_line(fn_line("life", r"startup pid=(\d+)$"), timeout=15).group(1)
    c.wait_for_line(rf"^\[life pid={host_pid}\] coil: lifespan shutdown failed: {re.escape(message)}$", timeout=15)


def test_background_work_finishes_before_an_idle_instance_exits(coil, tmp_path):
    c = start(coil, tmp_path, idle_timeout_ms=300, min_instances=0)
    g = c.gates.new()
    r = c.get(f"/background/{g}")
    assert r.status == 200, r
    host_pid = c.wait_for_line(fn_line("life", r"background started pid=(\d+)$"), timeout=15).group(1)
    # the instance is idle (nothing in flight) and closed; its task is waited for
    c.wait_for_line(rf"^\[life pid={host_pid}\] coil: waiting up to 30 s for 1 task\(s\) still running after their response", timeout=15)
    c.gates.open(g)
    c.wait_for_line(fn_line("life", r"background done pid=\d+$"), timeout=15)
    c.wait_for_line(fn_line("life", r"shutdown pid=\d+$"), timeout=15)
    c.wait_for_line(rf"^coil: instance life pid={host_pid} exited \(idle\)", timeout=15)


def test_background_work_finishes_when_coil_stops(coil, tmp_path):
    c = start(coil, tmp_path)
    g = c.gates.new()
    assert c.get(f"/background/{g}").status == 200
    host_pid = c.wait_for_line(fn_line("life", r"background started pid=(\d+)$"), timeout=15).group(1)
    c.signal(signal.SIGTERM)
    c.wait_for_line(rf"^\[life pid={host_pid}\] coil: waiting up to 30 s for 1 task\(s\) still running after their response", timeout=15)
    c.gates.open(g)
    c.wait_for_line(fn_line("life", r"background done pid=\d+$"), timeout=15)
    assert c.wait_exit() == 0
    assert c.find_lines(fn_line("life", r"shutdown pid=\d+$")), c.log()


def test_background_work_that_outlasts_the_stop_is_killed_and_named(coil, tmp_path):
    c = start(coil, tmp_path)
    g = c.gates.new()  # never opened
    assert c.get(f"/background/{g}").status == 200
    host_pid = c.wait_for_line(fn_line("life", r"background started pid=(\d+)$"), timeout=15).group(1)
    c.signal(signal.SIGTERM)
    assert c.wait_exit(timeout=30) == 0
    c.wait_for_line(rf"^coil: instance life pid={host_pid} is still running as its function stops; it is killed$",
                    timeout=10)
