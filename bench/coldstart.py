#!/usr/bin/python3
"""Cold start, creation rate, memory per instance and density (issue 5), with
the full sandbox on (run as root).

One command: `bench/coldstart.py` (about two minutes; `--help` for options).
Prints Markdown ready for bench/RESULTS.md. Nothing passes or fails here.

Scenarios, each against a fresh `build/coil up` on loopback:
  cold start      the function is running (template ready) but no instance is alive;
                  time from sending a request (on an open keep-alive connection) to the
                  first byte of the response. `idle_timeout_ms = 1` makes every instance
                  exit after its request; the next sample waits for that exit in coil's log.
                  Peer: `uvicorn main:app` from process start to its first response.
  creation rate   a burst of N requests at a function with max_instances = N whose
                  handler holds each request: every request starts an instance. Each
                  instance records when its after_restore hook ran (CLOCK_REALTIME);
                  rate = N / (last start - burst sent). Also printed: the share of the busy CPU
                  time the hypervisor stole for other guests meanwhile (on a VM; figures
                  taken under much steal say little about coil).
  memory          Private_Clean + Private_Dirty (/proc/PID/smaps_rollup) of an idle
                  instance after it served 100 requests.
  density         F functions x K idle instances (min_instances = K), total memory
                  (MemAvailable before/after), and the hello handler's throughput with
                  them alive against the same coil before they start.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from machine import cpu_times, steal_share

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COIL = os.path.join(REPO, "build", "coil")
APPS = os.path.join(REPO, "bench", "apps")
LISTEN_RE = re.compile(r"^coil: listening on http://127\.0\.0\.1:(\d+)$")

BURST_APP = '''
import os, time
import coil
from spin_http import Response

STARTED = [0.0]

@coil.after_restore
def started():
    STARTED[0] = time.time()

def handle_request(request):
    time.sleep(float(os.environ.get("HOLD", "0.5")))
    return Response(200, None, repr(STARTED[0]))
'''


class Coil:
    """build/coil up DIR on a free port; its stderr is read by a thread."""

    def __init__(self, directory, *extra):
        self.lines = []
        self.cond = threading.Condition()
        self.proc = subprocess.Popen([COIL, "up", directory, "--listen", "127.0.0.1:0", *extra],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()
        m = self.wait(LISTEN_RE, timeout=600)
        self.port = int(m.group(1))

    def _read(self):
        for raw in self.proc.stderr:
            with self.cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.lines.append(None)
            self.cond.notify_all()

    def wait(self, regex, since=0, timeout=30.0, count=1):
        rx = re.compile(regex) if isinstance(regex, str) else regex
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [m for m in (rx.search(l) for l in self.lines[since:] if l is not None) if m]
                if len(found) >= count:
                    return found[count - 1]
                if None in self.lines:
                    raise RuntimeError("coil exited:\n" + "\n".join(l for l in self.lines[-20:] if l))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"timed out waiting for {regex!r}:\n" +
                                       "\n".join(l for l in self.lines[-20:] if l))
                self.cond.wait(left)

    def mark(self):
        with self.cond:
            return len(self.lines)

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def function(name, route, entrypoint, source, **opts):
    lines = ["[[function]]", f'name = "{name}"', f'entrypoint = "{entrypoint}"', f'route = "{route}"',
             f'source = "{source}"']
    env = opts.pop("env", None)
    lines += [f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in opts.items()]
    if env:
        lines.append("[function.environment]")
        lines += [f'{k} = "{v}"' for k, v in env.items()]
    return "\n".join(lines) + "\n\n"


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def first_byte_ms(port, path="/", sock=None):
    """Sends GET `path` on `sock` (opened if None) and returns (ms to first byte, sock)."""
    if sock is None:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    start = time.perf_counter()
    sock.sendall(request)
    first = sock.recv(1)
    elapsed = (time.perf_counter() - start) * 1000
    if not first:
        raise RuntimeError("connection closed")
    sock.settimeout(5)
    head, _ = read_response(sock, first)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode(errors="replace"))
    return elapsed, sock


def read_response(sock, data=b""):
    """Reads one response with a Content-Length (coil's and uvicorn's small answers):
    (head, body). `data`: bytes of it already read."""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        body += sock.recv(65536)
    return head, body


def cold_start(tmp, name, entrypoint, source, samples, *extra):
    d = os.path.join(tmp, f"cold-{name}{'-nosandbox' if extra else ''}")
    write(os.path.join(d, "coil.toml"),
          function(name, "/...", entrypoint, source, min_instances=0, max_instances=1, idle_timeout_ms=1))
    coil = Coil(d, *extra)
    times = []
    sock = None
    try:
        # one warm-up, not counted
        for i in range(samples + 1):
            mark = coil.mark()
            ms, sock = first_byte_ms(coil.port, sock=sock)
            coil.wait(rf"^coil: instance {name} pid=\d+ exited \(idle\)$", since=mark, timeout=30)
            if i > 0:
                times.append(ms)
    finally:
        if sock:
            sock.close()
        coil.stop()
    return times


def uvicorn_start(app_dir, module, runs):
    """ms from `uvicorn` process start to its first 200 response."""
    times = []
    for _ in range(runs):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        start = time.perf_counter()
        proc = subprocess.Popen(["/usr/bin/python3", "-m", "uvicorn", module, "--port", str(port), "--http",
                                 "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning"],
                                cwd=app_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            while True:
                try:
                    ms_unused, sock = first_byte_ms(port)
                    sock.close()
                    break
                except (ConnectionRefusedError, ConnectionResetError):
                    time.sleep(0.001)
            times.append((time.perf_counter() - start) * 1000)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return times


def creation_rate(tmp, burst, *extra):
    d = os.path.join(tmp, "burst" + "".join(extra).replace("-", "_"))
    write(os.path.join(d, "app.py"), BURST_APP)
    os.chmod(d, 0o755)
    write(os.path.join(d, "coil.toml"),
          function("burst", "/...", "app:handle_request", d, max_instances=burst, max_queue=burst,
                   timeout_ms=60000, env={"HOLD": "1.0"}))
    coil = Coil(d, *extra)
    try:
        socks = []
        for _ in range(burst):
            s = socket.create_connection(("127.0.0.1", coil.port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks.append(s)
        request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
        times_before = cpu_times()
        sent = time.time()
        for s in socks:
            s.sendall(request)
        starts = []
        for s in socks:
            s.settimeout(60)
            _head, body = read_response(s)
            if not starts:
                times_after = cpu_times()  # the burst is over by the first answer (each is held 1 s)
            starts.append(float(body))
            s.close()
        instances = len(set(starts))
        last = max(starts) - sent
        return instances, last, steal_share(times_before, times_after)
    finally:
        coil.stop()


def private_kib(pid):
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total


def memory(tmp, name, entrypoint, source, requests):
    d = os.path.join(tmp, f"mem-{name}")
    write(os.path.join(d, "coil.toml"), function(name, "/...", entrypoint, source, min_instances=1, max_instances=1))
    coil = Coil(d)
    try:
        pid = int(coil.wait(rf"^coil: instance {name} pid=(\d+) started$").group(1))
        sock = None
        for _ in range(requests):
            _, sock = first_byte_ms(coil.port, sock=sock)
        sock.close()
        return private_kib(pid)
    finally:
        coil.stop()


def mem_available_kib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def wrk(port, seconds):
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, check=True).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def density(tmp, functions, per_function):
    d = os.path.join(tmp, "density")
    hello = os.path.join(APPS, "hello")
    text = function("hello", "/...", "app:handle_request", hello, min_instances=1, max_instances=1)
    for i in range(functions):
        text += function(f"idle-{i}", f"/idle/{i}/...", "app:handle_request", hello,
                         min_instances=per_function, max_instances=per_function, idle_timeout_ms=3600000)
    write(os.path.join(d, "coil.toml"), text)
    before = mem_available_kib()
    started = time.monotonic()
    coil = Coil(d)
    try:
        coil.wait(r"^coil: instance idle-\d+ pid=\d+ started$", count=functions * per_function, timeout=900)
        ready_s = time.monotonic() - started
        time.sleep(2)  # let the cgroup pool refill and the page cache settle before reading memory
        used_mib = (before - mem_available_kib()) / 1024
        rps = wrk(coil.port, 5)
        return ready_s, used_mib, rps
    finally:
        coil.stop()


def baseline_rps(tmp):
    d = os.path.join(tmp, "baseline")
    write(os.path.join(d, "coil.toml"), function("hello", "/...", "app:handle_request", os.path.join(APPS, "hello"),
                                                 min_instances=1, max_instances=1))
    coil = Coil(d)
    try:
        coil.wait(r"^coil: instance hello pid=\d+ started$")
        return wrk(coil.port, 5)
    finally:
        coil.stop()


def dist(values):
    return (f"p50 {percentile(values, 50):.2f} ms, p90 {percentile(values, 90):.2f} ms, "
            f"p99 {percentile(values, 99):.2f} ms, min {min(values):.2f} ms, n={len(values)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=100, help="cold starts per function (default 100)")
    parser.add_argument("--uvicorn-runs", type=int, default=5)
    parser.add_argument("--burst", type=int, default=200, help="instances in the creation-rate burst")
    parser.add_argument("--rate-runs", type=int, default=1,
                        help="creation-rate bursts (each with a fresh coil); with more than one, every "
                             "rate and their median are printed (default 1)")
    parser.add_argument("--functions", type=int, default=200, help="density: functions")
    parser.add_argument("--per-function", type=int, default=10, help="density: idle instances per function")
    parser.add_argument("--only", default="cold,rate,memory,density")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root, so that the full sandbox is on", file=sys.stderr)
    only = set(args.only.split(","))
    tmp = tempfile.mkdtemp(prefix="coil-coldstart-")
    os.chmod(tmp, 0o755)
    try:
        print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
              f"{os.cpu_count()} CPU; sandbox on: {os.geteuid() == 0}")
        if "cold" in only:
            for name, entry, app, module in (("hello", "app:handle_request", "hello", None),
                                             ("fastapi", "main:app", "fastapi", "main:app")):
                times = cold_start(tmp, name, entry, os.path.join(APPS, app), args.samples)
                print(f"cold start, {name}: {dist(times)}")
                bare = cold_start(tmp, name, entry, os.path.join(APPS, app), args.samples, "--no-sandbox")
                print(f"cold start, {name}, --no-sandbox (for what the sandbox costs): {dist(bare)}")
                if module:
                    up = uvicorn_start(os.path.join(APPS, app), module, args.uvicorn_runs)
                    print(f"uvicorn {module} start to first response: {dist(up)}")
                    print(f"ratio uvicorn start p50 / coil cold start p50: "
                          f"{percentile(up, 50) / percentile(times, 50):.0f}x")
            hello_up = uvicorn_start(os.path.join(APPS, "asgi_hello"), "main:app", args.uvicorn_runs)
            print(f"uvicorn raw ASGI hello start to first response: {dist(hello_up)}")
        if "rate" in only:
            rates = []
            for _ in range(max(1, args.rate_runs)):
                instances, last, steal = creation_rate(tmp, args.burst)
                rates.append((instances / last, steal))
                print(f"creation rate: {instances} instances started within {last * 1000:.0f} ms of the burst: "
                      f"{instances / last:.0f} instances/s (steal: {steal:.0%} of the busy CPU time)")
            if len(rates) > 1:
                print(f"creation rate over {len(rates)} bursts: median {statistics.median(r for r, _ in rates):.0f} "
                      f"instances/s; each: {', '.join(f'{r:.0f} (steal {st:.0%})' for r, st in rates)}")
            instances, last, steal = creation_rate(tmp, args.burst, "--no-sandbox")
            print(f"creation rate, --no-sandbox (for what the sandbox costs): {instances} instances started "
                  f"within {last * 1000:.0f} ms of the burst: {instances / last:.0f} instances/s "
                  f"(steal: {steal:.0%})")
        if "memory" in only:
            for name, entry, app in (("hello", "app:handle_request", "hello"), ("fastapi", "main:app", "fastapi")):
                kib = memory(tmp, name, entry, os.path.join(APPS, app), 100)
                print(f"memory, {name}: private {kib / 1024:.2f} MiB per idle instance after 100 requests")
        if "density" in only:
            base = baseline_rps(tmp)
            ready_s, used_mib, rps = density(tmp, args.functions, args.per_function)
            n = args.functions * args.per_function
            print(f"density: {n} idle instances across {args.functions} functions ready in {ready_s:.1f} s; "
                  f"memory used {used_mib:.0f} MiB ({used_mib * 1024 / n:.0f} KiB per instance, templates "
                  f"included); hello throughput {rps:,.0f} req/s with them vs {base:,.0f} req/s without "
                  f"({rps / base:.2f}x)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
