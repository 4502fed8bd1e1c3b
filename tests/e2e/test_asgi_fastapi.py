"""FastAPI (Debian's python3-fastapi 0.92 on Starlette 0.26) served by coil, unmodified:
path/query params, JSON bodies, forms and uploads, headers and cookies, status codes,
redirects, StreamingResponse, StaticFiles, BackgroundTasks, a websocket echo, the startup
event, the app mounted on a prefix route, and the aleph tutorial's example app."""

import hashlib
import json
import uuid

import pytest
import websockets

from asgi_support import (APP_GATE, asgi_manifest, fn_line, module_server, read_chunked_bytes,
                          read_chunked_rest, ws_run, ws_url)
from conftest import REPO, manifest

STATIC_BLOB = bytes((i * 7 + 3) % 256 for i in range(300_000))

FASTAPI_APP = APP_GATE + r'''
import hashlib, os
from typing import List, Optional

from fastapi import (BackgroundTasks, Cookie, FastAPI, File, Form, Header, HTTPException, Query,
                     Request, Response, UploadFile, WebSocket, WebSocketDisconnect)
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

HERE = os.path.dirname(os.path.abspath(__file__))

app = FastAPI(title="coil e2e")
app.mount("/static", StaticFiles(directory=os.path.join(HERE, "static")), name="static")


class Item(BaseModel):
    name: str
    price: float
    tags: List[str] = []


@app.on_event("startup")
async def startup():
    app.state.started_pid = os.getpid()


@app.get("/")
async def root():
    return {"message": "Hello World"}


@app.get("/pid")
async def pid():
    return {"pid": os.getpid(), "started_pid": getattr(app.state, "started_pid", None)}


@app.get("/items/{item_id}")
async def read_item(item_id: int, request: Request, q: Optional[str] = None, limit: int = 10,
                    tag: Optional[List[str]] = Query(None)):
    if item_id == 404:
        raise HTTPException(status_code=404, detail="Item not found")
    return {"item_id": item_id, "q": q, "limit": limit, "tag": tag,
            "url": str(request.url), "url_for": str(request.url_for("read_item", item_id=item_id)),
            "root_path": request.scope.get("root_path")}


@app.post("/items", status_code=201)
async def create_item(item: Item):
    return {"item": item.dict(), "price_with_tax": round(item.price * 1.2, 2)}


@app.delete("/items/{item_id}", status_code=204)
async def delete_item(item_id: int):
    return Response(status_code=204)


@app.post("/login")
async def login(username: str = Form(...), password: str = Form(...)):
    return {"username": username, "password_len": len(password)}


@app.post("/upload")
async def upload(note: str = Form(...), file: UploadFile = File(...)):
    data = await file.read()
    return {"note": note, "filename": file.filename, "content_type": file.content_type,
            "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@app.get("/headers")
async def read_headers(user_agent: Optional[str] = Header(None),
                       x_token: Optional[List[str]] = Header(None),
                       session_id: Optional[str] = Cookie(None)):
    return {"user_agent": user_agent, "x_token": x_token, "session_id": session_id}


@app.get("/set-cookies")
async def set_cookies(response: Response):
    response.set_cookie(key="session_id", value="abc123", httponly=True)
    response.set_cookie(key="theme", value="dark")
    response.headers["X-Custom"] = "custom-value"
    return {"ok": True}


@app.get("/teapot")
async def teapot():
    raise HTTPException(status_code=418, detail="I'm a teapot", headers={"X-Teapot": "short and stout"})


@app.get("/old")
async def old():
    return RedirectResponse(url="/items/5?q=moved")


@app.get("/old-absolute")
async def old_absolute(request: Request):
    return RedirectResponse(url=str(request.url_for("read_item", item_id=6)), status_code=302)


@app.get("/stream/{g}")
async def stream(g: str):
    async def gen():
        yield b"chunk-1\n"
        await gate(g)
        for i in range(2, 5):
            yield b"chunk-%d\n" % i
    return StreamingResponse(gen(), media_type="text/plain")


@app.post("/background")
async def background(value: str, g: str, background_tasks: BackgroundTasks):
    async def task():
        await gate(g)
        print("background task ran value=%s" % value, flush=True)
    background_tasks.add_task(task)
    return {"scheduled": value}


@app.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            data = await websocket.receive_text()
            await websocket.send_text(f"Message text was: {data}")
    except WebSocketDisconnect as e:
        print("ws disconnect code=%s" % e.code, flush=True)


@app.websocket("/ws-json")
async def websocket_json(websocket: WebSocket):
    await websocket.accept()
    msg = await websocket.receive_json()
    await websocket.send_json({"got": msg, "path": websocket.url.path})
    await websocket.close(code=4000)
'''

FILES = {
    "coil.toml": manifest(asgi_manifest("root", "/...", gate_dir="@GATE_DIR@"),
                          asgi_manifest("mounted", "/api/...", gate_dir="@GATE_DIR@")),
    "main.py": FASTAPI_APP,
    "static/hello.txt": "hello static\n",
    "static/blob.bin": STATIC_BLOB,
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    yield from module_server(tmp_path_factory, FILES, name="fastapi")


@pytest.fixture
def c(srv):
    return srv.coil


def host(c):
    return f"127.0.0.1:{c.port}"


# ---------------------------------------------------------------- requests and responses

def test_hello_and_startup_event(c):
    r = c.get("/")
    assert r.status == 200, r
    assert r.json() == {"message": "Hello World"}
    assert r.header("content-type") == "application/json"
    d = c.get("/pid").json()
    assert d["started_pid"] == d["pid"], "the startup event must run in the instance (after the fork)"


def test_path_and_query_params(c):
    d = c.get("/items/42?q=foo%20bar&limit=3&tag=a&tag=b").json()
    assert d["item_id"] == 42 and d["q"] == "foo bar" and d["limit"] == 3
    assert d["tag"] == ["a", "b"]
    assert d["url"] == f"http://{host(c)}/items/42?q=foo%20bar&limit=3&tag=a&tag=b"
    assert d["url_for"] == f"http://{host(c)}/items/42"
    assert d["root_path"] == ""
    d = c.get("/items/7").json()
    assert (d["q"], d["limit"], d["tag"]) == (None, 10, None)
    r = c.get("/items/abc")
    assert r.status == 422, r
    assert r.json()["detail"][0]["loc"] == ["path", "item_id"]


def test_json_body(c):
    body = json.dumps({"name": "Widget \u00e9", "price": 10.5, "tags": ["x", "y"]}).encode()
    r = c.request("POST", "/items", body=body, headers={"Content-Type": "application/json"})
    assert r.status == 201, r
    assert r.json() == {"item": {"name": "Widget \u00e9", "price": 10.5, "tags": ["x", "y"]},
                        "price_with_tax": 12.6}
    r = c.request("POST", "/items", body=b'{"name": "no price"}', headers={"Content-Type": "application/json"})
    assert r.status == 422, r
    assert r.json()["detail"][0]["loc"] == ["body", "price"]
    r = c.request("POST", "/items", body=b'{not json', headers={"Content-Type": "application/json"})
    assert r.status == 422, r


def test_json_body_sent_chunked(c):
    with c.raw() as conn:
        body = json.dumps({"name": "chunky", "price": 1}).encode()
        conn.send(b"POST /items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n"
                  + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:10], body[10:])) + b"0\r\n\r\n")
        r = conn.read_response()
    assert r.status == 201, r
    assert r.json()["item"]["name"] == "chunky"


def test_form_urlencoded(c):
    r = c.request("POST", "/login", body=b"username=al%C3%AFce&password=p%40ss+word",
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 200, r
    assert r.json() == {"username": "al\u00efce", "password_len": len("p@ss word")}
    r = c.request("POST", "/login", body=b"username=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 422, r


def test_multipart_upload(c):
    data = bytes(range(256)) * 1000
    boundary = "----coilboundary" + uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi there\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"data.bin\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    r = c.request("POST", "/upload", body=body,
                  headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}, timeout=30)
    assert r.status == 200, r
    assert r.json() == {"note": "hi there", "filename": "data.bin", "content_type": "application/octet-stream",
                        "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_headers_and_cookies(c):
    r = c.get("/headers", headers=[("User-Agent", "coil-e2e/1.0"), ("X-Token", "foo"), ("X-Token", "bar"),
                                   ("Cookie", "session_id=s3cr3t; other=1")])
    assert r.status == 200, r
    assert r.json() == {"user_agent": "coil-e2e/1.0", "x_token": ["foo", "bar"], "session_id": "s3cr3t"}
    r = c.get("/set-cookies")
    assert r.status == 200, r
    cookies = r.headers_all("set-cookie")
    assert len(cookies) == 2, r.header_list
    assert cookies[0].startswith("session_id=abc123") and "HttpOnly" in cookies[0]
    assert cookies[1].startswith("theme=dark")
    assert r.header("x-custom") == "custom-value"


def test_status_codes(c):
    r = c.get("/items/404")
    assert r.status == 404, r
    assert r.json() == {"detail": "Item not found"}
    r = c.get("/teapot")
    assert r.status == 418, r
    assert r.json() == {"detail": "I'm a teapot"}
    assert r.header("x-teapot") == "short and stout"
    r = c.get("/no/such/route")
    assert r.status == 404 and r.json() == {"detail": "Not Found"}, r
    r = c.request("PUT", "/items/1", body=b"")
    assert r.status == 405, r
    # 204: no body, and the connection stays usable
    with c.raw() as conn:
        conn.send("DELETE /items/1 HTTP/1.1\r\nHost: x\r\n\r\n")
        r = conn.read_response()
        assert r.status == 204, r
        conn.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        r = conn.read_response()
        assert r.status == 200 and r.json() == {"message": "Hello World"}, r


def test_redirects(c):
    r = c.get("/old")
    assert r.status == 307, r
    assert r.header("location") == "/items/5?q=moved"
    r = c.get("/old-absolute")
    assert r.status == 302, r
    assert r.header("location") == f"http://{host(c)}/items/6"


def test_streaming_response(srv, c):
    g = srv.gates.new()
    with c.raw() as conn:
        conn.send(f"GET /stream/{g} HTTP/1.1\r\nHost: x\r\n\r\n")
        head = conn.read_head()
        assert head.status == 200, head
        assert (head.header("transfer-encoding") or "").lower() == "chunked"
        # the first chunk arrives while the generator is waiting for the test
        assert read_chunked_bytes(conn, len(b"chunk-1\n")) == b"chunk-1\n"
        srv.gates.open(g)
        assert read_chunked_rest(conn) == b"chunk-2\nchunk-3\nchunk-4\n"


def test_static_files(c):
    r = c.get("/static/hello.txt")
    assert r.status == 200, r
    assert r.body == b"hello static\n"
    assert r.header("content-type").startswith("text/plain")
    r = c.get("/static/blob.bin", timeout=30)
    assert r.status == 200, r
    assert r.body == STATIC_BLOB
    assert r.header("content-length") == str(len(STATIC_BLOB))
    etag = r.header("etag")
    assert etag
    r = c.get("/static/blob.bin", headers={"If-None-Match": etag})
    assert r.status == 304, r
    assert r.body == b""
    r = c.request("HEAD", "/static/hello.txt")
    assert r.status == 200 and r.body == b"", r
    assert c.get("/static/missing.txt").status == 404


def test_background_task_runs_after_the_response(srv, c):
    g = srv.gates.new()
    mark = c.mark()
    value = uuid.uuid4().hex[:8]
    r = c.request("POST", f"/background?value={value}&g={g}", body=b"")
    # the response came while the background task is still waiting for the gate
    assert r.status == 200, r
    assert r.json() == {"scheduled": value}
    assert not c.find_lines(fn_line("root", f"background task ran value={value}$"), since=mark)
    srv.gates.open(g)
    c.wait_for_line(fn_line("root", f"background task ran value={value}$"), since=mark, timeout=10)


def test_websocket_echo(c):
    async def session():
        async with websockets.connect(ws_url(c, "/ws")) as ws:
            for text in ("hello", "caf\u00e9", "x" * 70_000):
                await ws.send(text)
                assert await ws.recv() == f"Message text was: {text}"
    ws_run(session())
    c.wait_for_line(fn_line("root", r"ws disconnect code=1000$"), timeout=10)

    async def json_session():
        async with websockets.connect(ws_url(c, "/ws-json")) as ws:
            await ws.send(json.dumps({"a": [1, 2]}))
            got = json.loads(await ws.recv())
            with pytest.raises(websockets.ConnectionClosed) as e:
                await ws.recv()
            return got, e.value.rcvd.code
    got, code = ws_run(json_session())
    assert got == {"got": {"a": [1, 2]}, "path": "/ws-json"}
    assert code == 4000


# ---------------------------------------------------------------- mounted on /api/...

def test_mounted_under_prefix_routes_and_builds_urls(c):
    d = c.get("/api/items/7?q=x").json()
    assert d["item_id"] == 7 and d["q"] == "x"
    assert d["root_path"] == "/api"
    assert d["url"] == f"http://{host(c)}/api/items/7?q=x"
    assert d["url_for"] == f"http://{host(c)}/api/items/7"
    assert c.get("/api/").json() == {"message": "Hello World"}
    r = c.get("/api/old-absolute")
    assert r.status == 302 and r.header("location") == f"http://{host(c)}/api/items/6", r
    r = c.get("/api/static/hello.txt")
    assert r.status == 200 and r.body == b"hello static\n", r
    r = c.get("/api/items/404")
    assert r.status == 404 and r.json() == {"detail": "Item not found"}, r
    # the root function does not see the prefixed requests and vice versa
    assert c.get("/items/8").json()["root_path"] == ""


def test_mounted_under_prefix_bare_prefix(c):
    r = c.get("/api")
    # FastAPI either answers "/" or redirects to the slash-terminated URL of its root
    assert r.status in (200, 307), r
    if r.status == 307:
        assert r.header("location") == f"http://{host(c)}/api/", r
    else:
        assert r.json() == {"message": "Hello World"}


def test_mounted_under_prefix_docs_and_openapi(c):
    r = c.get("/api/docs")
    assert r.status == 200, r
    assert "'/api/openapi.json'" in r.text or '"/api/openapi.json"' in r.text, r.text[:2000]
    r = c.get("/api/openapi.json")
    assert r.status == 200, r
    spec = r.json()
    assert "/items/{item_id}" in spec["paths"]
    assert {"url": "/api"} in spec.get("servers", [])


def test_mounted_under_prefix_websocket(c):
    async def session():
        async with websockets.connect(ws_url(c, "/api/ws-json")) as ws:
            await ws.send(json.dumps({"b": 1}))
            return json.loads(await ws.recv())
    got = ws_run(session())
    assert got == {"got": {"b": 1}, "path": "/api/ws-json"}


# ---------------------------------------------------------------- examples/fastapi

TUTORIAL_MAIN = '''from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def root():
    return {"message": "Hello World"}
'''


def test_example_fastapi_app(coil):
    example = REPO / "examples" / "fastapi"
    main = (example / "main.py").read_bytes()
    assert main.decode() == TUTORIAL_MAIN, "examples/fastapi/main.py must be the aleph tutorial's, unchanged"
    # served from a copy (so that no __pycache__ lands in the repository)
    c = coil({"main.py": main, "coil.toml": (example / "coil.toml").read_bytes()}, dirname="fastapi-example")
    r = c.get("/")
    assert r.status == 200, r
    assert r.json() == {"message": "Hello World"}
    assert c.get("/nope").status == 404
    # and like `aleph program upload ./my-program main:app`: no manifest
    c2 = coil({"main.py": main}, entry="main:app", dirname="my-program")
    r = c2.get("/")
    assert r.status == 200 and r.json() == {"message": "Hello World"}, r
