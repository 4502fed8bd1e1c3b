"""Manifest validation: every invalid manifest or entrypoint is refused before listening,
with `PATH:LINE: FIELD: what is wrong` on stderr and exit code 2."""

import re
import subprocess

import pytest

from conftest import COIL_BIN, leaked_children

GOOD_APP = '''
from spin_http import Response

def handle_request(request):
    return Response(200, None, b"ok")
'''

HEAD = '''[[function]]
name = "hello"
entrypoint = "app:handle_request"
route = "/hello"
'''  # lines 1-4


def assert_refused(rc, err, path, line, field):
    assert rc == 2, f"exit code {rc}, stderr:\n{err}"
    assert "listening on" not in err, err
    rx = re.compile(rf"^{re.escape(str(path))}:{line}: (?:\S*\b)?{field}\b\S*: \S", re.M)
    assert rx.search(err), f"expected '{path}:{line}: {field}: ...' in stderr:\n{err}"


def refuse(coil_fail, tmp_path, toml, files=None, entry=None):
    all_files = {"coil.toml": toml, "app.py": GOOD_APP}
    all_files.update(files or {})
    before = leaked_children()
    rc, err = coil_fail(all_files, entry=entry)
    left = leaked_children(exclude=before, settle=2.0)
    assert not left, f"processes left behind after a refused start: {left}"
    return rc, err, tmp_path / "fn" / "coil.toml"


# ---------------------------------------------------------------- keys and types

@pytest.mark.parametrize("toml,line,field", [
    (HEAD + 'colour = "blue"\n', 5, "colour"),
    ('verbose = true\n' + HEAD, 1, "verbose"),
    (HEAD + 'timeout = 100\n', 5, "timeout"),
    (HEAD + '[function.extras]\nx = "y"\n', 5, "extras"),
], ids=["function-key", "top-level-key", "near-miss-key", "unknown-table"])
def test_unknown_key(coil_fail, tmp_path, toml, line, field):
    rc, err, path = refuse(coil_fail, tmp_path, toml)
    assert_refused(rc, err, path, line, field)


@pytest.mark.parametrize("toml,line,field", [
    (HEAD + 'timeout_ms = "fast"\n', 5, "timeout_ms"),
    (HEAD + 'max_instances = 1.5\n', 5, "max_instances"),
    (HEAD + 'min_instances = true\n', 5, "min_instances"),
    (HEAD + 'max_body_bytes = "16M"\n', 5, "max_body_bytes"),
    (HEAD + 'source = 7\n', 5, "source"),
    ('[[function]]\nname = 5\nentrypoint = "app:handle_request"\nroute = "/hello"\n', 2, "name"),
    ('[[function]]\nname = "hello"\nentrypoint = "app:handle_request"\nroute = ["/hello"]\n', 4, "route"),
    (HEAD + '[function.environment]\nPORT = 8080\n', 6, "(?:PORT|environment)"),
    (HEAD + 'environment = "A=1"\n', 5, "environment"),
], ids=["timeout-str", "max-float", "min-bool", "body-str", "source-int", "name-int", "route-array",
        "env-value-int", "env-not-table"])
def test_wrong_type(coil_fail, tmp_path, toml, line, field):
    rc, err, path = refuse(coil_fail, tmp_path, toml)
    assert_refused(rc, err, path, line, field)


@pytest.mark.parametrize("missing", ["name", "entrypoint", "route"])
def test_missing_field(coil_fail, tmp_path, missing):
    second = {"name": 'name = "two"', "entrypoint": 'entrypoint = "app:handle_request"', "route": 'route = "/two"'}
    del second[missing]
    toml = HEAD + "\n[[function]]\n" + "\n".join(second.values()) + "\n"  # second table header on line 6
    rc, err, path = refuse(coil_fail, tmp_path, toml)
    assert_refused(rc, err, path, 6, missing)


@pytest.mark.parametrize("name", ["Hello", "has space", "under_score", "", "dot.ted", "caf\u00e9"])
def test_bad_name(coil_fail, tmp_path, name):
    toml = f'[[function]]\nname = "{name}"\nentrypoint = "app:handle_request"\nroute = "/hello"\n'
    rc, err, path = refuse(coil_fail, tmp_path, toml)
    assert_refused(rc, err, path, 2, "name")


@pytest.mark.parametrize("route", ["hello", "a/..."])
def test_bad_route(coil_fail, tmp_path, route):
    toml = f'[[function]]\nname = "hello"\nentrypoint = "app:handle_request"\nroute = "{route}"\n'
    rc, err, path = refuse(coil_fail, tmp_path, toml)
    assert_refused(rc, err, path, 4, "route")


def test_duplicate_route(coil_fail, tmp_path):
    toml = HEAD + '\n[[function]]\nname = "other"\nentrypoint = "app:handle_request"\nroute = "/hello"\n'
    rc, err, path = refuse(coil_fail, tmp_path, toml)
    assert_refused(rc, err, path, 9, "route")


def test_duplicate_prefix_route(coil_fail, tmp_path):
    toml = ('[[function]]\nname = "a"\nentrypoint = "app:handle_request"\nroute = "/p/..."\n'
            '\n[[function]]\nname = "b"\nentrypoint = "app:handle_request"\nroute = "/p/..."\n')
    rc, err, path = refuse(coil_fail, tmp_path, toml)
    assert_refused(rc, err, path, 9, "route")


def test_duplicate_name(coil_fail, tmp_path):
    toml = HEAD + '\n[[function]]\nname = "hello"\nentrypoint = "app:handle_request"\nroute = "/other"\n'
    rc, err, path = refuse(coil_fail, tmp_path, toml)
    assert_refused(rc, err, path, 7, "name")


def test_toml_syntax_error(coil_fail, tmp_path):
    toml = '[[function]]\nname = "hello\nentrypoint = "app:handle_request"\nroute = "/hello"\n'
    rc, err, path = refuse(coil_fail, tmp_path, toml)
    assert rc == 2, err
    assert "listening on" not in err
    assert re.search(rf"^{re.escape(str(path))}:2:", err, re.M), err


def test_missing_manifest(coil_fail, tmp_path):
    rc, err = coil_fail({"app.py": GOOD_APP})
    assert rc != 0, err
    assert "listening on" not in err
    assert "coil.toml" in err, err


# ---------------------------------------------------------------- entrypoints

def test_entrypoint_module_raises_at_import(coil_fail, tmp_path):
    bad = 'print("importing bad module")\nraise RuntimeError("boom at import")\n'
    rc, err, path = refuse(coil_fail, tmp_path, HEAD, files={"app.py": bad})
    assert_refused(rc, err, path, 3, "entrypoint")
    assert re.search(rf"^{re.escape(str(path))}:3: entrypoint: cannot import 'app:handle_request': "
                     r"RuntimeError: boom at import$", err, re.M), err


def test_entrypoint_module_missing(coil_fail, tmp_path):
    toml = HEAD.replace("app:handle_request", "nosuchmodule:handle_request")
    rc, err, path = refuse(coil_fail, tmp_path, toml)
    assert_refused(rc, err, path, 3, "entrypoint")
    assert re.search(rf"^{re.escape(str(path))}:3: entrypoint: cannot import 'nosuchmodule:handle_request': "
                     r"ModuleNotFoundError: .*nosuchmodule", err, re.M), err


def test_entrypoint_syntax_error_in_module(coil_fail, tmp_path):
    rc, err, path = refuse(coil_fail, tmp_path, HEAD, files={"app.py": "def handle_request(:\n"})
    assert_refused(rc, err, path, 3, "entrypoint")
    assert "SyntaxError" in err, err


def test_entrypoint_attribute_missing(coil_fail, tmp_path):
    toml = HEAD.replace("app:handle_request", "app:nope")
    rc, err, path = refuse(coil_fail, tmp_path, toml)
    assert_refused(rc, err, path, 3, "entrypoint")
    assert re.search(rf"^{re.escape(str(path))}:3: entrypoint: .*nope", err, re.M), err


@pytest.mark.parametrize("ep", ["app", "app:", ":handle_request", "app:handle request"])
def test_entrypoint_malformed(coil_fail, tmp_path, ep):
    toml = HEAD.replace("app:handle_request", ep)
    rc, err, path = refuse(coil_fail, tmp_path, toml)
    assert_refused(rc, err, path, 3, "entrypoint")


def test_second_function_import_failure_refuses_everything(coil_fail, tmp_path):
    toml = HEAD + '\n[[function]]\nname = "bad"\nentrypoint = "bad:handle_request"\nroute = "/bad"\n'
    rc, err, path = refuse(coil_fail, tmp_path, toml,
                           files={"bad.py": "raise ImportError('nope nope')\n"})
    assert_refused(rc, err, path, 8, "entrypoint")
    assert "ImportError: nope nope" in err


def test_no_manifest_import_failure(coil_fail, tmp_path):
    before = leaked_children()
    rc, err = coil_fail({"app.py": GOOD_APP}, entry="app:missing_attr")
    assert not leaked_children(exclude=before, settle=2.0)
    assert rc == 2, err
    assert "listening on" not in err
    assert re.search(r":0: entrypoint: cannot import 'app:missing_attr'", err), err


# ---------------------------------------------------------------- valid manifests

def test_full_manifest_with_every_key_starts(coil):
    toml = '''
    [[function]]
    name = "full-1"
    entrypoint = "handlers.main:handle"
    source = "src"
    route = "/full/..."
    timeout_ms = 5000
    min_instances = 0
    max_instances = 2
    idle_timeout_ms = 10000
    max_queue = 8
    max_body_bytes = 1024
    [function.environment]
    GREETING = "hi"
    '''
    app = '''
    import os
    from spin_http import Response

    def handle(request):
        return Response(200, None, os.environ["GREETING"] + " from src")
    '''
    c = coil({"coil.toml": toml, "src/handlers/__init__.py": "", "src/handlers/main.py": app})
    c.wait_for_line(r"^coil: template full-1 ready in \d+(\.\d+)?ms \(pid \d+\)$", timeout=5)
    r = c.get("/full/x")
    assert r.status == 200, r
    assert r.body == b"hi from src"
    assert c.stop() == 0


def test_source_imports_sibling_modules(coil):
    toml = '''
    [[function]]
    name = "sib"
    entrypoint = "app:handle_request"
    source = "code"
    route = "/s"
    '''
    app = '''
    from spin_http import Response
    import helper

    def handle_request(request):
        return Response(200, None, helper.VALUE)
    '''
    c = coil({"coil.toml": toml, "code/app.py": app, "code/helper.py": 'VALUE = "from helper"\n'})
    assert c.get("/s").body == b"from helper"


def run_up(*args, cwd):
    return subprocess.run([COIL_BIN, "up", *map(str, args), "--listen", "127.0.0.1:0"], cwd=cwd,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)


def test_what_coil_up_is_pointed_at_is_named_when_it_is_not_a_function_directory(tmp_path):
    p = run_up(tmp_path / "missing", cwd=tmp_path)
    assert (p.returncode, p.stderr.strip()) == (2, f"{tmp_path}/missing:0: manifest: no such directory"), p.stderr
    (tmp_path / "empty").mkdir()
    p = run_up(tmp_path / "empty", cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    assert f"{tmp_path}/empty/coil.toml:0: manifest: no coil.toml here; write one, or name the entrypoint " \
           "(MODULE:ATTR, after the directory)" in p.stderr, p.stderr
    (tmp_path / "app.py").write_text(GOOD_APP)
    p = run_up(tmp_path / "app.py", cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    assert f"{tmp_path}/app.py:0: manifest: not a directory (coil up DIR [MODULE:ATTR])" in p.stderr, p.stderr


def test_an_entrypoint_given_with_a_manifest_present_says_the_manifest_is_not_read(coil):
    c = coil({"coil.toml": HEAD, "app.py": GOOD_APP}, entry="app:handle_request")
    assert c.find_lines(r"^coil: \S+/coil\.toml is not read: app:handle_request is served alone, at /\.\.\., "
                        r"without its settings$"), c.log()
    assert c.get("/anything").status == 200
