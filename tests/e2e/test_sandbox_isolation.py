"""The namespace and mount layers of the sandbox (security guide: escapes and
snooping, network). Each test is a real Python function attempting something
from inside its sandbox; the test asserts the attempt fails the expected way
and that the host keeps serving.

CI runs as root, where every layer is available: the first test asserts that
every one of them is active, so nothing degrades silently."""

import os
import socket

from conftest import fn_toml, manifest

PROBE_APP = r'''
import ctypes, errno, json, os, socket, threading
from spin_http import Response

def attempt(fn):
    """"ok" if fn() worked, else the errno name of the failure."""
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))

def status_fields(path):
    out = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out

def write(path, data="x"):
    with open(path, "w") as f:
        f.write(data)

def layers():
    started = threading.Event()
    stop = threading.Event()
    t = threading.Thread(target=lambda: (started.set(), stop.wait()))
    t.start()
    started.wait()
    threads = {}
    for tid in os.listdir("/proc/self/task"):
        s = status_fields(f"/proc/self/task/{tid}/status")
        threads[tid] = {k: s[k] for k in ("Uid", "Gid", "CapEff", "CapPrm", "CapInh", "CapAmb", "Seccomp", "NoNewPrivs")}
    stop.set()
    t.join()
    return {
        "threads": threads,
        "pid": os.getpid(),
        "procs": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "hostname": socket.gethostname(),
        "interfaces": [name for _, name in socket.if_nameindex()],
        "ns": {n: os.readlink(f"/proc/self/ns/{n}") for n in ("user", "mnt", "pid", "net", "ipc", "uts")},
        "uid_map": open("/proc/self/uid_map").read().split(),
        "root": sorted(os.listdir("/")),
        "cwd": os.getcwd(),
        "rlimit_data": __import__("resource").getrlimit(__import__("resource").RLIMIT_DATA),
    }

def snoop(target):
    out = {}
    for path in ("/etc/shadow", target, "/sys/fs/cgroup", "/proc/sys/kernel/hostname"):
        out["read " + path] = attempt(lambda: os.listdir(path) if os.path.isdir(path) else open(path).read())
    blobs = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            for name in ("environ", "cmdline"):
                try:
                    blobs.append(open(f"/proc/{pid}/{name}", "rb").read().decode("latin-1"))
                except OSError:
                    pass
    out["proc_text"] = "\n".join(blobs)
    # the template (pid 1, same uid): its memory and fds are not this instance's to take
    out["template mem"] = attempt(lambda: open("/proc/1/mem", "r+b").close())
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = libc.syscall(434, 1, 0)  # pidfd_open(1)
    rc = libc.syscall(438, pidfd, 0, 0)  # pidfd_getfd(pidfd, 0)
    out["pidfd_getfd"] = "ok" if rc >= 0 else errno.errorcode.get(ctypes.get_errno())
    out["own fds"] = attempt(lambda: os.listdir("/proc/self/fd"))
    return out

def writes():
    return {path: attempt(lambda: write(path)) for path in
            ("/code/new.py", "/usr/new", "/etc/passwd", "/etc/new", "/new", "/proc/sys/kernel/hostname",
             "/dev/new", "/root/new")}

def tmp(request):
    name = dict(request.headers).get("x-name", "x")
    if request.method == "POST":
        write("/tmp/" + name, request.body.decode())
    return {"files": sorted(os.listdir("/tmp"))}

def fill(path, limit_mb):
    written = 0
    chunk = b"\0" * (1 << 20)
    try:
        with open(path, "wb") as f:
            for _ in range(limit_mb * 4):
                f.write(chunk)
                f.flush()
                written += len(chunk)
        return {"result": "ok", "written": written}
    except OSError as e:
        return {"result": errno.errorcode.get(e.errno), "written": written}
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass

def network(port):
    out = {}
    def tcp():
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        s.close()
    out["tcp"] = attempt(tcp)
    def udp():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"udp-escaped", ("127.0.0.1", port))
        s.close()
    out["udp"] = attempt(udp)
    out["raw"] = attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
    try:
        socket.getaddrinfo("example.com", 80)
        out["dns"] = "ok"
    except socket.gaierror as e:
        out["dns"] = "gaierror"
    return out

def handle_request(request):
    headers = dict(request.headers)
    path = headers["spin-path-info"]
    arg = request.uri.split("?", 1)[1] if "?" in request.uri else ""
    if path == "/layers":
        body = layers()
    elif path == "/snoop":
        body = snoop(arg)
    elif path == "/writes":
        body = writes()
    elif path == "/tmp":
        body = tmp(request)
    elif path == "/fill":
        where, limit = arg.split(",")
        body = fill(where, int(limit))
    elif path == "/layout":
        # what a process fixes when it starts: its str hash secret and where libc is
        libc = ctypes.CDLL(None)
        body = {"hash": hash("abc"), "libc": ctypes.cast(libc.printf, ctypes.c_void_p).value}
    elif path == "/network":
        body = network(int(arg))
    elif path == "/read":
        body = {"result": attempt(lambda: open(arg).read()), "text": open(arg).read() if os.path.exists(arg) else None}
    elif path == "/write":
        body = {"result": attempt(lambda: write(arg, request.body.decode()))}
    else:
        body = {"function": os.environ.get("FN")}
    return Response(200, [("content-type", "application/json")], json.dumps(body))
'''


def two_functions(coil, tmp_path, **opts):
    """Two functions from two code directories: `a` at /a, `b` at /b."""
    files = {
        "coil.toml": manifest(fn_toml("a", "/a/...", source="a", env={"FN": "a"}, **opts),
                              fn_toml("b", "/b/...", source="b", env={"FN": "b"}, **opts)),
        "a/app.py": PROBE_APP,
        "b/app.py": PROBE_APP,
        "b/secret-of-b.txt": "b's own data\n",
    }
    return coil(files)


def test_every_layer_is_active_as_root(coil, tmp_path):
    c = two_functions(coil, tmp_path)
    assert os.geteuid() == 0, "CI runs as root: every layer must be available there"
    assert c.find_lines(r"^coil: sandbox: every layer is active: user \(uid 1000, host uid 991000\), mount, pid, "
                        r"net \(loopback only\), ipc and uts namespaces"), c.log()
    r = c.get("/a/layers")
    assert r.status == 200, r
    d = r.json()
    # every thread: unprivileged uid, no capabilities, no_new_privs, seccomp filter mode
    assert len(d["threads"]) == 2
    for tid, s in d["threads"].items():
        assert s["Uid"].split() == ["1000"] * 4, s
        assert s["Gid"].split() == ["1000"] * 4, s
        for caps in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
            assert int(s[caps], 16) == 0, s
        assert s["Seccomp"] == "2" and s["NoNewPrivs"] == "1", s
    # user namespace: uid 1000 is host uid 991000, root only exists as 990000
    assert d["uid_map"] == ["0", "990000", "1", "1000", "991000", "1"]
    # every namespace differs from the host's (this test process's)
    for name, inside in d["ns"].items():
        assert inside != os.readlink(f"/proc/self/ns/{name}"), name
    # pid namespace: the template is pid 1, the instance a small pid; nothing else visible
    assert 1 in d["procs"] and d["pid"] in d["procs"] and len(d["procs"]) <= 4, d["procs"]
    assert d["hostname"] == "coil"
    assert d["interfaces"] == ["lo"]
    assert d["cwd"] == "/code"
    assert d["rlimit_data"] == [-1, -1]  # memory is the cgroup's business here
    assert d["root"] == sorted(["bin", "code", "dev", "etc", "lib", "lib32", "lib64", "proc", "root", "sbin",
                                "tmp", "usr"]) or set(d["root"]) <= {"bin", "code", "dev", "etc", "lib", "lib32",
                                                                     "lib64", "libx32", "proc", "root", "sbin",
                                                                     "tmp", "usr"}, d["root"]


def test_host_files_and_other_functions_are_out_of_reach(coil, tmp_path):
    c = two_functions(coil, tmp_path)
    b_code = tmp_path / "fn" / "b"
    d = c.get(f"/a/snoop?{b_code}").json()
    assert d["read /etc/shadow"] == "ENOENT", d
    assert d["read " + str(b_code)] == "ENOENT", d  # another function's code: not in this sandbox
    assert d["read /sys/fs/cgroup"] == "ENOENT", d
    assert d["template mem"] in ("EACCES", "EPERM"), d
    assert d["pidfd_getfd"] == "EPERM", d
    assert d["own fds"] == "ok", d
    r = c.get("/a/read?/code/secret-of-b.txt").json()
    assert r["result"] == "ENOENT"
    assert c.get("/b/read?/code/secret-of-b.txt").json()["text"] == "b's own data\n"


def test_each_function_has_its_own_hash_secret_and_address_layout(coil, tmp_path):
    # each template execs an interpreter of its own: one function's code learns
    # nothing of another's hashes or memory layout (a fork would share both)
    c = two_functions(coil, tmp_path)
    a, b = c.get("/a/layout").json(), c.get("/b/layout").json()
    assert a["hash"] != b["hash"], (a, b)
    assert a["libc"] != b["libc"], (a, b)
    assert c.get("/a/layout").json() == a, "an instance of the same function: the same (forked from its template)"


def test_proc_shows_only_the_sandbox_and_no_host_secret(coil, tmp_path, monkeypatch):
    monkeypatch.setenv("COIL_HOST_SECRET", "marker-8842-do-not-leak")
    c = two_functions(coil, tmp_path)
    d = c.get("/a/snoop?/nonexistent").json()
    assert "marker-8842" not in d["proc_text"]
    assert "PATH=" in d["proc_text"]  # it did read its own processes' environments


def test_code_usr_etc_and_root_are_read_only(coil, tmp_path):
    c = two_functions(coil, tmp_path)
    d = c.get("/a/writes").json()
    for path, outcome in d.items():
        assert outcome in ("EROFS", "EACCES", "EPERM"), (path, outcome)
    assert not (tmp_path / "fn" / "a" / "new.py").exists()


def test_tmp_is_private_to_each_function_and_not_the_hosts(coil, tmp_path):
    c = two_functions(coil, tmp_path)
    marker = "private-" + os.urandom(4).hex()
    assert c.request("POST", "/a/tmp", body=b"data", headers={"x-name": marker}).json()["files"] == [marker]
    assert marker not in c.get("/b/tmp").json()["files"]
    assert not os.path.exists("/tmp/" + marker)
    # instances of one function share their sandbox's /tmp
    assert marker in c.get("/a/tmp").json()["files"]


def test_tmp_is_bounded_by_tmp_mb(coil, tmp_path):
    c = two_functions(coil, tmp_path, tmp_mb=4)
    d = c.get("/a/fill?/tmp/big,4", timeout=30).json()
    assert d["result"] == "ENOSPC", d
    assert d["written"] <= 4 << 20
    assert c.get("/b/").status == 200


def test_network_reaches_nothing_outside_the_sandbox(coil, tmp_path):
    c = two_functions(coil, tmp_path)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", port))
    udp.setblocking(False)
    try:
        d = c.get(f"/a/network?{port}").json()
        assert d["tcp"] == "ECONNREFUSED", d  # its own loopback: nothing listens there
        assert d["raw"] == "EPERM", d
        assert d["dns"] == "gaierror", d
        # whatever the UDP send returned, nothing arrived on the host's 127.0.0.1 (loopback
        # delivery is synchronous: it would be queued before the response was sent)
        try:
            data = udp.recv(100)
        except BlockingIOError:
            data = None
        assert data is None, data
        listener.setblocking(False)
        try:
            conn, _ = listener.accept()
            conn.close()
            accepted = True
        except BlockingIOError:
            accepted = False
        assert not accepted
        # the host itself is unreachable too: coil's own port
        assert c.get(f"/a/network?{c.port}").json()["tcp"] == "ECONNREFUSED"
    finally:
        listener.close()
        udp.close()
    assert c.get("/b/").status == 200


def test_a_code_directory_the_sandbox_cannot_read_is_a_clear_error(coil_fail, tmp_path):
    code = tmp_path / "private"
    code.mkdir(mode=0o700)
    (code / "app.py").write_text(PROBE_APP)
    os.chmod(code, 0o700)
    files = {"coil.toml": manifest(fn_toml("p", "/...", source=str(code)))}
    rc, err = coil_fail(files)
    assert rc == 2, err
    assert f"the code directory {code} (mode 0700) is not readable by the sandbox's user" in err, err
    assert "chmod -R o+rX" in err


def test_no_sandbox_warns_and_runs_on_the_host(coil, tmp_path):
    c = coil({"coil.toml": manifest(fn_toml("a", "/...")), "app.py": PROBE_APP}, "--no-sandbox")
    assert c.find_lines(r"^coil: WARNING: --no-sandbox"), c.log()
    d = c.get("/layers").json()
    assert d["ns"]["mnt"] == os.readlink("/proc/self/ns/mnt")


def test_without_root_coil_says_loudly_which_layers_are_missing(tmp_path):
    """Not root: no namespaces, no cgroups. coil still runs the function, under the
    layers an unprivileged process can apply (seccomp, no_new_privs, rlimits), and says
    so with a WARNING rather than degrading silently."""
    import shutil
    import tempfile

    from conftest import COIL_BIN, Coil, _kill_leaked, write_files

    # Somewhere the unprivileged user can read (pytest's own temp dirs are 0700).
    base = tempfile.mkdtemp(prefix="coil-nonroot-")
    try:
        os.chmod(base, 0o755)
        directory = write_files(os.path.join(base, "fn"), {"app.py": PROBE_APP})
        setpriv = shutil.which("setpriv")
        args = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", COIL_BIN, "up", str(directory),
                "app:handle_request", "--listen", "127.0.0.1:0"]
        c = Coil(args, cwd=base, directory=directory)
        try:
            c.wait_listening()
            assert c.find_lines(r"^coil: WARNING: sandbox: not running as root: no namespaces, no cgroups\. "
                                r"Active only: the seccomp filter, no_new_privs and rlimits"), c.log()
            assert not c.find_lines(r"every layer is active")
            d = c.get("/layers").json()
            for s in d["threads"].values():
                assert s["Seccomp"] == "2" and s["NoNewPrivs"] == "1", s
                assert s["Uid"].split()[0] == "65534"
            assert d["ns"]["net"] == os.readlink("/proc/self/ns/net")  # no namespaces here
            # no cgroups: memory_mb (default 256) falls back to RLIMIT_DATA
            assert d["rlimit_data"] == [256 << 20, 256 << 20]
        finally:
            c.kill()
            _kill_leaked()
    finally:
        shutil.rmtree(base, ignore_errors=True)
