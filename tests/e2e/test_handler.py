"""The Spin old-SDK handler model: Request fields, Response forms, spin-* headers, environment."""

import hashlib
import http.client
import json

import pytest

from conftest import ECHO_APP, RawConn, fn_toml, http_request, manifest


def echo(coil, route="/echo", name="echo", **opts):
    return coil({"coil.toml": manifest(fn_toml(name, route, **opts)), "app.py": ECHO_APP})


def app_returning(coil, expr, name="fn", route="/r", imports="from spin_http import Response"):
    """Start a function whose handler returns `expr` (a Python expression)."""
    app = f"{imports}\n\ndef handle_request(request):\n    return {expr}\n"
    return coil({"coil.toml": manifest(fn_toml(name, route)), "app.py": app})


# ---------------------------------------------------------------- Request

def test_get_request_fields(coil):
    c = echo(coil)
    r = c.get("/echo?x=1&y=two%20words",
              headers=[("X-Custom", "Value"), ("X-Multi", "a"), ("X-Multi", "b"), ("X-MiXeD-CaSe", "v")])
    assert r.status == 200, r
    info = r.json()
    assert info["method"] == "GET"
    assert info["uri"] == "/echo?x=1&y=two%20words"
    assert info["headers_type"] == "dict"
    h = info["headers"]
    assert all(k == k.lower() for k in h), sorted(h)
    assert h["x-custom"] == "Value"
    assert h["x-multi"] == "a, b"
    assert h["x-mixed-case"] == "v"
    assert h["host"] == f"127.0.0.1:{c.port}"
    assert info["body_type"] == "bytes"
    assert info["body_len"] == 0


def test_post_binary_body(coil):
    c = echo(coil)
    body = bytes(range(256)) * 4
    r = c.request("POST", "/echo", body=body, headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200, r
    info = r.json()
    assert info["method"] == "POST"
    assert info["uri"] == "/echo"
    assert info["body_type"] == "bytes"
    assert bytes.fromhex(info["body_hex"]) == body
    assert info["headers"]["content-type"] == "application/octet-stream"


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
def test_methods_passed_through(coil, method):
    c = echo(coil)
    r = c.request(method, "/echo", body=b"x")
    assert r.status == 200, r
    assert r.json()["method"] == method


def test_coil_module_exports_the_same_classes(coil):
    app = '''
    import spin_http
    from coil import Request, Response

    def handle_request(request):
        same = spin_http.Response is Response and spin_http.Request is Request
        return Response(201, {"x-same": str(same), "x-isinstance": str(isinstance(request, Request))}, "made")
    '''
    c = coil({"coil.toml": manifest(fn_toml("fn", "/r")), "app.py": app})
    r = c.get("/r")
    assert r.status == 201, r
    assert r.header("x-same") == "True"
    assert r.header("x-isinstance") == "True"
    assert r.body == b"made"


# ---------------------------------------------------------------- Response

def test_response_headers_as_list_of_pairs(coil):
    c = app_returning(coil, 'Response(200, [("content-type", "text/plain"), ("x-one", "1"), ("x-two", "2")], b"ok")')
    r = c.get("/r")
    assert r.status == 200, r
    assert r.header("content-type") == "text/plain"
    assert r.header("x-one") == "1"
    assert r.header("x-two") == "2"
    assert r.body == b"ok"


def test_response_headers_as_dict(coil):
    c = app_returning(coil, 'Response(202, {"content-type": "application/x-test", "x-k": "v"}, b"dict")')
    r = c.get("/r")
    assert r.status == 202, r
    assert r.header("content-type") == "application/x-test"
    assert r.header("x-k") == "v"
    assert r.body == b"dict"


@pytest.mark.parametrize("expr,expected", [
    ('b"\\x00\\x01binary\\xff"', b"\x00\x01binary\xff"),
    ('"h\\u00e9llo \\u2603"', "héllo ☃".encode("utf-8")),
    ("None", b""),
])
def test_response_body_types(coil, expr, expected):
    c = app_returning(coil, f"Response(200, None, {expr})")
    r = c.get("/r")
    assert r.status == 200, r
    assert r.body == expected


def test_response_with_only_status(coil):
    c = app_returning(coil, "Response(418)")
    r = c.get("/r")
    assert r.status == 418, r
    assert r.body == b""


def test_large_response_body(coil):
    c = app_returning(coil, 'Response(200, None, b"0123456789abcdef" * 262144)')  # 4 MiB
    r = c.get("/r")
    assert r.status == 200
    assert r.body == b"0123456789abcdef" * 262144


BIG_HANDLER = '''
from spin_http import Response

BODY = bytes(range(256)) * (48 << 12)  # 48 MiB


def handle_request(request):
    if request.uri == "/big/pid":
        import os
        return Response(200, None, str(os.getpid()))
    return Response(200, [("content-type", "application/octet-stream")], BODY)
'''


def test_a_large_response_reaches_a_slow_client_whole(coil):
    # Far over what the host buffers for one client: it stops reading the instance
    # while the client is behind (flow control), and nothing is cut off.
    c = coil({"coil.toml": manifest(fn_toml("big", "/big/...")), "app.py": BIG_HANDLER})
    expected = hashlib.sha256(bytes(range(256)) * (48 << 12)).hexdigest()
    with RawConn(c.port, timeout=60) as conn:
        for _ in range(2):
            conn.send("GET /big/x HTTP/1.1\r\nHost: x\r\n\r\n")
            head = conn.read_head()
            assert head.status == 200 and head.header("content-length") == str(48 << 20), head
            assert conn.read_body_sha256(48 << 20) == expected
    assert not c.find_lines("aborting")


def test_a_client_that_stops_reading_a_large_response_does_not_hold_the_instance(coil):
    c = coil({"coil.toml": manifest(fn_toml("big", "/big/...", stream_idle_timeout_ms=2000)), "app.py": BIG_HANDLER})
    mark = c.mark()
    with RawConn(c.port, timeout=30) as conn:
        conn.send("GET /big/x HTTP/1.1\r\nHost: x\r\n\r\n")  # and never read
        c.wait_for_line(r"^coil: function big: the client took none of the response for "
                        r"stream_idle_timeout_ms=2000; aborting it$", since=mark, timeout=30)
    r = c.get("/big/pid")
    assert r.status == 200, r
    with open(f"/proc/{c.proc.pid}/status") as f:
        rss_kib = int(next(line for line in f if line.startswith("VmRSS:")).split()[1])
    assert rss_kib < 100 * 1024, f"host RSS {rss_kib} KiB"


@pytest.mark.parametrize("status", [99, 600, 1000, -1])
def test_status_out_of_range_is_500(coil, status):
    c = app_returning(coil, f'Response({status}, None, b"never sent")')
    mark = c.mark()
    r = c.get("/r")
    assert r.status == 500, r
    assert b"never sent" not in r.body
    # a log line (not the access line) says why: it names the bad status
    c.wait_for_line(rf"^(?!coil: access ).*(?<![\d.]){status}(?!\d)", since=mark, timeout=5)


@pytest.mark.parametrize("expr,typename", [
    ('"a plain string"', "str"),
    ('{"status": 200}', "dict"),
    ("200", "int"),
    ("None", "None(Type)?"),
    ('(200, [], b"tuple")', "tuple"),
])
def test_wrong_return_type_is_500(coil, expr, typename):
    c = app_returning(coil, expr)
    mark = c.mark()
    r = c.get("/r")
    assert r.status == 500, r
    assert b"plain string" not in r.body and b"tuple" not in r.body
    # a log line (not the access line) says why: it names the type that came back
    c.wait_for_line(rf"^(?!coil: access ).*\b{typename}\b", since=mark, timeout=5)
    # the instance still serves
    assert c.get("/r").status == 500


# ---------------------------------------------------------------- spin-* headers

SPIN_HEADERS = ["spin-full-url", "spin-path-info", "spin-matched-route", "spin-base-path",
                "spin-raw-component-route", "spin-component-route", "spin-client-addr"]


def _spin_headers(port, target):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.connect()
        client_addr = "%s:%d" % conn.sock.getsockname()
        r = http_request(port, "GET", target, conn=conn)
    finally:
        conn.close()
    assert r.status == 200, r
    h = r.json()["headers"]
    return {k: h.get(k) for k in SPIN_HEADERS}, client_addr


def test_spin_headers_exact_route(coil):
    c = echo(coil, route="/exact/path")
    got, client = _spin_headers(c.port, "/exact/path?q=1&r=2")
    assert got == {
        "spin-full-url": f"http://127.0.0.1:{c.port}/exact/path?q=1&r=2",
        "spin-path-info": "",
        "spin-matched-route": "/exact/path",
        "spin-base-path": "/",
        "spin-raw-component-route": "/exact/path",
        "spin-component-route": "/exact/path",
        "spin-client-addr": client,
    }


@pytest.mark.parametrize("target,path_info", [
    ("/api/users/42?x=y", "/users/42"),
    ("/api/users/42/", "/users/42/"),
    ("/api", ""),
    ("/api/", "/"),
])
def test_spin_headers_prefix_route(coil, target, path_info):
    c = echo(coil, route="/api/...")
    got, client = _spin_headers(c.port, target)
    assert got == {
        "spin-full-url": f"http://127.0.0.1:{c.port}{target}",
        "spin-path-info": path_info,
        "spin-matched-route": "/api/...",
        "spin-base-path": "/",
        "spin-raw-component-route": "/api/...",
        "spin-component-route": "/api",
        "spin-client-addr": client,
    }


def test_spin_headers_catch_all_route(coil):
    c = echo(coil, route="/...")
    got, client = _spin_headers(c.port, "/any/where?z=9")
    assert got == {
        "spin-full-url": f"http://127.0.0.1:{c.port}/any/where?z=9",
        "spin-path-info": "/any/where",
        "spin-matched-route": "/...",
        "spin-base-path": "/",
        "spin-raw-component-route": "/...",
        "spin-component-route": "",
        "spin-client-addr": client,
    }


def test_spin_headers_capture_route(coil):
    # Spin >= 2.5: each ":name" segment comes as spin-path-match-<name>, '_'
    # written '-' (the values of Spin's own routing test, without a base).
    c = echo(coil, route="/:path_segment/:path_end/...")
    target = "/path/end/rest?key=value"
    got, client = _spin_headers(c.port, target)
    assert got == {
        "spin-full-url": f"http://127.0.0.1:{c.port}{target}",
        "spin-path-info": "/rest",
        "spin-matched-route": "/:path_segment/:path_end/...",
        "spin-base-path": "/",
        "spin-raw-component-route": "/:path_segment/:path_end/...",
        "spin-component-route": "/:path_segment/:path_end",
        "spin-client-addr": client,
    }
    h = http_request(c.port, "GET", target).json()["headers"]
    assert (h.get("spin-path-match-path-segment"), h.get("spin-path-match-path-end")) == ("path", "end")
    assert not any(k.startswith("spin-path-match-") for k in
                   http_request(echo(coil, route="/plain/...", name="plain").port, "GET", "/plain/x").json()["headers"])


def test_spin_headers_keep_the_path_as_the_client_sent_it(coil):
    # Spin routes on the raw path: spin-path-info and the captures keep their escapes.
    c = echo(coil, route="/files/:owner/...")
    h = http_request(c.port, "GET", "/files/j%C3%B6rg/my%20notes/100%25.txt?x=%41").json()["headers"]
    assert h["spin-path-info"] == "/my%20notes/100%25.txt"
    assert h["spin-path-match-owner"] == "j%C3%B6rg"
    # An escaped '/' in a segment splits it only once decoded: the decoded values stand.
    h = http_request(c.port, "GET", "/files/ann/a%2Fb").json()["headers"]
    assert (h["spin-path-info"], h["spin-path-match-owner"]) == ("/a/b", "ann")


def test_spin_full_url_uses_host_header(coil):
    c = echo(coil, route="/h")
    r = c.get("/h?a=b", headers={"Host": "example.test:8080"})
    assert r.status == 200, r
    assert r.json()["headers"]["spin-full-url"] == "http://example.test:8080/h?a=b"


def test_spin_full_url_defaults_to_localhost_without_host(coil):
    c = echo(coil, route="/h")
    with RawConn(c.port) as rc:
        rc.send("GET /h?n=1 HTTP/1.0\r\n\r\n")
        r = rc.read_response()
    assert r.status == 200, r
    assert r.json()["headers"]["spin-full-url"] == "http://localhost/h?n=1"


def test_client_cannot_spoof_spin_headers(coil):
    c = echo(coil, route="/api/...")
    conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=10)
    try:
        conn.connect()
        client_addr = "%s:%d" % conn.sock.getsockname()
        spoofed = [(h, "evil") for h in SPIN_HEADERS]
        r = http_request(c.port, "GET", "/api/x", headers=spoofed, conn=conn)
    finally:
        conn.close()
    assert r.status == 200, r
    h = r.json()["headers"]
    assert h["spin-path-info"] == "/x"
    assert h["spin-client-addr"] == client_addr
    assert h["spin-full-url"] == f"http://127.0.0.1:{c.port}/api/x"
    assert h["spin-matched-route"] == "/api/..."
    assert all("evil" not in h[k] for k in SPIN_HEADERS), h


def test_connection_header_not_passed_to_handler(coil):
    c = echo(coil, route="/c")
    r = c.get("/c", headers={"Connection": "keep-alive"})
    assert r.status == 200, r
    assert "connection" not in r.json()["headers"]


# ---------------------------------------------------------------- per-request state

def test_environment_reset_between_requests(coil):
    app = '''
    import os
    from spin_http import Response

    def handle_request(request):
        seen = "%s|%s" % (os.environ.get("GREETING"), os.environ.get("LEAKED", "-"))
        os.environ["GREETING"] = "changed"
        os.environ["LEAKED"] = "yes"
        return Response(200, None, seen + "|%d" % os.getpid())
    '''
    toml = manifest(fn_toml("envfn", "/e", env={"GREETING": "hi"}, max_instances=1))
    c = coil({"coil.toml": toml, "app.py": app})
    first = c.get("/e").text.split("|")
    second = c.get("/e").text.split("|")
    assert first[2] == second[2], "expected the same instance for both requests (max_instances=1)"
    assert first[:2] == ["hi", "-"]
    assert second[:2] == ["hi", "-"], "os.environ not reset to the function's environment per request"


def test_random_state_differs_between_instances(coil):
    app = '''
    import os, random
    from spin_http import Response

    random.random()  # the template has used its RNG before forking

    def handle_request(request):
        if request.uri == "/die":
            os._exit(1)
        return Response(200, None, "%d|%r" % (os.getpid(), random.random()))
    '''
    toml = manifest(fn_toml("rnd", "/...", max_instances=1))
    c = coil({"coil.toml": toml, "app.py": app})
    values = set()
    pids = set()
    for _ in range(3):
        pid, value = c.get("/r").text.split("|")
        pids.add(pid)
        values.add(value)
        assert c.get("/die").status == 502
    assert len(pids) == 3
    assert len(values) == 3, f"instances forked from one template share their random state: {values}"


# ---------------------------------------------------------------- environment

def test_environment_visible_in_os_environ(coil):
    app = '''
    import json, os
    from spin_http import Response

    def handle_request(request):
        keys = ["GREETING", "WITH_SPACES", "EMPTY", "UNICODE"]
        return Response(200, None, json.dumps({k: os.environ.get(k) for k in keys}))
    '''
    toml = manifest(fn_toml("envfn", "/env", env={
        "GREETING": "hi", "WITH_SPACES": "a b  c", "EMPTY": "", "UNICODE": "caf\u00e9"}))
    c = coil({"coil.toml": toml, "app.py": app})
    r = c.get("/env")
    assert r.status == 200, r
    assert json.loads(r.body) == {"GREETING": "hi", "WITH_SPACES": "a b  c", "EMPTY": "", "UNICODE": "café"}


def test_environment_is_per_function(coil):
    app = '''
    import os
    from spin_http import Response

    def handle_request(request):
        return Response(200, None, os.environ.get("WHO", "<unset>"))
    '''
    toml = manifest(fn_toml("one", "/one", env={"WHO": "one"}), fn_toml("two", "/two"))
    c = coil({"coil.toml": toml, "app.py": app})
    assert c.get("/one").body == b"one"
    assert c.get("/two").body == b"<unset>"


def test_an_invalid_response_head_is_a_502_and_the_log_says_why(coil):
    app = '''
from spin_http import Response

def handle_request(request):
    if request.uri == "/interim":
        return Response(100, None, None)
    if request.uri == "/big":
        return Response(200, {"x-big": "v" * 17000}, "too big")
    if request.uri == "/split":
        return Response(200, {"x-split": "a\\r\\nset-cookie: evil=1"}, "injected")
    return Response(200, None, "ok")
'''
    c = coil({"coil.toml": manifest(fn_toml("interim", "/...")), "app.py": app})
    mark = c.mark()
    conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=10)
    try:
        for uri in ("/interim", "/big", "/split"):
            conn.request("GET", uri)
            r = conn.getresponse()
            assert r.status == 502, uri
            assert r.read() == b"invalid response from function interim\n"
            conn.request("GET", "/ok")  # the same connection still works
            r = conn.getresponse()
            assert (r.status, r.read()) == (200, b"ok")
    finally:
        conn.close()
    prefix = r"^coil: function interim pid=\d+ sent an invalid response head for GET "
    c.wait_for_line(prefix + r"/interim: status 100 is not a final status \(200-599\)$", since=mark)
    c.wait_for_line(prefix + r"/big: header x-big has a value of 17000 bytes \(at most 16384\)$", since=mark)
    c.wait_for_line(prefix + r"/split: header x-split has a CR, LF or NUL in its value$", since=mark)


def test_huge_response_headers_are_a_500_and_the_instance_survives(coil):
    app = '''
import os
from spin_http import Response

def handle_request(request):
    if request.uri == "/huge":
        return Response(200, [("x-big", "a" * (2 << 20))], "never")
    return Response(200, None, str(os.getpid()))
'''
    c = coil({"coil.toml": manifest(fn_toml("huge", "/...")), "app.py": app})
    pid = c.get("/pid").body
    r = c.get("/huge")
    assert r.status == 500, r
    assert r.body == b"internal error in function huge\n"
    assert c.get("/pid").body == pid  # the same instance goes on serving
