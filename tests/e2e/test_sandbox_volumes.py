"""Volumes (`[[function.volume]]`): readonly host directories, ephemeral tmpfs and
persistent per-function directories, and the manifest checks on them.

Each test is a real Python function reading and writing its volumes from inside
its sandbox; the host side (the directories, their owner, the mounts) is checked
from the test."""

import json
import os
import secrets
import stat
from pathlib import Path

import pytest

from conftest import fn_toml, leaked_children, manifest

SANDBOX_UID = 991000  # host uid of the function's user (uid 1000 inside)

VOL_APP = r'''
import errno, json, os
from spin_http import Response

def fail(e):
    return {"error": errno.errorcode.get(e.errno, str(e.errno))}

def read(path):
    try:
        with open(path) as f:
            return {"text": f.read()}
    except OSError as e:
        return fail(e)

def write(path, data):
    try:
        with open(path, "w") as f:
            f.write(data)
        return {"ok": True}
    except OSError as e:
        return fail(e)

def listing(path):
    try:
        return {"entries": sorted(os.listdir(path))}
    except OSError as e:
        return fail(e)

def stat_of(path):
    try:
        st = os.stat(path)
        return {"uid": st.st_uid, "mode": st.st_mode & 0o7777}
    except OSError as e:
        return fail(e)

def fill(path, cap_mib):
    """Write 256 KiB at a time until the file system is full (or cap_mib is reached)."""
    chunk = b"\xa5" * (256 << 10)
    written = 0
    try:
        with open(path, "wb") as f:
            while written < cap_mib << 20:
                f.write(chunk)
                f.flush()
                written += len(chunk)
        out = {"error": None}
    except OSError as e:
        out = fail(e)
    out["written"] = written
    try:
        os.unlink(path)
    except OSError as e:
        out["unlink"] = fail(e)["error"]
    return out

def mounts():
    out = {}
    for line in open("/proc/self/mounts"):
        _src, where, fstype, opts = line.split()[:4]
        out[where] = {"type": fstype, "opts": opts.split(",")}
    return out

def handle_request(request):
    path = dict(request.headers)["spin-path-info"]
    arg = request.uri.split("?", 1)[1] if "?" in request.uri else ""
    if path == "/read":
        body = read(arg)
    elif path == "/write":
        body = write(arg, request.body.decode())
    elif path == "/mkdir":
        try:
            os.mkdir(arg)
            body = {"ok": True}
        except OSError as e:
            body = fail(e)
    elif path == "/list":
        body = listing(arg)
    elif path == "/stat":
        body = stat_of(arg)
    elif path == "/fill":
        where, cap = arg.split(",")
        body = fill(where, int(cap))
    elif path == "/unshare":
        # what the template's filter let the instance do once, before its own strict filter
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        flags = 0x10000000 | 0x00020000  # CLONE_NEWUSER | CLONE_NEWNS
        rc = libc.unshare(flags)
        body = {"rc": rc, "error": errno.errorcode.get(ctypes.get_errno()) if rc != 0 else None}
        rc = libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None)
        body["mount"] = errno.errorcode.get(ctypes.get_errno()) if rc != 0 else "ok"
    elif path == "/mounts":
        body = mounts()
    elif path == "/pid":
        body = {"pid": os.getpid()}
    elif path == "/exit":
        os._exit(3)
    else:
        return Response(404, None, "no such probe " + path)
    return Response(200, [("content-type", "application/json")], json.dumps(body))
'''

OTHER = ("bystander", [])  # a function without volumes, to check the host keeps serving


def start(coil, *functions, extra=()):
    """functions: (name, volumes) or (name, volumes, opts), each served at /<name>/..."""
    tables = []
    for spec in functions:
        name, volumes, opts = (spec + ({},))[:3]
        tables.append(fn_toml(name, f"/{name}/...", volumes=volumes, **opts))
    return coil({"coil.toml": manifest(*tables), "app.py": VOL_APP}, *extra)


def call(c, name, probe, arg="", body=None, status=200):
    path = f"/{name}/{probe}" + (f"?{arg}" if arg else "")
    r = c.request("POST" if body is not None else "GET", path, body=body, timeout=15)
    assert r.status == status, f"{path}: {r}\nlog:\n{c.log(tail=40)}"
    return r.json() if status == 200 else r


def instance_host_pid(c, name):
    """Host pid of the instance of `name` that serves the next request."""
    pid = c.host_pid_in_sandbox(name, call(c, name, "pid")["pid"])
    c.wait_for_line(rf"^coil: instance {name} pid={pid} started$", timeout=5)
    return pid


def data_dir():
    return Path(os.environ["XDG_STATE_HOME"]) / "coil"


# --------------------------------------------------------------------------
# readonly
# --------------------------------------------------------------------------

def test_readonly_volume_is_live_and_read_only(coil, tmp_path):
    dataset = tmp_path / "fn" / "dataset"
    elsewhere = tmp_path / "elsewhere"
    for d in (dataset, elsewhere):
        d.mkdir(parents=True)
        d.chmod(0o777)  # writable by anyone on the host: only the mount can make it read-only
    (dataset / "hello.txt").write_text("hello from the host\n")
    (dataset / "hello.txt").chmod(0o666)
    (elsewhere / "abs.txt").write_text("absolute source\n")
    c = start(coil, ("reader", [{"mount": "/data", "kind": "readonly", "source": "dataset"},
                                {"mount": "/opt/abs", "kind": "readonly", "source": str(elsewhere)}]), OTHER)
    assert call(c, "reader", "read", "/data/hello.txt") == {"text": "hello from the host\n"}
    assert call(c, "reader", "read", "/opt/abs/abs.txt") == {"text": "absolute source\n"}
    # live: what the host adds or changes after the start shows at once
    (dataset / "later.txt").write_text("added after start\n")
    (dataset / "hello.txt").write_text("changed on the host\n")
    assert call(c, "reader", "list", "/data") == {"entries": ["hello.txt", "later.txt"]}
    assert call(c, "reader", "read", "/data/later.txt") == {"text": "added after start\n"}
    assert call(c, "reader", "read", "/data/hello.txt") == {"text": "changed on the host\n"}
    # read-only, even though the host directory and file are writable by everyone
    assert call(c, "reader", "write", "/data/new.txt", body=b"x") == {"error": "EROFS"}
    assert call(c, "reader", "write", "/data/hello.txt", body=b"x") == {"error": "EROFS"}
    assert call(c, "reader", "mkdir", "/data/sub") == {"error": "EROFS"}
    assert call(c, "reader", "write", "/opt/abs/new.txt", body=b"x") == {"error": "EROFS"}
    m = call(c, "reader", "mounts")
    for where in ("/data", "/opt/abs"):
        assert {"ro", "nosuid", "nodev"} <= set(m[where]["opts"]), m[where]
    assert sorted(p.name for p in dataset.iterdir()) == ["hello.txt", "later.txt"]
    assert (dataset / "hello.txt").read_text() == "changed on the host\n"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["abs.txt"]
    # another function does not get the volume; the host keeps serving
    assert call(c, "bystander", "list", "/data") == {"error": "ENOENT"}
    assert call(c, "bystander", "pid")["pid"] > 0


# --------------------------------------------------------------------------
# persistent
# --------------------------------------------------------------------------

def test_persistent_volume_is_kept_across_restarts(coil, tmp_path):
    data = tmp_path / "data"
    token = secrets.token_hex(8)
    vol = [{"mount": "/state", "kind": "persistent", "name": "db"}]
    first = start(coil, ("keeper", vol), OTHER, extra=("--data", data))
    host_dir = data / "volumes" / "keeper" / "db"
    assert host_dir.is_dir(), f"{host_dir} missing; {data} holds {sorted(str(p) for p in data.rglob('*'))}"
    st = host_dir.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (SANDBOX_UID, 0o700), (st.st_uid, oct(st.st_mode))
    # inside, the function's user (uid 1000) owns it
    assert call(first, "keeper", "stat", "/state") == {"uid": 1000, "mode": 0o700}
    assert call(first, "keeper", "list", "/state") == {"entries": []}
    m = call(first, "keeper", "mounts")["/state"]
    assert {"rw", "nosuid", "nodev"} <= set(m["opts"]), m
    assert call(first, "keeper", "write", "/state/note.txt", body=token.encode()) == {"ok": True}
    note = host_dir / "note.txt"
    assert note.read_text() == token
    assert note.stat().st_uid == SANDBOX_UID
    assert first.stop() == 0
    second = start(coil, ("keeper", vol), OTHER, extra=("--data", data))
    assert call(second, "keeper", "read", "/state/note.txt") == {"text": token}
    # and the other way round: what the host puts there shows inside
    (host_dir / "from-host.txt").write_text("seeded\n")
    assert call(second, "keeper", "list", "/state") == {"entries": ["from-host.txt", "note.txt"]}
    assert call(second, "bystander", "pid")["pid"] > 0


def test_persistent_volume_defaults_to_xdg_state_home(coil, tmp_path):
    token = secrets.token_hex(8)
    name = f"xdg-{token[:6]}"  # the state dir is shared by the session's tests
    c = start(coil, (name, [{"mount": "/state", "kind": "persistent", "name": "cache"}]))
    assert call(c, name, "write", "/state/t", body=token.encode()) == {"ok": True}
    host_dir = data_dir() / "volumes" / name / "cache"
    assert (host_dir / "t").read_text() == token
    assert host_dir.stat().st_uid == SANDBOX_UID


def test_persistent_volumes_are_per_function(coil, tmp_path):
    data = tmp_path / "data"
    vols = [{"mount": "/state", "kind": "persistent", "name": "db"},
            {"mount": "/scratch", "kind": "ephemeral", "size_mib": 4}]
    c = start(coil, ("alpha", vols), ("beta", vols), ("gamma", []), extra=("--data", data))
    secret = secrets.token_hex(8)
    assert call(c, "alpha", "write", "/state/secret.txt", body=secret.encode()) == {"ok": True}
    assert call(c, "alpha", "write", "/scratch/secret.txt", body=secret.encode()) == {"ok": True}
    # same volume name and mount, another function: another directory, another tmpfs
    assert call(c, "beta", "list", "/state") == {"entries": []}
    assert call(c, "beta", "read", "/state/secret.txt") == {"error": "ENOENT"}
    assert call(c, "beta", "list", "/scratch") == {"entries": []}
    assert call(c, "beta", "write", "/state/mine.txt", body=b"beta's") == {"ok": True}
    assert call(c, "alpha", "list", "/state") == {"entries": ["secret.txt"]}
    # a function without volumes has neither
    assert call(c, "gamma", "list", "/state") == {"error": "ENOENT"}
    assert call(c, "gamma", "list", "/scratch") == {"error": "ENOENT"}
    assert (data / "volumes" / "alpha" / "db" / "secret.txt").read_text() == secret
    assert sorted(p.name for p in (data / "volumes" / "beta" / "db").iterdir()) == ["mine.txt"]
    assert not (data / "volumes" / "gamma").exists()
    # nothing of the other function's volumes shows in a function's mounts
    beta_mounts = call(c, "beta", "mounts")
    beta_mine = [where for where in beta_mounts if where in ("/state", "/scratch")]
    assert sorted(beta_mine) == ["/scratch", "/state"], beta_mounts
    beta_mountinfo = Path(f"/proc/{instance_host_pid(c, 'beta')}/mountinfo").read_text()
    assert f" {data / 'volumes' / 'beta' / 'db'} /state " in beta_mountinfo, beta_mountinfo
    assert str(data / "volumes" / "alpha") not in beta_mountinfo, "alpha's volume is mounted in beta's sandbox"


# --------------------------------------------------------------------------
# ephemeral
# --------------------------------------------------------------------------

def test_ephemeral_volume_is_a_bounded_tmpfs_not_on_the_host(coil, tmp_path):
    data = tmp_path / "data"
    token = secrets.token_hex(8)
    c = start(coil, ("eph", [{"mount": "/scratch", "kind": "ephemeral", "size_mib": 4}]),
              ("dflt", [{"mount": "/scratch", "kind": "ephemeral"}]), OTHER, extra=("--data", data))
    assert call(c, "eph", "write", f"/scratch/{token}", body=token.encode()) == {"ok": True}
    assert call(c, "eph", "read", f"/scratch/{token}") == {"text": token}
    m = call(c, "eph", "mounts")
    assert m["/scratch"]["type"] == "tmpfs" and "size=4096k" in m["/scratch"]["opts"], m["/scratch"]
    assert {"rw", "nosuid", "nodev"} <= set(m["/scratch"]["opts"]), m["/scratch"]
    # filling it stops at size_mib with ENOSPC
    d = call(c, "eph", "fill", "/scratch/big,64")
    assert d["error"] == "ENOSPC", d
    assert 3 << 20 <= d["written"] <= 4 << 20, d
    assert "unlink" not in d, d
    # the default size is 16 MiB
    d = call(c, "dflt", "fill", "/scratch/big,64")
    assert d["error"] == "ENOSPC" and 15 << 20 <= d["written"] <= 16 << 20, d
    # not on the host: no file of that name anywhere under the test's or coil's directories
    for root in (tmp_path, data_dir()):
        hits = [str(p) for p in Path(root).rglob(token)]
        assert not hits, f"the ephemeral file shows on the host: {hits}"
    assert not (data / "volumes").exists() or not any((data / "volumes").iterdir())
    # and the host's mount table has no such mount
    assert not any(line.split()[1].endswith("/scratch") for line in open("/proc/self/mounts"))
    assert call(c, "bystander", "pid")["pid"] > 0


def test_ephemeral_volume_is_private_to_each_instance_and_dies_with_it(coil, tmp_path):
    c = start(coil, ("eph", [{"mount": "/scratch", "kind": "ephemeral", "size_mib": 2}], {"max_instances": 1}))
    assert call(c, "eph", "write", "/scratch/kept", body=b"kept") == {"ok": True}
    assert call(c, "eph", "read", "/scratch/kept") == {"text": "kept"}  # the same instance: still there
    first = instance_host_pid(c, "eph")
    # the instance's own mount: a tmpfs of size_mib in a mount namespace of its own
    assert os.readlink(f"/proc/{first}/ns/mnt") != os.readlink(f"/proc/{c.pid}/ns/mnt")
    m = call(c, "eph", "mounts")["/scratch"]
    assert m["type"] == "tmpfs" and "size=2048k" in m["opts"], m
    # every layer still holds in an instance that made its own mount namespace
    with open(f"/proc/{first}/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    assert status["Seccomp"] == "2" and status["NoNewPrivs"] == "1", status
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0, status
    # the instance's own filter is the strict one: no second private namespace, no mount
    assert call(c, "eph", "unshare") == {"rc": -1, "error": "EPERM", "mount": "EPERM"}
    # the instance dies: the next one, forked from the same template, starts empty
    mark = c.mark()
    call(c, "eph", "exit", status=502)
    c.wait_for_line(rf"^coil: instance eph pid={first} exited \(status 3\)$", since=mark, timeout=5)
    assert call(c, "eph", "list", "/scratch") == {"entries": []}
    assert instance_host_pid(c, "eph") != first


# --------------------------------------------------------------------------
# manifest checks
# --------------------------------------------------------------------------

HEAD = '''[[function]]
name = "vol"
entrypoint = "app:handle_request"
route = "/..."
'''  # lines 1-4; the first [[function.volume]] is line 5, its keys lines 6...


def volume_table(**keys):
    return "[[function.volume]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())


BAD_VOLUMES = [
    # (id, volume tables after HEAD, line, field, message)
    ("relative-mount", volume_table(mount="data", kind="ephemeral"),
     6, "volume.mount", 'must be an absolute path (function "vol")'),
    ("root-mount", volume_table(mount="/", kind="ephemeral"),
     6, "volume.mount", 'cannot be "/" (function "vol")'),
    ("not-normalised", volume_table(mount="/data/../etc", kind="ephemeral"),
     6, "volume.mount", '"/data/../etc" must be a normalised path'),
    ("inside-usr", volume_table(mount="/usr/lib/x", kind="ephemeral"),
     6, "volume.mount", '"/usr/lib/x" is inside /usr, which the sandbox provides (function "vol")'),
    ("is-etc", volume_table(mount="/etc", kind="ephemeral"),
     6, "volume.mount", '"/etc" is inside /etc, which the sandbox provides (function "vol")'),
    ("inside-code", volume_table(mount="/code/x", kind="ephemeral"),
     6, "volume.mount", '"/code/x" is inside /code, which the sandbox provides (function "vol")'),
    ("overlap", volume_table(mount="/data", kind="ephemeral") + volume_table(mount="/data/sub", kind="ephemeral"),
     8, "volume.mount", '/data/sub overlaps the volume at /data (function "vol")'),
    ("same-mount", volume_table(mount="/data", kind="ephemeral") + volume_table(mount="/data", kind="ephemeral"),
     8, "volume.mount", '/data overlaps the volume at /data (function "vol")'),
    ("bad-kind", volume_table(mount="/data", kind="tmpfs"),
     7, "volume.kind", 'must be "readonly", "ephemeral" or "persistent", got "tmpfs" (function "vol", volume /data)'),
    ("source-missing-dir", volume_table(mount="/data", kind="readonly", source="nope"),
     8, "volume.source", '"nope" is not a directory (function "vol", volume /data)'),
    ("source-is-a-file", volume_table(mount="/data", kind="readonly", source="app.py"),
     8, "volume.source", '"app.py" is not a directory (function "vol", volume /data)'),
    ("bad-name", volume_table(mount="/data", kind="persistent", name="Bad_Name"),
     8, "volume.name", '"Bad_Name" must match [a-z0-9-]+ (function "vol", volume /data)'),
    ("name-twice", volume_table(mount="/a", kind="persistent", name="db")
     + volume_table(mount="/b", kind="persistent", name="db"),
     9, "volume.name", '"db" is used twice (function "vol")'),
    ("source-on-ephemeral", volume_table(mount="/data", kind="ephemeral", source="."),
     8, "volume.source", "is not used by a"),
    ("size-on-readonly", volume_table(mount="/data", kind="readonly", source=".", size_mib=4),
     9, "volume.size_mib", "is not used by a"),
    ("name-on-ephemeral", volume_table(mount="/data", kind="ephemeral", name="x"),
     8, "volume.name", "is not used by a"),
    ("unknown-key", volume_table(mount="/data", kind="ephemeral", colour="red"),
     8, "volume.colour", 'unknown key (function "vol")'),
    # the same FIELD convention for a missing key and an out-of-range number
    ("persistent-without-name", volume_table(mount="/data", kind="persistent"),
     5, "volume.name", "missing"),
    ("size-zero", volume_table(mount="/data", kind="ephemeral", size_mib=0),
     8, "volume.size_mib", "must be between 1 and 65536, got 0"),
]


@pytest.mark.parametrize("tables,line,field,message", [case[1:] for case in BAD_VOLUMES],
                         ids=[case[0] for case in BAD_VOLUMES])
def test_bad_volume_is_refused(coil_fail, tmp_path, tables, line, field, message):
    data = tmp_path / "data"
    before = leaked_children()
    rc, err = coil_fail({"coil.toml": HEAD + tables, "app.py": VOL_APP}, "--data", data)
    path = tmp_path / "fn" / "coil.toml"
    assert rc == 2, f"exit code {rc}, stderr:\n{err}"
    assert "listening on" not in err, err
    prefix = f"{path}:{line}: {field}: "
    lines = [l for l in err.splitlines() if l.startswith(f"{path}:")]
    assert len(lines) == 1, f"expected one '{prefix}...' line in stderr:\n{err}"
    assert lines[0].startswith(prefix + message), f"expected '{prefix}{message}...', got:\n{lines[0]}"
    assert not leaked_children(exclude=before, settle=2.0)
    assert not (data / "volumes").exists(), "a refused manifest created volume directories"
