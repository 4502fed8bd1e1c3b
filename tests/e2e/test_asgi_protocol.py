"""ASGI 3.0 HTTP protocol, checked with a raw ASGI app (no framework): the http scope,
receive() (body chunks, http.disconnect), send() (streaming, trailers), prefix routes and
root_path, kind detection, and apps that misbehave."""

import hashlib
import os
import socket
import time
import threading

import pytest

from asgi_support import (APP_DESCRIBE, APP_GATE, B, Gates, asgi_manifest, fn_line, jdump,
                          parse_complete_response, read_chunked_bytes,
                          read_chunked_rest, read_until_closed)
from conftest import COIL_BIN, Coil, RawConn, fn_toml, manifest, write_files

# What the app does is chosen by the `x-do` request header, so that the path is free
# for the scope checks.
RAW_APP = APP_GATE + APP_DESCRIBE + r'''
import asyncio, hashlib, json, os


def log(*a):
    print(*a, flush=True)


async def read_body(receive):
    msgs = []
    while True:
        m = await receive()
        assert m["type"] == "http.request", m
        msgs.append(m)
        if not m.get("more_body", False):
            return msgs


async def respond(send, status, body, headers=(), ctype=b"application/json"):
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype)] + list(headers)})
    await send({"type": "http.response.body", "body": body})


async def lifespan(scope, receive, send):
    while True:
        m = await receive()
        if m["type"] == "lifespan.startup":
            scope["state"]["greeting"] = "hello"
            scope["state"]["startup_pid"] = os.getpid()
            await send({"type": "lifespan.startup.complete"})
        elif m["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send)
    assert scope["type"] == "http", scope["type"]
    do = dict(scope["headers"]).get(b"x-do", b"scope").decode()

    if do == "scope":
        msgs = await read_body(receive)
        d = describe_scope(scope)
        d["_body_msgs"] = [{"type": m["type"], "body": _tag(m.get("body", b"")),
                            "more_body": m.get("more_body", False)} for m in msgs]
        d["_pid"] = os.getpid()
        return await respond(send, 200, d)

    if do == "body":
        msgs = await read_body(receive)
        body = b"".join(m.get("body", b"") for m in msgs)
        return await respond(send, 200, {
            "len": len(body), "sha256": hashlib.sha256(body).hexdigest(),
            "types": sorted({type(m.get("body", b"")).__name__ for m in msgs}),
            "more": [m.get("more_body", False) for m in msgs]})

    if do == "read-after-gate":
        # busy before it reads its body: how much of it did the instance hold meanwhile?
        exchange = send  # the exchange itself (src/python/exchange.h)
        await gate(dict(scope["headers"])[b"x-gate"].decode())
        held = sum(len(c) for c in exchange.chunks)
        h, sizes = hashlib.sha256(), []
        while True:
            m = await receive()
            h.update(m["body"])
            sizes.append(len(m["body"]))
            if not m.get("more_body"):
                break
        return await respond(send, 200, {"held": held, "first": sizes[0], "len": sum(sizes),
                                         "sha256": h.hexdigest()})

    if do == "pieces":
        # log the running total as each message arrives
        total, pieces = b"", []
        while True:
            m = await receive()
            total += m.get("body", b"")
            pieces.append(len(m.get("body", b"")))
            log("received %d more=%s" % (len(total), m.get("more_body", False)))
            if not m.get("more_body", False):
                break
        return await respond(send, 200, {"body": total.decode(), "pieces": pieces})

    if do == "disconnect":
        await read_body(receive)
        log("waiting for disconnect")
        m = await receive()
        log("got " + m["type"])
        return

    if do == "stop-streaming-on-disconnect":
        # as Starlette's StreamingResponse: stops streaming when its client leaves
        await read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
        log("streaming")
        m = await receive()
        log("stream stopped on " + m["type"])
        return

    if do == "answer-after-disconnect":
        # listens for its client leaving, then answers all the same
        await read_body(receive)
        log("listening")
        m = await receive()
        log("got " + m["type"])
        return await respond(send, 200, b"told " + m["type"].encode(), ctype=b"text/plain")

    if do == "work-after-disconnect":
        # work that goes on after the client left (it does not listen), then answers
        global WORK
        WORK = asyncio.current_task()
        g = dict(scope["headers"])[b"x-gate"].decode()
        log("working")
        try:
            await gate(g)
        except asyncio.CancelledError:
            log("work cancelled")
            raise
        log("work done")
        return await respond(send, 200, b"nobody reads this", ctype=b"text/plain")

    if do == "probe-work":
        return await respond(send, 200, {"running": not WORK.done()})

    if do == "sse":
        g = dict(scope["headers"])[b"x-gate"].decode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
        await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
        log("sent one")
        await gate(g)
        await send({"type": "http.response.body", "body": b"data: two\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return

    if do == "chunked":  # a streamed response without a length: chunked on the wire
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"one,", "more_body": True})
        await send({"type": "http.response.body", "body": b"two"})
        return

    if do == "refuse":  # answers without reading the body
        return await respond(send, 401, b"no", ctype=b"text/plain")

    if do == "connection-close":
        return await respond(send, 200, b"bye", headers=[(b"connection", b"close")], ctype=b"text/plain")

    if do == "content-length":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"01234", "more_body": True})
        await send({"type": "http.response.body", "body": b"56789"})
        return

    if do == "content-length-broken":
        # declares 10 bytes, then streams parts of the sizes X-Parts lists
        parts = [int(n) for n in dict(scope["headers"])[b"x-parts"].split(b",")]
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"10")]})
        for i, n in enumerate(parts):
            await send({"type": "http.response.body", "body": b"x" * n, "more_body": i + 1 < len(parts)})
        return

    if do == "trailers":
        await send({"type": "http.response.start", "status": 200, "trailers": True,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"with trailers", "more_body": False})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")],
                    "more_trailers": False})
        return

    if do == "headers":
        await send({"type": "http.response.start", "status": 201,
                    "headers": [(b"content-type", b"text/plain"), (b"set-cookie", b"a=1; Path=/"),
                                (b"X-Custom-Thing", b"Mixed Case Value"), (b"set-cookie", b"b=2; HttpOnly")]})
        await send({"type": "http.response.body", "body": b"created"})
        return

    if do == "header-shapes":
        # Any iterable of pairs of bytes-like objects, as the spec allows.
        pairs = ((b"content-type", b"text/plain"), [bytearray(b"x-from-bytearray"), b"1"],
                 (b"x-from-memoryview", memoryview(b"2")))
        await send({"type": "http.response.start", "status": 200, "headers": (p for p in pairs)})
        await send({"type": "http.response.body", "body": b"shapes"})
        return

    if do == "change-scope-asgi":
        seen = dict(scope["asgi"])
        scope["asgi"]["changed_by"] = "an earlier request"
        scope["asgi"]["version"] = "0.0"
        return await respond(send, 200, seen)

    if do == "headers-changed-while-read":
        # A pair whose iteration empties the header list and rewrites the
        # first pair: what was sent is what goes out, and the instance lives.
        hdrs = []

        class Sneaky:
            def __iter__(self):
                first = hdrs[0]
                hdrs.clear()
                first[0] = b"x-overwritten"
                return iter((b"x-b", b"2"))

        hdrs += [[b"x-" + b"a", b"1"], Sneaky(), (b"x-c", b"3")]
        await send({"type": "http.response.start", "status": 200, "headers": hdrs})
        await send({"type": "http.response.body", "body": str(os.getpid()).encode()})
        return

    if do == "invalid-start-caught":
        # an invalid start raises from its send(), as under uvicorn: the app may
        # catch it and start again
        caught = []
        for bad in ({"status": 200, "headers": [("content-type", "text/plain")]},  # str, not bytes
                    {"status": 99}, {"status": 200, "headers": 5}):
            try:
                await send({"type": "http.response.start", **bad})
            except (TypeError, ValueError) as e:
                caught.append(type(e).__name__)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": ",".join(caught).encode()})
        return

    if do == "headers-changed-after-start":
        # what the app changes in its header list after http.response.start, in the
        # same turn, does not go out (uvicorn encodes the head at start)
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        headers.append((b"x-late", b"1"))
        headers[0] = (b"content-type", b"application/late")
        await send({"type": "http.response.body", "body": b"as started"})
        return

    if do == "str-header":
        await send({"type": "http.response.start", "status": 200, "headers": [("content-type", "text/plain")]})
        await send({"type": "http.response.body", "body": b"never"})
        return

    if do == "big":
        n = int(dict(scope["headers"])[b"x-size"])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/octet-stream")]})
        block = bytes(range(256)) * 256  # 64 KiB
        sent = 0
        while sent < n:
            part = block[: min(len(block), n - sent)]
            sent += len(part)
            await send({"type": "http.response.body", "body": part, "more_body": sent < n})
        return

    if do == "stream-until-disconnect":
        await read_body(receive)
        gone = asyncio.Event()

        async def watch():
            m = await receive()
            log("stream got " + m["type"])
            gone.set()
        watcher = asyncio.ensure_future(watch())
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        n = 0
        while not gone.is_set():
            n += 1
            try:
                await send({"type": "http.response.body", "body": b"data: tick %d\n\n" % n, "more_body": True})
            except OSError:   # the spec allows send() to raise once the client is gone
                log("send raised after disconnect")
                await watcher
                break
            try:
                await asyncio.wait_for(gone.wait(), 0.05)
            except asyncio.TimeoutError:
                pass
        log("stream stopped")
        return

    # ---- misbehaving apps
    if do == "no-response":
        await read_body(receive)
        return
    if do == "raise-before":
        raise ValueError("marker-before-start-2718")
    if do == "clear-scope-raise":
        scope.clear()  # the scope is the app's to change
        raise ValueError("marker-before-start-2718")
    if do == "raise-after":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise ValueError("marker-after-start-1618")
    if do == "double-start":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"never"})
        return
    if do == "start-then-return":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        return

    if do == "head-then-return":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        return

    if do == "cancel-itself":
        raise asyncio.CancelledError()

    if do == "send-after-complete":
        await respond(send, 200, b"done", ctype=b"text/plain")
        try:
            await send({"type": "http.response.body", "body": b"more"})
        except RuntimeError as e:
            log("send after complete raised: %s" % e)
        return

    if do == "send-awaitables":
        # send(...) used as any awaitable, not only in `await send(...)`
        never = send({"type": "http.response.start", "status": 500, "headers": []})
        del never  # made, never awaited: nothing is sent
        start = send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        facts = [asyncio.iscoroutine(start)]
        await asyncio.get_running_loop().create_task(start)
        try:
            await start
        except RuntimeError as e:
            facts.append(str(e))
        await asyncio.ensure_future(send({"type": "http.response.body", "body": b"one,", "more_body": True}))
        # a message that is a mapping but not a dict
        import types
        await send(types.MappingProxyType({"type": "http.response.body", "body": repr(facts).encode()}))
        return

    if do == "send-as-async-callable":
        # what code that inspects or wraps send() relies on: an async callable
        # (asyncio.iscoroutinefunction, as asgiref's async_to_sync checks), the message
        # by keyword, an awaitable a generator-based coroutine can yield from
        import types

        @types.coroutine
        def via_yield_from(message):
            yield from send(message)
        import inspect
        facts = [asyncio.iscoroutinefunction(send), str(inspect.signature(send))]
        await send(message={"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"text/plain")]})
        await via_yield_from({"type": "http.response.body", "body": b"a,", "more_body": True})
        await send({"type": "http.response.body", "body": None, "more_body": True})  # None: as uvicorn
        await send({"type": "http.response.body", "body": repr(facts).encode()})
        return

    if do == "parallel-sends":
        # body parts sent from several tasks at once, together more than the 1 MiB
        # flow-control window: every waiting send() goes on as the client reads
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        parts = [bytes([65 + i]) * (300 << 10) for i in range(5)]
        await asyncio.gather(*(send({"type": "http.response.body", "body": part, "more_body": True})
                               for part in parts))
        await send({"type": "http.response.body", "body": b""})
        return

    if do == "head-then-gate":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await gate(dict(scope["headers"])[b"x-gate"].decode())
        await send({"type": "http.response.body", "body": b"data: late\n\n"})
        return

    if do == "start-then-read":
        # starts its response, then reads the body, which is still coming
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for _ in range(3):  # turns of the loop in which a head alone would go out
            await asyncio.sleep(0)
        log("started, waiting at the gate")
        await gate(dict(scope["headers"])[b"x-gate"].decode())
        msgs = await read_body(receive)
        await send({"type": "http.response.body", "body": b"got %d" % sum(len(m["body"]) for m in msgs)})
        return

    if do == "start-then-read-all":
        # starts its response, then reads its whole body, then answers
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        msgs = await read_body(receive)
        await send({"type": "http.response.body", "body": b"got %d" % sum(len(m["body"]) for m in msgs)})
        return

    if do == "end-while-another-task-waits":
        # a part sent from another task waits for room when the request's task ends
        # the response: the waiting send returns
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        send.unsent += 2 << 20  # as if 2 MiB were on their way to the client: the next part waits
        other = asyncio.ensure_future(send({"type": "http.response.body", "body": b"x", "more_body": True}))
        await asyncio.sleep(0)
        log("another send waits: %s" % bool(send.room))
        await send({"type": "http.response.body", "body": b""})
        await other
        log("the other send returned")
        return

    if do in ("echo-while-reading", "head-then-echo"):
        # streams its answer while it still reads its body; head-then-echo lets its
        # head go out alone before it asks for the body
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        if do == "head-then-echo":
            for _ in range(3):
                await asyncio.sleep(0)
        while True:
            m = await receive()
            log("echo got " + m["type"])
            if m["type"] != "http.request":
                await send({"type": "http.response.body", "body": b"|end"})
                return
            await send({"type": "http.response.body", "body": m["body"], "more_body": m.get("more_body", False)})
            if not m.get("more_body", False):
                return

    if do == "echo-first-piece":
        # streams its answer, echoes the first piece of its body, and ends
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        m = await receive()
        await send({"type": "http.response.body", "body": m["body"], "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return

    if do == "head-then-pause":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await asyncio.sleep(float(dict(scope["headers"])[b"x-pause"]))
        await send({"type": "http.response.body", "body": b"after the pause"})
        return

    if do == "send-reentered":
        # app code running inside a send() (more_body's __bool__) that steps the same
        # send again: refused as for a coroutine, on the C path (bytes) and on the
        # Python one (a bytearray body)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        refused, pending = [], None

        class More:
            def __bool__(self):
                try:
                    pending.send(None)
                except ValueError as e:
                    refused.append(str(e))
                return True
        for body in (b"a,", bytearray(b"b,")):
            pending = send({"type": "http.response.body", "body": body, "more_body": More()})
            await pending
        # (the Python path may ask bool(more_body) more than once)
        await send({"type": "http.response.body", "body": repr(sorted(set(refused))).encode()})
        return

    if do == "mutate-state":
        before = sorted(scope["state"])
        scope["state"]["mutated"] = True
        return await respond(send, 200, {"before": before})

    return await respond(send, 400, {"unknown": do})
'''


def start_raw(coil, tmp_path, route="/...", name="raw", **opts):
    gates = Gates(tmp_path / "gates")
    toml = asgi_manifest(name, route, gate_dir=gates.dir, **opts)
    c = coil({"coil.toml": toml, "main.py": RAW_APP})
    c.gates = gates
    return c


def scope_of(c, raw_request):
    """Send raw request bytes, return the scope the app described."""
    with c.raw() as conn:
        conn.send(raw_request)
        r = conn.read_response()
    assert r.status == 200, r
    return r.json()


# ---------------------------------------------------------------- the http scope

def test_a_percent_that_is_not_an_escape_reaches_the_app_as_it_is(coil, tmp_path):
    # as under uvicorn: apps with such paths keep working
    c = start_raw(coil, tmp_path)
    s = scope_of(c, b"GET /items/100%?q=%zz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (s["path"], s["raw_path"], s["query_string"]) == (
        "/items/100%", {"bytes": "/items/100%"}, {"bytes": "q=%zz"}), s
    s = scope_of(c, b"GET /a%zz/%41 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert s["path"] == "/a%zz/A", s


def test_http_scope_is_complete_and_exact(coil, tmp_path):
    c = start_raw(coil, tmp_path)
    with c.raw() as conn:
        client_port = conn.sock.getsockname()[1]
        conn.send("PATCH /caf%C3%A9/a%20b/x+y?x=%20y&z=caf%C3%A9&&e= HTTP/1.1\r\n"
                  "Host: example.test:8080\r\n"
                  "X-Dup: one\r\n"
                  "X-MiXeD-Case: Value  With Spaces\r\n"
                  "x-dup: two\r\n"
                  "\r\n")
        r = conn.read_response()
    assert r.status == 200, r
    s = r.json()
    assert s["type"] == "http"
    assert s["asgi"]["version"] == "3.0"
    assert s["asgi"]["spec_version"] in ("2.3", "2.4"), s["asgi"]
    assert s["http_version"] == "1.1"
    assert s["method"] == "PATCH"
    assert s["scheme"] == "http"
    assert s["path"] == "/caf\u00e9/a b/x+y", "path must be percent-decoded UTF-8 (and '+' kept)"
    assert s["raw_path"] == B(b"/caf%C3%A9/a%20b/x+y"), "raw_path: the path as received, bytes, no query"
    assert s["query_string"] == B(b"x=%20y&z=caf%C3%A9&&e="), "query_string: raw bytes, not decoded"
    assert s["root_path"] == ""
    assert s["headers"] == [[B(b"host"), B(b"example.test:8080")],
                            [B(b"x-dup"), B(b"one")],
                            [B(b"x-mixed-case"), B(b"Value  With Spaces")],
                            [B(b"x-dup"), B(b"two")]], jdump(s["headers"])
    assert s["client"] == ["127.0.0.1", client_port]
    assert s["server"] == ["127.0.0.1", c.port]
    assert s["_types"]["path"] == "str" and s["_types"]["method"] == "str"
    assert s["state"]["greeting"] == "hello", "scope['state'] must carry the lifespan state"
    assert s["_body_msgs"] == [{"type": "http.request", "body": B(b""), "more_body": False}]


def test_http_scope_over_ipv6(tmp_path):
    """client and server are (host, port) pairs for an IPv6 listener too: the
    address without its brackets."""
    gates = Gates(tmp_path / "gates")
    directory = write_files(tmp_path / "fn", {"coil.toml": asgi_manifest("raw", "/...", gate_dir=gates.dir),
                                              "main.py": RAW_APP})
    c = Coil([COIL_BIN, "up", str(directory), "--listen", "[::1]:0"], cwd=tmp_path, directory=directory)
    try:
        port = int(c.wait_for_line(r"^coil: listening on http://\[::1\]:(\d+)$", timeout=60).group(1))
        with RawConn(port, host="::1") as conn:
            client_port = conn.sock.getsockname()[1]
            conn.send("GET /v6 HTTP/1.1\r\nHost: [::1]\r\n\r\n")
            r = conn.read_response()
        assert r.status == 200, r
        s = r.json()
        assert s["client"] == ["::1", client_port]
        assert s["server"] == ["::1", port]
    finally:
        c.stop()


def test_http_1_0_request(coil, tmp_path):
    c = start_raw(coil, tmp_path)
    with c.raw() as conn:
        conn.send("GET /old?x=1 HTTP/1.0\r\n\r\n")
        r = conn.read_response()
        assert r.status == 200, r
        s = r.json()
        assert s["http_version"] == "1.0"
        assert s["path"] == "/old"
        assert s["headers"] == []


def test_header_values_and_methods(coil, tmp_path):
    c = start_raw(coil, tmp_path)
    for method in ("GET", "POST", "PUT", "DELETE", "OPTIONS"):
        r = c.request(method, "/m", body=b"" if method in ("POST", "PUT") else None,
                      headers=[("Accept", "*/*"), ("X-Latin", "caf\u00e9".encode("latin-1").decode("latin-1"))])
        assert r.status == 200, (method, r)
        s = r.json()
        assert s["method"] == method
        hd = {k["bytes"]: v["bytes"] for k, v in s["headers"]}
        assert hd["accept"] == "*/*"
        assert hd["x-latin"] == "caf\u00e9", "header values are the raw bytes (latin-1 here)"


@pytest.mark.parametrize("setting", [None, True, False], ids=["default", "in_path", "stripped"])
def test_root_path_on_prefix_route(coil, tmp_path, setting):
    opts = {} if setting is None else {"root_path_in_path": setting}
    c = start_raw(coil, tmp_path, route="/api/...", **opts)
    s = c.get("/api/items/1?q=a%20b").json()
    assert s["root_path"] == "/api"
    if setting is False:
        assert s["path"] == "/items/1"
    else:  # the default for a raw ASGI app keeps the prefix in path (the current reading of the spec)
        assert s["path"] == "/api/items/1"
        assert s["raw_path"] == B(b"/api/items/1")
    assert s["query_string"] == B(b"q=a%20b")
    # a path outside the route is not the app's
    assert c.get("/other").status == 404


def test_root_path_nested_prefix_and_bare_prefix(coil, tmp_path):
    c = start_raw(coil, tmp_path, route="/v1/api/...")
    s = c.get("/v1/api/users/%C3%A9").json()
    assert s["root_path"] == "/v1/api"
    assert s["path"] == "/v1/api/users/\u00e9"
    s = c.get("/v1/api").json()   # the bare prefix matches the route too
    assert s["root_path"] == "/v1/api"
    assert s["path"] == "/v1/api"


@pytest.mark.parametrize("setting", [None, False], ids=["default", "stripped"])
def test_root_path_on_a_capture_route_is_the_matched_part(coil, tmp_path, setting):
    # "/shops/:shop/..." on "/shops/acme/items": the app is mounted at
    # /shops/acme, as if the route had been written for that shop alone.
    opts = {} if setting is None else {"root_path_in_path": setting}
    c = start_raw(coil, tmp_path, route="/shops/:shop/...", **opts)
    s = c.get("/shops/acme/items?x=1").json()
    assert s["root_path"] == "/shops/acme"
    assert s["path"] == ("/items" if setting is False else "/shops/acme/items")
    assert s["raw_path"] == B(b"/shops/acme/items")
    s = c.get("/shops/acme").json()
    assert (s["root_path"], s["path"]) == ("/shops/acme", "/" if setting is False else "/shops/acme")


def test_path_on_an_exact_capture_route_is_the_request_path(coil, tmp_path):
    c = start_raw(coil, tmp_path, route="/users/:id")
    s = c.get("/users/%C3%A9").json()
    assert (s["root_path"], s["path"]) == ("", "/users/\u00e9")
    assert c.get("/users/1/2").status == 404


WRAPPED_APPS = r'''
import functools

from fastapi import FastAPI
from quart import Quart
from starlette.middleware.cors import CORSMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware


class MyAPI(FastAPI):
    pass


sub = MyAPI()


@sub.get("/hello")
async def hello():
    return {"from": "fastapi"}


@sub.get("/mark")
async def mark():
    print("marked", flush=True)  # after anything its template wrote (one pipe)
    return {}


plain = FastAPI()
plain.get("/hello")(hello)


class Timing:  # a user's own middleware
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)


wrapped = Timing(plain)
proxied = ProxyHeadersMiddleware(plain, trusted_hosts="*")


async def function_wrapper(scope, receive, send):
    await plain(scope, receive, send)


quart_app = Quart(__name__)


@quart_app.route("/hello")
async def quart_hello():
    return {"from": "quart"}


quart_with_cors = CORSMiddleware(quart_app, allow_origins=["*"])


class Holder:  # keeps the app under another name
    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        await self.application(scope, receive, send)


held = Holder(plain)


async def call(app, scope, receive, send):
    await app(scope, receive, send)


partial = functools.partial(call, plain)
'''


def test_framework_detected_behind_middleware_and_subclasses(coil, tmp_path):
    # Starlette 0.26 (under FastAPI) needs the prefix stripped, Quart needs it
    # kept: what decides is the framework app behind the entrypoint, not the
    # type of the entrypoint object itself.
    entrypoints = ["sub", "wrapped", "proxied", "function_wrapper", "quart_with_cors", "held", "partial"]
    c = coil({"coil.toml": manifest(*(fn_toml(name.replace("_", "-"), f"/{name}/...", entrypoint=f"main:{name}")
                                      for name in entrypoints),
                                    fn_toml("everywhere", "/...", entrypoint="main:sub")),
              "main.py": WRAPPED_APPS})
    for name in entrypoints:
        r = c.get(f"/{name}/hello")
        assert r.status == 200, (name, r)
        assert r.json()["from"] == ("quart" if name.startswith("quart") else "fastapi"), (name, r)
    # what was decided is said at start
    c.wait_for_line(r"^\[sub pid=\d+\] coil: main:sub is a Starlette 0\.\d+\.\d+ app \(MyAPI\): under a prefix "
                    r'route, scope\["path"\] has the prefix stripped')
    # ... for the functions it concerns: on "/..." no request has a prefix. Its
    # instance's output follows its template's in one pipe: once "marked" is in, a
    # note would be too.
    assert c.get("/mark").status == 200
    c.wait_for_line(r"^\[everywhere pid=\d+\] marked$")
    assert not c.find_lines(r"^\[everywhere pid=\d+\] coil: ")


PROXY_HEADERS = [("X-Forwarded-Proto", "https"), ("X-Forwarded-For", "198.51.100.7, 203.0.113.9")]


def test_proxy_headers_from_a_trusted_proxy(coil, tmp_path):
    c = coil({"coil.toml": asgi_manifest("raw", "/..."), "main.py": RAW_APP},
             "--forwarded-allow-ips", "127.0.0.1,::1")
    s = c.request("GET", "/p", headers=PROXY_HEADERS).json()
    assert s["scheme"] == "https"
    assert s["client"] == ["203.0.113.9", 0], "the address the proxy next to coil saw"
    s = c.get("/p").json()  # a request without them: the front's own view
    assert s["scheme"] == "http"
    assert s["client"][0] == "127.0.0.1"


def test_proxy_headers_are_not_believed_unasked(coil, tmp_path):
    c = coil({"coil.toml": asgi_manifest("raw", "/..."), "main.py": RAW_APP})
    s = c.request("GET", "/p", headers=PROXY_HEADERS).json()
    assert s["scheme"] == "http"
    assert s["client"][0] == "127.0.0.1"


def test_forwarded_allow_ips_must_be_addresses(coil_fail):
    rc, err = coil_fail({"coil.toml": asgi_manifest("raw", "/..."), "main.py": RAW_APP},
                        "--forwarded-allow-ips", "127.0.0.1,proxy.local")
    assert rc == 2, err
    assert '--forwarded-allow-ips: "proxy.local" is not an IP address' in err, err


# ---------------------------------------------------------------- receive()

def test_request_body_with_content_length(coil, tmp_path):
    c = start_raw(coil, tmp_path)
    body = os.urandom(3 * 1024 * 1024 + 17)
    r = c.request("POST", "/upload", body=body, headers={"x-do": "body"}, timeout=30)
    assert r.status == 200, r
    d = r.json()
    assert d["len"] == len(body)
    assert d["sha256"] == hashlib.sha256(body).hexdigest()
    assert d["types"] == ["bytes"]
    assert d["more"][-1] is False and all(d["more"][:-1]), d["more"]


def test_an_upload_waits_for_an_app_that_does_not_read_it_yet(coil, tmp_path):
    # Flow control: the front reads a body only a MiB ahead of its app, so a busy
    # app does not make its instance hold every upload (24 of 15 MiB each filled
    # 256 MiB). The client is held back, as by a socket.
    c = start_raw(coil, tmp_path, max_body_bytes=64 << 20)
    g = c.gates.new()
    body = os.urandom(32 << 20)
    progress = threading.Condition()
    sent = [0]

    def upload(sock):
        for at in range(0, len(body), 1 << 16):
            sock.sendall(body[at:at + (1 << 16)])
            with progress:
                sent[0] = at + (1 << 16)
                progress.notify_all()

    with c.raw(timeout=60) as conn:
        conn.send(f"POST /up HTTP/1.1\r\nHost: x\r\nX-Do: read-after-gate\r\nX-Gate: {g}\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n")
        sender = threading.Thread(target=upload, args=(conn.sock,), daemon=True)
        sender.start()
        with progress:
            assert progress.wait_for(lambda: sent[0] >= 1 << 20, timeout=10), sent
            # the client is held back well short of the whole body (without flow
            # control, 32 MiB go to the instance in well under a second)
            assert not progress.wait_for(lambda: sent[0] >= 16 << 20, timeout=3), sent
        c.gates.open(g)
        r = conn.read_response()
        sender.join(30)
    assert r.status == 200, r
    d = r.json()
    assert (d["len"], d["sha256"]) == (len(body), hashlib.sha256(body).hexdigest())
    assert d["held"] <= (1 << 20) + (64 << 10), d  # the window, and one read
    # what arrived while the app was busy comes as one message (as under uvicorn): an
    # app slower than its upload takes fewer, larger pieces
    assert d["held"] >= 512 << 10, d
    assert d["first"] == d["held"], d


def test_chunked_upload_is_delivered_in_pieces(coil, tmp_path):
    c = start_raw(coil, tmp_path)
    with c.raw() as conn:
        conn.send("POST /up HTTP/1.1\r\nHost: x\r\nX-Do: pieces\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "5\r\nhello\r\n")
        # the app gets the first piece while the rest has not even been sent
        c.wait_for_line(fn_line("raw", r"received 5 more=True$"), timeout=10)
        conn.send("6\r\n world\r\n0\r\n\r\n")
        r = conn.read_response()
    assert r.status == 200, r
    d = r.json()
    assert d["body"] == "hello world"
    assert sum(d["pieces"]) == 11 and len(d["pieces"]) >= 2


@pytest.mark.parametrize("leave", ["close", "reset"])
def test_http_disconnect_when_client_goes_away(coil, tmp_path, leave):
    # A close (FIN) tells the app at once, as under uvicorn: not only a reset.
    c = start_raw(coil, tmp_path)
    mark = c.mark()
    conn = c.raw()
    conn.send("GET /wait HTTP/1.1\r\nHost: x\r\nX-Do: disconnect\r\n\r\n")
    c.wait_for_line(fn_line("raw", "waiting for disconnect$"), since=mark, timeout=10)
    conn.leave(leave)
    c.wait_for_line(fn_line("raw", "got http.disconnect$"), since=mark, timeout=10)
    # an app that stops without answering a client that left is no error
    c.wait_for_line(r"^coil: access raw GET /wait 499 ", since=mark, timeout=10)
    assert c.get("/after").status == 200
    assert not c.find_lines(r"returned without sending a response|aborted", since=mark)


@pytest.mark.parametrize("leave", ["close", "reset"])
def test_a_stream_that_stops_when_its_client_leaves_is_no_error(coil, tmp_path, leave):
    c = start_raw(coil, tmp_path)
    mark = c.mark()
    conn = c.raw()
    conn.send("GET /events HTTP/1.1\r\nHost: x\r\nX-Do: stop-streaming-on-disconnect\r\n\r\n")
    assert conn.read_head().status == 200
    c.wait_for_line(fn_line("raw", "streaming$"), since=mark, timeout=10)
    conn.leave(leave)
    c.wait_for_line(fn_line("raw", "stream stopped on http.disconnect$"), since=mark, timeout=10)
    c.wait_for_line(r"^coil: access raw GET /events 200 ", since=mark, timeout=10)
    assert c.get("/after").status == 200
    assert not c.find_lines(r"aborted|returned without", since=mark)


def test_an_app_told_of_a_half_close_still_reaches_its_client(coil, tmp_path):
    # A half-close looks like a client leaving: the app gets http.disconnect, as under
    # uvicorn; unlike uvicorn, what it sends then still reaches the client.
    c = start_raw(coil, tmp_path)
    mark = c.mark()
    with c.raw() as conn:
        conn.send("GET /poll HTTP/1.1\r\nHost: x\r\nX-Do: answer-after-disconnect\r\n\r\n")
        c.wait_for_line(fn_line("raw", "listening$"), since=mark, timeout=10)
        conn.sock.shutdown(socket.SHUT_WR)
        r = conn.read_response()
        assert (r.status, r.body) == (200, b"told http.disconnect"), r
        assert read_until_closed(conn, timeout=5) == b""
    c.wait_for_line(r"^coil: access raw GET /poll 200 ", since=mark, timeout=5)
    # the same when the FIN came with the request
    with c.raw() as conn:
        conn.send(b"POST /poll HTTP/1.0\r\nX-Do: answer-after-disconnect\r\nContent-Length: 2\r\n\r\nhi")
        conn.sock.shutdown(socket.SHUT_WR)
        r = conn.read_response()
        assert (r.status, r.body) == (200, b"told http.disconnect"), r


def test_a_request_queued_when_its_client_half_closed_is_told_once_it_runs(coil, tmp_path):
    # The instance is busy (one request at a time): the FIN comes while the request
    # waits in the queue, and the app is told when it gets it.
    c = start_raw(coil, tmp_path, max_instances=1, max_concurrency=1)
    g = c.gates.new()
    mark = c.mark()
    busy = c.raw()
    busy.send(f"GET /busy HTTP/1.1\r\nHost: x\r\nX-Do: work-after-disconnect\r\nX-Gate: {g}\r\n\r\n")
    c.wait_for_line(fn_line("raw", "working$"), since=mark, timeout=10)
    with c.raw() as conn:
        conn.send("GET /queued HTTP/1.1\r\nHost: x\r\nX-Do: answer-after-disconnect\r\n\r\n")
        conn.sock.shutdown(socket.SHUT_WR)
        with c.raw() as probe:  # a round trip through the front, which has seen the FIN by then
            probe.send(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
            assert probe.read_response().status == 200
        c.gates.open(g)
        assert busy.read_response().status == 200
        r = conn.read_response()
        assert (r.status, r.body) == (200, b"told http.disconnect"), r
    busy.close()


def test_a_client_that_half_closes_after_its_request_gets_the_response(coil, tmp_path):
    # RFC 9112 9.6: the read EOF (printf ... | nc -N) ends the client's sending, not the
    # request: an app that does not listen for http.disconnect answers it as usual.
    c = start_raw(coil, tmp_path)
    g = c.gates.new()
    mark = c.mark()
    with c.raw() as conn:
        conn.send(f"GET /work HTTP/1.1\r\nHost: x\r\nX-Do: work-after-disconnect\r\nX-Gate: {g}\r\n\r\n")
        conn.sock.shutdown(socket.SHUT_WR)
        c.wait_for_line(fn_line("raw", "working$"), since=mark, timeout=10)
        c.gates.open(g)
        r = conn.read_response()
        assert (r.status, r.body) == (200, b"nobody reads this"), r
        assert read_until_closed(conn, timeout=5) == b""
    c.wait_for_line(r"^coil: access raw GET /work 200 ", since=mark, timeout=5)
    # with a body, chunked, from an HTTP/1.0 client
    with c.raw() as conn:
        conn.send(b"POST /half HTTP/1.0\r\nX-Do: body\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5\r\nhello\r\n0\r\n\r\n")
        conn.sock.shutdown(socket.SHUT_WR)
        r = conn.read_response()
        assert r.status == 200, r
        assert r.json()["sha256"] == hashlib.sha256(b"hello").hexdigest()
        assert read_until_closed(conn, timeout=5) == b""


def test_a_streamed_response_goes_on_after_the_client_half_closes(coil, tmp_path):
    c = start_raw(coil, tmp_path)
    g = c.gates.new("half")
    with c.raw() as conn:
        conn.send(f"GET /events HTTP/1.1\r\nHost: x\r\nX-Do: sse\r\nX-Gate: {g}\r\n\r\n")
        conn.sock.shutdown(socket.SHUT_WR)
        head = conn.read_head()
        assert head.status == 200, head
        assert (head.header("transfer-encoding") or "").lower() == "chunked"
        assert read_chunked_bytes(conn, len(b"data: one\n\n")) == b"data: one\n\n"
        c.gates.open(g)
        assert read_chunked_rest(conn) == b"data: two\n\n"
        assert read_until_closed(conn, timeout=5) == b""


def test_100_continue_is_sent_only_when_the_app_reads_the_body(coil, tmp_path):
    c = start_raw(coil, tmp_path, max_body_bytes=10_000_000)
    head = "POST /{} HTTP/1.1\r\nHost: x\r\nX-Do: {}\r\nContent-Length: 5000000\r\nExpect: 100-continue\r\n\r\n"
    # an app that answers at once: the client is never invited to send its body
    with c.raw() as conn:
        conn.send(head.format("refuse", "refuse"))
        r = conn.read_response()
        assert (r.status, r.body) == (401, b"no"), r
        # the client may send its body or not: the connection cannot go on
        assert r.header("connection") == "close", r
    # an app that reads it: 100 Continue, then the body, then the answer
    with c.raw() as conn:
        conn.send(head.format("body", "body"))
        r = conn.read_response()
        assert r.status == 100, r
        body = os.urandom(5_000_000)
        conn.send(body)
        r = conn.read_response()
        assert r.status == 200, r
        assert r.json()["sha256"] == hashlib.sha256(body).hexdigest()


def test_an_answer_before_the_body_on_a_reused_connection_is_framed_as_its_own(coil, tmp_path):
    # The previous response on the connection was chunked; this one is complete and
    # comes while its request's body is still unread.
    c = start_raw(coil, tmp_path)
    with c.raw() as conn:
        conn.send("GET /c HTTP/1.1\r\nHost: x\r\nX-Do: chunked\r\n\r\n")
        r = conn.read_response()
        assert (r.status, r.body, r.header("transfer-encoding")) == (200, b"one,two", "chunked"), r
        conn.send("POST /r HTTP/1.1\r\nHost: x\r\nX-Do: refuse\r\nContent-Length: 5\r\n\r\n")  # no body yet
        r = conn.read_response()
        assert (r.status, r.body, r.header("content-length")) == (401, b"no", "2"), r
        assert r.header("transfer-encoding") is None, r


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_the_app_did_not_read_is_dropped_and_the_connection_serves_on(coil, tmp_path, framing):
    # As under uvicorn and nginx: an app that answers before it read the body (an auth
    # check) leaves the rest to the front, which reads and drops it after the response.
    c = start_raw(coil, tmp_path)
    rest = b"b" * 100_000
    if framing == "content-length":
        head = b"POST /r HTTP/1.1\r\nHost: x\r\nX-Do: refuse\r\nContent-Length: %d\r\n\r\n" % (5 + len(rest))
        first, second = b"aaaaa", rest
    else:
        head = b"POST /r HTTP/1.1\r\nHost: x\r\nX-Do: refuse\r\nTransfer-Encoding: chunked\r\n\r\n"
        first = b"5\r\naaaaa\r\n"
        second = b"".join(b"%x\r\n%s\r\n" % (10_000, rest[at:at + 10_000]) for at in range(0, len(rest), 10_000))
        second += b"0\r\n\r\n"
    with c.raw() as conn:
        conn.send(head + first)
        r = conn.read_response()  # it comes before the rest of the body was sent
        assert (r.status, r.body) == (401, b"no"), r
        assert r.header("connection") is None, r
        conn.send(second + b"GET /after HTTP/1.1\r\nHost: x\r\nX-Do: scope\r\n\r\n")
        r = conn.read_response()
        assert r.status == 200, r
        assert r.json()["path"] == "/after"


@pytest.mark.parametrize("rest", [b"zz\r\nbad\r\n", b"%x\r\n%s\r\n" % (2 << 20, b"c" * (2 << 20))],
                         ids=["bad-chunk", "over-a-mib"])
def test_a_dropped_body_that_goes_wrong_ends_the_connection_without_another_answer(coil, tmp_path, rest):
    # Its request has its answer already: a broken or endless rest only ends the connection.
    c = start_raw(coil, tmp_path)
    with c.raw() as conn:
        conn.send(b"POST /r HTTP/1.1\r\nHost: x\r\nX-Do: refuse\r\nTransfer-Encoding: chunked\r\n\r\n5\r\naaaaa\r\n")
        r = conn.read_response()
        assert (r.status, r.body) == (401, b"no"), r
        try:
            conn.send(rest)
        except OSError:
            pass  # coil may have closed before all of it went
        assert read_until_closed(conn) == b""


def test_an_unread_body_sent_with_the_next_request_in_one_write_does_not_lose_it(coil, tmp_path):
    # Whether the answer comes before the front has read the whole body or after, the
    # pipelined request behind it is served.
    c = start_raw(coil, tmp_path)
    body = b"b" * 100_000
    with c.raw() as conn:
        for i in range(3):
            conn.send(b"POST /r HTTP/1.1\r\nHost: x\r\nX-Do: refuse\r\nContent-Length: %d\r\n\r\n%s"
                      b"GET /after%d HTTP/1.1\r\nHost: x\r\nX-Do: scope\r\n\r\n" % (len(body), body, i))
            r = conn.read_response()
            assert (r.status, r.header("connection")) == (401, None), r
            r = conn.read_response()
            assert r.status == 200, r
            assert r.json()["path"] == f"/after{i}"


def test_a_long_body_the_app_did_not_read_closes_the_connection(coil, tmp_path):
    # More than a MiB left unread: the client is told to stop rather than made to send it.
    c = start_raw(coil, tmp_path)
    with c.raw() as conn:
        conn.send(b"POST /r HTTP/1.1\r\nHost: x\r\nX-Do: refuse\r\nContent-Length: %d\r\n\r\naaaaa" % (2 << 20))
        r = conn.read_response()
        assert (r.status, r.header("connection")) == (401, "close"), r
        assert read_until_closed(conn) == b""


def test_an_app_asking_to_close_the_connection_is_obeyed(coil, tmp_path):
    c = start_raw(coil, tmp_path)
    with c.raw() as conn:
        # a second request is already pipelined behind: it is not served
        conn.send("GET /a HTTP/1.1\r\nHost: x\r\nX-Do: connection-close\r\n\r\n"
                  "GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        r = conn.read_response()
        assert (r.status, r.body, r.header("connection")) == (200, b"bye", "close"), r
        assert read_until_closed(conn) == b""


def test_a_request_whose_client_left_runs_to_its_end(coil, tmp_path):
    # As under uvicorn: the app is told (http.disconnect), not cancelled, so the
    # work it does after its client left is not lost.
    c = start_raw(coil, tmp_path, max_instances=1)
    g = c.gates.new()
    mark = c.mark()
    conn = c.raw()
    conn.send(f"GET /work HTTP/1.1\r\nHost: x\r\nX-Do: work-after-disconnect\r\nX-Gate: {g}\r\n\r\n")
    c.wait_for_line(fn_line("raw", "working$"), since=mark, timeout=10)
    conn.abort()
    # the host saw the client leave (its access line), and told the instance before
    # the probe below reached it: frames to an instance keep their order
    c.wait_for_line(r"^coil: access raw GET /work 499 ", since=mark, timeout=10)
    r = c.get("/probe", headers={"X-Do": "probe-work"})
    assert (r.status, r.json()) == (200, {"running": True}), r
    c.gates.open(g)
    c.wait_for_line(fn_line("raw", "work done$"), since=mark, timeout=10)
    assert not c.find_lines(fn_line("raw", "work cancelled$"), since=mark)
    assert c.get("/after").status == 200


def test_client_leaving_a_stream_is_seen_by_the_app(coil, tmp_path):
    c = start_raw(coil, tmp_path)
    mark = c.mark()
    conn = c.raw()
    conn.send("GET /events HTTP/1.1\r\nHost: x\r\nX-Do: stream-until-disconnect\r\n\r\n")
    head = conn.read_head()
    assert head.status == 200, head
    assert read_chunked_bytes(conn, len(b"data: tick 1\n\n")).startswith(b"data: tick 1\n\n")
    conn.close()
    c.wait_for_line(fn_line("raw", "stream got http.disconnect$"), since=mark, timeout=10)
    c.wait_for_line(fn_line("raw", "stream stopped$"), since=mark, timeout=10)
    assert c.get("/after").status == 200


def test_body_over_max_body_bytes_is_413(coil, tmp_path):
    c = start_raw(coil, tmp_path, max_body_bytes=1000)
    r = c.request("POST", "/up", body=b"x" * 1000, headers={"x-do": "body"})
    assert r.status == 200 and r.json()["len"] == 1000, r
    r = c.request("POST", "/up", body=b"x" * 1001, headers={"x-do": "body"})
    assert r.status == 413, r


# ---------------------------------------------------------------- send()

def test_sse_events_arrive_one_by_one(coil, tmp_path):
    c = start_raw(coil, tmp_path)
    g = c.gates.new("sse")
    with c.raw() as conn:
        conn.send(f"GET /events HTTP/1.1\r\nHost: x\r\nX-Do: sse\r\nX-Gate: {g}\r\n\r\n")
        head = conn.read_head()
        assert head.status == 200, head
        assert head.header("content-type") == "text/event-stream"
        assert head.header("content-length") is None
        assert (head.header("transfer-encoding") or "").lower() == "chunked"
        # the first event is readable while the app is still holding back the second
        assert read_chunked_bytes(conn, len(b"data: one\n\n")) == b"data: one\n\n"
        c.gates.open(g)
        assert read_chunked_rest(conn) == b"data: two\n\n"
        # the connection is still usable (keep-alive)
        conn.send("GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().status == 200


def test_streamed_body_with_content_length(coil, tmp_path):
    c = start_raw(coil, tmp_path)
    r = c.get("/cl", headers={"x-do": "content-length"})
    assert r.status == 200, r
    assert r.header("content-length") == "10"
    assert r.header("transfer-encoding") is None
    assert r.body == b"0123456789"


@pytest.mark.parametrize("parts,log", [
    ("5,8", r"the function sent more body than its content-length \(10\); the rest is dropped$"),
    ("5,2", r"the function's body ended 3 bytes short of its content-length \(10\); the connection closes$"),
], ids=["longer", "shorter"])
def test_a_streamed_body_that_breaks_its_content_length_is_cut_and_logged(coil, tmp_path, parts, log):
    c = start_raw(coil, tmp_path)
    mark = c.mark()
    with c.raw() as conn:
        conn.send(f"GET /cl HTTP/1.1\r\nHost: x\r\nX-Do: content-length-broken\r\nX-Parts: {parts}\r\n\r\n")
        head = conn.read_head()
        assert (head.status, head.header("content-length")) == (200, "10"), head
        # never more than declared, and the connection ends (the client sees the break)
        assert read_until_closed(conn, timeout=10) == b"x" * min(10, sum(map(int, parts.split(","))))
    c.wait_for_line(r"^coil: raw GET /cl: " + log, since=mark, timeout=10)


def test_a_complete_body_that_breaks_its_content_length_is_sent_with_its_length_and_logged(coil, tmp_path):
    c = start_raw(coil, tmp_path)
    mark = c.mark()
    r = c.get("/cl", headers={"x-do": "content-length-broken", "x-parts": "3"})
    assert (r.status, r.header("content-length"), r.body) == (200, "3", b"xxx"), r
    c.wait_for_line(r"^coil: raw GET /cl: the function's content-length \(10\) is not its body's length \(3\); "
                    r"sent with 3$", since=mark, timeout=10)


def test_large_streamed_response(coil, tmp_path):
    c = start_raw(coil, tmp_path)
    n = 5 * 1024 * 1024 + 3
    r = c.get("/big", headers={"x-do": "big", "x-size": str(n)}, timeout=30)
    assert r.status == 200, r
    expected = (bytes(range(256)) * 256 * (n // 65536 + 1))[:n]
    assert len(r.body) == n
    assert r.body == expected


def test_response_trailers_are_ignored_without_breaking(coil, tmp_path):
    c = start_raw(coil, tmp_path)
    with c.raw() as conn:
        conn.send("GET /t HTTP/1.1\r\nHost: x\r\nX-Do: trailers\r\n\r\n")
        r = conn.read_response()
        assert r.status == 200, r
        assert r.body == b"with trailers"
        conn.send("GET /t2 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().status == 200


def test_response_status_and_headers(coil, tmp_path):
    c = start_raw(coil, tmp_path)
    r = c.get("/h", headers={"x-do": "headers"})
    assert r.status == 201, r
    assert r.body == b"created"
    assert r.headers_all("set-cookie") == ["a=1; Path=/", "b=2; HttpOnly"]
    assert r.header("x-custom-thing") == "Mixed Case Value"


def test_response_headers_of_any_iterable_of_bytes_like_pairs(coil, tmp_path):
    c = start_raw(coil, tmp_path)
    r = c.get("/h", headers={"x-do": "header-shapes"})
    assert r.status == 200, r
    assert r.body == b"shapes"
    assert (r.header("x-from-bytearray"), r.header("x-from-memoryview")) == ("1", "2")


def test_a_request_changing_its_scope_does_not_change_the_next_ones(coil, tmp_path):
    c = start_raw(coil, tmp_path)
    for _ in range(3):
        r = c.get("/a", headers={"x-do": "change-scope-asgi"})
        assert r.status == 200, r
        assert r.json() == {"version": "3.0", "spec_version": "2.3"}


def test_response_headers_changed_by_app_code_while_read_go_out_as_sent(coil, tmp_path):
    c = start_raw(coil, tmp_path)
    r = c.get("/h", headers={"x-do": "headers-changed-while-read"})
    assert r.status == 200, r
    assert (r.header("x-a"), r.header("x-b"), r.header("x-c")) == ("1", "2", "3")
    assert r.header("x-overwritten") is None
    again = c.get("/h", headers={"x-do": "headers-changed-while-read"})
    assert again.status == 200 and again.body == r.body, "the same instance answers again"


def test_response_header_that_is_not_bytes_is_500_and_named_in_the_log(coil, tmp_path):
    c = start_raw(coil, tmp_path)
    mark = c.mark()
    r = c.get("/h", headers={"x-do": "str-header"})
    assert r.status == 500, r
    c.wait_for_line(fn_line("raw", r"TypeError: a bytes-like object is required, not 'str'$"), since=mark, timeout=5)
    assert c.get("/fine").status == 200


def test_an_invalid_response_start_raises_from_its_send(coil, tmp_path):
    c = start_raw(coil, tmp_path)
    r = c.get("/h", headers={"x-do": "invalid-start-caught"})
    assert (r.status, r.body) == (200, b"TypeError,ValueError,TypeError"), r


def test_headers_changed_after_the_start_do_not_go_out(coil, tmp_path):
    c = start_raw(coil, tmp_path)
    r = c.get("/h", headers={"x-do": "headers-changed-after-start"})
    assert (r.status, r.body) == (200, b"as started"), r
    assert r.header("content-type") == "text/plain" and r.header("x-late") is None, r


def test_pipelined_requests_answered_in_order(coil, tmp_path):
    c = start_raw(coil, tmp_path)
    with c.raw() as conn:
        conn.send("GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
                  "GET /second HTTP/1.1\r\nHost: x\r\nX-Do: content-length\r\n\r\n"
                  "GET /third HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().json()["path"] == "/first"
        assert conn.read_response().body == b"0123456789"
        assert conn.read_response().json()["path"] == "/third"


# ---------------------------------------------------------------- misbehaving apps

@pytest.mark.parametrize("do", ["no-response", "raise-before", "clear-scope-raise"])
def test_no_response_or_exception_before_start_is_500(coil, tmp_path, do):
    c = start_raw(coil, tmp_path)
    mark = c.mark()
    r = c.get("/bad", headers={"x-do": do})
    assert r.status == 500, r
    assert b"Traceback" not in r.body and b"marker" not in r.body
    if do != "no-response":
        c.wait_for_line(fn_line("raw", r"ValueError: marker-before-start-2718$"), since=mark, timeout=5)
    assert c.get("/fine").status == 200


@pytest.mark.parametrize("do,why", [
    ("head-then-return", r"coil: ASGI application raw returned before finishing its response "
                         r"\(no http\.response\.body with more_body false\)$"),
    ("cancel-itself", r"coil: the request's task in ASGI application raw was cancelled \(CancelledError\) "
                      r"before its response was complete$"),
])
def test_an_unfinished_response_is_a_502_and_the_log_says_why(coil, tmp_path, do, why):
    c = start_raw(coil, tmp_path)
    mark = c.mark()
    r = c.get("/bad", headers={"x-do": do})
    assert r.status == 502, r
    c.wait_for_line(fn_line("raw", why), since=mark, timeout=5)
    assert c.get("/fine").status == 200


def test_a_send_after_the_response_is_complete_raises(coil, tmp_path):
    # as under uvicorn: the app's mistake shows, and its client has its whole response
    c = start_raw(coil, tmp_path)
    mark = c.mark()
    r = c.get("/late", headers={"x-do": "send-after-complete"})
    assert (r.status, r.body) == (200, b"done"), r
    c.wait_for_line(fn_line("raw", "send after complete raised: http.response.body sent after the response "
                                   "was complete$"), since=mark, timeout=5)


def test_send_returns_an_awaitable_that_acts_when_awaited(coil, tmp_path):
    # as a coroutine: one made and never awaited sends nothing, create_task() and
    # ensure_future() take one, and one awaited twice raises
    c = start_raw(coil, tmp_path)
    mark = c.mark()
    r = c.get("/aw", headers={"x-do": "send-awaitables"})
    assert (r.status, r.body) == (200, b"one,[True, 'cannot reuse already awaited coroutine']"), r
    c.wait_for_line(fn_line("raw", r".*RuntimeWarning: ASGI send\(\) was never awaited"), since=mark, timeout=5)


def test_send_is_an_async_callable_taking_its_message_by_keyword(coil, tmp_path):
    c = start_raw(coil, tmp_path)
    r = c.get("/cb", headers={"x-do": "send-as-async-callable"})
    assert (r.status, r.body) == (200, b"a,[True, '(message)']"), r


def test_body_parts_sent_from_several_tasks_at_once_all_arrive(coil, tmp_path):
    c = start_raw(coil, tmp_path)
    with c.raw(timeout=20) as conn:
        conn.send(b"GET /par HTTP/1.1\r\nHost: x\r\nX-Do: parallel-sends\r\n\r\n")
        r = conn.read_response()
    assert r.status == 200, r
    assert sorted((byte, r.body.count(byte)) for byte in set(r.body)) == [(65 + i, 300 << 10) for i in range(5)]


def test_a_started_response_reaches_its_client_before_its_body(coil, tmp_path):
    # as under uvicorn, the head goes out at http.response.start: an SSE client has it
    # before the first event
    c = start_raw(coil, tmp_path)
    g = c.gates.new()
    with c.raw() as conn:
        conn.send(f"GET /sse HTTP/1.1\r\nHost: x\r\nX-Do: head-then-gate\r\nX-Gate: {g}\r\n\r\n")
        head = conn.read_head(timeout=5)
        assert head.status == 200 and head.header("content-type") == "text/event-stream", head
        c.gates.open(g)
        assert read_chunked_rest(conn) == b"data: late\n\n"


def test_an_app_that_starts_its_response_before_reading_its_body_gets_all_of_it(coil, tmp_path):
    # as under uvicorn, the head goes out at http.response.start while the body is
    # still coming, and the front goes on reading the body
    c = start_raw(coil, tmp_path)
    g = c.gates.new()
    mark = c.mark()
    with c.raw() as conn:
        conn.send(f"POST /up HTTP/1.1\r\nHost: x\r\nX-Do: start-then-read\r\nX-Gate: {g}\r\n"
                  f"Content-Length: 10\r\n\r\n01234")
        c.wait_for_line(fn_line("raw", "started, waiting at the gate$"), since=mark, timeout=5)
        head = conn.read_head(timeout=5)
        assert head.status == 200 and head.header("transfer-encoding") == "chunked", head
        conn.send(b"56789")
        c.gates.open(g)
        assert read_chunked_rest(conn) == b"got 10"
        # the connection lives on
        conn.send(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().status == 200


def test_a_slow_upload_read_after_the_start_is_not_an_idle_stream(coil, tmp_path):
    # the body arriving beside a started response is the stream's activity: an app
    # reading a slow upload is not cut off by stream_idle_timeout_ms
    c = start_raw(coil, tmp_path, stream_idle_timeout_ms=1000)
    with c.raw() as conn:
        conn.send(b"POST /up HTTP/1.1\r\nHost: x\r\nX-Do: start-then-read-all\r\nContent-Length: 12\r\n\r\n")
        assert conn.read_head(timeout=5).status == 200
        for _ in range(12):  # 1.8 s in all, a byte every 150 ms: the pace is what is tested
            time.sleep(0.15)
            conn.send(b"x")
        assert read_chunked_rest(conn) == b"got 12"


def test_a_large_upload_read_after_the_start_keeps_the_connection(coil, tmp_path):
    # the head goes out before the 3 MiB body has come: it still promises keep-alive,
    # and the connection serves the next request
    c = start_raw(coil, tmp_path)
    body = b"y" * (3 << 20)
    with c.raw() as conn:
        conn.send(b"POST /up HTTP/1.1\r\nHost: x\r\nX-Do: start-then-read-all\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        head = conn.read_head(timeout=5)
        assert head.status == 200 and head.header("connection") != "close", head
        conn.send(body)
        assert read_chunked_rest(conn) == b"got %d" % len(body)
        conn.send(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().status == 200


def test_an_app_streams_its_answer_while_it_reads_its_body(coil, tmp_path):
    # full duplex, as under uvicorn: each piece of a chunked upload is echoed back
    # before the client sends the next
    c = start_raw(coil, tmp_path)
    mark = c.mark()
    with c.raw() as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nX-Do: echo-while-reading\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        head = conn.read_head(timeout=5)
        assert head.status == 200, head
        assert read_chunked_bytes(conn, 5) == b"hello"
        conn.send(b"6\r\n world\r\n")
        assert read_chunked_bytes(conn, 6) == b" world"
        conn.send(b"0\r\n\r\n")
        assert read_chunked_rest(conn) == b""
        conn.send(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().status == 200
    assert c.count_lines(fn_line("raw", "echo got http.disconnect$"), since=mark) == 0


def test_an_app_streaming_its_answer_invites_a_held_back_body_before_its_head(coil, tmp_path):
    # the app asks for its body in the turn it starts its response: "100 Continue"
    # goes first, then the head, and the body streams both ways
    c = start_raw(coil, tmp_path)
    with c.raw() as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nX-Do: echo-while-reading\r\n"
                  b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert conn.read_head(timeout=5).status == 100
        head = conn.read_head(timeout=5)
        assert head.status == 200, head
        conn.send(b"hello")
        assert read_chunked_rest(conn) == b"hello"


def test_an_app_streaming_before_it_asks_for_a_held_back_body_is_told_none_comes(coil, tmp_path):
    # the head went out before the app asked for the body, and "100 Continue" cannot
    # follow a final response: the app hears http.disconnect at once (not a wait for
    # stream_idle_timeout_ms), the log says why, and the connection closes after the
    # response
    c = start_raw(coil, tmp_path)
    mark = c.mark()
    with c.raw() as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nX-Do: head-then-echo\r\n"
                  b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        r = conn.read_response()
        assert (r.status, r.body) == (200, b"|end"), r
        assert conn.sock.recv(1) == b""
    c.wait_for_line(fn_line("raw", "echo got http.disconnect$"), since=mark, timeout=5)
    c.wait_for_line(r"^coil: raw POST /echo: the function started its response before asking for the body its "
                    r"client holds back", since=mark, timeout=5)


def test_a_client_that_stops_its_body_while_the_response_streams_is_bounded_by_the_stream_timeout(coil, tmp_path):
    # full duplex: the client's body deadline does not run; stream_idle_timeout_ms
    # ends an exchange in which neither side moves
    c = start_raw(coil, tmp_path, stream_idle_timeout_ms=500)
    mark = c.mark()
    with c.raw() as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nX-Do: echo-while-reading\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        assert conn.read_head(timeout=5).status == 200
        assert read_chunked_bytes(conn, 5) == b"hello"
        c.wait_for_line(r"^coil: function raw: no response data for stream_idle_timeout_ms=500; aborting the response$",
                        since=mark, timeout=10)
        conn.sock.settimeout(5)
        assert conn.sock.recv(100) == b""  # cut: the response never ended


def test_a_response_that_ends_while_its_body_streams_in_drops_the_rest(coil, tmp_path):
    # the app stops reading and ends its response: the rest of the body is read and
    # dropped, and the connection serves the next request
    c = start_raw(coil, tmp_path)
    with c.raw() as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nX-Do: echo-first-piece\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        head = conn.read_head(timeout=5)
        assert head.status == 200, head
        assert read_chunked_rest(conn) == b"hello"
        conn.send(b"5\r\nworld\r\n0\r\n\r\nGET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().status == 200


def test_a_send_waiting_for_room_returns_when_another_task_ends_the_response(coil, tmp_path):
    c = start_raw(coil, tmp_path)
    mark = c.mark()
    with c.raw() as conn:
        conn.send(b"GET /end HTTP/1.1\r\nHost: x\r\nX-Do: end-while-another-task-waits\r\n\r\n")
        c.wait_for_line(fn_line("raw", "another send waits: True$"), since=mark, timeout=10)
        c.wait_for_line(fn_line("raw", "the other send returned$"), since=mark, timeout=10)
        assert conn.read_response().status == 200


def test_timeout_ms_ends_once_the_response_started(coil, tmp_path):
    # a body that comes after timeout_ms, its head sent before: no 504
    c = start_raw(coil, tmp_path, timeout_ms=300)
    r = c.get("/slow", headers={"x-do": "head-then-pause", "x-pause": "0.8"})
    assert (r.status, r.body) == (200, b"after the pause"), r


def test_a_send_stepped_again_from_inside_itself_is_refused(coil, tmp_path):
    c = start_raw(coil, tmp_path)
    r = c.get("/re", headers={"x-do": "send-reentered"})
    assert (r.status, r.body) == (200, b"a,b,['coroutine already executing']"), r
    assert c.get("/fine").status == 200


@pytest.mark.parametrize("do", ["raise-after", "double-start", "start-then-return"])
def test_broken_response_after_start_closes_the_connection(coil, tmp_path, do):
    c = start_raw(coil, tmp_path)
    mark = c.mark()
    with c.raw() as conn:
        conn.send(f"GET /bad HTTP/1.1\r\nHost: x\r\nX-Do: {do}\r\n\r\n")
        data = read_until_closed(conn, timeout=5)
    parsed = parse_complete_response(data)
    assert parsed is None or parsed[0] >= 500, \
        f"{do}: the client must not get a complete successful response, got {data[:300]!r}"
    if do == "raise-after":
        assert data.startswith(b"HTTP/1.1 200"), data[:200]
        assert b"partial" in data, "what was sent before the exception reaches the client"
        c.wait_for_line(fn_line("raw", r"ValueError: marker-after-start-1618$"), since=mark, timeout=5)
    if do == "start-then-return":
        c.wait_for_line(fn_line("raw", r"coil: ASGI application raw returned before finishing its response"),
                        since=mark, timeout=5)
    assert c.get("/fine").status == 200


# ---------------------------------------------------------------- entrypoints and kinds

def test_manifestless_entrypoint_serves_asgi_app_at_root(coil, tmp_path):
    c = coil({"main.py": RAW_APP}, entry="main:app")
    s = c.get("/some/path?x=1").json()
    assert s["type"] == "http"
    assert s["path"] == "/some/path"
    assert s["root_path"] == ""
    assert s["query_string"] == B(b"x=1")
    assert c.get("/").json()["path"] == "/"


TASK_FACTORY_APP = '''
import asyncio, json, os

made = []


def factory(loop, coro, **kwargs):
    task = asyncio.Task(coro, loop=loop, **kwargs)
    made.append(task)
    return task


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                if os.environ["MODE"] == "install":
                    asyncio.get_running_loop().set_task_factory(factory)
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    task = asyncio.current_task()
    body = json.dumps({"in_a_task": task is not None, "made_by_factory": task in made,
                       "factory_tasks": len(made)}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
'''


@pytest.mark.parametrize("mode", ["default", "install"])
def test_requests_run_in_tasks_of_their_own_made_by_an_app_task_factory(coil, mode):
    # Each request runs in its own asyncio task (frameworks rely on current_task());
    # a task factory the app installs in lifespan startup makes them.
    c = coil({"main.py": TASK_FACTORY_APP, "coil.toml": asgi_manifest(env={"MODE": mode})})
    first = c.get("/").json()
    second = c.get("/").json()
    assert first["in_a_task"] and second["in_a_task"]
    if mode == "install":
        assert first["made_by_factory"] and second["made_by_factory"]
        assert second["factory_tasks"] == first["factory_tasks"] + 1
    else:
        assert not first["made_by_factory"] and first["factory_tasks"] == 0


CLASS_APP = '''
import json

class App:
    def __init__(self, tag):
        self.tag = tag

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": ("%s %s" % (self.tag, scope["path"])).encode()})

app = App("object")
'''

HANDLER_APP = '''
from spin_http import Response

def handle_request(request):
    return Response(200, [("content-type", "text/plain")], "handler " + request.uri)
'''


def test_kind_detected_and_explicit(coil, tmp_path):
    toml = manifest(
        fn_toml("obj", "/obj/...", entrypoint="objapp:app"),                       # object with async __call__
        fn_toml("explicit", "/explicit/...", entrypoint="main:app", kind="asgi"),
        fn_toml("spin", "/spin", entrypoint="handler:handle_request"),              # detected: handler
        fn_toml("spin2", "/spin2", entrypoint="handler:handle_request", kind="handler"),
    )
    c = coil({"coil.toml": toml, "objapp.py": CLASS_APP, "main.py": RAW_APP, "handler.py": HANDLER_APP})
    r = c.get("/obj/x")
    assert (r.status, r.body) == (200, b"object /obj/x"), r
    s = c.get("/explicit/y").json()
    assert (s["type"], s["root_path"]) == ("http", "/explicit")
    r = c.get("/spin?a=1")
    assert (r.status, r.body) == (200, b"handler /spin?a=1"), r
    r = c.get("/spin2")
    assert (r.status, r.body) == (200, b"handler /spin2"), r
    # the detected kinds, as the template start-up lines report them
    for name, kind in (("obj", "asgi"), ("explicit", "asgi"), ("spin", "handler"), ("spin2", "handler")):
        assert c.find_lines(rf"^coil: template {name} imported \S+ in [\d.]+ms \(kind {kind}\)$"), \
            f"no start-up line saying function {name} is of kind {kind}"


@pytest.mark.parametrize("entry,kind,module,source", [
    ("main:app", "handler", "main.py", RAW_APP),
    ("handler:handle_request", "asgi", "handler.py", HANDLER_APP),
    ("main:app", "wsgi", "main.py", RAW_APP),
], ids=["asgi_app_as_handler", "handler_as_asgi", "unknown_kind"])
def test_wrong_kind_is_a_startup_error(coil_fail, entry, kind, module, source):
    toml = fn_toml("k", "/...", entrypoint=entry, kind=kind)
    rc, err = coil_fail({"coil.toml": toml, module: source})
    assert rc == 2, err
    assert "listening" not in err
    assert any(f": {field}:" in err for field in ("kind", "entrypoint")), \
        f"the error must name the field (kind or entrypoint):\n{err}"
    assert "coil.toml:" in err, err


@pytest.mark.parametrize("key,value", [
    ("max_concurrency", 0), ("max_concurrency", "many"), ("stream_idle_timeout_ms", "soon"),
    ("root_path_in_path", "yes"), ("kind", 1),
])
def test_invalid_asgi_manifest_values(coil_fail, key, value):
    toml = fn_toml("v", "/api/...", entrypoint="main:app", **{key: value})
    rc, err = coil_fail({"coil.toml": toml, "main.py": RAW_APP})
    assert rc == 2, err
    assert "coil.toml:" in err and f": {key}:" in err, err


def test_root_path_in_path_on_a_handler_is_refused(coil_fail):
    toml = fn_toml("h", "/api/...", entrypoint="app:handle_request", root_path_in_path=True)
    rc, err = coil_fail({"coil.toml": toml, "app.py": "def handle_request(request):\n    pass\n"})
    assert rc == 2, err
    assert "root_path_in_path is set, but 'app:handle_request' is a handler" in err, err


# ---------------------------------------------------------------- found in review

PLAIN_ASGI = '''
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = repr(scope["path"]).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
'''


def test_paths_and_hosts_that_are_not_utf8_do_not_break_the_instance(coil):
    c = coil({"coil.toml": asgi_manifest("bytes", "/..."), "main.py": PLAIN_ASGI})
    with c.raw() as conn:
        conn.send(b"GET /%ff/x HTTP/1.1\r\nHost: x\r\nX-Bytes: \xff\xfe\r\n\r\n")
        r = conn.read_response()
        assert r.status == 200, r
        # as uvicorn has it: U+FFFD for the bad byte (a lone surrogate would fail
        # every framework that encodes the path again: a 500)
        assert r.body == repr("/\ufffd/x").encode(), r
        conn.send(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        r = conn.read_response()
        assert (r.status, r.body) == (200, b"'/after'"), r
    # a host that is not ASCII is no host (RFC 9110 7.2): the front refuses it
    with c.raw() as conn:
        conn.send(b"GET /x HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n")
        r = conn.read_response()
        assert (r.status, r.body) == (400, b"bad request: invalid Host header\n"), r


ENDLESS_STREAM = '''
import asyncio, sys

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    chunk = b"x" * 65536
    sent = 0
    try:
        while True:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            sent += len(chunk)
            if sent % (1 << 20) == 0:
                print("sent %d MiB" % (sent >> 20), flush=True)
    except asyncio.CancelledError:
        print("stream cancelled", flush=True)
        raise
'''


def test_a_client_that_stops_reading_holds_its_app_back(coil):
    # Flow control: the app's send() waits while its client takes nothing, so neither
    # the host nor the instance buffers the stream; stream_idle_timeout_ms ends it.
    c = coil({"coil.toml": asgi_manifest("endless", "/...", stream_idle_timeout_ms=2000), "main.py": ENDLESS_STREAM})
    mark = c.mark()
    with c.raw() as conn:
        conn.send(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")  # and never read
        c.wait_for_line(r"^coil: function endless: the client took none of the response for "
                        r"stream_idle_timeout_ms=2000; aborting it$", since=mark, timeout=30)
        c.wait_for_line(fn_line("endless", "stream cancelled$"), since=mark, timeout=10)
    # what the app got out: the window, the host's socket buffers and the client's
    sent = [int(m.group(2)) for m in c.find_lines(fn_line("endless", r"sent (\d+) MiB$"), since=mark)]
    assert max(sent, default=0) < 32, sent
    with open(f"/proc/{c.proc.pid}/status") as f:
        rss_kib = int(next(line for line in f if line.startswith("VmRSS:")).split()[1])
    assert rss_kib < 100 * 1024, f"host RSS {rss_kib} KiB"


BIG_RESPONSES = '''
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    size = int(scope["query_string"])
    body = bytes(range(256)) * (size // 256)
    headers = [(b"content-type", b"application/octet-stream"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if scope["path"] == "/one":  # the whole body in one send()
        await send({"type": "http.response.body", "body": body})
    else:                        # in 64 KiB parts
        for i in range(0, len(body), 65536):
            await send({"type": "http.response.body", "body": body[i:i + 65536],
                        "more_body": i + 65536 < len(body)})
'''


@pytest.mark.parametrize("path", ["/one", "/parts"])
def test_a_large_response_reaches_its_client_whole(coil, path):
    # 48 MiB, far over what the host would buffer for one client: flow control paces
    # the app to the client, and nothing is cut off.
    size = 48 << 20
    c = coil({"coil.toml": asgi_manifest("big", "/..."), "main.py": BIG_RESPONSES})
    expected = hashlib.sha256(bytes(range(256)) * (size // 256)).hexdigest()
    with c.raw(timeout=60) as conn:
        for _ in range(2):  # and the connection is reusable after it
            conn.send(f"GET {path}?{size} HTTP/1.1\r\nHost: x\r\n\r\n")
            head = conn.read_head()
            assert head.status == 200 and head.header("content-length") == str(size), head
            assert conn.read_body_sha256(size) == expected
    assert not c.find_lines("aborting")


# An app that writes frames to its instance socket itself, behind the ASGI server's back
# (its code can reach the socket): the host must not leave the client waiting.
RAW_FRAMES = '''
import os, struct

def frame(kind, flags, stream, payload=b""):
    return struct.pack("<IBBHI", len(payload), kind, flags, 0, stream) + payload

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    exchange = send  # the exchange itself (src/python/exchange.h)
    if scope["path"] == "/ok":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    exchange.finished = True  # the ASGI server sends nothing more on this stream
    if scope["path"] == "/body-without-head":
        os.write(exchange.server.fd, frame(4, 1, exchange.stream, b"hello"))
    elif scope["path"] == "/websocket-close-on-http":
        os.write(exchange.server.fd, frame(9, 1, exchange.stream, struct.pack("<H", 1000)))
    elif scope["path"] == "/second-head":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        exchange.finished = False
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        exchange.server.flush()  # the real head is out before the second one
        os.write(exchange.server.fd, frame(3, 1, exchange.stream, struct.pack("<HI", 200, 0)))
'''


def test_a_large_streamed_response_to_head_does_not_stall_its_app(coil):
    # HEAD: the body never goes on the wire, and still counts as taken (flow control)
    c = coil({"coil.toml": asgi_manifest("big", "/..."), "main.py": BIG_RESPONSES})
    with c.raw(timeout=10) as conn:
        conn.send(f"HEAD /parts?{8 << 20} HTTP/1.1\r\nHost: x\r\n\r\n")
        r = conn.read_response(method="HEAD")
        assert (r.status, r.header("content-length")) == (200, str(8 << 20)), r
        conn.send("GET /one?256 HTTP/1.1\r\nHost: x\r\n\r\n")  # the same connection, at once
        r = conn.read_response()
        assert (r.status, r.body) == (200, bytes(range(256))), r


@pytest.mark.parametrize("path", ["/body-without-head", "/websocket-close-on-http", "/second-head"])
def test_frames_out_of_order_from_an_app_are_a_protocol_error(coil, path):
    c = coil({"coil.toml": asgi_manifest("rawf", "/..."), "main.py": RAW_FRAMES})
    mark = c.mark()
    with c.raw(timeout=10) as conn:
        conn.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")
        if path == "/second-head":  # the first head is out: the connection is cut
            assert read_until_closed(conn).startswith(b"HTTP/1.1 200 ")
        else:
            r = conn.read_response()
            assert (r.status, r.body) == (502, b"instance of rawf failed\n"), r
    c.wait_for_line(r"^coil: instance rawf pid=\d+ sent a frame of type \d+ out of order; killing it$",
                    since=mark, timeout=10)
    assert c.get("/ok").body == b"ok"
