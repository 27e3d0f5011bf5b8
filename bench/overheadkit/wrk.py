"""Drive wrk with a generated Lua script and read back one machine-readable summary line.

wrk is used instead of a Python load generator because a Python client saturates a core at a few
thousand requests/s, which is below what the zero-latency simulator serves: the generator would be
what gets measured. wrk's `done` hook reports exact latency percentiles in microseconds, so nothing
is parsed out of its human-readable "1.23ms" output.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_MARK = "WRK_RESULT "

# Counting statuses and checking bodies in Lua costs wrk a little throughput (it must hand every
# body to Lua), but it is the only way to count *all* non-2xx answers: wrk's own counter only sees
# status >= 400, so a redirect or an empty 200 from a misconfigured proxy would otherwise pass.
_LUA_TEMPLATE = """
wrk.method = "POST"
wrk.body = {body}
{headers}
local threads = {{}}
function setup(thread)
  table.insert(threads, thread)
end
non2xx = 0
bad_body = 0
function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  elseif not ({body_checks}) then
    bad_body = bad_body + 1
  end
end
function done(summary, latency, requests)
  local n, b = 0, 0
  for _, t in ipairs(threads) do
    n = n + t:get("non2xx")
    b = b + t:get("bad_body")
  end
  local e = summary.errors
  io.write(string.format(
    '{mark}{{"requests":%d,"duration_us":%d,"non2xx":%d,"bad_body":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"timeout":%d,"p50_us":%.1f,"p99_us":%.1f}}\\n',
    summary.requests, summary.duration, n, b, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    non2xx: int
    bad_body: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    wrk_cpu_s: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def valid(self) -> bool:
        """A run counts only if every response was a 2xx with the expected body and no socket failed."""
        return self.requests > 0 and self.non2xx == 0 and self.bad_body == 0 and self.socket_errors == 0


def _lua_string(text: str) -> str:
    """A Lua long-bracket literal: no escaping needed as long as the closing bracket is absent."""
    level = "=" * 3
    if f"]{level}]" in text:
        raise ValueError("text collides with the Lua long-string delimiter")
    return f"[{level}[{text}]{level}]"


def write_script(path: Path, body: str, headers: Mapping[str, str], body_markers: Sequence[str]) -> None:
    """Write the Lua script: POST `body` with `headers`; a 2xx body must contain every marker."""
    # The spaces inside the brackets matter: "[[" would open a Lua long string.
    header_lines = "\n".join(
        f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in headers.items()
    )
    checks = " and ".join(f"string.find(body, {_lua_string(m)}, 1, true)" for m in body_markers) or "true"
    path.write_text(
        _LUA_TEMPLATE.format(body=_lua_string(body), headers=header_lines, body_checks=checks, mark=_MARK)
    )


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run(url: str, script: Path, *, connections: int, threads: int, duration_s: float) -> WrkResult:
    """Run one wrk measurement and return its summary; raises RuntimeError if wrk itself failed."""
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        # A slow proxy at c=50 can exceed wrk's 2 s default; a timeout would be a socket error.
        "--timeout",
        "60s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    before = _children_cpu_s()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}: {proc.stderr.strip() or proc.stdout[-500:]}")
    return _parse(proc.stdout, proc.stderr, wrk_cpu_s=_children_cpu_s() - before)


def _children_cpu_s() -> float:
    # wrk is the only child this script reaps while a measurement runs, so the delta is wrk's CPU.
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _parse(stdout: str, stderr: str, *, wrk_cpu_s: float) -> WrkResult:
    for line in stdout.splitlines():
        if line.startswith(_MARK):
            data = json.loads(line[len(_MARK) :])
            break
    else:
        raise RuntimeError(f"wrk printed no summary line (Lua script error?): {stderr.strip()[-300:]}")
    return WrkResult(
        requests=int(data["requests"]),
        duration_s=int(data["duration_us"]) / 1e6,
        non2xx=int(data["non2xx"]),
        bad_body=int(data["bad_body"]),
        socket_errors=sum(int(data[k]) for k in ("connect", "read", "write", "timeout")),
        p50_ms=float(data["p50_us"]) / 1000,
        p99_ms=float(data["p99_us"]) / 1000,
        wrk_cpu_s=wrk_cpu_s,
    )
