"""Resource limits set in the sandbox (issue 4): open files, no core dumps,
and function code cannot change them."""

import json

from conftest import fn_toml, manifest

LIMITS_APP = '''
import json, os, resource
from spin_http import Response

def handle_request(request):
    opened, error = [], None
    try:
        while len(opened) < 5000:
            opened.append(os.open("/dev/null", os.O_RDONLY))
    except OSError as e:
        error = e.strerror
    finally:
        for fd in opened:
            os.close(fd)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
        raised = "raised"
    except (OSError, ValueError) as e:
        raised = type(e).__name__
    return Response(200, None, json.dumps({
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
        "core": resource.getrlimit(resource.RLIMIT_CORE),
        "opened": len(opened), "error": error, "raise": raised}))
'''


def probe(coil, **opts):
    c = coil({"coil.toml": manifest(fn_toml("limits", "/...", **opts)), "app.py": LIMITS_APP})
    r = c.get("/")
    assert r.status == 200, r
    return json.loads(r.body)


def test_open_files_default_to_1024_and_cannot_be_raised(coil):
    result = probe(coil)
    assert result["nofile"] == [1024, 1024]
    assert result["core"] == [0, 0]
    assert result["error"] == "Too many open files"
    assert 1000 <= result["opened"] < 1024
    # CPython reports setrlimit's EPERM as ValueError ("not allowed to raise
    # maximum limit"); the limit read afterwards is unchanged.
    assert result["raise"] == "ValueError"


def test_max_open_files_from_the_manifest(coil):
    result = probe(coil, max_open_files=64)
    assert result["nofile"] == [64, 64]
    assert result["error"] == "Too many open files"
    assert result["opened"] < 64
