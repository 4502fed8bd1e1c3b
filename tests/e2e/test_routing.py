"""Spin route syntax: exact, prefix `/a/...`, precedence, catch-all, decoding, `..`, 404, manifest-less mode."""

import re

import pytest

from conftest import RawConn, fn_toml, manifest

# Every function answers "NAME|PATH_INFO|URI" (NAME from its environment).
WHO_APP = '''
import os
from spin_http import Response

def handle_request(request):
    return Response(200, [("content-type", "text/plain")],
                    "%s|%s|%s" % (os.environ["FN"], request.headers.get("spin-path-info"), request.uri))
'''


def routes(coil, *pairs, extra=()):
    """Start coil with one function per (name, route)."""
    toml = manifest(*(fn_toml(name, route, env={"FN": name}) for name, route in pairs))
    return coil({"coil.toml": toml, "app.py": WHO_APP}, *extra)


def who(c, target):
    r = c.get(target)
    if r.status != 200:
        return r.status
    return r.text.split("|")[0]


def test_exact_route(coil):
    c = routes(coil, ("hello", "/hello"))
    assert who(c, "/hello") == "hello"
    assert who(c, "/hello?x=1") == "hello"
    assert who(c, "/hellox") == 404
    assert who(c, "/hello/x") == 404
    assert who(c, "/") == 404


def test_exact_route_with_several_segments(coil):
    c = routes(coil, ("deep", "/a/b/c"))
    assert who(c, "/a/b/c") == "deep"
    assert who(c, "/a/b") == 404
    assert who(c, "/a/b/c/d") == 404


@pytest.mark.parametrize("target", ["/a", "/a/", "/a/b", "/a/b/c/d", "/a?q=1", "/a/b?q=1"])
def test_prefix_route_matches_bare_prefix_and_below(coil, target):
    c = routes(coil, ("pre", "/a/..."))
    assert who(c, target) == "pre"


@pytest.mark.parametrize("target", ["/ab", "/abc/d", "/", "/b/a"])
def test_prefix_route_only_matches_whole_segments(coil, target):
    c = routes(coil, ("pre", "/a/..."))
    assert who(c, target) == 404


def test_exact_beats_prefix(coil):
    # the prefix is declared first so that first-match-wins would be wrong
    c = routes(coil, ("prefix", "/a/..."), ("exact", "/a/b"))
    assert who(c, "/a/b") == "exact"
    assert who(c, "/a/c") == "prefix"
    assert who(c, "/a/b/c") == "prefix"
    assert who(c, "/a") == "prefix"


def test_exact_bare_prefix_beats_prefix(coil):
    c = routes(coil, ("prefix", "/a/..."), ("exact", "/a"))
    assert who(c, "/a") == "exact"
    assert who(c, "/a/x") == "prefix"


@pytest.mark.parametrize("order", ["short-first", "long-first"])
def test_longer_prefix_wins(coil, order):
    pairs = [("short", "/a/..."), ("long", "/a/b/...")]
    if order == "long-first":
        pairs.reverse()
    c = routes(coil, *pairs)
    assert who(c, "/a/b/c") == "long"
    assert who(c, "/a/b") == "long"
    assert who(c, "/a/b/") == "long"
    assert who(c, "/a/bc") == "short"
    assert who(c, "/a/c") == "short"
    assert who(c, "/a") == "short"


def test_catch_all(coil):
    c = routes(coil, ("all", "/..."), ("x", "/x"), ("y", "/y/..."))
    assert who(c, "/") == "all"
    assert who(c, "/anything/at/all?q=1") == "all"
    assert who(c, "/x") == "x"
    assert who(c, "/x/sub") == "all"
    assert who(c, "/y/sub") == "y"
    assert who(c, "/yy") == "all"


def test_path_info_for_prefix(coil):
    c = routes(coil, ("pre", "/files/..."))
    r = c.get("/files/dir/name.txt?x=1")
    assert r.text == "pre|/dir/name.txt|/files/dir/name.txt?x=1"


def test_matching_is_on_percent_decoded_path(coil):
    c = routes(coil, ("hello", "/hello"), ("files", "/files/..."))
    r = c.get("/%68%65llo")
    assert r.status == 200, r
    name, _info, uri = r.text.split("|")
    assert name == "hello"
    assert uri == "/%68%65llo"  # the handler sees the target as received
    assert who(c, "/%66iles/x") == "files"
    assert who(c, "/hello%2Fx") == 404  # decodes to /hello/x: no exact match


@pytest.mark.parametrize("target", [
    "/a/../b", "/a/..", "/..", "/../etc/passwd", "/a/%2e%2e/b", "/a/%2E%2E", "/a/.%2e/b",
])
def test_dot_dot_segments_are_400(coil, target):
    c = routes(coil, ("all", "/..."))
    mark = c.mark()
    with RawConn(c.port) as rc:
        rc.send(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n")
        r = rc.read_response()
    assert r.status == 400, r
    assert r.body.startswith(b"bad request: "), r.body
    c.wait_for_line(rf"^coil: access \S+ GET {re.escape(target)} 400 ", since=mark, timeout=5)
    assert c.count_lines(r"^\[all pid=", since=mark) == 0


def test_dots_inside_names_are_not_dot_dot(coil):
    c = routes(coil, ("all", "/..."))
    assert who(c, "/a/..b/c") == "all"
    assert who(c, "/a/b../c") == "all"
    assert who(c, "/a/.../c") == "all"


def test_capture_routes_rank_between_literals_and_prefixes(coil):
    # Segment by segment: a literal beats ":name", which beats the rest of a
    # prefix route (Spin >= 2.5).
    c = routes(coil, ("all", "/..."), ("users", "/users/..."), ("one", "/users/:id"), ("me", "/users/me"),
               ("below", "/users/:id/..."))
    assert who(c, "/users/me") == "me"
    assert who(c, "/users/42") == "one"
    assert c.get("/users/42/posts/7").text == "below|/posts/7|/users/42/posts/7"
    assert who(c, "/users") == "users"
    assert who(c, "/users/") == "users"  # an empty segment is not captured
    assert who(c, "/elsewhere") == "all"
    assert c.get("/users/caf%C3%A9").text.startswith("one|")  # captured after decoding


def test_routes_differing_only_in_capture_names_are_refused(coil_fail):
    rc, err = coil_fail({"coil.toml": manifest(fn_toml("a", "/u/:id"), fn_toml("b", "/u/:name")), "app.py": WHO_APP})
    assert rc != 0
    assert 'coil.toml:9: route: "/u/:name" is already the route of another function (as "/u/:id" is: ' \
           'capture names do not count)' in err, err


def test_no_route_is_404(coil):
    c = routes(coil, ("hello", "/hello"))
    mark = c.mark()
    r = c.get("/nope/here?x=1")
    assert r.status == 404, r
    assert r.body == b"no route for /nope/here\n"
    c.wait_for_line(r"^coil: access - GET /nope/here\?x=1 404 \d+(\.\d+)?ms$", since=mark, timeout=5)


def test_no_manifest_entrypoint_serves_catch_all(coil, tmp_path):
    app = '''
    import os
    from spin_http import Response

    def handle_request(request):
        return Response(200, None, "direct|" + request.headers["spin-matched-route"] + "|" + request.uri)
    '''
    c = coil({"app.py": app}, entry="app:handle_request", dirname="direct-fn")
    for target in ["/", "/x", "/deep/path/here?q=1"]:
        mark = c.mark()
        r = c.get(target)
        assert r.status == 200, r
        assert r.text == f"direct|/...|{target}"
        c.wait_for_line(rf"^coil: access direct-fn GET {re.escape(target)} 200 ", since=mark, timeout=5)


def test_no_manifest_mode_ignores_coil_toml(coil):
    app = '''
    from spin_http import Response

    def other(request):
        return Response(200, None, "other")
    '''
    # an invalid manifest next to the code: with MODULE:ATTR it is not read
    c = coil({"app.py": app, "coil.toml": "this is [not valid toml\n"}, entry="app:other", dirname="ign")
    assert c.get("/whatever").body == b"other"


def test_no_manifest_name_is_sanitised(coil):
    app = '''
    from spin_http import Response

    def handle_request(request):
        return Response(200, None, "ok")
    '''
    c = coil({"app.py": app}, entry="app:handle_request", dirname="My_App.v2")
    mark = c.mark()
    assert c.get("/p").status == 200
    m = c.wait_for_line(r"^coil: access (\S+) GET /p 200 ", since=mark, timeout=5)
    assert re.fullmatch(r"[a-z0-9-]+", m.group(1)), m.group(1)
