"""WebSockets through coil's front to a raw ASGI app, driven with the `websockets` client
library (and a raw socket for the handshake details): the websocket scope, text and bytes
frames, subprotocols, close codes both ways, rejection before accept (HTTP 403), several
sockets on one instance, and timeout_ms bounding the time until accept."""

import asyncio
import base64
import json
import os

import pytest
import websockets

from asgi_support import APP_DESCRIBE, APP_GATE, B, Gates, asgi_manifest, fn_line, ws_run, ws_url

WS_APP = APP_DESCRIBE + r'''
import asyncio, json, os, time


def log(*a):
    print(*a, flush=True)


async def app(scope, receive, send):
    if scope["type"] == "http":
        if scope["path"] == "/thread-stuck":
            await asyncio.to_thread(time.sleep, 3600)  # past timeout_ms: its instance is recycled
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"plain http"})
        return
    if scope["type"] != "websocket":
        return
    path = scope["path"]
    if scope.get("root_path") and path.startswith(scope["root_path"]):
        path = path[len(scope["root_path"]):]
    m = await receive()
    assert m["type"] == "websocket.connect", m

    if path == "/reject":
        await send({"type": "websocket.close", "code": 1008})
        return
    if path == "/never-accept":
        log("not accepting")
        await asyncio.sleep(3600)
        return

    accept = {"type": "websocket.accept"}
    if "chat.v2" in scope.get("subprotocols", []):
        accept["subprotocol"] = "chat.v2"
    if path == "/headers":
        accept["headers"] = [(b"x-ws-extra", b"yes")]
    await send(accept)

    if path == "/scope":
        d = describe_scope(scope)
        d["_pid"] = os.getpid()
        await send({"type": "websocket.send", "text": json.dumps(d)})
        m = await receive()
        return

    if path == "/push":
        # pushes until a send fails, then cleans up (in an except, not a finally)
        while True:
            try:
                await send({"type": "websocket.send", "text": "tick"})
            except OSError as e:
                log("send raised %s (%s)" % (type(e).__name__, e))
                break
            await asyncio.sleep(0.05)
        log("cleanup ran")
        return

    if path == "/sleeper":
        # neither sends nor receives: only a cancel ends it
        log("sleeping")
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            log("sleeper cancelled")
            raise

    if path == "/server-close":
        await send({"type": "websocket.send", "text": "closing soon"})
        await send({"type": "websocket.close", "code": 4001, "reason": "bye"})
        # the close handshake's end, as an app that waits for it sees it
        m = await receive()
        log("after its close: %s code=%s" % (m["type"], m.get("code")))
        return
    if path == "/enum-close":
        import enum

        class Code(enum.IntEnum):
            GONE_FOR_GOOD = 4004
        await send({"type": "websocket.close", "code": Code.GONE_FOR_GOOD})
        return
    if path.startswith("/bad-close/"):
        await send({"type": "websocket.close", "code": int(path.rsplit("/", 1)[1])})
        return

    # echo
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            log("disconnect code=%s" % m.get("code"))
            return
        assert m["type"] == "websocket.receive", m
        if m.get("text") is not None:
            t = m["text"]
            if t == "close-me":
                await send({"type": "websocket.close", "code": 4003})
                return
            if t == "pid":
                await send({"type": "websocket.send", "text": str(os.getpid())})
                continue
            await send({"type": "websocket.send", "text": "echo:" + t})
        else:
            await send({"type": "websocket.send", "bytes": b"echo:" + m["bytes"]})
'''


def raw_websocket(c, path):
    """A WebSocket handshake on a raw connection; returns the connection and the
    101 head (the frames that follow are the test's to read)."""
    key = base64.b64encode(os.urandom(16)).decode()
    conn = c.raw()
    conn.send(f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
    return conn, conn.read_head()


def start(coil, route="/...", **opts):
    return coil({"coil.toml": asgi_manifest("ws", route, **opts), "main.py": WS_APP})


def test_echo_text_and_bytes(coil):
    c = start(coil)

    async def session():
        async with websockets.connect(ws_url(c, "/echo"), max_size=None) as ws:
            await ws.send("hello")
            assert await ws.recv() == "echo:hello"
            await ws.send(b"\x00\x01\xffbin")
            got = await ws.recv()
            assert isinstance(got, bytes) and got == b"echo:\x00\x01\xffbin"
            big = "x" * 300_000 + "\u00e9"
            await ws.send(big)
            assert await ws.recv() == "echo:" + big
            blob = os.urandom(200_000)
            await ws.send(blob)
            assert await ws.recv() == b"echo:" + blob
            for i in range(50):
                await ws.send(f"m{i}")
            for i in range(50):
                assert await ws.recv() == f"echo:m{i}"
    ws_run(session())
    assert c.get("/plain").body == b"plain http", "plain HTTP still works next to websockets"


def test_messages_up_to_16_mib_pass_both_ways(coil):
    # Over one frame of the host<->instance protocol: they travel in parts, whole again
    # at each end.
    c = start(coil)

    async def session():
        async with websockets.connect(ws_url(c, "/echo"), max_size=None) as ws:
            blob = os.urandom(15 << 20)
            await ws.send(blob)
            assert await ws.recv() == b"echo:" + blob
            text = "\u00e9" * (3 << 20)  # 6 MiB of UTF-8, split inside a character
            await ws.send(text)
            assert await ws.recv() == "echo:" + text
    ws_run(session())


@pytest.mark.parametrize("compression", [None, "deflate"])
def test_a_message_over_16_mib_from_the_client_closes_with_1009(coil, compression):
    # compressed, the message is about 16 KiB on the wire: the bound is on what it
    # inflates to
    c = start(coil)

    async def session():
        async with websockets.connect(ws_url(c, "/echo"), max_size=None, compression=compression) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.send(b"x" * ((16 << 20) + 1))  # the close may come while it is sent
                await ws.recv()
            return closed.value.rcvd.code
    assert ws_run(session()) == 1009


def test_a_close_code_given_as_an_int_enum_is_sent(coil):
    c = start(coil)

    async def session():
        async with websockets.connect(ws_url(c, "/enum-close")) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd.code
    assert ws_run(session()) == 4004


SLOW_READER = APP_GATE + r'''
async def app(scope, receive, send):
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    gate_name = scope["query_string"].decode()
    await gate(gate_name, limit=60)  # takes nothing until the test says so
    count = size = 0
    while count < 64:
        m = await receive()
        count += 1
        size += len(m["bytes"])
    await send({"type": "websocket.send", "text": "got %d messages, %d bytes" % (count, size)})
'''


def test_a_client_flooding_an_app_that_does_not_read_waits_for_it(coil, tmp_path):
    # 64 MiB of messages for an app in 96 MiB that takes none of them yet: the host stops
    # reading the client at 16 MiB not taken (flow control), so the instance holds no
    # more than that, and the app then gets every message.
    gates = Gates(tmp_path / "gates")
    c = coil({"coil.toml": asgi_manifest("slow", "/...", gate_dir=gates.dir, memory_mb=96), "main.py": SLOW_READER})
    g = gates.new()
    mark = c.mark()

    async def session():
        # uncompressed: compressed, 64 MiB of one byte fit in the sockets' buffers
        async with websockets.connect(ws_url(c, f"/flood?{g}"), max_size=None, compression=None) as ws:
            async def flood():
                for _ in range(64):
                    await ws.send(b"f" * (1 << 20))
            sender = asyncio.create_task(flood())
            await asyncio.to_thread(c.wait_for_line, r"^coil: slow websocket /flood\?\S+: the application has \d+ "
                                    r"bytes of messages it has not taken; the client waits$", 30, mark)
            assert not sender.done()  # held back
            gates.open(g)
            await sender
            return await ws.recv()
    assert ws_run(session(), timeout=60) == "got 64 messages, %d bytes" % (64 << 20)
    assert not c.find_lines(r"ran out of memory|exited \(", since=mark), c.log()


@pytest.mark.parametrize("code", [0, 1005, 1006, 70000])
def test_a_close_code_that_may_not_be_sent_is_the_apps_error(coil, code):
    # The app's RuntimeError: the client sees 1011 (internal error), never a rewritten code.
    c = start(coil)
    mark = c.mark()

    async def session():
        async with websockets.connect(ws_url(c, f"/bad-close/{code}")) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd.code
    assert ws_run(session()) == 1011
    c.wait_for_line(rf"RuntimeError: invalid WebSocket close code {code} ", since=mark, timeout=10)


def test_websocket_scope(coil):
    c = start(coil, route="/sock/...")

    async def session():
        async with websockets.connect(ws_url(c, "/sock/scope?token=a%20b"),
                                      subprotocols=["chat.v1", "chat.v2"],
                                      extra_headers=[("X-Test", "One"), ("x-test", "two")]) as ws:
            return json.loads(await ws.recv()), ws.subprotocol
    s, proto = ws_run(session())
    assert s["type"] == "websocket"
    assert s["asgi"]["version"] == "3.0"
    assert s["http_version"] == "1.1"
    assert s["scheme"] == "ws"
    assert s["path"] == "/sock/scope"
    assert s["raw_path"] == B(b"/sock/scope")
    assert s["root_path"] == "/sock"
    assert s["query_string"] == B(b"token=a%20b")
    assert s["subprotocols"] == ["chat.v1", "chat.v2"]
    assert proto == "chat.v2"
    names = [k["bytes"] for k, _ in s["headers"]]
    assert all(n == n.lower() for n in names), names
    tests = [v["bytes"] for k, v in s["headers"] if k["bytes"] == "x-test"]
    assert tests == ["One", "two"]
    assert s["server"] == ["127.0.0.1", c.port]
    assert s["client"][0] == "127.0.0.1"


def test_a_trusted_proxy_over_tls_makes_the_scheme_wss(coil):
    c = coil({"coil.toml": asgi_manifest("ws", "/..."), "main.py": WS_APP}, "--forwarded-allow-ips", "127.0.0.1")

    async def session():
        async with websockets.connect(ws_url(c, "/scope"), extra_headers=[("X-Forwarded-Proto", "https"),
                                                                          ("X-Forwarded-For", "203.0.113.9")]) as ws:
            return json.loads(await ws.recv())
    s = ws_run(session())
    assert s["scheme"] == "wss"
    assert s["client"] == ["203.0.113.9", 0]


def test_subprotocol_negotiation(coil):
    c = start(coil)

    async def session(protos):
        async with websockets.connect(ws_url(c, "/echo"), subprotocols=protos) as ws:
            await ws.send("x")
            assert await ws.recv() == "echo:x"
            return ws.subprotocol
    assert ws_run(session(["chat.v2"])) == "chat.v2"
    assert ws_run(session(["chat.v1", "chat.v2"])) == "chat.v2"
    assert ws_run(session(None)) is None


def test_accept_headers_reach_the_client(coil):
    c = start(coil)

    async def session():
        async with websockets.connect(ws_url(c, "/headers")) as ws:
            await ws.send("x")
            assert await ws.recv() == "echo:x"
            return ws.response_headers.get("x-ws-extra"), ws.response_headers.get_all("server")
    extra, server = ws_run(session())
    assert extra == "yes"
    assert server == ["coil"], "no library banner (name and version) in the handshake"


@pytest.mark.parametrize("compression", [None, "deflate"])
def test_permessage_deflate_is_agreed_when_the_client_offers_it(coil, compression):
    c = start(coil)

    async def session():
        async with websockets.connect(ws_url(c, "/echo"), max_size=None, compression=compression) as ws:
            text = "a JSON-like message, said again and again. " * 20000
            await ws.send(text)
            assert await ws.recv() == "echo:" + text
            blob = os.urandom(100_000)
            await ws.send(blob)
            assert await ws.recv() == b"echo:" + blob
            return ws.response_headers.get("sec-websocket-extensions"), ws.response_headers.get("date")
    extensions, date = ws_run(session())
    if compression is None:
        assert extensions is None
    else:
        assert extensions is not None and extensions.startswith("permessage-deflate"), extensions
    assert date is not None and date.endswith(" GMT"), "a Date, as on every other response"


def test_client_sees_the_apps_close_code(coil):
    c = start(coil)
    mark = c.mark()

    async def server_close():
        async with websockets.connect(ws_url(c, "/server-close")) as ws:
            assert await ws.recv() == "closing soon"
            with pytest.raises(websockets.ConnectionClosed) as e:
                await ws.recv()
            return e.value.rcvd.code if e.value.rcvd else None

    assert ws_run(server_close()) == 4001
    # An app that waits in receive() after its close learns at once that the socket
    # closed (under the stream idle timeout of a minute, were it left waiting).
    c.wait_for_line(fn_line("ws", "after its close: websocket.disconnect code=4001$"), since=mark, timeout=10)

    async def asked_to_close():
        async with websockets.connect(ws_url(c, "/echo")) as ws:
            await ws.send("close-me")
            with pytest.raises(websockets.ConnectionClosed) as e:
                await ws.recv()
            return e.value.rcvd.code if e.value.rcvd else None

    assert ws_run(asked_to_close()) == 4003


def test_app_sees_the_clients_close_code(coil):
    c = start(coil)
    mark = c.mark()

    async def session():
        async with websockets.connect(ws_url(c, "/echo")) as ws:
            await ws.send("x")
            assert await ws.recv() == "echo:x"
            await ws.close(code=4002, reason="client done")
    ws_run(session())
    c.wait_for_line(fn_line("ws", r"disconnect code=4002$"), since=mark, timeout=10)


def test_the_close_code_reaches_an_app_on_a_recycled_instance(coil):
    # The instance is replaced while the socket is open, and closed when the
    # socket ends: the client's close frame reaches the app before that.
    c = start(coil, max_instances=1, timeout_ms=1000)
    mark = c.mark()

    async def session():
        async with websockets.connect(ws_url(c, "/echo")) as ws:
            await ws.send("x")
            assert await ws.recv() == "echo:x"
            r = await asyncio.get_running_loop().run_in_executor(None, lambda: c.get("/thread-stuck", timeout=15))
            assert r.status == 504, r
            c.wait_for_line(r"^coil: instance ws pid=\d+ is replaced: ", since=mark)
            await ws.close(code=4002, reason="client done")
    ws_run(session())
    c.wait_for_line(fn_line("ws", r"disconnect code=4002$"), since=mark, timeout=10)


def test_close_before_accept_is_http_403(coil):
    c = start(coil)

    async def session():
        async with websockets.connect(ws_url(c, "/reject")):
            pass
    with pytest.raises(websockets.InvalidStatusCode) as e:
        ws_run(session())
    assert e.value.status_code == 403
    assert c.get("/still-ok").status == 200


def test_abrupt_client_disconnect_reaches_the_app(coil):
    c = start(coil)
    mark = c.mark()
    conn, head = raw_websocket(c, "/echo")
    with conn:
        assert head.status == 101, head
        assert head.header("upgrade", "").lower() == "websocket"
    # the TCP connection went away without a close frame: the app gets websocket.disconnect
    # (1006 is what servers report for that; any code is accepted here)
    c.wait_for_line(fn_line("ws", r"disconnect code=\S+$"), since=mark, timeout=10)


@pytest.mark.parametrize("leave", ["close", "reset"])
def test_a_push_loop_sees_its_client_leave_from_send(coil, leave):
    # As under uvicorn: send() raises an OSError once the client has gone, and the
    # app's own cleanup runs (it is not cancelled out from under it).
    c = start(coil)
    mark = c.mark()
    conn, head = raw_websocket(c, "/push")
    assert head.status == 101, head
    assert conn._read_until(b"tick")  # a frame of the push loop
    conn.leave(leave)
    c.wait_for_line(fn_line("ws", r"send raised ClientDisconnected \(the WebSocket client has gone "
                                  r"\(close code \d+\)\)$"), since=mark, timeout=10)
    c.wait_for_line(fn_line("ws", "cleanup ran$"), since=mark, timeout=10)
    assert c.get("/still-ok").status == 200


def test_an_app_that_neither_sends_nor_receives_after_its_client_left_is_cancelled(coil):
    c = start(coil)
    mark = c.mark()
    conn, head = raw_websocket(c, "/sleeper")
    assert head.status == 101, head
    c.wait_for_line(fn_line("ws", "sleeping$"), since=mark, timeout=10)
    conn.close()
    # after the grace (5 s) it had to send() or receive() and end by itself
    c.wait_for_line(fn_line("ws", "sleeper cancelled$"), since=mark, timeout=20)


def test_several_websockets_on_one_instance(coil):
    c = start(coil, max_instances=1)

    async def session():
        socks = [await websockets.connect(ws_url(c, "/echo")) for _ in range(5)]
        try:
            for round_ in range(3):
                for i, ws in enumerate(socks):
                    await ws.send(f"{i}-{round_}")
                for i, ws in reversed(list(enumerate(socks))):
                    assert await ws.recv() == f"echo:{i}-{round_}"
            pids = set()
            for ws in socks:
                await ws.send("pid")
                pids.add(await ws.recv())
            return pids
        finally:
            for ws in socks:
                await ws.close()
    pids = ws_run(session())
    assert len(pids) == 1, pids


def test_stream_idle_timeout_closes_an_idle_websocket(coil):
    c = start(coil, stream_idle_timeout_ms=800)

    async def session():
        async with websockets.connect(ws_url(c, "/echo")) as ws:
            await ws.send("a")
            assert await ws.recv() == "echo:a"
            # nobody says anything: coil closes the socket after stream_idle_timeout_ms
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 15)
    ws_run(session())


def test_client_pings_keep_a_websocket_from_idling_out(coil):
    c = start(coil, stream_idle_timeout_ms=800)

    async def session():
        async with websockets.connect(ws_url(c, "/echo"), ping_interval=None) as ws:
            await ws.send("a")
            assert await ws.recv() == "echo:a"
            # three times stream_idle_timeout_ms without a message, but with pings
            loop = asyncio.get_running_loop()
            until = loop.time() + 2.4
            while loop.time() < until:
                await asyncio.wait_for(await ws.ping(), 5)
                await asyncio.sleep(0.2)
            await ws.send("b")
            assert await ws.recv() == "echo:b"
    ws_run(session())


def test_timeout_bounds_the_time_until_accept(coil):
    c = start(coil, timeout_ms=1000)

    async def session():
        async with websockets.connect(ws_url(c, "/never-accept"), open_timeout=8):
            pass
    with pytest.raises(websockets.InvalidStatusCode) as e:
        ws_run(session())
    assert e.value.status_code == 504
    # an accepted socket may stay open longer than timeout_ms

    async def long_session():
        async with websockets.connect(ws_url(c, "/echo")) as ws:
            await ws.send("a")
            assert await ws.recv() == "echo:a"
            await asyncio.sleep(1.5)
            await ws.send("b")
            assert await ws.recv() == "echo:b"
    ws_run(long_session())


HUGE_HEADER_APP = '''
async def app(scope, receive, send):
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept", "headers": [(b"x-big", b"a" * 70000)]})
        await receive()
    elif scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"alive"})
'''


def test_oversized_accept_header_is_refused_and_the_host_survives(coil):
    c = coil({"coil.toml": asgi_manifest("big", "/..."), "main.py": HUGE_HEADER_APP})
    key = base64.b64encode(os.urandom(16))
    with c.raw() as conn:
        conn.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        r = conn.read_response()
    # The instance refuses to send a head over 64 KiB (the app's accept
    # raises, so the handshake fails with 500); the host would refuse it too.
    assert r.status == 500, r
    r = c.get("/")
    assert (r.status, r.body) == (200, b"alive")
