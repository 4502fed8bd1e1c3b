"""coil server's dependency volumes: a requirements.txt next to the code is built with pip
(--target) at deploy time, in a sandbox like a function's, into a volume keyed by the
requirements and the Python ABI, shared read-only by every function that asks for the same
packages. Wheels are built here, locally, and served with --find-links (offline)."""

import io
import socket
import subprocess
import tarfile
import textwrap

import pytest

from conftest import fn_toml, manifest, write_files
from test_server import assert_serves, api_deploy, cli_deploy, get_fn, handler_bundle

PACKAGE_APP = '''
import json
import {package}
import fastapi  # Debian's, from the runtime: still importable next to /deps
from spin_http import Response

def handle_request(request):
    return Response(200, [("content-type", "application/json")],
                    json.dumps({{"value": {package}.VALUE, "file": {package}.__file__}}))
'''


def build_wheel(tmp_path, package, value):
    """A pure-Python wheel of `package` 1.0 whose module says VALUE = value, built with
    Debian's pip (no network, no build isolation)."""
    source = write_files(tmp_path / f"src-{package}", {
        f"{package}/__init__.py": f"VALUE = {value!r}\n",
        "pyproject.toml": textwrap.dedent(f"""
            [build-system]
            requires = ["setuptools"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "{package}"
            version = "1.0"
        """)})
    wheels = tmp_path / "wheels"
    wheels.mkdir(exist_ok=True)
    subprocess.run(["/usr/bin/python3", "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(wheels), str(source)], check=True, capture_output=True)
    wheels.chmod(0o755)
    return wheels


def package_dir(tmp_path, dirname, name, package, requirements):
    return write_files(tmp_path / dirname, {
        "coil.toml": manifest(fn_toml(name, f"/{name}")),
        "app.py": PACKAGE_APP.format(package=package),
        "requirements.txt": requirements})


def deps_volumes(srv):
    deps = srv.data / "deps"
    return sorted(p.name for p in deps.iterdir()) if deps.exists() else []


def test_requirements_from_a_local_wheel_are_built_and_importable(coil_server, tmp_path):
    wheels = build_wheel(tmp_path, "tinypkg", 42)
    srv = coil_server("--find-links", wheels)
    code = package_dir(tmp_path, "app", "pkg", "tinypkg", "tinypkg==1.0\n")

    r = srv.cli("deploy", code)
    assert r.returncode == 0, r
    # pip's own output streamed to the deploying user.
    assert "Successfully installed tinypkg-1.0" in r.stderr, r
    response = get_fn(srv, "pkg")
    assert response.status == 200, response
    assert response.json() == {"value": 42, "file": "/deps/tinypkg/__init__.py"}
    assert len(deps_volumes(srv)) == 1

    # After a restart the function is served again from the same volume, not rebuilt.
    srv.stop()
    again = coil_server("--find-links", wheels)
    response = get_fn(again, "pkg")
    assert response.status == 200 and response.json()["value"] == 42, response
    assert again.count_lines(r"building dependencies") == 0


def test_identical_requirements_are_built_once_and_shared(coil_server, tmp_path):
    wheels = build_wheel(tmp_path, "tinypkg", 7)
    srv = coil_server("--find-links", wheels)
    first = package_dir(tmp_path, "one", "one", "tinypkg", "tinypkg==1.0\n")
    second = package_dir(tmp_path, "two", "two", "tinypkg", "tinypkg==1.0\n")

    assert srv.cli("deploy", first).returncode == 0
    r = srv.cli("deploy", second)
    assert r.returncode == 0, r
    assert "already built" in r.stderr, r
    assert "Successfully installed" not in r.stderr, r
    assert srv.count_lines(r"building dependencies") == 1
    assert len(deps_volumes(srv)) == 1
    for name in ("one", "two"):
        response = get_fn(srv, name)
        assert response.status == 200 and response.json()["value"] == 7, response


def test_a_failing_build_refuses_the_deploy_and_the_previous_version_keeps_serving(coil_server, tmp_path):
    wheels = build_wheel(tmp_path, "tinypkg", 1)
    srv = coil_server("--find-links", wheels)
    good = api_deploy(srv, handler_bundle("good", name="pkg", route="/pkg"))["version"]

    code = package_dir(tmp_path, "bad", "pkg", "tinypkg", "no-such-package-for-coil==9.9\n")
    r = srv.cli("deploy", code)
    assert r.returncode == 1, r
    assert "no-such-package-for-coil" in r.stderr, r
    assert "No matching distribution" in r.stderr, r  # pip's own error
    assert_serves(srv, "pkg", good, "good")
    assert deps_volumes(srv) == []


def _sdist(tmp_path, host_marker, port):
    """An sdist whose setup.py tries to write a host file and reach a host port, reports
    what happened, and fails the build so that pip shows its output."""
    setup = textwrap.dedent(f"""
        import socket
        try:
            with open({str(host_marker)!r}, "w") as f:
                f.write("escaped")
            print("COIL-TEST host write: succeeded")
        except OSError as e:
            print("COIL-TEST host write: refused:", e)
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=3).close()
            print("COIL-TEST connect: succeeded")
        except OSError as e:
            print("COIL-TEST connect: refused:", e)
        raise SystemExit("COIL-TEST done")
    """)
    wheels = tmp_path / "sdists"
    wheels.mkdir()
    with tarfile.open(wheels / "evilpkg-1.0.tar.gz", "w:gz") as tar:
        for name, text in (("evilpkg-1.0/setup.py", setup),
                           ("evilpkg-1.0/PKG-INFO", "Metadata-Version: 2.1\nName: evilpkg\nVersion: 1.0\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    wheels.chmod(0o755)
    return wheels


def test_the_build_is_sandboxed(coil_server, tmp_path):
    """setup.py is untrusted code: it runs, but cannot write to the host nor reach a port
    on the host's loopback."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    host_marker = tmp_path / "escaped-from-the-build"
    sdists = _sdist(tmp_path, host_marker, listener.getsockname()[1])
    srv = coil_server("--find-links", sdists)
    code = package_dir(tmp_path, "evil", "evil", "evilpkg", "evilpkg==1.0\n")

    r = srv.cli("deploy", code)
    assert r.returncode == 1, r
    assert "COIL-TEST host write: refused" in r.stderr, r  # it ran, and was stopped
    assert "COIL-TEST connect: refused" in r.stderr, r
    assert "succeeded" not in r.stderr, r
    assert not host_marker.exists()
    with pytest.raises(BlockingIOError):
        listener.accept()
    listener.close()


def test_requirements_from_an_index_reached_through_the_proxy(coil_server, tmp_path):
    """--index-url: the build reaches that index (a PEP 503 simple index served here, on
    127.0.0.1) through its sandbox's proxy, and nothing else."""
    import functools
    import http.server
    import threading

    wheels = build_wheel(tmp_path, "tinypkg", 5)
    index = tmp_path / "index" / "simple" / "tinypkg"
    index.mkdir(parents=True)
    wheel = next(wheels.glob("tinypkg-1.0-*.whl"))
    (index / wheel.name).write_bytes(wheel.read_bytes())
    (index / "index.html").write_text(f'<a href="{wheel.name}">{wheel.name}</a>\n')
    requested = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requested.append(self.path)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(tmp_path / "index")))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        srv = coil_server("--index-url", f"http://127.0.0.1:{server.server_port}/simple/")
        code = package_dir(tmp_path, "app", "pkg", "tinypkg", "tinypkg==1.0\n")
        r = srv.cli("deploy", code)
        assert r.returncode == 0, r
        assert "Successfully installed tinypkg-1.0" in r.stderr, r
        response = get_fn(srv, "pkg")
        assert response.status == 200 and response.json()["value"] == 5, response
        assert "/simple/tinypkg/" in requested, requested
    finally:
        server.shutdown()
        server.server_close()


def test_requirements_naming_files_of_the_code_are_not_shared_across_versions(coil_server, tmp_path):
    """A requirements.txt that points at a wheel shipped with the code gets a volume of
    its own: a new version with a changed wheel (same line) is built again."""
    srv = coil_server()
    for value in (1, 2):
        wheels = build_wheel(tmp_path / f"v{value}", "tinypkg", value)
        wheel = next(wheels.glob("tinypkg-1.0-*.whl"))
        code = package_dir(tmp_path, f"app{value}", "pkg", "tinypkg", f"./wheels/{wheel.name}\n")
        (code / "wheels").mkdir()
        (code / "wheels" / wheel.name).write_bytes(wheel.read_bytes())
        r = srv.cli("deploy", code)
        assert r.returncode == 0, r
        response = get_fn(srv, "pkg")
        assert response.status == 200 and response.json()["value"] == value, response
    assert len(deps_volumes(srv)) == 2


def test_dependencies_without_the_sandbox(coil_server, tmp_path):
    """--no-sandbox (debugging): no mount namespace, so the build and the function reach
    the volumes at their host paths; the packages still install and import."""
    wheels = build_wheel(tmp_path, "tinypkg", 3)
    srv = coil_server("--find-links", wheels, "--no-sandbox")
    code = package_dir(tmp_path, "app", "pkg", "tinypkg", "tinypkg==1.0\n")
    r = srv.cli("deploy", code)
    assert r.returncode == 0, r
    response = get_fn(srv, "pkg")
    assert response.status == 200, response
    assert response.json()["value"] == 3
    assert response.json()["file"].startswith(str(srv.data / "deps") + "/"), response.json()


def test_a_dependency_volume_goes_with_the_last_function_that_uses_it(coil_server, tmp_path):
    wheels = build_wheel(tmp_path, "tinypkg", 9)
    srv = coil_server("--find-links", wheels)
    for name in ("one", "two"):
        code = package_dir(tmp_path, name, name, "tinypkg", "tinypkg==1.0\n")
        assert srv.cli("deploy", code).returncode == 0
    [volume] = deps_volumes(srv)
    assert srv.cli("rm", "one").returncode == 0
    assert deps_volumes(srv) == [volume]  # "two" still uses it
    response = get_fn(srv, "two")
    assert response.status == 200 and response.json()["value"] == 9, response
    assert srv.cli("rm", "two").returncode == 0
    assert deps_volumes(srv) == []
    srv.wait_for_line(rf"dependency volume {volume} is no longer used: removed")
