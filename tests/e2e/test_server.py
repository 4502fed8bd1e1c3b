"""coil server and the commands that drive it (docs/control-api.md): deploys through
`coil deploy` and straight to POST /v1/deploy, functions reached by name (/fn/NAME/), by
version (/v/ID/ and the version's host name) and by their manifest route; version ids
that depend only on the code; untrusted bundles refused without replacing anything;
rollback, ls, rm, logs, invoke; the API key (required, and never leaked); restarts on
the same --data; concurrent deploys of one name."""

import base64
import hashlib
import http.client
import io
import json
import os
import re
import select
import socket
import subprocess
import tarfile
import textwrap
import threading
import time

import pytest

from conftest import COIL_BIN, _check_binary, fn_toml, manifest, write_files

DOMAIN = "coil.test"
HEX64 = re.compile(r"^[0-9a-f]{64}$")
DEPLOYED_RE = re.compile(r"^Deployed (\S+), version ([0-9a-f]{64})$")
URL_LINE_RE = re.compile(r"^  (\S+)\s+\((.+)\)$")


# --------------------------------------------------------------------------
# function code
# --------------------------------------------------------------------------

def handler_app(text, status=200):
    """A Spin handler answering `text` (plain text) to every request, and printing
    "served TEXT URI" to its stdout."""
    return textwrap.dedent(f'''
        from spin_http import Response

        def handle_request(request):
            print("served {text} " + request.uri, flush=True)
            return Response({status}, [("content-type", "text/plain")], {text!r})
    ''').lstrip()


def handler_dir(tmp_path, dirname, text, name="hello", route="/hello"):
    """A code directory with a coil.toml of one handler function."""
    return write_files(tmp_path / dirname, {"coil.toml": manifest(fn_toml(name, route)),
                                            "app.py": handler_app(text)})


FASTAPI_MAIN = '''
from fastapi import FastAPI, Request

app = FastAPI()

@app.get("/")
def root():
    return {"hello": "fastapi", "mark": MARK}

@app.post("/")
async def echo(request: Request):
    return {"received": (await request.body()).decode(), "content_type": request.headers.get("content-type")}
'''


def fastapi_dir(tmp_path, dirname, mark):
    return write_files(tmp_path / dirname, {"main.py": f"MARK = {mark!r}\n" + FASTAPI_MAIN})


# A handler that echoes the request body and Content-Type, or fails with 500 on "fail".
INVOKE_ECHO_APP = '''
import hashlib, json
from spin_http import Response

def handle_request(request):
    body = bytes(request.body or b"")
    if body == b"fail":
        return Response(500, [("content-type", "text/plain")], "failed on purpose")
    info = {"method": request.method, "len": len(body), "sha256": hashlib.sha256(body).hexdigest(),
            "content_type": request.headers.get("content-type")}
    return Response(200, [("content-type", "application/json")], json.dumps(info))
'''


# --------------------------------------------------------------------------
# bundles built by hand (what a client other than `coil deploy` could send)
# --------------------------------------------------------------------------

def file_member(name, data, mode=0o644, mtime=1_700_000_000, uid=0, user="root"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = mtime
    info.uid = info.gid = uid
    info.uname = info.gname = user
    return info, data


def dir_member(name, mode=0o755, mtime=1_700_000_000):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    info.mtime = mtime
    return info, None


def symlink_member(name, target):
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, None


def device_member(name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3  # /dev/null's numbers
    return info, None


def tar_gz(members):
    """A gzip-compressed tar of `members` ((TarInfo, bytes or None) pairs), in that order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def bundle_of(files):
    """A bundle of regular files ({relative path: str or bytes}), sorted."""
    return tar_gz([file_member(k, v.encode() if isinstance(v, str) else v) for k, v in sorted(files.items())])


def handler_bundle(text, name="app", route="/app"):
    return {"coil.toml": manifest(fn_toml(name, route)), "app.py": handler_app(text)}


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def parse_deploy_output(stdout):
    """The functions `coil deploy` reports: [{"name", "version", "urls": [(url, label)]}]."""
    functions = []
    for line in stdout.splitlines():
        m = DEPLOYED_RE.match(line)
        if m:
            functions.append({"name": m.group(1), "version": m.group(2), "urls": []})
            continue
        m = URL_LINE_RE.match(line)
        if m and functions:
            functions[-1]["urls"].append((m.group(1), m.group(2)))
    return functions


def cli_deploy(srv, *args):
    """`coil deploy ARGS`, which must succeed; returns the one function it reports."""
    r = srv.cli("deploy", *args)
    assert r.returncode == 0, r
    functions = parse_deploy_output(r.stdout)
    assert len(functions) == 1, r
    return functions[0]


def api_deploy(srv, files_or_bundle, name=None, entrypoint=None):
    """POST /v1/deploy, which must succeed; returns the one FUNCTION deployed."""
    bundle = files_or_bundle if isinstance(files_or_bundle, bytes) else bundle_of(files_or_bundle)
    r = srv.deploy(bundle, name=name, entrypoint=entrypoint)
    assert r.status == 201, r
    deployed = r.json()["deployed"]
    assert len(deployed) == 1, r
    return deployed[0]


def function_info(srv, name):
    r = srv.api("GET", f"/v1/functions/{name}")
    assert r.status == 200, r
    return r.json()


def base32_label(version):
    return base64.b32encode(bytes.fromhex(version)).decode().lower().rstrip("=")


def version_host(version):
    return f"{base32_label(version)}.{DOMAIN}"


def get_fn(srv, name, path="/"):
    return srv.get(f"/fn/{name}{path}", timeout=60)


def get_version(srv, version, path="/"):
    return srv.get(f"/v/{version}{path}", timeout=60)


def get_by_host(srv, version, path="/"):
    return srv.get(path, headers={"Host": version_host(version)}, timeout=60)


def assert_serves(srv, name, version, text):
    """NAME's current version is `version` and answers `text`, by name and by id."""
    r = get_fn(srv, name)
    assert (r.status, r.text) == (200, text), r
    r = get_version(srv, version)
    assert (r.status, r.text) == (200, text), r
    assert function_info(srv, name)["version"] == version


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --------------------------------------------------------------------------
# deploying and reaching a function
# --------------------------------------------------------------------------

def test_deploy_manifest_with_the_cli_and_reach_it_every_way(coil_server, tmp_path):
    srv = coil_server("--domain", DOMAIN)
    code = handler_dir(tmp_path, "hello", "Hello from v1")
    fn = cli_deploy(srv, code)
    assert fn["name"] == "hello"
    version = fn["version"]

    info = function_info(srv, "hello")
    assert info["name"] == "hello"
    assert info["version"] == version
    assert info["kind"] == "handler"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", info["created_at"]), info
    assert info["urls"] == [f"{srv.url}/fn/hello/", f"{srv.url}/v/{version}/",
                            f"http://{version_host(version)}:{srv.port}/"]
    assert info["route"] == "/hello"  # its coil.toml's
    # The CLI shows the server's URLs, in its order, with what each one
    # follows, then the manifest route.
    assert fn["urls"] == [(info["urls"][0], "follows the latest version"),
                          (info["urls"][1], "this version, immutable"),
                          (info["urls"][2], "this version, immutable"),
                          (f"{srv.url}/hello", "coil.toml route /hello; follows the latest version")]
    assert len(base32_label(version)) == 52

    for r in (get_fn(srv, "hello"), get_version(srv, version), get_by_host(srv, version), srv.get("/hello")):
        assert (r.status, r.text) == (200, "Hello from v1"), r

    r = srv.cli("invoke", "hello")
    assert r.returncode == 0, r
    assert r.stdout == "Hello from v1"


def test_a_handler_sees_spin_path_info_under_the_servers_prefixes(coil_server, tmp_path):
    # Spin's headers under /fn/NAME/ and through `coil invoke` (a request made by the
    # server itself, POST / on the function's prefix)
    app = textwrap.dedent('''
        from spin_http import Response

        def handle_request(request):
            h = request.headers
            return Response(200, None, h["spin-path-info"] + "|" + h["spin-matched-route"])
    ''').lstrip()
    code = write_files(tmp_path / "info", {"coil.toml": manifest(fn_toml("info", "/info/...")), "app.py": app})
    cli_deploy(srv := coil_server(), code)
    assert get_fn(srv, "info", "/a%20b/c").text == "/a%20b/c|/fn/info/..."
    assert get_fn(srv, "info").text == "/|/fn/info/..."
    assert srv.get("/info/x%2Fy", timeout=60).text == "/x/y|/info/..."  # an escaped '/': decoded
    r = srv.cli("invoke", "info")
    assert (r.returncode, r.stdout) == (0, "/|/fn/info/..."), r


def test_a_second_server_on_the_same_data_directory_is_refused(coil_server):
    first = coil_server()
    second = coil_server(wait=False)
    assert second.wait_exit() == 2, second.log()
    second.wait_for_line(rf"^coil server: --data: \S+ is in use by another coil server \(pid {first.pid}\)$")
    assert "zygote" not in second.log()  # refused before anything started
    assert first.stop() == 0
    third = coil_server()  # the lock went with the first server
    assert third.stop() == 0


def test_manifest_route_served_at_the_server_root(coil_server, tmp_path):
    srv = coil_server()
    code = handler_dir(tmp_path, "hello", "routed by the manifest", name="hello", route="/hello")
    cli_deploy(srv, code)
    r = srv.get("/hello", timeout=60)
    assert (r.status, r.text) == (200, "routed by the manifest"), r
    assert srv.get("/not-a-route", timeout=60).status == 404
    # a prefix route is shown as its prefix
    fn = cli_deploy(srv, handler_dir(tmp_path, "api", "under /api", name="api", route="/api/..."))
    assert fn["urls"][-1] == (f"{srv.url}/api/", "coil.toml route /api/...; follows the latest version"), fn
    assert srv.get("/api/", timeout=60).text == "under /api"


def test_deploy_fastapi_entrypoint_with_the_cli(coil_server, tmp_path):
    srv = coil_server("--domain", DOMAIN)
    code = fastapi_dir(tmp_path, "shop", "v1")
    fn = cli_deploy(srv, code, "main:app", "--name", "api")
    assert fn["name"] == "api"
    version = fn["version"]
    info = function_info(srv, "api")
    assert (info["version"], info["kind"]) == (version, "asgi")
    # Deployed as an entrypoint: no route of its own, and the CLI shows none.
    assert info["route"] is None
    assert [label for _, label in fn["urls"]] == ["follows the latest version", "this version, immutable",
                                                  "this version, immutable"]
    r = srv.cli("ls")
    assert r.returncode == 0, r
    assert r.stdout.splitlines()[1].split()[:4] == ["api", version[:12], "asgi", "-"], r

    for r in (get_fn(srv, "api"), get_version(srv, version), get_by_host(srv, version)):
        assert r.status == 200, r
        assert r.json() == {"hello": "fastapi", "mark": "v1"}

    r = srv.cli("invoke", "api", "--data", '{"n": 1}', "--content-type", "application/json")
    assert r.returncode == 0, r
    assert json.loads(r.stdout) == {"received": '{"n": 1}', "content_type": "application/json"}

    # Without --name, the function is named after the directory.
    fn = cli_deploy(srv, code, "main:app")
    assert fn["name"] == "shop"
    assert get_fn(srv, "shop").json() == {"hello": "fastapi", "mark": "v1"}


def test_deploy_streams_progress_then_the_result(coil_server, tmp_path):
    srv = coil_server()
    # The stream itself, as the API describes it.
    resp = srv.api("POST", "/v1/deploy", body=bundle_of(handler_bundle("streamed")),
                   headers={"Content-Type": "application/gzip", "Accept": "application/x-ndjson"})
    assert resp.status == 200, resp
    events = [json.loads(line) for line in resp.text.splitlines() if line.strip()]
    assert len(events) >= 2 and events[-1]["event"] == "deployed", events
    assert all(e["event"] == "progress" and isinstance(e["message"], str) for e in events[:-1]), events
    assert [f["name"] for f in events[-1]["deployed"]] == ["app"]

    # `coil deploy` shows that progress on stderr; not on a terminal, as plain lines.
    code = handler_dir(tmp_path, "hello", "streamed too")
    r = srv.cli("deploy", code)
    assert r.returncode == 0, r
    assert "\r" not in r.stderr, r
    assert len(r.stderr.splitlines()) >= 2, r  # the upload, then the server's progress
    assert parse_deploy_output(r.stdout)[0]["name"] == "hello"


# --------------------------------------------------------------------------
# version ids
# --------------------------------------------------------------------------

def test_same_code_deployed_twice_is_the_same_version(coil_server, tmp_path):
    srv = coil_server()
    code = handler_dir(tmp_path, "hello", "same")
    first = cli_deploy(srv, code)["version"]
    second = cli_deploy(srv, code)["version"]
    assert first == second
    versions = [v["version"] for v in function_info(srv, "hello")["versions"]]
    assert versions.count(first) == 1, versions


def test_archive_order_and_metadata_do_not_change_the_version(coil_server, tmp_path):
    srv = coil_server()
    files = {"app.py": handler_app("order"), "lib/util.py": "X = 1\n", "lib/data.txt": "payload\n"}
    forward = tar_gz([dir_member("lib"), file_member("app.py", files["app.py"].encode())]
                     + [file_member(k, files[k].encode()) for k in ("lib/data.txt", "lib/util.py")])
    # Reversed, no directory entry, other timestamps, owners and non-executable modes.
    backward = tar_gz([file_member(k, files[k].encode(), mode=0o664, mtime=86_400 * (i + 1), uid=1000,
                                   user="someone")
                       for i, k in enumerate(("lib/util.py", "lib/data.txt", "app.py"))])
    assert forward != backward
    a = api_deploy(srv, forward, name="order", entrypoint="app:handle_request")
    b = api_deploy(srv, backward, name="order", entrypoint="app:handle_request")
    assert HEX64.match(a["version"]), a
    assert a["version"] == b["version"]

    # `coil deploy` of the same tree gets the same id too.
    code = write_files(tmp_path / "order", files)
    assert cli_deploy(srv, code, "app:handle_request", "--name", "order")["version"] == a["version"]


def test_changed_code_is_a_new_version_and_the_old_one_stays_reachable(coil_server, tmp_path):
    srv = coil_server("--domain", DOMAIN)
    one = cli_deploy(srv, handler_dir(tmp_path, "hello", "one"))["version"]
    assert_serves(srv, "hello", one, "one")

    (tmp_path / "hello" / "app.py").write_text(handler_app("two"))
    two = cli_deploy(srv, tmp_path / "hello")["version"]
    assert two != one
    assert_serves(srv, "hello", two, "two")
    # The old version is immutable and still served by its id and host name.
    for r in (get_version(srv, one), get_by_host(srv, one)):
        assert (r.status, r.text) == (200, "one"), r

    versions = function_info(srv, "hello")["versions"]
    assert [v["version"] for v in versions] == [two, one]  # newest first
    assert [v["current"] for v in versions] == [True, False]


def test_rollback(coil_server, tmp_path):
    srv = coil_server()
    one = cli_deploy(srv, handler_dir(tmp_path, "hello", "one"))["version"]
    (tmp_path / "hello" / "app.py").write_text(handler_app("two"))
    two = cli_deploy(srv, tmp_path / "hello")["version"]
    assert_serves(srv, "hello", two, "two")

    r = srv.cli("rollback", "hello")  # to the version before the current one
    assert r.returncode == 0, r
    assert r.stdout.strip() == f"Rolled back hello to version {one}"
    assert_serves(srv, "hello", one, "one")
    versions = function_info(srv, "hello")["versions"]
    assert {v["version"]: v["current"] for v in versions} == {one: True, two: False}

    r = srv.cli("rollback", "hello", two[:12])  # a unique prefix
    assert r.returncode == 0, r
    assert r.stdout.strip() == f"Rolled back hello to version {two}"
    assert_serves(srv, "hello", two, "two")

    r = srv.cli("rollback", "hello", "0" * 64)
    assert r.returncode == 1, r
    assert r.stderr.startswith("coil rollback: "), r
    assert_serves(srv, "hello", two, "two")


def test_ls_and_rm(coil_server, tmp_path):
    srv = coil_server()
    a = cli_deploy(srv, handler_dir(tmp_path, "a", "from a", name="alpha", route="/alpha"))["version"]
    b = cli_deploy(srv, handler_dir(tmp_path, "b", "from b", name="beta", route="/beta"))["version"]

    r = srv.cli("ls")
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "KIND", "ROUTE", "CREATED", "URL"], r
    rows = {line.split()[0]: line.split() for line in lines[1:] if line.strip()}
    assert set(rows) == {"alpha", "beta"}, r
    for name, version in (("alpha", a), ("beta", b)):
        assert rows[name][:4] == [name, version[:12], "handler", f"/{name}"], r
        assert rows[name][5] == f"{srv.url}/fn/{name}/", r

    r = srv.cli("ls", "--key-file", tmp_path / "api-key", key=None)
    assert r.returncode == 0, r
    assert "alpha" in r.stdout and "beta" in r.stdout

    r = srv.cli("rm", "alpha")
    assert r.returncode == 0, r
    assert get_fn(srv, "alpha").status == 404
    assert srv.api("GET", "/v1/functions/alpha").status == 404
    assert srv.get("/alpha", timeout=60).status == 404
    r = srv.cli("ls")
    assert r.returncode == 0, r
    assert "alpha" not in r.stdout and "beta" in r.stdout, r
    assert get_fn(srv, "beta").text == "from b"

    r = srv.cli("rm", "alpha")
    assert r.returncode == 1, r
    assert "alpha" in r.stderr, r


def test_restart_on_the_same_data_serves_the_same_versions(coil_server, tmp_path):
    srv = coil_server("--domain", DOMAIN)
    one = cli_deploy(srv, handler_dir(tmp_path, "hello", "one"))["version"]
    (tmp_path / "hello" / "app.py").write_text(handler_app("two"))
    two = cli_deploy(srv, tmp_path / "hello")["version"]
    assert srv.stop() == 0

    srv = coil_server("--domain", DOMAIN, data=srv.data)
    assert_serves(srv, "hello", two, "two")
    r = get_by_host(srv, one)
    assert (r.status, r.text) == (200, "one"), r
    assert [v["version"] for v in function_info(srv, "hello")["versions"]] == [two, one]
    r = srv.cli("invoke", "hello")
    assert (r.returncode, r.stdout) == (0, "two"), r


# --------------------------------------------------------------------------
# bundles and code the server refuses
# --------------------------------------------------------------------------

GOOD = handler_bundle("good")


def _with(*members):
    """The good bundle's files plus `members`."""
    return tar_gz([file_member(k, v.encode()) for k, v in sorted(GOOD.items())] + list(members))


BAD_BUNDLES = {
    # case: (bundle, what the error must name)
    "absolute-path": (lambda: _with(file_member("/tmp/absolute_evil.py", b"x = 1\n")), ["absolute_evil.py"]),
    "dot-dot": (lambda: _with(file_member("../dotdot_evil.py", b"x = 1\n")), ["dotdot_evil.py"]),
    "dot-dot-inside": (lambda: _with(file_member("lib/../../inner_evil.py", b"x = 1\n")), ["inner_evil.py"]),
    "symlink-absolute": (lambda: _with(symlink_member("passwd_link", "/etc/passwd")), ["passwd_link"]),
    "symlink-escaping": (lambda: _with(symlink_member("escape_link", "../../../etc/passwd")),
                         ["escape_link"]),
    "device-file": (lambda: _with(device_member("null_device")), ["null_device"]),
    "too-large": (lambda: _with(file_member("blob.bin", os.urandom(2 << 20))), None),
    "garbage": (lambda: b"this is not a gzip-compressed tar archive\n" * 200, None),
    "invalid-coil-toml": (lambda: bundle_of({"coil.toml": manifest(fn_toml("app", "no-slash")),
                                             "app.py": handler_app("bad")}), ["coil.toml", "route"]),
}


@pytest.mark.parametrize("case", sorted(BAD_BUNDLES))
def test_bad_bundle_is_refused_and_nothing_is_replaced(coil_server, case):
    srv = coil_server("--max-bundle-mb", "1")
    good = api_deploy(srv, GOOD)["version"]
    assert_serves(srv, "app", good, "good")

    build, names = BAD_BUNDLES[case]
    r = srv.deploy(build())
    assert 400 <= r.status < 500, r
    if case == "too-large":
        # Refused by the HTTP front from Content-Length, before the body is
        # read: a plain-text 413, like every error the front makes itself.
        assert r.status == 413, r
        error = r.text
    else:
        error = r.json()["error"]
    assert isinstance(error, str) and error, r
    if names is not None:
        for name in names:
            assert name in error, r
    elif case == "too-large":
        assert re.search(r"large|limit|exceed|max|MB|MiB|bytes", error, re.I), r
    else:
        assert re.search(r"gzip|tar|archive|bundle", error, re.I), r

    assert_serves(srv, "app", good, "good")
    assert [v["version"] for v in function_info(srv, "app")["versions"]] == [good]


def test_cli_refuses_a_directory_it_cannot_pack_safely(coil_server, tmp_path):
    srv = coil_server()
    code = handler_dir(tmp_path, "hello", "never deployed")
    os.symlink("/etc/passwd", code / "outside_link")
    r = srv.cli("deploy", code)
    assert r.returncode == 1, r
    assert "coil deploy: " in r.stderr and "outside_link" in r.stderr, r
    assert srv.api("GET", "/v1/functions/hello").status == 404


def test_cli_deploy_of_a_bundle_over_the_limit(coil_server, tmp_path):
    srv = coil_server("--max-bundle-mb", "1")
    good = api_deploy(srv, GOOD)["version"]
    code = write_files(tmp_path / "big", dict(GOOD, **{"blob.bin": os.urandom(2 << 20)}))
    r = srv.cli("deploy", code)
    assert r.returncode == 1, r
    assert "coil deploy: " in r.stderr, r
    assert_serves(srv, "app", good, "good")


def test_failing_import_is_refused_and_the_previous_version_keeps_serving(coil_server, tmp_path):
    srv = coil_server()
    good = api_deploy(srv, GOOD)["version"]
    broken = dict(GOOD, **{"app.py": "import no_such_module_for_coil\n" + handler_app("broken")})

    r = srv.deploy(bundle_of(broken))
    assert r.status == 422, r
    assert "no_such_module_for_coil" in r.json()["error"], r
    assert_serves(srv, "app", good, "good")

    code = write_files(tmp_path / "broken", broken)
    r = srv.cli("deploy", code)
    assert r.returncode == 1, r
    assert "coil deploy: " in r.stderr and "no_such_module_for_coil" in r.stderr, r
    assert_serves(srv, "app", good, "good")
    assert [v["version"] for v in function_info(srv, "app")["versions"]] == [good]


# --------------------------------------------------------------------------
# the API key
# --------------------------------------------------------------------------

def test_healthz_needs_no_key(coil_server):
    srv = coil_server()
    r = srv.get("/healthz")
    assert r.status == 200, r
    assert r.json() == {"status": "ok"}


@pytest.mark.parametrize("auth", ["missing", "wrong", "prefix", "longer", "not-bearer"])
def test_requests_without_the_key_are_unauthorized(coil_server, auth):
    srv = coil_server()
    api_deploy(srv, GOOD)
    authorization = {"missing": [], "wrong": [f"Bearer wrong-{srv.key[-6:]}"],
                     "prefix": [f"Bearer {srv.key[:-1]}"], "longer": [f"Bearer {srv.key}0"],
                     "not-bearer": [srv.key]}[auth]
    headers = [("Authorization", value) for value in authorization]

    requests = [("GET", "/v1/functions", None), ("GET", "/v1/functions/app", None),
                ("POST", "/v1/deploy?name=intruder&entrypoint=app:handle_request", bundle_of(GOOD)),
                ("POST", "/v1/functions/app/rollback", b""), ("POST", "/v1/functions/app/invoke", b""),
                ("GET", "/v1/functions/app/logs", None), ("DELETE", "/v1/functions/app", None)]
    for method, path, body in requests:
        r = srv.api(method, path, body=body, headers=headers, key=None)
        assert r.status == 401, (method, path, r)
        assert r.json() == {"error": "unauthorized"}, (method, path, r)

    # Nothing happened.
    assert srv.api("GET", "/v1/functions/intruder").status == 404
    assert get_fn(srv, "app").text == "good"


def test_cli_with_a_wrong_or_missing_key(coil_server, tmp_path):
    srv = coil_server()
    wrong = "wrong-key-" + srv.key[-8:]
    r = srv.cli("ls", key=wrong)
    assert r.returncode == 1, r
    assert "unauthorized" in r.stderr, r
    assert wrong not in r.stdout + r.stderr

    code = handler_dir(tmp_path, "hello", "never deployed")
    r = srv.cli("deploy", code, key=wrong)
    assert r.returncode == 1, r
    assert "unauthorized" in r.stderr, r
    assert srv.api("GET", "/v1/functions/hello").status == 404

    r = srv.cli("deploy", code, key=None)
    assert r.returncode == 2, r
    assert "COIL_API_KEY" in r.stderr and "--key-file" in r.stderr, r


def test_the_key_never_leaks(coil_server):
    srv = coil_server("--domain", DOMAIN, key_via="env")
    leak_app = '''
import json, os
from spin_http import Response

def read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError as e:
        return "unreadable: " + str(e)

def handle_request(request):
    info = {"environ": dict(os.environ), "proc1": read("/proc/1/environ"), "self": read("/proc/self/environ")}
    return Response(200, [("content-type", "application/json")], json.dumps(info))
'''
    fn = api_deploy(srv, {"coil.toml": manifest(fn_toml("leak", "/leak")), "app.py": leak_app})
    r = get_fn(srv, "leak")
    assert r.status == 200, r
    seen = r.json()
    assert "COIL_API_KEY" not in seen["environ"], seen["environ"]
    assert srv.key not in r.text
    # The key cannot be in a response to a request that does not carry it.
    assert srv.key not in get_version(srv, fn["version"]).text
    assert srv.key not in srv.api("GET", "/v1/functions").text

    # Not on any coil process's command line nor in its environment: the server wipes
    # the variable from its own (`ps e` reads /proc/PID/environ) before starting anything.
    processes = [srv.pid, *srv.descendants()]
    assert len(processes) > 1
    for pid in processes:
        try:
            for what in ("cmdline", "environ"):
                with open(f"/proc/{pid}/{what}", "rb") as f:
                    assert srv.key.encode() not in f.read(), (pid, what)
        except (FileNotFoundError, ProcessLookupError):
            pass  # gone meanwhile

    assert srv.stop() == 0
    assert srv.key not in srv.log(), "the API key appears in the server's log"
    assert all(srv.key not in line for line in srv.stdout_lines)


# --------------------------------------------------------------------------
# concurrent deploys
# --------------------------------------------------------------------------

def test_concurrent_deploys_of_one_name_leave_one_consistent_version(coil_server):
    srv = coil_server()
    for round_ in range(3):
        texts = [f"round {round_} left", f"round {round_} right"]
        bundles = [bundle_of(handler_bundle(t, name="race", route="/race")) for t in texts]
        barrier = threading.Barrier(2)
        results = [None, None]

        def deploy(i):
            barrier.wait()
            try:
                results[i] = srv.deploy(bundles[i])
            except Exception as e:  # noqa: BLE001 - reported below
                results[i] = e

        threads = [threading.Thread(target=deploy, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        assert not any(t.is_alive() for t in threads)

        deployed = {}
        for text, r in zip(texts, results):
            assert not isinstance(r, Exception), r
            assert r.status in (201, 409), r  # a deploy may be refused as a conflict, never half-done
            if r.status == 201:
                deployed[text] = r.json()["deployed"][0]["version"]
        assert deployed, results

        served = {get_fn(srv, "race").text for _ in range(10)}
        assert len(served) == 1, served
        text = served.pop()
        assert text in deployed, (text, deployed)
        assert function_info(srv, "race")["version"] == deployed[text]
        for t, version in deployed.items():
            r = get_version(srv, version)
            assert (r.status, r.text) == (200, t), r


# --------------------------------------------------------------------------
# logs and invoke
# --------------------------------------------------------------------------

def _read_until(proc, needle, timeout):
    """Read proc's stdout until `needle` appears; return what was read."""
    out = b""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while needle not in out:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        out += chunk
    return out


def test_logs_show_what_the_function_printed(coil_server, tmp_path):
    srv = coil_server()
    cli_deploy(srv, handler_dir(tmp_path, "hello", "logged-7f3a"))
    follower = srv.cli_background("logs", "hello", "-f")
    try:
        assert get_fn(srv, "hello").text == "logged-7f3a"
        out = _read_until(follower, b"served logged-7f3a", timeout=30)
        assert b"served logged-7f3a" in out, out
        assert follower.poll() is None  # -f keeps following
    finally:
        follower.kill()
        follower.wait()

    r = srv.cli("logs", "hello", "--tail", "5")
    assert r.returncode == 0, r
    assert "served logged-7f3a" in r.stdout, r

    r = srv.cli("logs", "no-such-function")
    assert r.returncode == 1, r
    assert r.stderr.startswith("coil logs: "), r


def test_invoke(coil_server, tmp_path):
    srv = coil_server()
    code = write_files(tmp_path / "echo", {"coil.toml": manifest(fn_toml("echo", "/echo")),
                                           "app.py": INVOKE_ECHO_APP})
    cli_deploy(srv, code)

    r = srv.cli("invoke", "echo", "--data", "some text", "--content-type", "text/plain")
    assert r.returncode == 0, r
    info = json.loads(r.stdout)
    assert info["method"] == "POST"
    assert info["len"] == len("some text") and info["content_type"] == "text/plain"

    payload = bytes(range(256)) * 64
    (tmp_path / "payload.bin").write_bytes(payload)
    r = srv.cli("invoke", "echo", "--data", f"@{tmp_path / 'payload.bin'}")
    assert r.returncode == 0, r
    info = json.loads(r.stdout)
    assert info["len"] == len(payload)
    assert info["sha256"] == hashlib.sha256(payload).hexdigest()

    r = srv.cli("invoke", "echo", "--data", "-", input=b"from stdin\x00\xff")
    assert r.returncode == 0, r
    assert json.loads(r.stdout)["len"] == len(b"from stdin\x00\xff")

    r = srv.cli("invoke", "echo", "--data", "fail")
    assert r.returncode == 1, r
    assert r.stdout == "failed on purpose"
    assert "coil invoke: HTTP 500" in r.stderr, r

    r = srv.cli("invoke", "no-such-function")
    assert r.returncode == 1, r
    assert "coil invoke: HTTP 404" in r.stderr, r


# --------------------------------------------------------------------------
# the client on its own
# --------------------------------------------------------------------------

def test_client_usage_errors_and_unreachable_server(tmp_path):
    _check_binary()
    port = closed_port()
    code = handler_dir(tmp_path, "hello", "x")
    env = dict(os.environ, COIL_SERVER=f"http://127.0.0.1:{port}", COIL_API_KEY="some-key")

    def run(*args, **overrides):
        p = subprocess.run([COIL_BIN, *map(str, args)], env=dict(env, **overrides), cwd=tmp_path,
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")

    rc, _, err = run("ls")
    assert rc == 1 and f"cannot reach the coil server at http://127.0.0.1:{port}" in err, err
    rc, _, err = run("deploy", code)
    assert rc == 1 and "cannot reach the coil server" in err, err
    assert "some-key" not in err

    rc, _, err = run("deploy", tmp_path / "no-such-dir")
    assert rc == 2 and "no-such-dir" in err, err
    rc, _, err = run("deploy", code, "--name", "x")  # --name without ENTRYPOINT
    assert rc == 2, err
    rc, _, err = run("rm")  # NAME missing
    assert rc == 2, err
    rc, _, err = run("ls", "--server", "ftp://127.0.0.1/")
    assert rc == 2 and "ftp://127.0.0.1" in err, err
    rc, _, err = run("ls", "--key-file", tmp_path / "no-such-key")
    assert rc == 2 and "no-such-key" in err, err
    env.pop("COIL_API_KEY")
    rc, _, err = run("ls")
    assert rc == 2 and "COIL_API_KEY" in err, err


VERSION_TMP_APP = '''
import os
from spin_http import Response

MARK = {mark!r}
SEEN = []  # module globals: one copy per version (per template)

def handle_request(request):
    with open("/tmp/left-by-" + MARK, "w") as f:
        f.write(MARK)
    SEEN.append(MARK)
    others = sorted(n for n in os.listdir("/tmp") if n.startswith("left-by-") and n != "left-by-" + MARK)
    return Response(200, [("content-type", "text/plain")], ",".join(others) + "|" + ",".join(sorted(set(SEEN))))
'''


def test_versions_and_functions_do_not_share_globals_or_tmp(coil_server):
    """security.md: one function's globals and /tmp are never visible to another
    function, nor to another version of it."""
    srv = coil_server()
    first = api_deploy(srv, {"coil.toml": manifest(fn_toml("app", "/app")),
                             "app.py": VERSION_TMP_APP.format(mark="v1")})["version"]
    assert get_fn(srv, "app").text == "|v1"
    second = api_deploy(srv, {"coil.toml": manifest(fn_toml("app", "/app")),
                              "app.py": VERSION_TMP_APP.format(mark="v2")})["version"]
    assert second != first
    # The new version sees neither the old one's /tmp file nor its globals...
    assert get_fn(srv, "app").text == "|v2"
    # ...and the old one, still reachable by id, not the new one's.
    assert get_version(srv, first).text == "|v1"
    other = api_deploy(srv, {"coil.toml": manifest(fn_toml("other", "/other")),
                             "app.py": VERSION_TMP_APP.format(mark="other")})["version"]
    assert get_version(srv, other).text == "|other"


def test_manifest_routes_the_server_uses_or_another_function_serves_are_refused(coil_server):
    srv = coil_server()
    api_deploy(srv, handler_bundle("first", name="first", route="/shared"))
    r = srv.deploy(bundle_of(handler_bundle("second", name="second", route="/shared")))
    assert r.status == 409, r
    assert "/shared" in r.json()["error"] and "first" in r.json()["error"], r
    for route in ("/v1/mine", "/fn/...", "/healthz"):
        r = srv.deploy(bundle_of(handler_bundle("x", name="reserved", route=route)))
        assert r.status == 400, r
        assert route in r.json()["error"], r
    assert srv.get("/shared").text == "first"
    # Capture names aside, a route is the same route: refused, not silently shadowed.
    api_deploy(srv, handler_bundle("by-id", name="by-id", route="/users/:id"))
    r = srv.deploy(bundle_of(handler_bundle("by-uid", name="by-uid", route="/users/:uid")))
    assert r.status == 409, r
    assert r.json()["error"] == ("function by-uid: route /users/:uid is already served by function by-id "
                                 "(as /users/:id)"), r
    assert srv.get("/users/42").text == "by-id"
    # Only the server's own paths are reserved: a route that merely starts like one is not.
    api_deploy(srv, handler_bundle("near healthz", name="nearhealthz", route="/healthzz"))
    assert srv.get("/healthzz").text == "near healthz"
    # A function may take the catch-all route: every path the server does not use.
    api_deploy(srv, handler_bundle("everything else", name="catchall", route="/..."))
    assert srv.get("/anything/at/all").text == "everything else"
    assert srv.get("/shared").text == "first"
    assert srv.get("/healthz").json() == {"status": "ok"}



def test_requests_without_the_key_are_refused_before_their_body_is_read(coil_server):
    """A client without the key cannot make the server take (or buffer) an upload: the
    401 comes from the head, with no 100-continue, and the connection closes."""
    srv = coil_server()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"POST /v1/deploy HTTP/1.1\r\nHost: x\r\nContent-Type: application/gzip\r\n"
                  b"Content-Length: 50000000\r\nExpect: 100-continue\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = s.recv(4096)
            assert chunk, answer
            answer += chunk
        head, _, rest = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 401"), answer
        assert b"connection: close" in head.lower(), answer
        while b"\n" not in rest:
            chunk = s.recv(4096)
            if not chunk:
                break
            rest += chunk
        assert json.loads(rest) == {"error": "unauthorized"}


def test_a_handler_whose_instances_cannot_start_is_refused(coil_server):
    """The deploy waits for a trial instance of every kind: code that imports but whose
    forked instances die is refused, and the previous version keeps serving."""
    srv = coil_server()
    good = api_deploy(srv, handler_bundle("good"))["version"]
    dies_after_fork = "import os\nos.register_at_fork(after_in_child=lambda: os._exit(3))\n" + handler_app("bad")
    r = srv.deploy(bundle_of({"coil.toml": manifest(fn_toml("app", "/app")), "app.py": dies_after_fork}))
    assert r.status == 422, r
    assert "instance" in r.json()["error"], r
    assert_serves(srv, "app", good, "good")


def test_rollback_follows_the_history_of_the_name(coil_server):
    """Redeploying old code makes it current again; rolling back then returns to what the
    name served just before, not to the oldest version."""
    srv = coil_server()
    one = api_deploy(srv, handler_bundle("one"))["version"]
    two = api_deploy(srv, handler_bundle("two"))["version"]
    assert api_deploy(srv, handler_bundle("one"))["version"] == one
    assert_serves(srv, "app", one, "one")
    r = srv.api("POST", "/v1/functions/app/rollback")
    assert r.status == 200 and r.json()["version"] == two, r
    assert_serves(srv, "app", two, "two")
    for bad, status in (("xyz", 400), ("0" * 64, 404)):
        r = srv.api("POST", "/v1/functions/app/rollback", body=json.dumps({"version": bad}).encode())
        assert r.status == status, r


def test_removing_a_function_ends_its_log_streams_and_its_deploys(coil_server, tmp_path):
    srv = coil_server()
    api_deploy(srv, handler_bundle("logged", name="gone", route="/gone"))
    assert get_fn(srv, "gone").text == "logged"
    follower = srv.cli_background("logs", "gone", "-f")
    assert b"served logged" in follower.stdout.readline()  # it is following
    # A deploy in progress when its function is removed ends with an error, not never.
    slow = "import time\ntime.sleep(3)\n" + handler_app("slow")
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    conn.request("POST", "/v1/deploy", body=bundle_of({"coil.toml": manifest(fn_toml("gone", "/gone")),
                                                       "app.py": slow}),
                 headers={"Authorization": f"Bearer {srv.key}", "Content-Type": "application/gzip",
                          "Accept": "application/x-ndjson"})
    stream = conn.getresponse()
    assert stream.status == 200
    while True:  # until the new version is importing
        event = json.loads(stream.readline())
        assert event["event"] == "progress", event
        if event["message"].startswith("starting gone"):
            break
    assert srv.api("DELETE", "/v1/functions/gone").status == 200
    last = json.loads(stream.readline())
    assert last["event"] == "error" and "removed" in last["error"], last
    conn.close()
    out, err = follower.communicate(timeout=30)  # the stream ended with the function
    assert follower.returncode == 0, (out, err)
    assert get_fn(srv, "gone").status == 404
