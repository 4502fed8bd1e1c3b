"""Starlette (Debian's 0.26) served by coil: routing with converters, url_for, JSON and
form bodies, lifespan state in request.state, middleware, streaming, static files,
redirects, a websocket endpoint, a nested Mount, and the app on a prefix route."""

import json

import pytest
import websockets

from asgi_support import (APP_GATE, asgi_manifest, module_server, read_chunked_bytes, read_chunked_rest,
                          ws_run, ws_url)
from conftest import manifest

STARLETTE_APP = APP_GATE + r'''
import contextlib, os

from starlette.applications import Starlette
from starlette.endpoints import HTTPEndpoint
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

HERE = os.path.dirname(os.path.abspath(__file__))


@contextlib.asynccontextmanager
async def lifespan(app):
    print("starlette startup pid=%d" % os.getpid(), flush=True)
    yield {"greeting": "hello from lifespan", "startup_pid": os.getpid()}
    print("starlette shutdown pid=%d" % os.getpid(), flush=True)


async def homepage(request):
    return PlainTextResponse("starlette home")


async def user(request):
    uid = request.path_params["user_id"]
    return JSONResponse({"user_id": uid, "type": type(uid).__name__,
                         "url": str(request.url),
                         "url_for": str(request.url_for("user", user_id=uid)),
                         "v2_url_for": str(request.url_for("v2:user", user_id=uid)),
                         "base_url": str(request.base_url),
                         "root_path": request.scope.get("root_path")})


async def state(request):
    return JSONResponse({"greeting": request.state.greeting, "startup_pid": request.state.startup_pid,
                         "pid": os.getpid()})


async def echo(request):
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        return JSONResponse({"json": await request.json()}, status_code=201)
    form = await request.form()
    return JSONResponse({"form": {k: v for k, v in form.items()}})


async def go_home(request):
    return RedirectResponse(request.url_for("home"), status_code=303)


async def stream(request):
    g = request.path_params["g"]

    async def gen():
        yield "event: tick\ndata: 1\n\n"
        await gate(g)
        yield "event: tick\ndata: 2\n\n"
    return StreamingResponse(gen(), media_type="text/event-stream")


class Items(HTTPEndpoint):
    async def get(self, request):
        return JSONResponse({"method": "GET", "query": dict(request.query_params)})

    async def put(self, request):
        return JSONResponse({"method": "PUT", "body": (await request.body()).decode()})


async def ws_echo(websocket):
    await websocket.accept()
    async for msg in websocket.iter_text():
        await websocket.send_text(msg[::-1])


class Stamp(BaseHTTPMiddleware):
    async def dispatch(self, request, call_next):
        response = await call_next(request)
        response.headers["x-stamped"] = "yes"
        return response


routes = [
    Route("/", homepage, name="home"),
    Route("/users/{user_id:int}", user, name="user"),
    Route("/state", state),
    Route("/echo", echo, methods=["POST"]),
    Route("/go-home", go_home),
    Route("/stream/{g}", stream),
    Route("/items", Items),
    WebSocketRoute("/ws", ws_echo),
    Mount("/v2", routes=[Route("/users/{user_id:int}", user, name="user")], name="v2"),
    Mount("/static", StaticFiles(directory=os.path.join(HERE, "static")), name="static"),
]

app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(Stamp)])
'''

FILES = {
    "coil.toml": manifest(asgi_manifest("star", "/...", gate_dir="@GATE_DIR@"),
                          asgi_manifest("starapi", "/api/...", gate_dir="@GATE_DIR@")),
    "main.py": STARLETTE_APP,
    "static/page.html": "<h1>static page</h1>\n",
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    yield from module_server(tmp_path_factory, FILES, name="starlette")


@pytest.fixture
def c(srv):
    return srv.coil


def host(c):
    return f"127.0.0.1:{c.port}"


def test_routes_converters_and_url_for(c):
    r = c.get("/")
    assert (r.status, r.body) == (200, b"starlette home"), r
    assert r.header("x-stamped") == "yes", "middleware ran"
    d = c.get("/users/12?x=1").json()
    assert d["user_id"] == 12 and d["type"] == "int"
    assert d["url"] == f"http://{host(c)}/users/12?x=1"
    assert d["url_for"] == f"http://{host(c)}/users/12"
    assert d["v2_url_for"] == f"http://{host(c)}/v2/users/12"
    assert d["base_url"] == f"http://{host(c)}/"
    assert c.get("/users/abc").status == 404
    d = c.get("/v2/users/3").json()
    assert d["url"] == f"http://{host(c)}/v2/users/3"


def test_lifespan_state_in_request_state(c):
    d = c.get("/state").json()
    assert d["greeting"] == "hello from lifespan"
    assert d["startup_pid"] == d["pid"], "lifespan must run in the instance serving the request"


def test_bodies_json_and_form(c):
    r = c.request("POST", "/echo", body=json.dumps({"k": [1, "two"]}).encode(),
                  headers={"Content-Type": "application/json"})
    assert r.status == 201 and r.json() == {"json": {"k": [1, "two"]}}, r
    r = c.request("POST", "/echo", body=b"a=1&b=caf%C3%A9", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 200 and r.json() == {"form": {"a": "1", "b": "caf\u00e9"}}, r
    r = c.get("/echo")
    assert r.status == 405, r


def test_http_endpoint_methods(c):
    assert c.get("/items?a=b").json() == {"method": "GET", "query": {"a": "b"}}
    assert c.request("PUT", "/items", body=b"payload").json() == {"method": "PUT", "body": "payload"}
    assert c.request("DELETE", "/items").status == 405


def test_redirect_and_static(c):
    r = c.get("/go-home")
    assert r.status == 303, r
    assert r.header("location") == f"http://{host(c)}/"
    r = c.get("/static/page.html")
    assert r.status == 200 and r.body == b"<h1>static page</h1>\n", r
    assert r.header("content-type").startswith("text/html")


def test_event_stream(srv, c):
    g = srv.gates.new()
    with c.raw() as conn:
        conn.send(f"GET /stream/{g} HTTP/1.1\r\nHost: x\r\n\r\n")
        head = conn.read_head()
        assert head.status == 200, head
        assert head.header("content-type").startswith("text/event-stream")
        first = b"event: tick\ndata: 1\n\n"
        assert read_chunked_bytes(conn, len(first)) == first
        srv.gates.open(g)
        assert read_chunked_rest(conn) == b"event: tick\ndata: 2\n\n"


def test_websocket(c):
    async def session(path):
        async with websockets.connect(ws_url(c, path)) as ws:
            await ws.send("stressed")
            return await ws.recv()
    assert ws_run(session("/ws")) == "desserts"
    assert ws_run(session("/api/ws")) == "desserts"


def test_mounted_under_prefix(c):
    d = c.get("/api/users/3?x=1").json()
    assert d["user_id"] == 3
    assert d["root_path"] == "/api"
    assert d["url"] == f"http://{host(c)}/api/users/3?x=1"
    assert d["url_for"] == f"http://{host(c)}/api/users/3"
    assert d["v2_url_for"] == f"http://{host(c)}/api/v2/users/3"
    assert d["base_url"] == f"http://{host(c)}/api/"
    d = c.get("/api/v2/users/4").json()
    assert d["url"] == f"http://{host(c)}/api/v2/users/4"
    assert d["url_for"] == f"http://{host(c)}/api/users/4"
    r = c.get("/api/go-home")
    assert r.status == 303 and r.header("location") == f"http://{host(c)}/api/", r
    r = c.get("/api/static/page.html")
    assert r.status == 200 and r.body == b"<h1>static page</h1>\n", r
    d = c.get("/api/state").json()
    assert d["greeting"] == "hello from lifespan" and d["startup_pid"] == d["pid"]
