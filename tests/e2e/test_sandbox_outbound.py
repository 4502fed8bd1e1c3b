"""Outbound network (Spin's allowed_outbound_hosts), enforced by the host's
proxy (security guide: network). A function reaches nothing directly; through
the proxy (HTTP_PROXY and friends, set by coil) it reaches exactly what its
manifest allows. Every destination here is on this machine's 127.0.0.1 (an
upstream server the test runs); names are mapped with `--hosts-file`, the
resolver seam, since this machine has no DNS."""

import http.server
import json
import threading

import pytest

from conftest import fn_toml, manifest

CLIENT_APP = r'''
import http.client, json, os, socket, urllib.error, urllib.request
from spin_http import Response

def fetch(url):
    """What a plain urllib client gets: (status, body) or the error it raises."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return {"status": r.status, "body": r.read().decode()}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "reason": e.reason, "body": e.read().decode()}
    except Exception as e:
        return {"error": type(e).__name__, "message": str(e)}

def tunnel(host, port, path):
    """An HTTP request through a CONNECT tunnel (what https clients do, minus TLS)."""
    conn = http.client.HTTPConnection("127.0.0.1", 3128, timeout=10)
    conn.set_tunnel(host, port)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return {"status": r.status, "body": r.read().decode()}
    except OSError as e:
        return {"error": type(e).__name__, "message": str(e)}
    finally:
        conn.close()

def handle_request(request):
    headers = dict(request.headers)
    path = headers["spin-path-info"]
    arg = request.uri.split("?", 1)[1] if "?" in request.uri else ""
    if path == "/fetch":
        body = fetch(arg)
    elif path == "/tunnel":
        host, port, target = arg.split(",", 2)
        body = tunnel(host, int(port), target)
    elif path == "/direct":
        try:
            socket.create_connection(("127.0.0.1", int(arg)), timeout=2).close()
            body = {"direct": "connected"}
        except OSError as e:
            body = {"direct": type(e).__name__}
    elif path == "/clients":
        # the popular clients, unchanged: they read the proxy from the environment
        import httpx, requests
        out = {}
        try:
            out["requests"] = requests.get(arg, timeout=10).status_code
        except Exception as e:
            out["requests"] = type(e).__name__ + ": " + str(e)
        try:
            out["httpx"] = httpx.get(arg, timeout=10).status_code
        except Exception as e:
            out["httpx"] = type(e).__name__ + ": " + str(e)
        body = out
    elif path == "/env":
        body = {k: v for k, v in os.environ.items() if k.lower().endswith("_proxy")}
    else:
        body = {"hello": os.environ.get("FN")}
    return Response(200, [("content-type", "application/json")], json.dumps(body))
'''


class Upstream:
    """A real HTTP server on the host's 127.0.0.1 that says who it is, and
    redirects /redirect?URL to URL."""

    def __init__(self, name):
        outer = self
        self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits.append(self.path)
                if self.path.startswith("/redirect?"):
                    self.send_response(302)
                    self.send_header("Location", self.path.split("?", 1)[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = f"{name} saw {self.path} host={self.headers.get('Host')}".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstreams():
    allowed, other = Upstream("allowed"), Upstream("other")
    yield allowed, other
    allowed.close()
    other.close()


def start(coil, tmp_path, rules, hosts=""):
    hosts_file = tmp_path / "hosts"
    hosts_file.write_text(hosts)
    files = {
        "coil.toml": manifest(_fn_with_rules("net", "/...", rules), fn_toml("other", "/other/...", env={"FN": "other"})),
        "app.py": CLIENT_APP,
    }
    return coil(files, "--hosts-file", hosts_file)


def _fn_with_rules(name, route, rules):
    toml = fn_toml(name, route, env={"FN": name})
    # allowed_outbound_hosts is an array of strings: written before the [function.environment] table
    head, _, rest = toml.partition("[function.environment]")
    return head + f"allowed_outbound_hosts = {json.dumps(rules)}\n[function.environment]" + rest


def fetch(c, url):
    r = c.get(f"/fetch?{url}", timeout=30)
    assert r.status == 200, r
    return r.json()


def assert_denied(result, c, destination):
    assert result.get("status") == 403 and result.get("reason") == "Destination Not Allowed", result
    assert "destination not allowed" in result["body"], result
    c.wait_for_line(rf"^coil: outbound net denied .*{destination}", timeout=5)


def test_the_proxy_is_the_functions_documented_way_out(coil, tmp_path):
    c = start(coil, tmp_path, [])
    env = c.get("/env").json()
    assert env == {k: "http://127.0.0.1:3128" for k in
                   ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")}


def test_an_allowed_host_works_and_others_are_denied(coil, tmp_path, upstreams):
    allowed, other = upstreams
    c = start(coil, tmp_path, [f"http://127.0.0.1:{allowed.port}"])
    d = fetch(c, f"http://127.0.0.1:{allowed.port}/hello?x=1")
    assert d == {"status": 200, "body": f"allowed saw /hello?x=1 host=127.0.0.1:{allowed.port}"}
    # another port of the same address is another destination
    assert_denied(fetch(c, f"http://127.0.0.1:{other.port}/"), c, f"127.0.0.1:{other.port}")
    assert other.hits == []
    assert c.get("/other/").status == 200


def test_requests_and_httpx_work_unchanged(coil, tmp_path, upstreams):
    allowed, other = upstreams
    c = start(coil, tmp_path, [f"http://127.0.0.1:{allowed.port}"])
    assert c.get(f"/clients?http://127.0.0.1:{allowed.port}/lib").json() == {"requests": 200, "httpx": 200}
    assert allowed.hits == ["/lib", "/lib"]
    assert c.get(f"/clients?http://127.0.0.1:{other.port}/lib").json() == {"requests": 403, "httpx": 403}
    assert other.hits == []


def test_empty_list_denies_everything(coil, tmp_path, upstreams):
    allowed, _ = upstreams
    c = start(coil, tmp_path, [])
    assert_denied(fetch(c, f"http://127.0.0.1:{allowed.port}/"), c, f"127.0.0.1:{allowed.port}")
    assert allowed.hits == []


@pytest.mark.parametrize("form", [
    "http://2130706433:{port}/",        # decimal IPv4
    "http://0x7f.0.0.1:{port}/",        # hex
    "http://0177.0.0.1:{port}/",        # octal
    "http://[::ffff:127.0.0.2]:{port}/",  # IPv4-mapped IPv6 of another loopback address
    "http://[::1]:{port}/",
    "http://allowed.example.test@evil.test:{port}/",  # userinfo: the host is evil.test
    "http://evilexample.test:{port}/",  # not under *.example.test
    "http://example.test:{port}/",      # the bare domain is not under *.example.test either
], ids=["decimal", "hex", "octal", "mapped-v6", "v6-loopback", "userinfo", "suffix-lookalike", "bare-domain"])
def test_obfuscated_and_lookalike_destinations_are_denied(coil, tmp_path, upstreams, form):
    allowed, _ = upstreams
    hosts = "127.0.0.1 allowed.example.test evil.test evilexample.test example.test\n"
    c = start(coil, tmp_path, [f"http://127.0.0.1:{allowed.port}", f"http://*.example.test:{allowed.port}"], hosts)
    d = fetch(c, form.format(port=allowed.port))
    assert d.get("status") == 403 and d.get("reason") == "Destination Not Allowed", d
    assert allowed.hits == []


def test_names_are_case_insensitive_and_a_trailing_dot_is_the_same_name(coil, tmp_path, upstreams):
    allowed, _ = upstreams
    hosts = "127.0.0.1 api.example.test\n"
    c = start(coil, tmp_path, [f"http://api.example.test:{allowed.port}", f"http://127.0.0.1:{allowed.port}"], hosts)
    for host in ("api.example.test", "API.Example.TEST", "api.example.test."):
        d = fetch(c, f"http://{host}:{allowed.port}/n")
        assert d.get("status") == 200, (host, d)
    assert len(allowed.hits) == 3


@pytest.mark.parametrize("address", ["127.0.0.1", "169.254.169.254"], ids=["loopback", "metadata"])
def test_a_name_resolving_to_a_special_address_is_denied(coil, tmp_path, upstreams, address):
    """DNS rebinding: the name is allowed, the address it resolves to is not (no entry names
    it). The proxy checks the resolved address before connecting, so nothing is reached."""
    allowed, _ = upstreams
    hosts = f"{address} rebind.example.test\n"
    c = start(coil, tmp_path, [f"http://*.example.test:{allowed.port}"], hosts)
    d = fetch(c, f"http://rebind.example.test:{allowed.port}/")
    assert d.get("status") == 403, d
    assert f"resolves to {address}" in d["body"], d
    assert allowed.hits == []


def test_a_redirect_to_a_denied_host_is_checked_again(coil, tmp_path, upstreams):
    allowed, other = upstreams
    c = start(coil, tmp_path, [f"http://127.0.0.1:{allowed.port}"])
    target = f"http://127.0.0.1:{other.port}/stolen"
    d = fetch(c, f"http://127.0.0.1:{allowed.port}/redirect?{target}")
    assert d.get("status") == 403 and d.get("reason") == "Destination Not Allowed", d
    assert allowed.hits == [f"/redirect?{target}"]
    assert other.hits == []


def test_connect_tunnels_to_an_allowed_port_only(coil, tmp_path, upstreams):
    allowed, other = upstreams
    c = start(coil, tmp_path, [f"https://127.0.0.1:{allowed.port}"])
    r = c.get(f"/tunnel?127.0.0.1,{allowed.port},/through-tunnel").json()
    assert r == {"status": 200, "body": f"allowed saw /through-tunnel host=127.0.0.1:{allowed.port}"}
    r = c.get(f"/tunnel?127.0.0.1,{other.port},/x").json()
    assert r["error"] == "OSError" and "403 Destination Not Allowed" in r["message"], r
    assert other.hits == []


def test_connect_is_checked_as_https(coil, tmp_path, upstreams):
    """An http-only entry does not open a tunnel: CONNECT carries TLS in practice."""
    allowed, _ = upstreams
    c = start(coil, tmp_path, [f"http://127.0.0.1:{allowed.port}"])
    r = c.get(f"/tunnel?127.0.0.1,{allowed.port},/x").json()
    assert "403 Destination Not Allowed" in r.get("message", ""), r
    assert allowed.hits == []


def test_self_reaches_coils_own_front(coil, tmp_path):
    c = start(coil, tmp_path, ["http://self"])
    d = fetch(c, "http://self/other/hi")
    assert d.get("status") == 200, d
    assert json.loads(d["body"]) == {"hello": "other"}


def test_direct_connections_reach_nothing(coil, tmp_path, upstreams):
    allowed, _ = upstreams
    c = start(coil, tmp_path, [f"http://127.0.0.1:{allowed.port}"])
    assert c.get(f"/direct?{allowed.port}").json() == {"direct": "ConnectionRefusedError"}
    assert allowed.hits == []


@pytest.mark.parametrize("entry,message", [
    ("http://a.com/path", "a path is not allowed"),
    ("ftp://a.com", "no default port"),
    ("insecure:allow-all", "insecure:allow-all"),
    ("http://a.com:99999", "99999"),
    ("http://{{ host }}", "not supported"),
], ids=["path", "no-default-port", "allow-all", "port-range", "template"])
def test_bad_entries_are_refused_at_start(coil_fail, entry, message):
    rc, err = coil_fail({"coil.toml": _fn_with_rules("net", "/...", [entry]), "app.py": CLIENT_APP})
    assert rc == 2, err
    assert "coil.toml:5: allowed_outbound_hosts: " in err and message in err, err
