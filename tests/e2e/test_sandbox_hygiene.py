"""What a function can see of the host through its process: only its own
stdio and instance socket are open, and its environment holds only what the
manifest gives plus coil's documented variables (security guide: inherited
fds, finding the host's secrets)."""

import http.client
import json
import os
import re
import signal
import subprocess

import pytest

from conftest import COIL_BIN, LISTEN_RE, fn_toml, manifest, write_files

PROBE_APP = '''
import fcntl, json, os, sys, __main__
from spin_http import Response

def inheritable():
    """The fds a program started now would inherit (no close-on-exec)."""
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            if not fcntl.fcntl(int(fd), fcntl.F_GETFD) & fcntl.FD_CLOEXEC:
                out[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass  # the directory listing's own fd, closed by now
    return out

# In the template, at import (a forked function), or in the fresh instance.
INHERITABLE_AT_IMPORT = inheritable()

def interpreter():
    import _coil
    try:
        _coil.main()
        again = "returned"
    except RuntimeError as e:
        again = str(e)
    return {"executable": sys.executable, "argv": sys.argv, "orig_argv": sys.orig_argv,
            "isolated": sys.flags.isolated, "utf8_mode": sys.flags.utf8_mode,
            "main": sorted(n for n in vars(__main__) if not n.startswith("__")),
            "cmdline": open("/proc/self/cmdline", "rb").read().decode(errors="replace"), "main_again": again}

def signal_masks():
    masks = {}
    for line in open("/proc/self/status"):
        name, _, value = line.partition(":")
        if name in ("SigBlk", "SigIgn", "SigCgt"):
            masks[name] = int(value.strip(), 16)
    return masks

def handle_request(request):
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass  # the directory listing's own fd, closed by now
    return Response(200, None, json.dumps({"fds": fds, "env": dict(os.environ), "signals": signal_masks(),
                                           "python": interpreter(), "inheritable_at_import": INHERITABLE_AT_IMPORT}))
'''


def careless_signals():
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})


@pytest.fixture
def coil_with_leaky_parent(tmp_path):
    """Starts coil the way a careless parent would: with an extra inheritable
    fd, a secret in the environment, SIGHUP ignored (as nohup does) and SIGUSR1
    blocked. Yields (port, leaked fd number)."""
    directory = write_files(tmp_path / "fn", {
        "coil.toml": manifest(fn_toml("probe", "/...", env={"GREETING": "hi"}),
                              fn_toml("probe-threads", "/threads/...", entrypoint="threaded:handle_request",
                                      env={"GREETING": "hi"})),
        "app.py": PROBE_APP,
        # A thread at import: this template starts its instances as fresh processes.
        "threaded.py": "import threading, time\nthreading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n"
                       "from app import handle_request\n",
    })
    read_end, write_end = os.pipe()
    env = dict(os.environ, COIL_TEST_SECRET="hunter2")
    proc = subprocess.Popen([COIL_BIN, "up", str(directory), "--listen", "127.0.0.1:0"], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            pass_fds=(read_end,), start_new_session=True, preexec_fn=careless_signals)
    os.close(write_end)
    try:
        port = None
        for raw in proc.stderr:
            m = LISTEN_RE.match(raw.decode().rstrip("\n"))
            if m:
                port = int(m.group(1))
                break
        assert port, "coil did not start"
        yield port, read_end
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        os.close(read_end)


def probe(port, path="/"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    r = conn.getresponse()
    assert r.status == 200
    return json.loads(r.read())


def test_only_stdio_and_the_instance_socket_are_open(coil_with_leaky_parent):
    # A forked instance, and one started fresh: nothing else, not the
    # runtime module's copy that a fresh start is loaded from.
    port, leaked = coil_with_leaky_parent
    for path in ("/", "/threads/x"):
        fds = probe(port, path)["fds"]
        assert str(leaked) not in fds or not fds[str(leaked)].startswith("pipe:"), fds
        assert fds["0"] == "/dev/null"
        assert fds["1"].startswith("pipe:") and fds["1"] == fds["2"], fds
        others = {fd: target for fd, target in fds.items() if fd not in ("0", "1", "2")}
        assert len(others) == 1 and re.match(r"^socket:\[\d+\]$", next(iter(others.values()))), (path, fds)


def test_a_program_started_at_import_inherits_only_stdio(coil_with_leaky_parent):
    # Not the template's control socket (the host learns of a template's end from
    # it) nor coil-python.so's copy: a daemon started at import must not hold them.
    # Nor, in a fresh instance (a threaded template's), its instance socket.
    port, _ = coil_with_leaky_parent
    for path in ("/", "/threads/x"):
        at_import = probe(port, path)["inheritable_at_import"]
        assert set(at_import) == {"0", "1", "2"}, (path, at_import)


def test_functions_run_on_debians_python_program(coil_with_leaky_parent):
    # The interpreter is /usr/bin/python3.11 itself (not libpython embedded),
    # isolated and in UTF-8 mode, and little of how coil started it shows:
    # sys.argv and sys.orig_argv are ["coil"], __main__ holds no name of the
    # bootstrap, the command line names no host path, and coil's runtime
    # cannot be started a second time from function code.
    port, _ = coil_with_leaky_parent
    install_dir = os.path.dirname(os.path.abspath(COIL_BIN))
    for path in ("/", "/threads/x"):
        seen = probe(port, path)["python"]
        cmdline = seen.pop("cmdline")
        assert seen == {"executable": "/usr/bin/python3.11", "argv": ["coil"], "orig_argv": ["coil"], "isolated": 1,
                        "utf8_mode": 1, "main": [], "main_again": "coil's runtime is running already"}, path
        assert cmdline.startswith("/usr/bin/python3.11\0") and install_dir not in cmdline, (path, cmdline)
        assert not any(arg.isdigit() for arg in cmdline.split("\0")), ("no host pid", path, cmdline)


@pytest.mark.parametrize("path", ["/", "/threads/x"])
def test_environment_is_the_manifest_plus_documented_variables(coil_with_leaky_parent, path):
    port, _ = coil_with_leaky_parent
    env = probe(port, path)["env"]
    proxies = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"}
    threads = {"OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"}
    assert set(env) == {"PATH", "LANG", "HOME", "GREETING"} | proxies | threads, env
    assert {env[name] for name in threads} == {"1"}
    assert {env[name] for name in proxies} == {"http://127.0.0.1:3128"}
    assert env["GREETING"] == "hi"
    assert "hunter2" not in json.dumps(env)


def test_signal_dispositions_are_a_plain_pythons(coil_with_leaky_parent):
    # Whatever coil inherited or its templates set up, an instance blocks
    # nothing, catches nothing and ignores only what `python3` ignores: a
    # forked one, and one started fresh (its template has a thread).
    port, _ = coil_with_leaky_parent
    python_ignores = (1 << (signal.SIGPIPE - 1)) | (1 << (signal.SIGXFSZ - 1))
    # Signals 32 and 33 are glibc's own (thread cancellation, setxid): a
    # process that has started a thread catches them, as any would.
    glibc_internal = (1 << 31) | (1 << 32)
    for path in ("/", "/threads/x"):
        seen = probe(port, path)["signals"]
        seen["SigCgt"] &= ~glibc_internal
        assert seen == {"SigBlk": 0, "SigIgn": python_ignores, "SigCgt": 0}, path
