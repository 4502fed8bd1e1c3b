#!/usr/bin/python3
"""Instructions per FastAPI request: Debian's /usr/bin/python3.11 against its
libpython3.11.so embedded in a program, as coil's runtime once ran Python.

Why coil starts functions on /usr/bin/python3.11 (src/python/command_line.h):
Debian links that program statically, built with profile-guided and link-time
optimisation, and ships the shared library without them. This measures the
difference with callgrind, which counts instructions exactly: the timings of
this VM are too noisy for a 10-20% difference. Each interpreter runs the
FastAPI tutorial app (bench/apps/fastapi/main.py) in-process, N and 3N times
through its ASGI callable; the difference of the two counts, over 2N, is the
cost of one request, free of start-up and imports.

    bench/interpreter_cost.py            # ~1 minute; needs valgrind and gcc
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

EMBED_C = r"""
#include <Python.h>
int main(int argc, char** argv) {
  PyConfig config;
  PyConfig_InitPythonConfig(&config);
  PyConfig_SetBytesArgv(&config, argc, argv);
  Py_InitializeFromConfig(&config);
  return Py_RunMain();
}
"""

WORKLOAD = r"""
import asyncio, sys
sys.path.insert(0, sys.argv[1])
from main import app
scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
         "method": "GET", "scheme": "http", "path": "/", "raw_path": b"/", "query_string": b"",
         "root_path": "", "headers": [(b"host", b"x")], "client": ("127.0.0.1", 1),
         "server": ("127.0.0.1", 2)}
async def receive():
    return {"type": "http.request", "body": b"", "more_body": False}
async def send(message):
    pass
async def serve(n):
    for _ in range(n):
        await app(dict(scope), receive, send)
asyncio.run(serve(int(sys.argv[2])))
"""


def instructions(program, script, app_dir, requests):
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                          program, script, app_dir, str(requests)],
                         capture_output=True, text=True, check=True).stderr
    return int(re.search(r"Collected : (\d+)", out).group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--requests", type=int, default=1000, help="N (the runs serve N and 3N requests)")
    args = parser.parse_args()
    for tool in ("valgrind", "gcc"):
        if shutil.which(tool) is None:
            sys.exit(f"interpreter_cost: {tool} is missing (apt-get install {tool})")
    app_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps", "fastapi")
    with tempfile.TemporaryDirectory(prefix="coil-interp-") as tmp:
        source, embedded, script = (os.path.join(tmp, f) for f in ("embed.c", "embedded-python", "workload.py"))
        with open(source, "w") as f:
            f.write(EMBED_C)
        with open(script, "w") as f:
            f.write(WORKLOAD)
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "python-3.11-embed"],
                               capture_output=True, text=True, check=True).stdout.split()
        subprocess.run(["gcc", "-O2", source, "-o", embedded, *flags], check=True)
        n = args.requests
        rows = []
        for name, program in (("/usr/bin/python3.11 (static, PGO+LTO)", "/usr/bin/python3.11"),
                              ("libpython3.11.so embedded", embedded)):
            per_request = (instructions(program, script, app_dir, 3 * n) -
                           instructions(program, script, app_dir, n)) / (2 * n)
            rows.append((name, per_request))
        base = rows[0][1]
        print("| interpreter | instructions per FastAPI request | vs python3.11 |")
        print("|---|---:|---:|")
        for name, per_request in rows:
            print(f"| {name} | {per_request:,.0f} | {per_request / base:.2f}x |")


if __name__ == "__main__":
    main()
