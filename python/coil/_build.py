"""The dependency build of coil server, run as a function in its own sandbox.

coil server deploys a function whose code has a requirements.txt by first
running this ASGI app (platform/dependencies.cc): /code is the function's
code (read-only, the working directory), /out a fresh volume
($COIL_BUILD_OUT), /wheels the server's --find-links directory when it has
one; the network reaches only the configured index,
through the sandbox's proxy. The response streams pip's output line by line
and ends with "coil-build-exit: CODE".

pip runs from Debian's python3 with --target, so what it installs is a plain
directory of packages that functions get read-only at /deps.
"""

import asyncio
import os
import shlex

PYTHON = "/usr/bin/python3"


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    code = os.getcwd()  # the function's code: /code in the sandbox
    arguments = [PYTHON, "-m", "pip", "install", "--target", os.environ["COIL_BUILD_OUT"], "--no-cache-dir",
                 "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
                 "-r", os.path.join(code, "requirements.txt")]
    arguments += shlex.split(os.environ.get("COIL_PIP_ARGS", ""))
    environment = dict(os.environ, HOME="/tmp", PYTHONUNBUFFERED="1", PIP_NO_COLOR="1")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
    await send({"type": "http.response.body", "body": ("$ pip " + " ".join(arguments[3:]) + "\n").encode(),
                "more_body": True})
    process = await asyncio.create_subprocess_exec(
        *arguments, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=environment,
        cwd=code)  # relative paths in requirements.txt are the code's
    while True:
        line = await process.stdout.readline()
        if not line:
            break
        await send({"type": "http.response.body", "body": line, "more_body": True})
    code = await process.wait()
    await send({"type": "http.response.body", "body": f"coil-build-exit: {code}\n".encode(),
                "more_body": False})
