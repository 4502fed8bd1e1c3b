"""Concurrency inside one ASGI instance (max_concurrency), FastAPI's sync endpoints, and
timeouts with several requests in flight on one instance (timeout_ms until the response
starts, a blocked event loop, stream_idle_timeout_ms after it)."""

import contextlib
import select

import pytest

from asgi_support import (APP_GATE, Gates, asgi_manifest, fn_line, read_chunked_bytes, read_chunked_rest,
                          read_until_closed)
from conftest import BgRequest, RawConn

CONC_APP = APP_GATE + r'''
import asyncio, json, os, time

ARRIVED = 0
IN_FLIGHT = 0
PEAK = 0
ALL_HERE = None


def log(*a):
    print(*a, flush=True)


async def reply(send, obj, status=200):
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(obj).encode()})


async def app(scope, receive, send):
    global ARRIVED, IN_FLIGHT, PEAK, ALL_HERE
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    path = scope["path"]
    IN_FLIGHT += 1
    PEAK = max(PEAK, IN_FLIGHT)
    try:
        if path.startswith("/barrier/"):
            # wait until N requests are in flight at once on this instance
            n = int(path.rsplit("/", 1)[1])
            if ALL_HERE is None:
                ALL_HERE = asyncio.Event()
            ARRIVED += 1
            log("arrived %d" % ARRIVED)
            if ARRIVED >= n:
                ALL_HERE.set()
            await asyncio.wait_for(ALL_HERE.wait(), 25)
            return await reply(send, {"pid": os.getpid(), "arrived": ARRIVED})
        if path.startswith("/gate/"):
            log("at gate pid=%d" % os.getpid())
            await gate(path[len("/gate/"):])
            return await reply(send, {"pid": os.getpid(), "peak": PEAK})
        if path == "/never":
            log("never started pid=%d" % os.getpid())
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                log("never cancelled")
                raise
            return
        if path == "/never-listens":
            # waits for http.disconnect instead of being cancelled
            log("never-listens started")
            try:
                m = await receive()
            except asyncio.CancelledError:
                log("never-listens cancelled")
                raise
            log("never-listens got " + m["type"])
            return
        if path.startswith("/stream-gated/"):
            # the response starts at once; the rest waits for the test
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"part1;", "more_body": True})
            log("streaming pid=%d" % os.getpid())
            await gate(path[len("/stream-gated/"):])
            await send({"type": "http.response.body", "body": ("part2 pid=%d" % os.getpid()).encode()})
            return
        if path == "/stream-slow":
            # started, then a pause longer than timeout_ms but shorter than stream_idle_timeout_ms
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"a", "more_body": True})
            await asyncio.sleep(float(os.environ.get("PAUSE", "0")))
            await send({"type": "http.response.body", "body": b"b"})
            return
        if path == "/stream-stall":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"first", "more_body": True})
            log("stalling")
            await asyncio.sleep(3600)
            return
        if path == "/swallow":
            # ignores its cancellation, and goes on for ever
            log("swallow started pid=%d" % os.getpid())
            while True:
                try:
                    await asyncio.sleep(0.1)
                except asyncio.CancelledError:
                    pass
        if path == "/thread-stuck":
            log("thread-stuck pid=%d" % os.getpid())
            await asyncio.to_thread(time.sleep, 3600)
        if path == "/exit":
            os._exit(3)
        if path.startswith("/gated-cleanup/"):
            # a cancelled request whose cleanup waits (a hung rollback) until its gate opens
            log("gated-cleanup started")
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                await gate(path[len("/gated-cleanup/"):], limit=60)
                log("gated-cleanup done")
                raise
        if path == "/slow-cleanup":
            # cleanup that awaits (a rollback) for longer than the kill grace
            log("slow-cleanup started pid=%d" % os.getpid())
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                await asyncio.sleep(1.6)
                log("slow-cleanup done")
                raise
        if path == "/block-loop":
            log("blocking the loop pid=%d" % os.getpid())
            time.sleep(3600)          # a sync call inside async code
            return
        return await reply(send, {"pid": os.getpid()})
    finally:
        IN_FLIGHT -= 1
'''


def start(coil, tmp_path, env=None, **opts):
    gates = Gates(tmp_path / "gates")
    toml = asgi_manifest("conc", "/...", gate_dir=gates.dir, env=env, **opts)
    c = coil({"coil.toml": toml, "main.py": CONC_APP})
    c.gates = gates
    return c


# ---------------------------------------------------------------- concurrency

@pytest.mark.parametrize("max_instances", [1, 4])
def test_ten_requests_in_flight_on_one_instance(coil, tmp_path, max_instances):
    # with room for more instances, coil still forks another only when the first is full
    c = start(coil, tmp_path, max_instances=max_instances, timeout_ms=10000)
    reqs = [BgRequest(c.port, "GET", "/barrier/10", timeout=20) for _ in range(10)]
    results = [r.response(timeout=30) for r in reqs]
    for r in results:
        assert r.status == 200, f"{r}: the 10 requests were not in flight at once on the instance"
    pids = {r.json()["pid"] for r in results}
    assert len(pids) == 1, pids
    assert all(r.json()["arrived"] == 10 for r in results)


def test_max_concurrency_bounds_requests_in_flight(coil, tmp_path):
    c = start(coil, tmp_path, max_instances=1, max_concurrency=2, max_queue=1, timeout_ms=20000)
    g = c.gates.new()
    a = BgRequest(c.port, "GET", f"/gate/{g}")
    b = BgRequest(c.port, "GET", f"/gate/{g}")
    c.wait_for_lines(fn_line("conc", r"at gate pid=\d+$"), 2, timeout=15)
    # two more: one waits in the queue (max_queue=1), the other is refused at once
    x, y = RawConn(c.port, timeout=20), RawConn(c.port, timeout=20)
    try:
        x.send(f"GET /gate/{g} HTTP/1.1\r\nHost: x\r\n\r\n")
        y.send(f"GET /gate/{g} HTTP/1.1\r\nHost: x\r\n\r\n")
        ready, _, _ = select.select([x.sock, y.sock], [], [], 10)
        assert ready, "no 503: with max_concurrency=2 the instance must not take a third request"
        refused, queued = (x, y) if ready[0] is x.sock else (y, x)
        r = refused.read_response()
        assert r.status == 503, r
        c.gates.open(g)
        for req in (a, b):
            resp = req.response()
            assert resp.status == 200, resp
            assert resp.json()["peak"] <= 2
        r = queued.read_response(timeout=15)
        assert r.status == 200, r
        assert r.json()["peak"] == 2, "never more than max_concurrency requests in flight"
    finally:
        x.close()
        y.close()


FASTAPI_SYNC_APP = '''
import os, threading
from fastapi import FastAPI

app = FastAPI()
barrier = threading.Barrier(5, timeout=20)

if os.environ.get("MIDDLEWARE"):
    # an HTTP middleware runs the endpoint in a task of its own (a task group)
    @app.middleware("http")
    async def passthrough(request, call_next):
        return await call_next(request)


@app.get("/sync")
def sync_endpoint():
    return {"pid": os.getpid(), "main_thread": threading.current_thread() is threading.main_thread()}


@app.get("/sync-barrier")
def sync_barrier():
    # five sync endpoints blocking at once: only works with FastAPI's thread pool
    barrier.wait()
    return {"pid": os.getpid()}


@app.get("/async")
async def async_endpoint():
    return {"pid": os.getpid()}


@app.get("/sync-stuck")
def sync_stuck():
    # a sync call that outlives timeout_ms: its thread cannot be stopped
    print("stuck pid=%d" % os.getpid(), flush=True)
    threading.Event().wait(3600)
'''


def test_fastapi_sync_endpoints_run_in_its_thread_pool(coil):
    c = coil({"coil.toml": asgi_manifest("fa", "/...", max_instances=1, timeout_ms=25000),
              "main.py": FASTAPI_SYNC_APP})
    r = c.get("/sync")
    assert r.status == 200, r
    assert r.json()["main_thread"] is False
    reqs = [BgRequest(c.port, "GET", "/sync-barrier", timeout=30) for _ in range(5)]
    results = [q.response(timeout=30) for q in reqs]
    assert all(r.status == 200 for r in results), results
    assert len({r.json()["pid"] for r in results}) == 1
    assert c.get("/async").status == 200


@pytest.mark.parametrize("middleware", [False, True], ids=["plain", "http-middleware"])
def test_timed_out_sync_endpoint_recycles_its_instance(coil, middleware):
    # The timed-out request's thread goes on (nothing can stop it); without
    # recycling, such threads pile up in the instance until none can start.
    env = {"MIDDLEWARE": "1"} if middleware else None
    c = coil({"coil.toml": asgi_manifest("fa", "/...", max_instances=1, timeout_ms=1000, env=env),
              "main.py": FASTAPI_SYNC_APP})
    pid1 = c.get("/async").json()["pid"]
    mark = c.mark()
    r = c.get("/sync-stuck", timeout=15)
    assert r.status == 504, r
    host_pid = c.wait_for_line(fn_line("fa", rf"stuck pid={pid1}$"), since=mark).group(1)
    c.wait_for_line(rf"^coil: instance fa pid={host_pid} is replaced: a cancelled request of fa goes on in a "
                    r"thread, which cannot be stopped; it takes no new requests$", since=mark)
    c.wait_for_line(rf"^coil: instance fa pid={host_pid} exited \(replaced: ", since=mark)
    r = c.get("/sync")
    assert r.status == 200, r
    assert r.json()["pid"] != pid1


# ---------------------------------------------------------------- timeouts

@contextlib.contextmanager
def started_stream(c, mark):
    """A response on the function's instance that has started (timeout_ms no longer
    applies to it), the rest held back by a gate. Yields (host pid, pid in the sandbox,
    finish): finish() opens the gate and checks that the rest arrives whole."""
    g = c.gates.new()
    held = RawConn(c.port, timeout=20)
    try:
        held.send(f"GET /stream-gated/{g} HTTP/1.1\r\nHost: x\r\n\r\n")
        head = held.read_head()
        assert head.status == 200, head
        assert read_chunked_bytes(held, len(b"part1;")) == b"part1;"
        host_pid, pid = c.wait_for_line(fn_line("conc", r"streaming pid=(\d+)$"), since=mark, timeout=10).groups()

        def finish():
            c.gates.open(g)
            assert read_chunked_rest(held) == f"part2 pid={pid}".encode()
        yield host_pid, pid, finish
    finally:
        held.close()


def test_request_over_timeout_gets_504_others_in_flight_complete(coil, tmp_path):
    c = start(coil, tmp_path, max_instances=1, timeout_ms=1500)
    mark = c.mark()
    with started_stream(c, mark) as (host_pid, pid, finish):
        # a request that never starts its response, on the same instance
        r = c.get("/never", timeout=10)
        assert r.status == 504, r
        assert r.body.startswith(b"timeout after 1500 ms"), r
        c.wait_for_line(fn_line("conc", rf"never started pid={pid}$"), since=mark, timeout=5)
        finish()  # the streaming one was not disturbed
    # the instance was not killed
    assert str(c.get("/pid").json()["pid"]) == pid
    assert not c.find_lines(rf"^coil: instance conc pid={host_pid} exited", since=mark)


def test_timed_out_request_that_listens_gets_disconnect(coil, tmp_path):
    c = start(coil, tmp_path, max_instances=1, timeout_ms=1000)
    mark = c.mark()
    r = c.get("/never-listens", timeout=10)
    assert r.status == 504, r
    # the timed-out request's task ends: it gets http.disconnect, or it is cancelled
    host_pid = c.wait_for_line(fn_line("conc", r"never-listens started$"), since=mark, timeout=5).group(1)
    c.wait_for_line(fn_line("conc", r"never-listens (got http\.disconnect|cancelled)$"), since=mark, timeout=10)
    assert c.get("/pid").status == 200
    assert not c.find_lines(rf"^coil: instance conc pid={host_pid} exited", since=mark)


def test_slow_cleanup_of_a_cancelled_request_is_not_a_blocked_loop(coil, tmp_path):
    # The cancelled request awaits its cleanup for longer than the kill grace:
    # the loop is alive (it said so), so the instance and the requests on it live.
    c = start(coil, tmp_path, max_instances=1, timeout_ms=1000)
    mark = c.mark()
    with started_stream(c, mark) as (host_pid, pid, finish):
        r = c.get("/slow-cleanup", timeout=15)
        assert r.status == 504, r
        c.wait_for_line(fn_line("conc", r"slow-cleanup done$"), since=mark, timeout=10)
        finish()
    assert str(c.get("/pid").json()["pid"]) == pid
    assert not c.find_lines(rf"^coil: instance conc pid={host_pid} (exited|did not take|is replaced)", since=mark)


def test_a_cancelled_request_in_its_cleanup_does_not_keep_new_requests_out(coil, tmp_path):
    # Its one slot (max_concurrency = 1) is taken by a timed-out request whose cleanup
    # goes on: new requests are served meanwhile, on the same instance.
    c = start(coil, tmp_path, max_instances=1, max_concurrency=1, timeout_ms=1000)
    g = c.gates.new()
    mark = c.mark()
    r = c.get(f"/gated-cleanup/{g}", timeout=15)
    assert r.status == 504, r
    for _ in range(3):
        r = c.get("/pid", timeout=15)
        assert r.status == 200, r
    assert not c.find_lines(fn_line("conc", "gated-cleanup done$"), since=mark)  # still in its cleanup
    c.gates.open(g)
    c.wait_for_line(fn_line("conc", "gated-cleanup done$"), since=mark, timeout=10)
    assert c.get("/pid").status == 200


def test_a_recycled_instance_is_replaced_while_its_streams_finish(coil, tmp_path):
    # max_instances = 1, and a stream still open on the instance being replaced:
    # new requests go to its replacement, and the stream ends whole on the old one.
    c = start(coil, tmp_path, max_instances=1, timeout_ms=1000)
    mark = c.mark()
    with started_stream(c, mark) as (host_pid, pid, finish):
        r = c.get("/thread-stuck", timeout=15)
        assert r.status == 504, r
        c.wait_for_line(rf"^coil: instance conc pid={host_pid} is replaced: ", since=mark)
        r = c.get("/pid", timeout=15)
        assert r.status == 200, r
        assert str(r.json()["pid"]) != pid
        finish()
    c.wait_for_line(rf"^coil: instance conc pid={host_pid} exited \(replaced: ", since=mark)


def test_a_request_that_ignores_its_cancel_recycles_its_instance(coil, tmp_path):
    # It would hold its slot, and keep its instance from idling out, for ever.
    c = start(coil, tmp_path, max_instances=1, timeout_ms=1000)
    mark = c.mark()
    r = c.get("/swallow", timeout=15)
    assert r.status == 504, r
    host_pid, pid = c.wait_for_line(fn_line("conc", r"swallow started pid=(\d+)$"), since=mark).groups()
    c.wait_for_line(rf"^coil: instance conc pid={host_pid} is replaced: a cancelled request \(GET /swallow\) did "
                    r"not end within 30 s of its cancel; it takes no new requests$", since=mark, timeout=45)
    assert str(c.get("/pid").json()["pid"]) != pid


def test_the_log_names_the_requests_lost_with_an_instance(coil, tmp_path):
    c = start(coil, tmp_path, max_instances=1, timeout_ms=10000)
    mark = c.mark()
    g = c.gates.new()
    bystander = BgRequest(c.port, "GET", f"/gate/{g}?x=1", timeout=15)
    host_pid = c.wait_for_line(fn_line("conc", r"at gate pid=\d+$"), since=mark).group(1)
    r = c.get("/exit", timeout=15)
    assert r.status == 502, r
    b = bystander.response(timeout=15)
    assert b.status == 502, b
    c.wait_for_line(rf"^coil: instance conc pid={host_pid} had 2 requests in flight, which fail with it: "
                    rf"GET /gate/{g}\?x=1, GET /exit$", since=mark)


def test_blocked_event_loop_kills_the_instance(coil, tmp_path):
    c = start(coil, tmp_path, max_instances=1, timeout_ms=1500)
    pid1 = c.get("/pid").json()["pid"]
    mark = c.mark()
    blocker = BgRequest(c.port, "GET", "/block-loop", timeout=10)
    # pid1: as the function sees it (its pid namespace); host_pid: as coil logs it
    host_pid = c.wait_for_line(fn_line("conc", rf"blocking the loop pid={pid1}$"), since=mark, timeout=10).group(1)
    # another request sent to the same (stuck) instance
    other = BgRequest(c.port, "GET", "/pid", timeout=10)
    r = blocker.response(timeout=15)
    assert r.status == 504, r
    assert r.body.startswith(b"timeout after 1500 ms"), r
    o = other.response(timeout=15)
    assert o.status in (200, 502, 504), o
    if o.status == 200:
        assert o.json()["pid"] != pid1, "a request answered by a blocked instance?"
    c.wait_for_line(rf"^coil: instance conc pid={host_pid} exited", since=mark, timeout=10)
    r = c.get("/pid")
    assert r.status == 200, r
    assert r.json()["pid"] != pid1


def test_no_request_goes_to_an_instance_whose_cancel_is_unanswered(coil, tmp_path):
    # After the blocker's 504 its instance has a second (kCancelGrace) to end
    # the cancelled request. A request arriving meanwhile must not be sent to
    # it: with max_instances = 1 it waits for the kill and a new instance
    # (within its own timeout_ms, which is longer than the grace).
    c = start(coil, tmp_path, max_instances=1, timeout_ms=1500)
    pid1 = c.get("/pid").json()["pid"]
    mark = c.mark()
    blocker = BgRequest(c.port, "GET", "/block-loop", timeout=10)
    host_pid = c.wait_for_line(fn_line("conc", rf"blocking the loop pid={pid1}$"), since=mark, timeout=10).group(1)
    r = blocker.response(timeout=15)
    assert r.status == 504, r
    exited = rf"^coil: instance conc pid={host_pid} exited"
    in_grace = not c.find_lines(exited, since=mark)
    o = c.get("/pid", timeout=15)
    assert o.status == 200, o
    assert o.json()["pid"] != pid1, "a request answered by a blocked instance?"
    assert in_grace, "the instance was killed before the second request was sent: nothing was tested"
    c.wait_for_line(exited, since=mark, timeout=10)


def test_timeout_ms_does_not_apply_after_the_response_started(coil, tmp_path):
    # a 1.5 s pause inside the stream: longer than timeout_ms, shorter than stream_idle_timeout_ms
    c = start(coil, tmp_path, env={"PAUSE": "1.5"}, timeout_ms=700, stream_idle_timeout_ms=10000)
    r = c.get("/stream-slow", timeout=20)
    assert r.status == 200, r
    assert r.body == b"ab"


def test_stream_idle_timeout_closes_a_stalled_stream(coil, tmp_path):
    c = start(coil, tmp_path, stream_idle_timeout_ms=800)
    mark = c.mark()
    with c.raw(timeout=20) as conn:
        conn.send("GET /stream-stall HTTP/1.1\r\nHost: x\r\n\r\n")
        head = conn.read_head()
        assert head.status == 200, head
        assert read_chunked_bytes(conn, 5) == b"first"
        c.wait_for_line(fn_line("conc", "stalling$"), since=mark, timeout=5)
        rest = read_until_closed(conn, timeout=10)
    assert not rest.endswith(b"0\r\n\r\n"), f"a stalled stream must end with the connection closed: {rest!r}"
    assert c.get("/pid").status == 200
