"""Benchmark: what the metering proxy adds to every model call.

Why: every token of every contestant passes through `labctl meter`; if it slowed calls, a local
model's wall time and tokens/s in the report would be the proxy's, not the model's. Goal: < 1 ms
added median latency on non-streaming calls, and streaming throughput close to direct.

Method: the loopback fake upstream (tests/fake_upstream.py) and the meter (`python -m
labctl.cmd_meter`, transcript and status file on, as in a round) each run as their own process;
this process is the client, on one keep-alive connection per target. Direct and proxied calls are
interleaved one for one in the same run, after a warm-up, so drift hits both alike.

    .venv/bin/python benchmarks/proxy_latency.py [--requests 2000] [--streams 30] [--tokens 2000]

Exit status 1 when the added median latency is 1 ms or more.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
GOAL_MS = 1.0


def start(argv: list[str]) -> tuple[subprocess.Popen[str], str]:
    """A server process and the URL from its first stdout line ({"listening": url})."""
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"{argv[1:3]} did not start: {proc.stderr.read() if proc.stderr else ''}")
    return proc, json.loads(line)["listening"]


class Client:
    """One keep-alive HTTP/1.1 connection (http.client: the same small overhead on both sides)."""

    def __init__(self, url: str) -> None:
        u = urlsplit(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        self.headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-dummy"}

    def call(self, body: bytes) -> tuple[float, float, int]:
        """(seconds to the last byte, seconds to the first byte, bytes) of one chat completion."""
        t0 = time.perf_counter()
        self.conn.request("POST", "/v1/chat/completions", body, self.headers)
        resp = self.conn.getresponse()
        first = resp.read(1)
        t1 = time.perf_counter()
        rest = resp.read()
        t2 = time.perf_counter()
        if resp.status != 200:
            raise SystemExit(f"HTTP {resp.status}: {(first + rest)[:300]!r}")
        return t2 - t0, t1 - t0, len(first) + len(rest)


def chat(max_tokens: int, stream: bool) -> bytes:
    return json.dumps({"model": "bench", "max_tokens": max_tokens, "stream": stream,
                       "messages": [{"role": "system", "content": "You are a coding agent."},
                                    {"role": "user", "content": "List the files in /app."}]}).encode()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000, help="Non-streaming calls per target.")
    ap.add_argument("--streams", type=int, default=30, help="Streaming calls per target.")
    ap.add_argument("--tokens", type=int, default=2000, help="Tokens (SSE events) per streamed reply.")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        up, up_url = start([sys.executable, "tests/fake_upstream.py", "--port", "0",
                            "--tokens", str(args.tokens)])
        meter, meter_url = start([sys.executable, "-m", "labctl.cmd_meter", "--upstream", up_url, "--dialect",
                                  "openai", "--listen", "127.0.0.1:0", "--alias", "run-bench", "--json",
                                  "--transcript", str(Path(tmp) / "transcript.jsonl")])
        try:
            direct, proxied = Client(up_url), Client(meter_url)
            small, big = chat(16, False), chat(args.tokens, True)
            for _ in range(200):  # warm-up: connections, caches, the allocator
                direct.call(small)
                proxied.call(small)
            d_lat: list[float] = []
            p_lat: list[float] = []
            cpu0 = cpu_seconds(meter.pid)
            for i in range(args.requests):
                pair = [(direct, d_lat), (proxied, p_lat)]
                for client, out in pair if i % 2 else pair[::-1]:
                    out.append(client.call(small)[0] * 1000)
            cpu1 = cpu_seconds(meter.pid)
            d_stream: list[tuple[float, float, int]] = []
            p_stream: list[tuple[float, float, int]] = []
            for i in range(args.streams):
                pair = [(direct, d_stream), (proxied, p_stream)]
                for client, out in pair if i % 2 else pair[::-1]:
                    out.append(client.call(big))
            cpu2 = cpu_seconds(meter.pid)
            lines = (Path(tmp) / "transcript.jsonl").read_text().count("\n")
        finally:
            for proc in (meter, up):
                proc.terminate()
                proc.wait(timeout=20)

    d_med, p_med = statistics.median(d_lat), statistics.median(p_lat)
    added = p_med - d_med
    print(f"non-streaming, {args.requests} calls each (ms)   median    p90     p99")
    for label, med, xs in (("direct", d_med, d_lat), ("through the meter", p_med, p_lat)):
        print(f"  {label:<40}{med:7.3f} {pct(xs, .9):7.3f} {pct(xs, .99):7.3f}")
    print(f"  added median latency                    {added:7.3f} ms  (goal < {GOAL_MS} ms)  "
          f"ratio {p_med / d_med:.2f}x")

    def rate(runs: list[tuple[float, float, int]]) -> tuple[float, float, float]:
        secs = statistics.median(r[0] for r in runs)
        return args.tokens / secs, statistics.median(r[2] for r in runs) / secs / 1e6, \
            statistics.median(r[1] for r in runs) * 1000

    (dt, db, dttfb), (pt, pb, pttfb) = rate(d_stream), rate(p_stream)
    print(f"streaming, {args.streams} calls x {args.tokens} tokens each   tokens/s     MB/s   TTFB ms")
    print(f"  direct                                  {dt:9.0f} {db:8.2f} {dttfb:8.3f}")
    print(f"  through the meter                       {pt:9.0f} {pb:8.2f} {pttfb:8.3f}")
    print(f"  throughput ratio (meter / direct)       {pt / dt:9.2f}")
    print(f"the meter's own CPU: {(cpu1 - cpu0) / args.requests * 1000:.3f} ms per call, "
          f"{(cpu2 - cpu1) / (args.streams * args.tokens) * 1e6:.1f} µs per streamed token "
          f"({os.cpu_count()} CPUs shared by client, upstream and meter)")
    print(f"transcript records written by the meter: {lines}")
    return 0 if added < GOAL_MS else 1


if __name__ == "__main__":
    sys.exit(main())
