"""The seccomp layer of the sandbox (issue 4, first part): each case of the
security guide's "ptrace, mount, unshare..." line is a real Python function
attempting it; the attempt fails (EPERM, ENOSYS, or SIGSYS for another ABI)
and the host keeps serving."""


from conftest import fn_toml, manifest

PROBE_APP = r'''
import ctypes, errno, json, mmap, os, signal, threading
from spin_http import Response

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = {"ptrace": 101, "mount": 165, "umount2": 166, "unshare": 272, "setns": 308, "bpf": 321,
      "keyctl": 250, "add_key": 248, "userfaultfd": 323, "perf_event_open": 298, "io_uring_setup": 425,
      "init_module": 175, "finit_module": 313, "kexec_load": 246, "pivot_root": 155, "chroot": 161,
      "clone3": 435, "clone": 56, "ioctl": 16, "getpid": 39}
CLONE_NEWUSER, CLONE_NEWNET, TIOCSTI = 0x10000000, 0x40000000, 0x5412


def call(name, *args):
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(NR[name]), *[ctypes.c_long(a) for a in args])
    return {"rc": rc, "errno": errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))}


def in_child(action):
    """Runs action() in a forked child; returns how the child ended."""
    pid = os.fork()
    if pid == 0:
        try:
            action()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return signal.Signals(os.WTERMSIG(status)).name
    return f"exit {os.WEXITSTATUS(status)}"


def int80():
    # i386 getpid through `int 0x80`: mov eax, 20; int 0x80; ret
    code = b"\xb8\x14\x00\x00\x00\xcd\x80\xc3"
    buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    buf.write(code)
    address = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    ctypes.CFUNCTYPE(ctypes.c_int)(address)()


def seccomp_modes():
    modes = []
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/status") as f:
            modes += [line.split()[1] for line in f if line.startswith("Seccomp:")]
    return modes


def handle_request(request):
    path = request.uri.split("?")[0]
    if path == "/syscalls":
        result = {name: call(name) for name in ("ptrace", "mount", "umount2", "setns", "bpf", "keyctl",
                                                "add_key", "userfaultfd", "perf_event_open", "io_uring_setup",
                                                "init_module", "finit_module", "kexec_load", "pivot_root",
                                                "chroot")}
        result["unshare(CLONE_NEWUSER)"] = call("unshare", CLONE_NEWUSER)
        result["unshare(CLONE_NEWNET)"] = call("unshare", CLONE_NEWNET)
        result["clone(CLONE_NEWUSER)"] = call("clone", CLONE_NEWUSER | signal.SIGCHLD, 0, 0, 0, 0)
        result["clone3"] = call("clone3", 0, 0)
        result["ioctl(TIOCSTI)"] = call("ioctl", 0, TIOCSTI, 0)
        result["ioctl(TIOCSTI | 1 << 32)"] = call("ioctl", 0, TIOCSTI | (1 << 32), 0)
        return Response(200, {"content-type": "application/json"}, json.dumps(result))
    if path == "/threads":
        done = threading.Event()
        seen = []
        thread = threading.Thread(target=lambda: (seen.append(seccomp_modes()), done.wait()))
        thread.start()
        while not seen:
            pass
        modes = seen[0]
        done.set()
        thread.join()
        return Response(200, {"content-type": "application/json"},
                        json.dumps({"modes": modes, "fork": in_child(lambda: None)}))
    if path == "/x32":
        return Response(200, None, in_child(lambda: call("getpid") and libc.syscall(ctypes.c_long(0x40000000 | 39))))
    if path == "/int80":
        return Response(200, None, in_child(int80))
    if path == "/status":
        return Response(200, None, json.dumps(seccomp_modes()))
    return Response(200, None, "ok")
'''


def start(coil, *flags):
    return coil({"coil.toml": manifest(fn_toml("probe", "/...")), "app.py": PROBE_APP}, *flags)


def test_dangerous_syscalls_fail_with_eperm(coil):
    c = start(coil)
    r = c.get("/syscalls")
    assert r.status == 200, r
    result = r.json()
    for name, outcome in result.items():
        if name == "clone3":
            continue
        assert outcome == {"rc": -1, "errno": "EPERM"}, (name, outcome)
    # clone3 is refused as "not implemented", so that glibc falls back to clone
    assert result["clone3"] == {"rc": -1, "errno": "ENOSYS"}
    assert c.get("/").status == 200


def test_every_thread_is_filtered_and_threads_and_fork_still_work(coil):
    c = start(coil)
    r = c.get("/threads")
    assert r.status == 200, r
    body = r.json()
    assert len(body["modes"]) >= 2, body  # the main thread and the new one
    assert set(body["modes"]) == {"2"}, body
    assert body["fork"] == "exit 0"


def test_other_abis_kill_the_process(coil):
    c = start(coil)
    for path in ("/x32", "/int80"):
        r = c.get(path)
        assert r.status == 200, r
        assert r.body == b"SIGSYS", (path, r)
    # the instance that made the forks, and the host, keep serving
    assert c.get("/").status == 200


def test_no_sandbox_disables_the_filter_and_says_so_loudly(coil):
    c = start(coil, "--no-sandbox")
    assert any("WARNING: --no-sandbox" in line for line in c.lines), c.lines
    r = c.get("/status")
    assert r.status == 200, r
    assert set(r.json()) == {"0"}
