"""The HTTP/1.1 front: keep-alive, pipelining, request bodies, 100-continue, limits, timeouts,
and ambiguous framing. Malformed requests go over raw sockets."""

import hashlib
import http.client
import os
import socket
import subprocess
import threading
import time

import pytest

from conftest import COIL_BIN, ECHO_APP, Coil, RawConn, fn_toml, http_request, manifest, write_files

SLOW_APP = ECHO_APP + '''
import time as _time
_echo = handle_request

def handle_request(request):
    if request.uri.startswith("/slow"):
        _time.sleep(0.3)
    return _echo(request)
'''


def start(coil, *flags, app=ECHO_APP, **opts):
    return coil({"coil.toml": manifest(fn_toml("front", "/...", **opts)), "app.py": app}, *flags)


def assert_400_and_closed(c, request_bytes, mark=None):
    with RawConn(c.port, timeout=5) as rc:
        rc.send(request_bytes)
        r = rc.read_response()
        assert r.status == 400, r
        assert r.body.startswith(b"bad request: "), r.body
        assert r.body.endswith(b"\n"), r.body
        assert rc.wait_closed(5), "connection not closed after a 400 for ambiguous framing"
    if mark is not None:
        # the handler never ran
        assert c.count_lines(r"^\[front pid=\d+\]", since=mark) == 0
        assert c.count_lines(r"^coil: access \S+ \S+ \S+ 200 ", since=mark) == 0


# ---------------------------------------------------------------- connections

def test_keep_alive_reuses_the_connection(coil):
    c = start(coil)
    conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=10)
    conn.connect()
    sock = conn.sock
    local = "%s:%d" % sock.getsockname()
    try:
        for i in range(5):
            r = http_request(c.port, "GET", f"/k{i}", conn=conn)
            assert r.status == 200, r
            assert r.json()["uri"] == f"/k{i}"
            assert r.json()["headers"]["spin-client-addr"] == local
            assert (r.header("connection") or "").lower() != "close"
            assert conn.sock is sock, "coil closed a keep-alive connection"
    finally:
        conn.close()


def test_an_absolute_form_target_is_served_as_its_path(coil):
    c = start(coil)
    with RawConn(c.port) as rc:
        rc.send("GET http://example.com/abs/x?q=1 HTTP/1.1\r\nHost: other.test\r\n\r\n")
        r = rc.read_response()
        assert r.status == 200, r
        assert r.json()["uri"] == "/abs/x?q=1"
        assert r.json()["headers"]["host"] == "example.com"  # the target's host wins (RFC 9112 3.2.2)
    c.wait_for_line(r"^coil: access front GET /abs/x\?q=1 200 ", timeout=5)


def test_keep_alive_across_functions(coil):
    toml = manifest(fn_toml("one", "/one"), fn_toml("two", "/two"))
    c = coil({"coil.toml": toml, "app.py": ECHO_APP})
    with RawConn(c.port) as rc:
        for target in ["/one", "/two", "/nothing", "/one"]:
            rc.send(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n")
            r = rc.read_response()
            assert r.status == (404 if target == "/nothing" else 200), r


def test_http10_closes_after_response(coil):
    c = start(coil)
    with RawConn(c.port) as rc:
        rc.send("GET /ten HTTP/1.0\r\nHost: x\r\n\r\n")
        r = rc.read_response()
        assert r.status == 200
        assert r.json()["uri"] == "/ten"
        assert rc.wait_closed(5)


def test_connection_close_honoured(coil):
    c = start(coil)
    with RawConn(c.port) as rc:
        rc.send("GET /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        r = rc.read_response()
        assert r.status == 200
        assert rc.wait_closed(5)


def test_head_request_has_no_body(coil):
    c = start(coil)
    with RawConn(c.port) as rc:
        rc.send("HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /after-head HTTP/1.1\r\nHost: x\r\n\r\n")
        r = rc.read_response(method="HEAD")
        assert r.status == 200, r
        # the next response follows directly: no body bytes after the HEAD response's head
        r2 = rc.read_response()
    assert r2.status == 200, r2
    assert r2.json()["uri"] == "/after-head"


def test_pipelined_requests_answered_in_order(coil):
    c = start(coil, app=SLOW_APP, max_instances=4)
    body = b"pipelined body"
    data = (b"GET /slow/first HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
            b"GET /third?x=3 HTTP/1.1\r\nHost: x\r\n\r\n") % (len(body), body)
    with RawConn(c.port) as rc:
        rc.send(data)  # all three in one send
        r1, r2, r3 = rc.read_response(), rc.read_response(), rc.read_response()
    assert [r1.status, r2.status, r3.status] == [200, 200, 200]
    assert r1.json()["uri"] == "/slow/first"
    assert r2.json()["uri"] == "/second"
    assert bytes.fromhex(r2.json()["body_hex"]) == body
    assert r3.json()["uri"] == "/third?x=3"


def test_request_heads_with_bare_lf_line_ends_are_served(coil):
    # RFC 9112 2.2 lets a server take a bare LF for a line's end; uvicorn and nginx do
    # (printf 'GET / HTTP/1.1\nHost: x\n\n' | nc ...). The body and the next request on
    # the connection are framed as usual.
    c = start(coil)
    body = b"lf body"
    data = (b"POST /lf HTTP/1.1\nHost: x\nContent-Length: %d\n\n%s"
            b"GET /mixed HTTP/1.1\r\nHost: x\n\r\n") % (len(body), body)
    with RawConn(c.port) as rc:
        rc.send(data)
        r1, r2 = rc.read_response(), rc.read_response()
    assert [r1.status, r2.status] == [200, 200], (r1, r2)
    assert r1.json()["uri"] == "/lf"
    assert bytes.fromhex(r1.json()["body_hex"]) == body
    assert r1.json()["headers"]["host"] == "x"
    assert r2.json()["uri"] == "/mixed"


def test_pipelined_with_error_in_between(coil):
    c = coil({"coil.toml": manifest(fn_toml("only", "/only")), "app.py": ECHO_APP})
    data = (b"GET /only?1 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /only?3 HTTP/1.1\r\nHost: x\r\n\r\n")
    with RawConn(c.port) as rc:
        rc.send(data)
        rs = [rc.read_response() for _ in range(3)]
    assert [r.status for r in rs] == [200, 404, 200]
    assert rs[0].json()["uri"] == "/only?1"
    assert rs[2].json()["uri"] == "/only?3"


@pytest.mark.parametrize("request_bytes,uris", [
    (b"GET /slow/half HTTP/1.0\r\n\r\n", ["/slow/half"]),
    (b"POST /slow/half HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", ["/slow/half"]),
    (b"POST /slow/half HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", ["/slow/half"]),
    (b"GET /slow/one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n", ["/slow/one", "/two"]),
], ids=["http10-get", "post-content-length", "post-chunked", "pipelined"])
def test_a_client_that_half_closes_after_its_request_gets_the_response(coil, request_bytes, uris):
    # RFC 9112 9.6: a read EOF after a complete request only means the client sends
    # nothing more (printf ... | nc -N); the response still goes, then the connection closes.
    c = start(coil, app=SLOW_APP)
    mark = c.mark()
    with RawConn(c.port) as rc:
        rc.send(request_bytes)
        rc.sock.shutdown(socket.SHUT_WR)
        for uri in uris:
            r = rc.read_response()
            assert r.status == 200, r
            assert r.json()["uri"] == uri
        assert rc.wait_closed(5)
    c.wait_for_lines(r"^coil: access front \S+ /\S+ 200 ", len(uris), since=mark, timeout=5)
    assert c.count_lines(r" 499 ", since=mark) == 0


@pytest.mark.parametrize("partial", [
    b"GET /x HTTP/1.1\r\nHost: x\r\n",
    b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello",
    b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /tw",
], ids=["in-the-head", "in-the-body", "after-a-complete-one"])
def test_a_half_close_in_the_middle_of_a_request_closes_the_connection(coil, partial):
    c = start(coil)
    mark = c.mark()
    with RawConn(c.port) as rc:
        rc.send(partial)
        rc.sock.shutdown(socket.SHUT_WR)
        if partial.startswith(b"GET /one"):
            assert rc.read_response().json()["uri"] == "/one"
        assert rc.wait_closed(5)
    assert c.count_lines(r"^\[front pid=\d+\].*/x", since=mark) == 0


# ---------------------------------------------------------------- request bodies

def test_content_length_body_intact(coil):
    c = start(coil)
    body = os.urandom(3 * 1024 * 1024 + 17)
    r = c.request("POST", "/upload", body=body)
    assert r.status == 200, r
    info = r.json()
    assert info["body_len"] == len(body)
    assert info["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_chunked_body_intact(coil):
    c = start(coil)
    pieces = [b"hello", b" ", os.urandom(70000), b"x" * 26, os.urandom(1 << 20)]
    wire = b""
    for i, p in enumerate(pieces):
        ext = b";name=value" if i == 1 else b""
        wire += b"%x%s\r\n%s\r\n" % (len(p), ext, p)
    wire += b"0\r\n\r\n"
    whole = b"".join(pieces)
    with RawConn(c.port) as rc:
        rc.send(b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(wire), 4096):  # in many writes
            rc.send(wire[i:i + 4096])
        r = rc.read_response()
        assert r.status == 200, r
        info = r.json()
        assert info["body_len"] == len(whole)
        assert info["body_sha256"] == hashlib.sha256(whole).hexdigest()
        # and the connection is still usable
        rc.send(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        assert rc.read_response().json()["uri"] == "/after"


def test_chunked_body_with_trailer(coil):
    c = start(coil)
    with RawConn(c.port) as rc:
        rc.send(b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n0\r\nX-Trailer: yes\r\n\r\n")
        r = rc.read_response()
    assert r.status == 200, r
    assert bytes.fromhex(r.json()["body_hex"]) == b"abc"


def test_empty_chunked_body(coil):
    c = start(coil)
    with RawConn(c.port) as rc:
        rc.send(b"POST /e HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        r = rc.read_response()
    assert r.status == 200, r
    assert r.json()["body_len"] == 0
    assert r.json()["body_type"] == "bytes"


def test_expect_100_continue(coil):
    c = start(coil)
    body = b"sent after continue"
    with RawConn(c.port) as rc:
        rc.send(b"POST /expect HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body))
        interim = rc.read_head(timeout=5)  # must come before we send the body
        assert interim.version == "HTTP/1.1" and interim.status == 100, interim
        assert interim.reason == "Continue"
        rc.send(body)
        r = rc.read_response()
    assert r.status == 200, r
    assert bytes.fromhex(r.json()["body_hex"]) == body


def test_expect_100_continue_over_limit_gets_413_not_100(coil):
    c = start(coil, max_body_bytes=1024)
    with RawConn(c.port) as rc:
        rc.send(b"POST /expect HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n")
        r = rc.read_response(timeout=5)
    assert r.status == 413, r
    assert r.body == b"body larger than 1024 bytes\n"


# ---------------------------------------------------------------- limits

def test_request_line_over_8k_is_414(coil):
    c = start(coil)
    with RawConn(c.port, timeout=5) as rc:
        rc.send(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        r = rc.read_response()
    assert r.status == 414, r
    assert r.body == b"request line too long\n"


def test_request_line_just_under_8k_is_fine(coil):
    c = start(coil)
    target = "/" + "b" * 8000
    r = c.get(target)
    assert r.status == 200, r
    assert r.json()["uri"] == target


def test_headers_over_32k_are_431(coil):
    c = start(coil)
    headers = b"".join(b"X-Big-%d: %s\r\n" % (i, b"v" * 7000) for i in range(5))  # ~35 KB
    with RawConn(c.port, timeout=5) as rc:
        rc.send(b"GET /h HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        r = rc.read_response()
    assert r.status == 431, r
    assert r.body == b"request headers too large\n"


def test_headers_under_32k_are_fine(coil):
    c = start(coil)
    r = c.get("/h", headers={f"X-Big-{i}": "v" * 7000 for i in range(4)})  # ~28 KB
    assert r.status == 200, r
    assert r.json()["headers"]["x-big-3"] == "v" * 7000


def test_body_over_max_is_413_before_it_is_sent(coil):
    c = start(coil, max_body_bytes=1024)
    mark = c.mark()
    with RawConn(c.port, timeout=5) as rc:
        # only the head: coil must answer without waiting for the 10 MB
        rc.send(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        r = rc.read_response(timeout=5)
    assert r.status == 413, r
    assert r.body == b"body larger than 1024 bytes\n"
    c.wait_for_line(r"^coil: access front POST /big 413 ", since=mark, timeout=5)
    assert c.count_lines(r"^\[front pid=", since=mark) == 0


def test_body_at_max_is_accepted_and_one_more_byte_is_not(coil):
    c = start(coil, max_body_bytes=1024)
    r = c.request("POST", "/ok", body=b"z" * 1024)
    assert r.status == 200, r
    assert r.json()["body_len"] == 1024
    r = c.request("POST", "/ok", body=b"z" * 1025)
    assert r.status == 413, r


def test_chunked_body_over_max_is_413(coil):
    c = start(coil, max_body_bytes=1024)
    with RawConn(c.port, timeout=5) as rc:
        rc.send(b"POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"400\r\n" + b"a" * 0x400 + b"\r\n" + b"400\r\n" + b"b" * 0x400 + b"\r\n")
        r = rc.read_response(timeout=5)
    assert r.status == 413, r


def _stream(sock, head, filler, total, stop):
    """Sends `head`, then `filler` until `total` bytes, stopped, or coil closes."""
    try:
        sock.sendall(head)
        sent = 0
        while sent < total and not stop.is_set():
            sock.sendall(filler)
            sent += len(filler)
    except OSError:
        pass


def vm_hwm_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("start_of_it,filler,status", [
    (b"3\r\nabc\r\n0\r\nX-Trailer: ", b"t" * (1 << 20), 431),
    (b"5;a=", b"x" * (1 << 20), 400),
    (b"", b"0" * (1 << 20), 400),
], ids=["trailer", "chunk-extension", "leading-zeros"])
def test_endless_chunk_framing_is_refused_with_memory_bounded(coil, start_of_it, filler, status):
    # Beast buffers a chunk-size line and a trailer whole before parsing them:
    # 200 MB of either is refused early, with the connection, whatever max_body_bytes.
    c = start(coil, max_body_bytes=1000)
    total = 200 << 20
    stop = threading.Event()
    with RawConn(c.port, timeout=10) as rc:
        head = b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + start_of_it
        t = threading.Thread(target=_stream, args=(rc.sock, head, filler, total, stop), daemon=True)
        t.start()
        try:
            r = rc.read_response(timeout=10)
            assert r.status == status, r
            assert rc.wait_closed(10), "connection still open after the refusal"
        finally:
            stop.set()
            t.join()
    assert vm_hwm_bytes(c.pid) < 100 << 20


# ---------------------------------------------------------------- timeouts

def _trickle(sock, data, interval, stop):
    for b in data:
        if stop.is_set():
            return
        try:
            sock.send(bytes([b]))
        except OSError:
            return
        stop.wait(interval)


def test_slowloris_headers_get_408(coil):
    c = start(coil, "--header-timeout-ms", "1000")
    stop = threading.Event()
    with RawConn(c.port, timeout=10) as rc:
        t0 = time.monotonic()
        rc.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n")
        # a byte every 100 ms, forever (it would take minutes to finish the head)
        t = threading.Thread(target=_trickle,
                             args=(rc.sock, b"X-Slow: " + b"a" * 10000 + b"\r\n\r\n", 0.1, stop),
                             daemon=True)
        t.start()
        try:
            r = rc.read_response(timeout=8)
            elapsed = time.monotonic() - t0
            assert r.status == 408, r
            assert r.body == b"request timeout\n"
            assert 0.8 <= elapsed <= 4.0, f"408 after {elapsed:.2f}s with --header-timeout-ms 1000"
            assert rc.wait_closed(5)
        finally:
            stop.set()
            t.join()


def test_idle_connection_without_request_is_closed(coil):
    c = start(coil, "--header-timeout-ms", "1000", "--keepalive-timeout-ms", "1000")
    with RawConn(c.port, timeout=10) as rc:
        t0 = time.monotonic()
        closed = rc.wait_closed(6)
        # coil may send a 408 first; what matters is that the connection goes away
        assert closed or rc.buf.startswith(b"HTTP/1.1 408"), rc.buf
        assert time.monotonic() - t0 <= 5.0


def test_stalled_body_gets_408(coil):
    c = start(coil, "--header-timeout-ms", "1000")
    mark = c.mark()
    with RawConn(c.port, timeout=10) as rc:
        t0 = time.monotonic()
        rc.send(b"POST /stall HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"0123456789")
        r = rc.read_response(timeout=8)
        elapsed = time.monotonic() - t0
        assert r.status == 408, r
        assert r.body == b"request timeout\n"
        assert 0.8 <= elapsed <= 4.0, elapsed
        assert rc.wait_closed(5)
    assert c.count_lines(r"^\[front pid=", since=mark) == 0


def test_slow_body_trickle_gets_408(coil):
    c = start(coil, "--header-timeout-ms", "1000")
    stop = threading.Event()
    with RawConn(c.port, timeout=10) as rc:
        t0 = time.monotonic()
        rc.send(b"POST /trickle HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        t = threading.Thread(target=_trickle, args=(rc.sock, b"q" * 100000, 0.1, stop), daemon=True)
        t.start()
        try:
            r = rc.read_response(timeout=8)
            assert r.status == 408, r
            assert time.monotonic() - t0 <= 4.0
        finally:
            stop.set()
            t.join()


def test_idle_keep_alive_closed_after_timeout(coil):
    c = start(coil, "--keepalive-timeout-ms", "1000")
    with RawConn(c.port, timeout=10) as rc:
        rc.send(b"GET /once HTTP/1.1\r\nHost: x\r\n\r\n")
        r = rc.read_response()
        assert r.status == 200
        t0 = time.monotonic()
        assert rc.wait_closed(6), "idle keep-alive connection not closed"
        elapsed = time.monotonic() - t0
    assert 0.7 <= elapsed <= 3.5, f"closed after {elapsed:.2f}s with --keepalive-timeout-ms 1000"


def test_keep_alive_timer_restarts_per_request(coil):
    c = start(coil, "--keepalive-timeout-ms", "1500")
    with RawConn(c.port, timeout=10) as rc:
        t0 = time.monotonic()
        # requests spread over more than the keep-alive timeout, each gap shorter than it
        for i in range(4):
            rc.send(f"GET /r{i} HTTP/1.1\r\nHost: x\r\n\r\n")
            assert rc.read_response().status == 200
            if i < 3:
                assert not rc.wait_closed(0.7)  # (also the pacing between requests)
        assert time.monotonic() - t0 >= 2.0


# ---------------------------------------------------------------- framing

def test_content_length_and_transfer_encoding_is_400(coil):
    c = start(coil)
    mark = c.mark()
    assert_400_and_closed(c, b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", mark)


def test_transfer_encoding_and_content_length_is_400(coil):
    c = start(coil)
    mark = c.mark()
    assert_400_and_closed(c, b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                             b"Content-Length: 16\r\n\r\n5\r\nhello\r\n0\r\n\r\n", mark)


@pytest.mark.parametrize("values", [(b"5", b"6"), (b"5", b"5")], ids=["different", "same"])
def test_duplicate_content_length_is_400(coil, values):
    c = start(coil)
    mark = c.mark()
    assert_400_and_closed(c, b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: %s\r\n"
                             b"Content-Length: %s\r\n\r\nhello!" % values, mark)


@pytest.mark.parametrize("cl", [b"5, 5", b"-5", b"+5", b"0x5", b"5 5", b"99999999999999999999999"])
def test_invalid_content_length_is_400(coil, cl):
    c = start(coil)
    mark = c.mark()
    assert_400_and_closed(c, b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: %s\r\n\r\nhello" % cl, mark)


def test_chunked_then_identity_is_400(coil):
    c = start(coil)
    mark = c.mark()
    assert_400_and_closed(c, b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
                             b"5\r\nhello\r\n0\r\n\r\n", mark)


@pytest.mark.parametrize("te_lines", [
    b"Transfer-Encoding : chunked\r\n",
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n",
    b"Transfer-Encoding: chunked, gzip\r\n",
    b"Transfer-Encoding: chunked, chunked\r\n",
    b"Transfer-Encoding: chunked;q=1\r\n",
    b"Transfer-Encoding: chun ked\r\n",
    b"Transfer-Encoding:\r\n chunked\r\n",
    b"Transfer-Encoding: \x0bchunked\r\n",
], ids=["space-before-colon", "second-te", "chunked-not-last", "chunked-twice", "parameter", "space-inside",
        "obs-fold", "vertical-tab"])
def test_obfuscated_transfer_encoding_is_400(coil, te_lines):
    c = start(coil)
    mark = c.mark()
    assert_400_and_closed(c, b"POST /x HTTP/1.1\r\nHost: x\r\n" + te_lines + b"\r\n5\r\nhello\r\n0\r\n\r\n",
                          mark)


@pytest.mark.parametrize("chunks", [
    b"zz\r\nhello\r\n0\r\n\r\n",
    b"-5\r\nhello\r\n0\r\n\r\n",
    b"0x5\r\nhello\r\n0\r\n\r\n",
    b"fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    b"\r\nhello\r\n0\r\n\r\n",
    b"5;a\nb\r\nhello\r\n0\r\n\r\n",
    b"5\r\nhelloXX0\r\n\r\n",
    b"5 5\r\nhello\r\n0\r\n\r\n",
], ids=["non-hex", "negative", "0x-prefix", "overflow", "empty-size", "bare-lf-in-extension",
        "missing-crlf-after-data", "space-in-size"])
def test_invalid_chunk_is_400(coil, chunks):
    c = start(coil)
    mark = c.mark()
    assert_400_and_closed(c, b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks, mark)


def test_garbage_request_line_is_400(coil):
    c = start(coil)
    assert_400_and_closed(c, b"THIS IS NOT HTTP\r\n\r\n")


# ---------------------------------------------------------------- found in review

def test_http_1_0_keep_alive_is_announced(coil):
    c = start(coil)
    with RawConn(c.port, timeout=5) as rc:
        for path in (b"/a", b"/b"):
            rc.send(b"GET " + path + b" HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            r = rc.read_response()
            assert r.status == 200, r
            assert (r.header("connection") or "").lower() == "keep-alive", r


def test_error_after_a_head_request_still_has_its_body(coil):
    c = start(coil)
    with RawConn(c.port, timeout=5) as rc:
        rc.send(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n")
        r = rc.read_response(method="HEAD")
        assert r.status == 200, r
        rc.send(b"GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx")
        r = rc.read_response()
        assert r.status == 400, r
        assert r.body == b"bad request: repeated Content-Length\n", r


def test_listen_on_localhost_is_taken_as_127_0_0_1(tmp_path):
    directory = write_files(tmp_path / "fn", {"coil.toml": manifest(fn_toml("echo", "/echo")), "app.py": ECHO_APP})
    c = Coil([COIL_BIN, "up", str(directory), "--listen", "localhost:0"], cwd=tmp_path, directory=directory)
    try:
        c.wait_listening()
        assert c.find_lines(r"^coil: listening on http://127\.0\.0\.1:\d+$"), c.log()
        assert c.get("/echo").status == 200
    finally:
        assert c.stop() == 0


def test_a_listen_address_that_is_not_an_ip_is_refused_before_anything_starts(tmp_path):
    directory = write_files(tmp_path / "fn", {"coil.toml": manifest(fn_toml("echo", "/echo")), "app.py": ECHO_APP})
    p = subprocess.run([COIL_BIN, "up", str(directory), "--listen", "example.com:3000"], cwd=tmp_path,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert p.returncode == 2, p.stderr
    assert '--listen: "example.com" is not an IP address' in p.stderr, p.stderr
    assert "template" not in p.stderr, p.stderr  # refused before any import


def test_running_out_of_file_descriptors_pauses_accepting_and_recovers(tmp_path):
    # coil with room for about 150 descriptors (its hard limit, which coil cannot raise),
    # and more idle connections than that
    # (the function's own limit fits under it)
    directory = write_files(tmp_path / "fn", {"coil.toml": manifest(fn_toml("echo", "/echo", max_open_files=64)),
                                              "app.py": ECHO_APP})
    c = Coil(["prlimit", "--nofile=150:150", COIL_BIN, "up", str(directory), "--listen", "127.0.0.1:0"],
             cwd=tmp_path, directory=directory)
    idle = []
    try:
        c.wait_listening()
        mark = c.mark()
        for _ in range(200):
            idle.append(socket.create_connection(("127.0.0.1", c.port), timeout=10))
        c.wait_for_line(r"^coil: cannot accept connections: Too many open files; retrying every 100 ms$",
                        since=mark, timeout=10)
        for s in idle:
            s.close()
        idle.clear()
        # the connections still in the backlog are accepted (and closed) as descriptors
        # free up, and new ones are served
        r = c.get("/echo", timeout=20)
        assert r.status == 200, r
    finally:
        for s in idle:
            s.close()
        assert c.stop() == 0


# ---------------------------------------------------------------- RFC 9110/9112 review

def assert_refused(c, request_bytes, status, body=None):
    with RawConn(c.port, timeout=5) as rc:
        rc.send(request_bytes)
        r = rc.read_response()
        assert r.status == status, r
        if body is not None:
            assert r.body == body, r
        assert rc.wait_closed(5)
    return r


@pytest.mark.parametrize("target,reason", [
    (b"/caf\xc3\xa9", b"byte outside ASCII in request target"),
    (b"/a\x80", b"byte outside ASCII in request target"),
    (b"/a#frag", b"'#' in request target"),
    (b"http://user:pw@example.com/p", b"userinfo in request target"),
    (b"http:///p", b"invalid host in request target"),
], ids=["utf8", "high-byte", "fragment", "userinfo", "empty-host"])
def test_invalid_request_targets_are_400(coil, target, reason):
    c = start(coil)
    mark = c.mark()
    assert_refused(c, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400, b"bad request: " + reason + b"\n")
    assert c.count_lines(r"^\[front pid=", since=mark) == 0


def test_a_percent_that_is_not_an_escape_is_kept_literally(coil):
    # as under uvicorn and Starlette: /items/100% reaches the function as it is (the
    # decoded forms, "/%00" for "/%%30%30", are the router's unit tests)
    c = start(coil)
    for target in ["/items/100%", "/a%zz", "/a%4", "/%%30%30", "/a/%.%2e", "/%25%2e%2e"]:
        r = c.get(target)
        assert r.status == 200, (target, r)
        assert r.json()["uri"] == target
        assert r.json()["headers"]["spin-path-info"] == target, target  # as sent (Spin)
    # a literal '%' neither hides a '..' segment nor a NUL
    for target in ["/a/%2e%2e/b", "/a/.%2e", "/%00", "/a%%00", "/a%zz/../b"]:
        with RawConn(c.port, timeout=5) as rc:
            rc.send(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n")
            assert rc.read_response().status == 400, target


def test_options_asterisk_is_answered_by_the_front(coil):
    c = start(coil)
    mark = c.mark()
    with RawConn(c.port, timeout=5) as rc:
        rc.send(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
        r = rc.read_response()
        assert (r.status, r.body, r.header("content-length")) == (200, b"", "0"), r
        rc.send(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")  # still usable
        assert rc.read_response().json()["uri"] == "/after"
    assert c.count_lines(r"^\[front pid=\d+\].*OPTIONS", since=mark) == 0
    assert_refused(c, b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400,
                   b"bad request: the target '*' is only for OPTIONS\n")


@pytest.mark.parametrize("head,reason", [
    (b"GET /h HTTP/1.1\r\n\r\n", b"no Host header"),
    (b"GET /h HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b"more than one Host header"),
    (b"GET /h HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", b"more than one Host header"),
    (b"GET /h HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", b"more than one Host header"),
    (b"GET /h HTTP/1.1\r\nHost: a b\r\n\r\n", b"invalid Host header"),
    (b"GET /h HTTP/1.1\r\nHost: a/b\r\n\r\n", b"invalid Host header"),
    (b"GET /h HTTP/1.1\r\nHost: user@a\r\n\r\n", b"invalid Host header"),
    (b"GET /h HTTP/1.1\r\nHost: a:8x\r\n\r\n", b"invalid Host header"),
    (b"GET /h HTTP/1.1\r\nHost: [::1\r\n\r\n", b"invalid Host header"),
], ids=["missing", "two", "two-equal", "two-http10", "space", "slash", "userinfo", "bad-port", "bracket"])
def test_an_invalid_host_is_400(coil, head, reason):
    c = start(coil)
    assert_refused(c, head, 400, b"bad request: " + reason + b"\n")


def test_valid_hosts_are_accepted(coil):
    c = start(coil)
    for host in ["example.com", "example.com:8080", "127.0.0.1:1", "[::1]:80", "[::1]", "xn--bcher-kva.example", ""]:
        with RawConn(c.port, timeout=5) as rc:
            rc.send(f"GET /h HTTP/1.1\r\nHost: {host}\r\n\r\n")
            assert rc.read_response().status == 200, host
    with RawConn(c.port, timeout=5) as rc:
        rc.send(b"GET /h HTTP/1.0\r\n\r\n")  # HTTP/1.0 may leave it out
        assert rc.read_response().status == 200


def test_empty_lines_before_a_request_line_are_ignored(coil):
    c = start(coil)
    with RawConn(c.port, timeout=5) as rc:
        # the client ends its body with a CRLF it did not count
        rc.send(b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\r\n"
                b"GET /follow HTTP/1.1\r\nHost: x\r\n\r\n")
        assert rc.read_response().json()["uri"] == "/first"
        assert rc.read_response().json()["uri"] == "/follow"
        rc.send(b"\r\n\r\n\r\nGET /third HTTP/1.1\r\nHost: x\r\n\r\n")
        assert rc.read_response().json()["uri"] == "/third"
    # but not without end: they count in the request line's length
    assert_refused(c, b"\r\n" * 5000, 414, b"request line too long\n")


def test_http_versions(coil):
    c = start(coil)
    with RawConn(c.port, timeout=5) as rc:
        rc.send(b"GET /v HTTP/1.2\r\nHost: x\r\n\r\n")  # a later 1.x is served as HTTP/1.1
        r = rc.read_response()
        assert (r.status, r.version) == (200, "HTTP/1.1"), r
        assert r.header("connection") is None  # kept alive, as HTTP/1.1
        rc.send(b"GET /v2 HTTP/1.9\r\nHost: x\r\n\r\n")
        assert rc.read_response().json()["uri"] == "/v2"
    for version in [b"HTTP/2.0", b"HTTP/3.0", b"HTTP/0.9"]:
        assert_refused(c, b"GET /v " + version + b"\r\nHost: x\r\n\r\n", 505, b"HTTP version not supported\n")


@pytest.mark.parametrize("te,coding", [
    (b"gzip, chunked", b"gzip"), (b"identity", b"identity"), (b"gzip", b"gzip"),
    (b"deflate,chunked", b"deflate"), (b"xchunked", b"xchunked"), (b"chunkedx", b"chunkedx"),
], ids=["gzip-chunked", "identity", "gzip", "deflate-chunked", "xchunked", "chunkedx"])
def test_a_transfer_coding_coil_does_not_implement_is_501(coil, te, coding):
    c = start(coil)
    mark = c.mark()
    r = assert_refused(c, b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + te + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                       501, b'transfer coding "' + coding + b'" not implemented\n')
    assert r.reason == "Not Implemented"
    assert c.count_lines(r"^\[front pid=", since=mark) == 0


def test_a_method_longer_than_the_request_line_limit_is_501(coil):
    c = start(coil)
    assert_refused(c, b"A" * 9000 + b" / HTTP/1.1\r\nHost: x\r\n\r\n", 501, b"method too long\n")


STATUS_APP = '''
from spin_http import Response

def handle_request(request):
    status = int(request.uri.rsplit("/", 1)[1])
    return Response(status, [("content-type", "text/plain"), ("content-length", "11")], b"not allowed")
'''


def test_a_205_response_has_no_content(coil):
    c = start(coil, app=STATUS_APP)
    with RawConn(c.port, timeout=5) as rc:
        rc.send(b"GET /s/205 HTTP/1.1\r\nHost: x\r\n\r\nGET /s/200 HTTP/1.1\r\nHost: x\r\n\r\n")
        r = rc.read_head()
        assert (r.status, r.reason, r.header("content-length")) == (205, "Reset Content", "0"), r
        # the next response follows at once: no body bytes after the 205's head
        r = rc.read_response()
        assert (r.status, r.body) == (200, b"not allowed"), r


@pytest.mark.parametrize("status,reason", [
    (203, "Non-Authoritative Information"), (207, "Multi-Status"), (226, "IM Used"), (300, "Multiple Choices"),
    (402, "Payment Required"), (410, "Gone"), (418, "I'm a teapot"), (421, "Misdirected Request"),
    (425, "Too Early"), (451, "Unavailable For Legal Reasons"), (505, "HTTP Version Not Supported"),
    (511, "Network Authentication Required"),
])
def test_registered_statuses_have_their_reason_phrase(coil, status, reason):
    c = start(coil, app=STATUS_APP)
    with RawConn(c.port, timeout=5) as rc:
        rc.send(f"GET /s/{status} HTTP/1.1\r\nHost: x\r\n\r\n")
        r = rc.read_response()
        assert (r.status, r.reason) == (status, reason), r
