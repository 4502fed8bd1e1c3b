"""Quart 0.18 (Debian's python3-quart) served by coil: routes with converters, JSON in and
out, forms, headers and cookies, redirects, a streamed response, before_serving (lifespan),
a websocket, and the app on a prefix route (Quart expects the prefix kept in `path`)."""

import json

import pytest
import websockets

from asgi_support import (APP_GATE, asgi_manifest, module_server, read_chunked_bytes,
                          read_chunked_rest, ws_run, ws_url)
from conftest import manifest

QUART_APP = APP_GATE + r'''
import os

from quart import Quart, jsonify, make_response, redirect, request, url_for, websocket

app = Quart(__name__)


@app.before_serving
async def startup():
    app.config["STARTED_PID"] = os.getpid()
    print("quart before_serving pid=%d" % os.getpid(), flush=True)


@app.route("/")
async def index():
    return "hello from quart"


@app.route("/pid")
async def pid():
    return jsonify(pid=os.getpid(), started_pid=app.config.get("STARTED_PID"))


@app.route("/items/<int:item_id>")
async def item(item_id):
    return jsonify(item_id=item_id, q=request.args.get("q"), path=request.path,
                   root_path=request.root_path,
                   url_for=url_for("item", item_id=item_id),
                   url_for_external=url_for("item", item_id=item_id, _external=True),
                   agent=request.headers.get("User-Agent"), cookie=request.cookies.get("c"))


@app.route("/echo", methods=["POST"])
async def echo():
    data = await request.get_json()
    return jsonify(received=data, kind=type(data).__name__), 201


@app.route("/form", methods=["POST"])
async def form():
    f = await request.form
    resp = await make_response(jsonify(name=f.get("name"), langs=f.getlist("lang")))
    resp.set_cookie("seen", "1")
    resp.headers["X-Quart"] = "yes"
    return resp


@app.route("/go")
async def go():
    return redirect(url_for("item", item_id=3))


@app.route("/stream/<g>")
async def stream(g):
    async def gen():
        yield b"line one\n"
        await gate(g)
        yield b"line two\n"
        yield b"line three\n"
    return gen(), 200, {"Content-Type": "text/plain"}


@app.route("/missing")
async def missing():
    return jsonify(error="nope"), 404


@app.websocket("/ws")
async def ws():
    while True:
        data = await websocket.receive()
        if data == "bye":
            return
        await websocket.send(f"quart echo: {data}")
'''

FILES = {
    "coil.toml": manifest(asgi_manifest("qt", "/...", gate_dir="@GATE_DIR@"),
                          asgi_manifest("qtsub", "/q/...", gate_dir="@GATE_DIR@")),
    "main.py": QUART_APP,
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    yield from module_server(tmp_path_factory, FILES, name="quart")


@pytest.fixture
def c(srv):
    return srv.coil


def host(c):
    return f"127.0.0.1:{c.port}"


def test_routes_and_lifespan(c):
    r = c.get("/")
    assert r.status == 200 and r.body == b"hello from quart", r
    d = c.get("/pid").json()
    assert d["started_pid"] == d["pid"], "before_serving must run in the instance (lifespan after the fork)"
    r = c.get("/missing")
    assert r.status == 404 and r.json() == {"error": "nope"}, r
    assert c.get("/no-such-route").status == 404


def test_params_headers_cookies_and_url_for(c):
    d = c.get("/items/12?q=a%20b", headers={"User-Agent": "coil-e2e", "Cookie": "c=choc"}).json()
    assert d["item_id"] == 12 and d["q"] == "a b"
    assert d["path"] == "/items/12" and d["root_path"] == ""
    assert d["url_for"] == "/items/12"
    assert d["url_for_external"] == f"http://{host(c)}/items/12"
    assert d["agent"] == "coil-e2e" and d["cookie"] == "choc"


def test_json(c):
    r = c.request("POST", "/echo", body=json.dumps({"a": [1, 2, {"b": None}]}).encode(),
                  headers={"Content-Type": "application/json"})
    assert r.status == 201, r
    assert r.json() == {"received": {"a": [1, 2, {"b": None}]}, "kind": "dict"}


def test_form_and_response_headers(c):
    r = c.request("POST", "/form", body=b"name=Quart&lang=py&lang=c%2B%2B",
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 200, r
    assert r.json() == {"name": "Quart", "langs": ["py", "c++"]}
    assert r.header("x-quart") == "yes"
    assert any(v.startswith("seen=1") for v in r.headers_all("set-cookie")), r.header_list


def test_redirect(c):
    r = c.get("/go")
    assert r.status == 302, r
    assert r.header("location") == "/items/3"


def test_streaming(srv, c):
    g = srv.gates.new()
    with c.raw() as conn:
        conn.send(f"GET /stream/{g} HTTP/1.1\r\nHost: x\r\n\r\n")
        head = conn.read_head()
        assert head.status == 200, head
        assert read_chunked_bytes(conn, len(b"line one\n")) == b"line one\n"
        srv.gates.open(g)
        assert read_chunked_rest(conn) == b"line two\nline three\n"


def test_websocket(c):
    async def session(path):
        async with websockets.connect(ws_url(c, path)) as ws:
            out = []
            for m in ("ping", "caf\u00e9"):
                await ws.send(m)
                out.append(await ws.recv())
            await ws.send("bye")
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            return out
    assert ws_run(session("/ws")) == ["quart echo: ping", "quart echo: caf\u00e9"]
    assert ws_run(session("/q/ws")) == ["quart echo: ping", "quart echo: caf\u00e9"]


def test_mounted_under_prefix(c):
    d = c.get("/q/items/7?q=z").json()
    assert d["item_id"] == 7 and d["q"] == "z"
    assert d["root_path"] == "/q"
    assert d["url_for"] == "/q/items/7"
    assert d["url_for_external"] == f"http://{host(c)}/q/items/7"
    r = c.get("/q/go")
    assert r.status == 302 and r.header("location") == "/q/items/3", r
    r = c.get("/q/")
    assert r.status == 200 and r.body == b"hello from quart", r
    d = c.get("/q/pid").json()
    assert d["started_pid"] == d["pid"]
