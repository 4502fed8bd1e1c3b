"""Output floods (security guide: "print 1 GB to stdout"): the log is
rate-limited, every line is either logged or counted as dropped, and the host
keeps serving."""

import re

from conftest import fn_toml, manifest

FLOOD_APP = '''
import sys
from spin_http import Response

LINE = "x" * 1023 + "\\n"   # 1 KiB per line

def handle_request(request):
    path = request.uri.split("?")[0]
    if path == "/flood":
        for _ in range(200):            # 200 MiB in 200 writes
            sys.stdout.write(LINE * 1024)
        sys.stdout.flush()
        return Response(200, None, "flooded")
    print("after the flood", flush=True)
    return Response(200, None, "ok")
'''


def test_output_flood_is_rate_limited_and_accounted(coil):
    c = coil({"coil.toml": manifest(fn_toml("flood", "/...", timeout_ms=120000)), "app.py": FLOOD_APP})
    mark = c.mark()
    r = c.get("/flood", timeout=120)
    assert r.status == 200, r
    assert c.get("/").status == 200
    c.wait_for_line(r"^\[flood pid=\d+\] after the flood$", since=mark, timeout=30)
    # What was dropped is reported at most once a second (and a second after output
    # stops): wait, line by line, until every line printed is accounted for.
    printed = 200 * 1024
    while True:
        lines = c.lines[mark:]
        logged = sum(1 for line in lines if re.match(r"^\[flood pid=\d+\] x{1023}$", line))
        summaries = [m for m in (re.match(r"^\[flood pid=\d+\] coil: (\d+) lines \((\d+) bytes\) of output "
                                          r"dropped", line) for line in lines) if m]
        dropped = sum(int(m.group(1)) for m in summaries)
        if logged + dropped >= printed:
            break
        c.wait_for_lines(r"", len(lines) + 1, since=mark, timeout=10)  # the next line, whatever it is
    assert dropped > 0, "no line says output was dropped"
    assert logged + dropped == printed, (logged, dropped)
    assert logged < printed // 10, f"{logged} of {printed} lines reached the log"
    assert len(summaries) <= 10, f"{len(summaries)} notices of dropped output: one a second at most"
