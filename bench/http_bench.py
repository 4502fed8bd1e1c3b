#!/usr/bin/python3
"""HTTP throughput of coil against uvicorn and nginx, side by side, in one run.

    bench/http_bench.py                       # everything: coil, uvicorn, nginx; pinned and unpinned
    bench/http_bench.py --servers uvicorn,nginx --modes pinned -d 3
    bench/http_bench.py --servers coil-asgi,uvicorn --rounds 5   # a ratio robust to a noisy VM

Servers (each started by this script on a free loopback port, one at a time):
  coil             build/coil up bench/apps/hello (1 instance, Spin hello handler)
  coil-asgi        build/coil up bench/apps/asgi_coil (1 instance, the raw ASGI hello uvicorn serves)
  coil-fastapi     build/coil up bench/apps/fastapi (1 instance, the FastAPI tutorial app)
  uvicorn          Debian's uvicorn, 1 worker, --http httptools --loop uvloop, raw ASGI hello
  uvicorn-fastapi  the same uvicorn serving the FastAPI tutorial app
  nginx            Debian's nginx, 1 worker, `return 200 "Hello, world!"` (the HTTP limit here)
Modes:
  pinned   every server (and all its processes) on CPU 0, wrk on CPU 1
  unpinned no affinity set
Load: wrk -t1 -c32 -d5s --latency (keep-alive), after a 1 s warm-up run.
Rounds: --rounds N runs every server N times, interleaved (round 1 of each, then
round 2...), so that a slow spell of the machine hits both sides of a ratio.
Prints req/s, p50, p99, the servers' CPU use, the hypervisor's steal share and the
ratios coil/uvicorn, coil/nginx: with several rounds, the median of each round's
ratio and their range.
A benchmark, not a test: it never fails on a timing, only when a server does not
start or answers wrongly. Run with Debian's python (/usr/bin/python3).
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_times, steal_share

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "bench" / "apps"
BODY = b"Hello, world!"
FASTAPI_BODY = b'{"message":"Hello World"}'
SERVERS = ("coil", "coil-asgi", "coil-fastapi", "uvicorn", "uvicorn-fastapi", "nginx")
# What each server answers to GET /.
EXPECTED = {name: FASTAPI_BODY if name.endswith("fastapi") else BODY for name in SERVERS}
# The comparisons the targets are about: (coil scenario, peer).
RATIOS = (("coil", "uvicorn"), ("coil", "nginx"), ("coil-asgi", "uvicorn"), ("coil-fastapi", "uvicorn-fastapi"))
MODES = ("pinned", "unpinned")
CLK_TCK = os.sysconf("SC_CLK_TCK")
READY_RE = re.compile(rb"coil: listening on http://([0-9.]+):([0-9]+)")


class BenchError(Exception):
    pass


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def tail(path, n=20):
    try:
        lines = Path(path).read_bytes().decode(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def session_cpu_seconds(sid):
    """utime+stime of every live process in session `sid` (a server and all it forked)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        # fields[0] is field 3 (state): session is field 6, utime 14, stime 15
        if int(fields[3]) == sid:
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def session_pids(sid):
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat[stat.rfind(b")") + 2:].split()[3]) == sid:
                pids.append(int(entry))
    return pids


class Server:
    """One server process tree, started in its own session so its CPU use can be summed
    and any process it leaves behind can be found and killed by its group id."""

    def __init__(self, name, argv, port, logfile, env=None, ready_line=False):
        self.name, self.argv, self.port, self.logfile = name, argv, port, logfile
        self.env, self.ready_line = env, ready_line
        self.proc = None

    def start(self, cpu, timeout=60.0):
        argv = (["taskset", "-c", str(cpu)] if cpu is not None else []) + self.argv
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env=self.env, cwd=ROOT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with status {self.proc.returncode} before it was "
                                 f"ready; log {self.logfile}:\n{tail(self.logfile)}")
            if self.ready_line:
                m = READY_RE.search(Path(self.logfile).read_bytes())
                if m:
                    self.port = int(m.group(2))
                    if port_open(self.port):
                        break
            elif port_open(self.port):
                break
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} not ready after {timeout:.0f}s; log {self.logfile}:\n"
                                 f"{tail(self.logfile)}")
            time.sleep(0.02)
        self.check_answer()

    def check_answer(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/")
            resp = conn.getresponse()
            body = resp.read()
        except OSError as e:
            raise BenchError(f"{self.name}: GET / failed: {e}") from e
        finally:
            conn.close()
        if resp.status != 200 or body != EXPECTED[self.name]:
            raise BenchError(f"{self.name}: GET / answered {resp.status} {body[:200]!r}, "
                             f"expected 200 {EXPECTED[self.name]!r}")

    def stop(self, timeout=15.0):
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"warning: {self.name} (pid {proc.pid}) ignored SIGTERM for {timeout:.0f}s; "
                      "killing its process group", file=sys.stderr)
        # Whatever is left of the tree (it should be nothing) goes with its group.
        time.sleep(0.05)
        left = [p for p in session_pids(proc.pid) if p != proc.pid]
        if left and self.name.startswith("coil"):
            print(f"warning: coil left {len(left)} process(es) behind after exiting: {left}",
                  file=sys.stderr)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


LAT_RE = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+([0-9.]+)(us|ms|s|m)\s*$", re.M)
UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def parse_wrk(out):
    m = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if not m:
        raise BenchError(f"cannot parse wrk output:\n{out}")
    res = {"rps": float(m.group(1))}
    for pct, val, unit in LAT_RE.findall(out):
        res[f"p{pct}_ms"] = float(val) * UNIT_MS[unit]
    m = re.search(r"([0-9]+) requests in", out)
    res["requests"] = int(m.group(1)) if m else 0
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses:\s+([0-9]+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    res["errors"] = errors
    return res


def run_wrk(args, port, cpu, duration, latency=True):
    argv = (["taskset", "-c", str(cpu)] if cpu is not None else []) + [
        "wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}s"]
    if latency:
        argv.append("--latency")
    argv.append(f"http://127.0.0.1:{port}/")
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=duration + 60)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"wrk did not finish in {duration + 60}s") from e
    if p.returncode != 0:
        raise BenchError(f"wrk failed ({p.returncode}): {p.stderr.strip() or p.stdout.strip()}")
    return p.stdout


def make_server(name, args, tmp, mode, round_no=1):
    log = tmp / f"{name}-{mode}-{round_no}.log"
    coil_apps = {"coil": "hello", "coil-asgi": "asgi_coil", "coil-fastapi": "fastapi"}
    if name in coil_apps:
        port = free_port()
        return Server(name, [str(args.coil_bin), "up", str(APPS / coil_apps[name]),
                             "--listen", f"127.0.0.1:{port}"], port, log, ready_line=True)
    if name in ("uvicorn", "uvicorn-fastapi"):
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "PYENV_VERSION"}
        app_dir = APPS / ("fastapi" if name == "uvicorn-fastapi" else "asgi_hello")
        return Server(name, ["/usr/bin/python3", "-m", "uvicorn", "--app-dir", str(app_dir),
                                  "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                                  "--http", "httptools", "--loop", "uvloop", "--no-access-log",
                                  "--log-level", "warning", "main:app"], port, log, env=env)
    if name == "nginx":
        port = free_port()
        d = tmp / f"nginx-{mode}-{round_no}"
        d.mkdir()
        conf = d / "nginx.conf"
        conf.write_text(f"""\
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type text/plain;
            return 200 "Hello, world!";
        }}
    }}
}}
""")
        return Server("nginx", [args.nginx, "-p", str(d), "-e", str(d / "error.log"), "-c", str(conf)],
                      port, log)
    raise ValueError(name)


def measure(name, args, tmp, mode, servers_live, round_no=1):
    server_cpu, wrk_cpu = (args.server_cpu, args.wrk_cpu) if mode == "pinned" else (None, None)
    srv = make_server(name, args, tmp, mode, round_no)
    servers_live.append(srv)
    try:
        srv.start(server_cpu)
        if args.warmup > 0:
            run_wrk(args, srv.port, wrk_cpu, args.warmup, latency=False)
        cpu0, t0, stat0 = session_cpu_seconds(srv.proc.pid), time.monotonic(), cpu_times()
        out = run_wrk(args, srv.port, wrk_cpu, args.duration)
        cpu1, t1, stat1 = session_cpu_seconds(srv.proc.pid), time.monotonic(), cpu_times()
        if srv.proc.poll() is not None:
            raise BenchError(f"{name} died during the run; log {srv.logfile}:\n{tail(srv.logfile)}")
        res = parse_wrk(out)
        res["server_cpu_pct"] = 100.0 * (cpu1 - cpu0) / (t1 - t0)
        res["steal_pct"] = 100.0 * steal_share(stat0, stat1)
        res["wrk_output"] = out
        return res
    finally:
        srv.stop()
        servers_live.remove(srv)


def version_of(argv, pattern=None):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (p.stdout + p.stderr).strip()
    if pattern:
        m = re.search(pattern, text)
        return m.group(1) if m else "?"
    return text.splitlines()[0] if text else "?"


def machine_info():
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node()}, {os.cpu_count()} CPU ({model}), Linux {platform.release()}"


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--servers", default=",".join(SERVERS), help="comma list of %(default)s")
    ap.add_argument("--modes", default=",".join(MODES), help="comma list of %(default)s")
    ap.add_argument("-d", "--duration", type=int, default=5, help="seconds of each measured wrk run")
    ap.add_argument("--warmup", type=int, default=1, help="seconds of the warm-up wrk run (0: none)")
    ap.add_argument("--rounds", type=int, default=1, help="runs of every server, interleaved; ratios are medians")
    ap.add_argument("-c", "--connections", type=int, default=32)
    ap.add_argument("-t", "--threads", type=int, default=1, help="wrk threads")
    ap.add_argument("--server-cpu", type=int, default=0, help="CPU of the servers when pinned")
    ap.add_argument("--wrk-cpu", type=int, default=1, help="CPU of wrk when pinned")
    ap.add_argument("--coil-bin", type=Path, default=ROOT / "build" / "coil")
    ap.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    ap.add_argument("--json", type=Path, help="also write the results to this file")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir with the servers' logs")
    args = ap.parse_args()

    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    servers = [s for s in args.servers.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    for s in servers:
        if s not in SERVERS:
            ap.error(f"unknown server {s!r}")
    for m in modes:
        if m not in MODES:
            ap.error(f"unknown mode {m!r}")
    if any(s.startswith("coil") for s in servers) and not os.access(args.coil_bin, os.X_OK):
        sys.exit(f"error: {args.coil_bin} not found: build it first (./scripts/setup), "
                 "or leave coil out with --servers uvicorn,nginx")
    for tool in ["wrk", "taskset"] + (["nginx"] if "nginx" in servers else []):
        if not shutil.which(tool) and not (tool == "nginx" and os.access(args.nginx, os.X_OK)):
            sys.exit(f"error: {tool} not found: run ./scripts/setup --deps-only")
    if "pinned" in modes:
        allowed = os.sched_getaffinity(0)
        if args.server_cpu not in allowed or args.wrk_cpu not in allowed or args.server_cpu == args.wrk_cpu:
            print(f"warning: CPUs {args.server_cpu} and {args.wrk_cpu} are not two distinct usable CPUs "
                  f"(usable: {sorted(allowed)}); skipping the pinned mode", file=sys.stderr)
            modes.remove("pinned")

    servers_live = []

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    tmp = Path(tempfile.mkdtemp(prefix="coil-bench-"))
    try:
        return run_all(args, servers, modes, servers_live, tmp)
    finally:
        for srv in list(servers_live):
            srv.stop(timeout=5)
        if args.keep_tmp:
            print(f"\nlogs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run_all(args, servers, modes, servers_live, tmp):
    results, failures = {}, []  # results: (mode, server) -> one result per round
    started = datetime.datetime.now().astimezone()
    try:
        for round_no in range(1, args.rounds + 1):
            for mode in modes:
                for name in servers:
                    label = f"{mode:8} {name:15}" + (f" round {round_no}" if args.rounds > 1 else "")
                    print(f"bench: {label} ...", end="", flush=True, file=sys.stderr)
                    try:
                        res = measure(name, args, tmp, mode, servers_live, round_no)
                    except BenchError as e:
                        print(" FAILED", file=sys.stderr)
                        print(f"error: {mode} {name}: {e}", file=sys.stderr)
                        failures.append(f"{mode} {name}" + (f" round {round_no}" if args.rounds > 1 else ""))
                        continue
                    res["round"] = round_no
                    results.setdefault((mode, name), []).append(res)
                    print(f" {res['rps']:,.0f} req/s (steal {res['steal_pct']:.0f}%)", file=sys.stderr)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the servers", file=sys.stderr)
        return 130

    uvicorn_v = version_of(["/usr/bin/python3", "-c", "import uvicorn; print(uvicorn.__version__)"])
    nginx_v = version_of([args.nginx, "-v"], r"nginx/(\S+)")
    wrk_v = version_of(["wrk", "-v"], r"wrk (\S+)")
    rounds = args.rounds
    print()
    print(f"date: {started:%Y-%m-%d %H:%M %Z}; machine: {machine_info()}")
    print(f"load: wrk {wrk_v} -t{args.threads} -c{args.connections} -d{args.duration}s --latency "
          f"(keep-alive, after a {args.warmup}s warm-up); pinned: servers on CPU {args.server_cpu}, "
          f"wrk on CPU {args.wrk_cpu}" + (f"; {rounds} interleaved rounds, medians shown" if rounds > 1 else ""))
    print(f"peers: uvicorn {uvicorn_v} (httptools, uvloop, 1 worker; raw ASGI hello or the FastAPI tutorial app), "
          f"nginx {nginx_v} (1 worker, return 200)")
    print()
    spread = " req/s range |" if rounds > 1 else ""
    print(f"| mode | server | req/s |{spread} p50 ms | p99 ms | server CPU % | steal % | errors |")
    print("|---|---|---:|" + ("---:|" if rounds > 1 else "") + "---:|---:|---:|---:|---:|")
    for mode in modes:
        for name in servers:
            runs = results.get((mode, name))
            if not runs:
                print(f"| {mode} | {name} | failed |" + (" |" if rounds > 1 else "") + " | | | | |")
                continue

            def mid(key):
                values = [r[key] for r in runs if r.get(key) is not None]
                return statistics.median(values) if values else None
            rps = [r["rps"] for r in runs]
            span = f" {min(rps):,.0f}-{max(rps):,.0f} |" if rounds > 1 else ""
            print(f"| {mode} | {name} | {mid('rps'):,.0f} |{span} {fmt(mid('p50_ms'), '.3f')} | "
                  f"{fmt(mid('p99_ms'), '.3f')} | {mid('server_cpu_pct'):.0f} | {mid('steal_pct'):.0f} | "
                  f"{sum(r['errors'] for r in runs)} |")
    ratios = {}
    print()
    for mode in modes:
        parts = []
        for mine, peer in RATIOS:
            if mine not in servers or peer not in servers:
                continue
            # A ratio per round (both sides measured within one round), then their
            # median; a round where either side failed has none (None, "-").
            mine_runs = {r["round"]: r["rps"] for r in results.get((mode, mine), [])}
            peer_runs = {r["round"]: r["rps"] for r in results.get((mode, peer), [])}
            per_round = [mine_runs[k] / peer_runs[k] if k in mine_runs and peer_runs.get(k) else None
                         for k in range(1, rounds + 1)]
            measured = [x for x in per_round if x is not None]
            if not measured:
                parts.append(f"{mine}/{peer} = n/a")
                continue
            ratios[f"{mode} {mine}/{peer}"] = {"median": statistics.median(measured), "rounds": per_round}
            text = f"{mine}/{peer} = {statistics.median(measured):.2f}x"
            if rounds > 1:
                text += f" (rounds: {', '.join('-' if x is None else f'{x:.2f}' for x in per_round)})"
            parts.append(text)
        if parts:
            print(f"{mode} req/s ratios: " + "; ".join(parts))
    if any(r["errors"] for runs in results.values() for r in runs):
        print("\nnote: wrk counted errors (non-2xx answers or socket errors); see the errors column")
    if args.json:
        args.json.write_text(json.dumps({
            "date": started.isoformat(), "machine": machine_info(), "rounds": rounds,
            "wrk": {"threads": args.threads, "connections": args.connections, "duration_s": args.duration},
            "results": [{"mode": m, "server": s, **{k: v for k, v in r.items() if k != "wrk_output"}}
                        for (m, s), runs in results.items() for r in runs],
            "ratios": ratios, "failures": failures}, indent=2) + "\n")
    if failures:
        print(f"\nbench: FAILED: {', '.join(failures)}"
              + ("" if args.keep_tmp else " (rerun with --keep-tmp to keep the servers' logs)"), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
