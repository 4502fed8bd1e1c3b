"""The cgroup layer of the sandbox (security guide: resource exhaustion).

Each instance runs in its own cgroup (memory, pids and cpu controllers) under
coil's own group `coil-<host pid>`. Each test is a real Python function trying
to exhaust or escape its limits from inside its sandbox; the test asserts the
attempt fails the documented way and that coil and another function keep
serving. Where the limits live is checked from the host side, through
/proc/<instance host pid>/cgroup.

CI runs as root, with cgroup v1 (memory, pids and cpu in their own hierarchies)."""

import os
import re
import signal
import time

import pytest

from conftest import describe, fn_toml, manifest, wait_gone

RES_APP = r'''
import ctypes, errno, json, os, sys, time
from spin_http import Response

def attempt(fn):
    """"ok" if fn() worked, else the errno name of the failure."""
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))

def write(path, data="1"):
    with open(path, "w") as f:
        f.write(data)

def hog(limit_mb):
    """Allocate (and touch) 4 MiB at a time, up to 4 x the limit, saying how far it got."""
    keep = []
    for step in range(1, limit_mb + 1):
        keep.append(bytearray(4 << 20))
        print("allocated %d MiB" % (4 * step), flush=True)
    return {"survived_mib": 4 * len(keep)}

def fork_bomb(cap):
    """Fork until the kernel refuses; the children wait on a pipe so that they all count."""
    r, w = os.pipe()
    children, error = [], None
    try:
        while len(children) < cap:
            pid = os.fork()
            if pid == 0:
                os.close(w)
                os.read(r, 1)   # returns when the parent closes w
                os._exit(0)
            children.append(pid)
    except OSError as e:
        error = errno.errorcode.get(e.errno, str(e.errno))
    os.close(w)
    os.close(r)
    statuses = [os.waitpid(pid, 0)[1] for pid in children]
    return {"forks": len(children), "error": error, "clean_exits": statuses.count(0)}

def fork_once():
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    return {"status": os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])}

def daemon():
    """Double-fork a daemon that outlives the invocation; return its pid (in this pid namespace)."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.setsid()
        grandchild = os.fork()
        if grandchild == 0:
            os.close(r)
            os.write(w, str(os.getpid()).encode())
            os.close(w)
            for fd in (0, 1, 2):
                try:
                    os.close(fd)
                except OSError:
                    pass
            while True:
                time.sleep(3600)
        os._exit(0)
    os.close(w)
    daemon_pid = int(os.read(r, 32))
    os.close(r)
    os.waitpid(child, 0)
    return {"daemon": daemon_pid, "me": os.getpid()}

def escape():
    out = {}
    out["sys_exists"] = os.path.exists("/sys")
    out["open /sys/fs/cgroup/memory/release_agent"] = attempt(lambda: open("/sys/fs/cgroup/memory/release_agent"))
    for path in ("/proc/sys/kernel/hostname", "/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches",
                 "/proc/sys/kernel/pid_max", "/proc/sys/fs/file-max"):
        out["write " + path] = attempt(lambda: write(path))
    mounts = [line.split() for line in open("/proc/self/mounts")]
    out["mount_types"] = sorted({m[2] for m in mounts})
    out["mount_points"] = sorted({m[1] for m in mounts})
    # any file named release_agent or cgroup.procs, but in the host's read-only /usr (and
    # the /bin, /lib... that show it) and in /proc/<pid>
    found = []
    for top in os.listdir("/"):
        if top in ("usr", "proc", "bin", "sbin") or top.startswith("lib"):
            continue
        for root, dirs, files in os.walk("/" + top):
            found += [os.path.join(root, f) for f in files if f in ("release_agent", "cgroup.procs", "tasks")]
    for entry in os.listdir("/proc"):
        if not entry.isdigit() and os.path.isdir("/proc/" + entry) and entry not in ("self", "thread-self", "sys"):
            for root, dirs, files in os.walk("/proc/" + entry):
                found += [os.path.join(root, f) for f in files if f == "release_agent"]
    out["found"] = found
    out["own_cgroup"] = open("/proc/self/cgroup").read().split()
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            pass
    out["fds"] = fds
    # mounting a cgroup filesystem (the classic release_agent escape), or unsharing to get
    # the rights to: both must fail
    libc = ctypes.CDLL(None, use_errno=True)
    def mount_cgroup():
        if libc.mount(b"cgroup", b"/tmp", b"cgroup", 0, b"memory") != 0:
            raise OSError(ctypes.get_errno(), "mount")
    def unshare():
        if libc.unshare(0x10000000 | 0x00020000) != 0:  # CLONE_NEWUSER | CLONE_NEWNS
            raise OSError(ctypes.get_errno(), "unshare")
    out["mount cgroup"] = attempt(mount_cgroup)
    out["unshare"] = attempt(unshare)
    return out

def handle_request(request):
    path = dict(request.headers)["spin-path-info"]
    arg = request.uri.split("?", 1)[1] if "?" in request.uri else ""
    if path == "/pid":
        body = {"pid": os.getpid()}
    elif path == "/hog":
        body = hog(int(arg))
    elif path == "/forkbomb":
        body = fork_bomb(int(arg))
    elif path == "/fork":
        body = fork_once()
    elif path == "/daemon":
        body = daemon()
    elif path == "/escape":
        body = escape()
    elif path == "/exit":
        os._exit(3)
    else:
        return Response(404, None, "no such probe " + path)
    return Response(200, [("content-type", "application/json")], json.dumps(body))
'''


# --------------------------------------------------------------------------
# helpers: coil, instances and their cgroups seen from the host
# --------------------------------------------------------------------------

CONTROLLERS = ("memory", "pids", "cpu")


def start(coil, *functions):
    """functions: (name, opts) tuples, each served at /<name>/..."""
    toml = manifest(*(fn_toml(name, f"/{name}/...", **opts) for name, opts in functions))
    return coil({"coil.toml": toml, "app.py": RES_APP})


def get_json(c, path, status=200, timeout=15.0):
    r = c.get(path, timeout=timeout)
    assert r.status == status, f"GET {path}: {r}\nlog:\n{c.log(tail=40)}"
    return r.json()


def instance_started(name, pid=r"\d+"):
    return rf"^coil: instance {name} pid=({pid}) started$"


def instance_exited(name, pid=r"\d+", reason=r"[^)]*"):
    return rf"^coil: instance {name} pid=({pid}) exited \(({reason})\)$"


def serve_and_get_instance(c, name):
    """One request to `name`; returns (pid in the sandbox, host pid) of the instance that served it."""
    inner = get_json(c, f"/{name}/pid")["pid"]
    host_pid = c.host_pid_in_sandbox(name, inner)
    c.wait_for_line(instance_started(name, host_pid), timeout=5)
    return inner, host_pid


def cgroup_mounts():
    """{controller: mount point} of the host's cgroup v1 hierarchies."""
    out = {}
    with open("/proc/self/mounts") as f:
        for line in f:
            _src, where, fstype, opts = line.split()[:4]
            if fstype == "cgroup":
                for opt in opts.split(","):
                    if opt in CONTROLLERS:
                        out[opt] = where
    return out


def proc_cgroup(pid):
    """{controller: path} from /proc/<pid>/cgroup (v1 lines only)."""
    out = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _hid, controllers, path = line.rstrip("\n").split(":", 2)
            for ctl in controllers.split(","):
                if ctl in CONTROLLERS:
                    out[ctl] = path
    return out


def cgroup_dirs(pid):
    """{controller: directory} of the cgroups a process is in, as seen from the host."""
    mounts = cgroup_mounts()
    return {ctl: os.path.join(mounts[ctl], path.lstrip("/")) for ctl, path in proc_cgroup(pid).items()}


def coil_group_dirs(coil_pid):
    """{controller: directory} of coil's own group coil-<pid>, under the cgroup coil runs in."""
    return {ctl: os.path.join(d, f"coil-{coil_pid}") for ctl, d in cgroup_dirs(coil_pid).items()}


def read_int(path):
    with open(path) as f:
        return int(f.read().split()[0])


def procs_of(directory):
    try:
        with open(os.path.join(directory, "cgroup.procs")) as f:
            return {int(x) for x in f.read().split()}
    except FileNotFoundError:
        return None


def starttime(pid):
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    return int(data[data.rfind(")") + 2:].split()[19])


def wait_until(predicate, timeout):
    """Poll an event the test cannot be told about (a process or a directory going away)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def host_pid_of(inner_pid, candidates):
    """The host pid, among `candidates`, whose innermost pid (NSpid) is `inner_pid`."""
    for pid in candidates:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("NSpid:") and int(line.split()[-1]) == inner_pid:
                        return pid
        except FileNotFoundError:
            pass
    return None


@pytest.fixture(autouse=True)
def _cgroup_v1():
    mounts = cgroup_mounts()
    assert os.geteuid() == 0, "CI runs as root: the cgroup layer must be available there"
    assert set(CONTROLLERS) <= set(mounts), f"expected cgroup v1 memory, pids and cpu hierarchies: {mounts}"


# --------------------------------------------------------------------------
# the limits are written, per instance
# --------------------------------------------------------------------------

@pytest.mark.parametrize("opts,memory,pids,shares", [
    ({}, 256 << 20, 256, 1024),
    ({"memory_mb": 96, "max_processes": 33, "cpu": 0.5}, 96 << 20, 33, 512),
    ({"memory_mb": 300, "max_processes": 1000, "cpu": 0.1}, 300 << 20, 1000, 102),  # 102.4 rounded
    ({"memory_mb": 1000, "max_processes": 2, "cpu": 2.25}, 1000 << 20, 2, 2304),
], ids=["defaults", "small", "rounded", "large"])
def test_limits_are_written_into_the_instance_cgroup(coil, opts, memory, pids, shares):
    c = start(coil, ("lim", opts), ("plain", {}))
    assert c.find_lines(r"^coil: sandbox: cgroup v1 \(memory, pids, cpu\) under .*coil-%d.*: memory_mb, "
                        r"max_processes and cpu hold per instance$" % c.pid), c.log()
    _inner, host_pid = serve_and_get_instance(c, "lim")
    dirs = cgroup_dirs(host_pid)
    own = coil_group_dirs(c.pid)
    for ctl in CONTROLLERS:
        # i<N> directly under coil's group, which is under the cgroup coil itself runs in
        assert re.fullmatch(re.escape(own[ctl]) + r"/i\d+", dirs[ctl]), (ctl, dirs[ctl], own[ctl])
    assert read_int(f"{dirs['memory']}/memory.limit_in_bytes") == memory
    memsw = f"{dirs['memory']}/memory.memsw.limit_in_bytes"
    if os.path.exists(memsw):  # swap accounting on: swap is not extra
        assert read_int(memsw) == memory
    assert read_int(f"{dirs['pids']}/pids.max") == pids
    assert read_int(f"{dirs['cpu']}/cpu.shares") == shares
    assert host_pid in procs_of(dirs["memory"]) and host_pid in procs_of(dirs["pids"])
    # another function's instance: its own group, with its own (default) limits
    _inner, other_pid = serve_and_get_instance(c, "plain")
    other = cgroup_dirs(other_pid)
    for ctl in CONTROLLERS:
        assert other[ctl] != dirs[ctl]
    assert read_int(f"{other['memory']}/memory.limit_in_bytes") == 256 << 20
    assert read_int(f"{other['pids']}/pids.max") == 256
    assert read_int(f"{other['cpu']}/cpu.shares") == 1024


def test_the_template_is_bounded_by_its_functions_group(coil):
    """The template imports the function's code inside a group of its own, sized for the
    template plus max_instances instances, so that even import-time code is bounded."""
    c = start(coil, ("tpl", {"memory_mb": 64, "max_processes": 10, "max_instances": 3, "cpu": 0.5}))
    template = int(c.wait_for_line(r"^coil: template tpl ready in [\d.]+ms \(pid (\d+)\)$").group(1))
    dirs = cgroup_dirs(template)
    own = coil_group_dirs(c.pid)
    for ctl in CONTROLLERS:
        assert re.fullmatch(re.escape(own[ctl]) + r"/i\d+", dirs[ctl]), (ctl, dirs[ctl], own[ctl])
    assert read_int(f"{dirs['memory']}/memory.limit_in_bytes") == 4 * (64 << 20)
    assert read_int(f"{dirs['pids']}/pids.max") == 4 * 10
    assert read_int(f"{dirs['cpu']}/cpu.shares") == 512
    # an instance is in a group of its own, not the template's
    _inner, host_pid = serve_and_get_instance(c, "tpl")
    assert cgroup_dirs(host_pid)["memory"] != dirs["memory"]


# --------------------------------------------------------------------------
# exhaustion attempts
# --------------------------------------------------------------------------

def test_memory_past_memory_mb_is_oom_killed_and_replaced(coil):
    c = start(coil, ("hog", {"memory_mb": 64}), ("bystander", {}))
    bystander_inner, bystander_host = serve_and_get_instance(c, "bystander")
    _inner, hog_host = serve_and_get_instance(c, "hog")
    mark = c.mark()
    r = c.get("/hog/hog?64", timeout=20)  # up to 256 MiB, four times the limit
    assert r.status == 500, f"{r}\nlog:\n{c.log(tail=40)}"
    assert r.body == b"function hog ran out of memory: its memory limit (memory_mb = 64) was reached\n"
    c.wait_for_line(rf"^coil: instance hog pid={hog_host} was killed by its memory limit \(memory_mb = 64\)$",
                    since=mark, timeout=5)
    c.wait_for_line(instance_exited("hog", hog_host, r"killed: out of memory, memory_mb = 64"), since=mark, timeout=5)
    # it got close to the limit before the kill: the limit is 64 MiB, not something smaller
    reached = [int(m.group(1)) for m in c.find_lines(rf"^\[hog pid={hog_host}\] allocated (\d+) MiB$", since=mark)]
    assert reached and 32 <= max(reached) < 64, f"allocated before the kill: {reached}"
    # the next request gets a fresh instance
    _inner, new_host = serve_and_get_instance(c, "hog")
    assert new_host != hog_host
    c.wait_for_line(instance_started("hog", new_host), since=mark, timeout=5)
    # the other function was not touched: same instance, still serving
    assert serve_and_get_instance(c, "bystander") == (bystander_inner, bystander_host)
    assert not c.find_lines(instance_exited("bystander"))
    assert c.proc.poll() is None


def test_fork_bomb_stops_at_max_processes(coil):
    c = start(coil, ("bomb", {"max_processes": 16}), ("bystander", {}))
    _inner, bomb_host = serve_and_get_instance(c, "bomb")
    mark = c.mark()
    d = get_json(c, "/bomb/forkbomb?500", timeout=20)
    # the instance itself (and its threads) count too, so fewer than 16 forks succeed
    assert d["error"] == "EAGAIN", d
    assert 8 <= d["forks"] < 16, d
    assert d["clean_exits"] == d["forks"], d
    # the same instance survived it and serves again, and the host and others serve
    assert serve_and_get_instance(c, "bomb")[1] == bomb_host
    assert not c.find_lines(instance_exited("bomb"), since=mark)
    assert get_json(c, "/bystander/fork") == {"status": 7}
    # the limit is per instance, not shared: a second bomb in another function gets as far
    assert get_json(c, "/bystander/forkbomb?40") == {"forks": 40, "error": None, "clean_exits": 40}
    again = get_json(c, "/bomb/forkbomb?500", timeout=20)
    assert again["error"] == "EAGAIN" and again["forks"] == d["forks"], (d, again)


def test_double_forked_daemon_is_killed_with_its_instance(coil):
    c = start(coil, ("spawner", {}), ("bystander", {}))
    _inner, inst_host = serve_and_get_instance(c, "spawner")
    dirs = cgroup_dirs(inst_host)
    before = procs_of(dirs["pids"])
    assert before == {inst_host}, f"instance group {dirs['pids']} holds {before}, expected only {inst_host}"
    d = get_json(c, "/spawner/daemon")
    # the invocation is over; the daemon lives on in the instance's cgroup
    after = procs_of(dirs["pids"])
    extra = after - {inst_host}
    assert inst_host in after and len(extra) == 1, f"cgroup.procs after the daemon: {after}"
    daemon_host = extra.pop()
    assert host_pid_of(d["daemon"], [daemon_host]) == daemon_host, "the daemon in the group is not the one forked"
    assert procs_of(dirs["memory"]) == after
    daemon = {daemon_host: starttime(daemon_host)}
    assert wait_gone(daemon, 0) == daemon, "the daemon died on its own"
    # end the instance (not the daemon): the request is answered 502, the daemon must go too
    mark = c.mark()
    r = c.get("/spawner/exit")
    assert r.status == 502, r
    c.wait_for_line(instance_exited("spawner", inst_host, "status 3"), since=mark, timeout=5)
    left = wait_gone(daemon, 5)
    assert not left, "the double-forked daemon outlived its instance:\n" + describe(left)
    gone = wait_until(lambda: not any(os.path.exists(p) for p in dirs.values()), 5)
    assert gone, f"the instance's cgroup directories were not removed: {[p for p in dirs.values() if os.path.exists(p)]}"
    # the host and both functions keep serving
    assert serve_and_get_instance(c, "spawner")[1] != inst_host
    assert get_json(c, "/bystander/pid")["pid"] > 0


def test_daemon_of_an_instance_killed_from_outside_is_killed_too(coil):
    c = start(coil, ("spawner", {}))
    _inner, inst_host = serve_and_get_instance(c, "spawner")
    dirs = cgroup_dirs(inst_host)
    get_json(c, "/spawner/daemon")
    extra = procs_of(dirs["pids"]) - {inst_host}
    assert len(extra) == 1, procs_of(dirs["pids"])
    daemon = {p: starttime(p) for p in extra}
    mark = c.mark()
    os.kill(inst_host, signal.SIGKILL)
    c.wait_for_line(instance_exited("spawner", inst_host, "signal 9"), since=mark, timeout=5)
    left = wait_gone(daemon, 5)
    assert not left, "the double-forked daemon outlived its instance:\n" + describe(left)
    assert wait_until(lambda: not any(os.path.exists(p) for p in dirs.values()), 5), dirs
    assert serve_and_get_instance(c, "spawner")[1] != inst_host


def test_cgroups_and_proc_sys_are_out_of_reach(coil):
    c = start(coil, ("probe", {}), ("bystander", {}))
    d = get_json(c, "/probe/escape")
    assert d["sys_exists"] is False, d
    assert d["open /sys/fs/cgroup/memory/release_agent"] == "ENOENT", d
    for key, result in d.items():
        if key.startswith("write /proc/"):
            assert result in ("EACCES", "EROFS", "EPERM"), (key, result)
    # no cgroup (or sysfs) filesystem mounted anywhere in the sandbox, so no release_agent
    assert not {"cgroup", "cgroup2", "sysfs"} & set(d["mount_types"]), d["mount_types"]
    assert d["found"] == [], d["found"]
    # nor can one be mounted, or the rights to mount one be had
    assert d["mount cgroup"] == "EPERM", d
    assert d["unshare"] == "EPERM", d
    # a cgroup namespace rooted at the function's group: nothing of coil's group (its name
    # has coil's pid) nor above it shows (coil runs under a non-root memory cgroup here),
    # and no cgroup file stays open
    inside = {}
    for line in d["own_cgroup"]:
        _hid, controllers, path = line.split(":", 2)
        for ctl in controllers.split(","):
            inside[ctl] = path
    host_side = proc_cgroup(c.pid)
    assert host_side["memory"] != "/", "coil runs in the root memory cgroup: the check below proves nothing"
    for ctl in CONTROLLERS:
        # the instance's group, a sibling of the function's: "/../iN"
        assert re.fullmatch(r"/\.\./i\d+", inside[ctl]), (ctl, d["own_cgroup"])
        assert str(c.pid) not in inside[ctl]
    assert not [t for t in d["fds"].values() if "cgroup" in t], d["fds"]
    # the host and another function keep serving
    assert get_json(c, "/bystander/pid")["pid"] > 0
    assert get_json(c, "/probe/pid")["pid"] > 0


# --------------------------------------------------------------------------
# stale groups of a coil that was killed
# --------------------------------------------------------------------------

def test_stale_cgroups_of_a_killed_coil_are_removed_at_next_start(coil):
    neighbour = start(coil, ("live", {}))             # a coil that stays up throughout
    crashed = start(coil, ("victim", {"min_instances": 1}))
    crashed.wait_for_line(instance_started("victim"), timeout=10)
    get_json(crashed, "/victim/pid")
    stale = coil_group_dirs(crashed.pid)
    live = coil_group_dirs(neighbour.pid)
    assert all(os.path.isdir(p) for p in stale.values()), stale
    assert all(os.path.isdir(p) for p in live.values()), live
    kids = crashed.descendants()
    crashed.proc.kill()
    crashed.proc.wait(10)
    left = wait_gone(kids, 5)
    assert not left, "processes survived SIGKILL of coil:\n" + describe(left)
    # nothing cleaned up after the crash: the groups are still there
    gone = [p for p in stale.values() if not os.path.isdir(p)]
    assert not gone, f"coil-{crashed.pid} vanished on its own, before the next start: {gone}"
    fresh = start(coil, ("phoenix", {}))            # listening: create() is done
    remaining = [p for p in stale.values() if os.path.exists(p)]
    assert not remaining, f"stale groups of the killed coil survive the next start: {remaining}"
    # a group whose coil is alive is not stale
    assert all(os.path.isdir(p) for p in live.values()), live
    assert all(os.path.isdir(p) for p in coil_group_dirs(fresh.pid).values())
    # the new coil and the neighbour both serve, each in its own groups
    _inner, phoenix_host = serve_and_get_instance(fresh, "phoenix")
    assert cgroup_dirs(phoenix_host)["pids"].startswith(coil_group_dirs(fresh.pid)["pids"] + "/")
    assert get_json(neighbour, "/live/pid")["pid"] > 0
