"""Benchmark: what the metering proxy adds to every model call, next to the same calls made direct.

Why: every token of every contestant passes through `labctl meter`; if it slowed calls, a local
model's wall time and tokens/s in the report would be the proxy's, not the model's. Goals (the
medians over rounds): streams through the meter at >= 0.95x the direct throughput, non-streaming
calls with <= 0.5 ms added median latency, and not one usage record lost under concurrency.

Method: the loopback fake upstream (tests/fake_upstream.py) and the meter (`python -m
labctl.cli.meter`, transcript and status file on, as in a round) each run as their own process;
this process is the client, on one keep-alive connection per target. In every round, direct and
metered calls alternate one for one (the order flipped each time), so load from anything else on
the machine hits both alike; each round gives a ratio, and the report is the median ratio with the
range over rounds. Client, upstream and meter share this machine's CPUs (the meter is a third
process the direct path does not have), so on a busy 2-core box the ratios are pessimistic.
Last, bursts of concurrent streams go through the meter, and the transcript must hold one record
with usage for every stream the client saw complete.

    .venv/bin/python benchmarks/proxy_latency.py [--rounds 5] [--requests 500] [--streams 20]
        [--tokens 500] [--concurrent 200] [--bursts 5] [--meter-src DIR] [--max-output 500]

Exit status 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import asyncio
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
GOAL_ADDED_MS = 0.5
GOAL_STREAM_RATIO = 0.95


def start(argv: list[str], cwd: Path = ROOT) -> tuple[subprocess.Popen[str], str]:
    """A server process and the URL from its first stdout line ({"listening": url})."""
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"{argv[1:3]} did not start: {proc.stderr.read() if proc.stderr else ''}")
    return proc, json.loads(line)["listening"]


class Client:
    """One keep-alive HTTP/1.1 connection (http.client: the same small overhead on both sides)."""

    def __init__(self, url: str) -> None:
        u = urlsplit(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        self.headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-dummy"}

    def call(self, body: bytes) -> tuple[float, int]:
        """(seconds to the last byte, bytes) of one chat completion."""
        t0 = time.perf_counter()
        self.conn.request("POST", "/v1/chat/completions", body, self.headers)
        resp = self.conn.getresponse()
        data = resp.read()
        t1 = time.perf_counter()
        if resp.status != 200:
            raise SystemExit(f"HTTP {resp.status}: {data[:300]!r}")
        return t1 - t0, len(data)


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


def alternate(direct: Client, metered: Client, body: bytes, n: int) -> tuple[list[float], list[float]]:
    """n calls each, direct and metered one for one, the order flipped every pair."""
    d: list[float] = []
    m: list[float] = []
    for i in range(n):
        pair = [(direct, d), (metered, m)]
        for client, out in pair if i % 2 else pair[::-1]:
            out.append(client.call(body)[0])
    return d, m


async def bursts(url: str, body: bytes, concurrent: int, rounds: int) -> int:
    """`rounds` bursts of `concurrent` simultaneous streams; the number that completed ([DONE])."""
    import aiohttp

    done = 0
    if not rounds:
        return done
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        async def one() -> bool:
            async with s.post(url + "/v1/chat/completions", data=body,
                              headers={"Content-Type": "application/json"}) as r:
                return r.status == 200 and (await r.read()).rstrip().endswith(b"data: [DONE]")
        for _ in range(rounds):
            done += sum(await asyncio.gather(*(one() for _ in range(concurrent))))
    return done


def spread(xs: list[float], fmt: str) -> str:
    return f"{format(statistics.median(xs), fmt)}  (rounds: {format(min(xs), fmt)} .. {format(max(xs), fmt)})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="Rounds; each gives one ratio.")
    ap.add_argument("--requests", type=int, default=500, help="Non-streaming calls per target per round.")
    ap.add_argument("--streams", type=int, default=20, help="Streaming calls per target per round.")
    ap.add_argument("--tokens", type=int, default=500, help="Tokens (SSE events) per streamed reply.")
    ap.add_argument("--concurrent", type=int, default=200, help="Simultaneous streams per burst.")
    ap.add_argument("--bursts", type=int, default=5, help="Bursts of concurrent streams (0: none).")
    ap.add_argument("--max-output", type=int, default=None,
                    help="The meter holds every call to this many output tokens and the streams ask for "
                         "32000 (qwen-code's max_tokens), so each metered stream is clamped; give it "
                         "--tokens, so both targets stream the same length.")
    ap.add_argument("--meter-src", type=Path, default=ROOT,
                    help="Source tree whose meter runs (e.g. an older commit's, for before/after).")
    args = ap.parse_args()

    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        transcript = Path(tmp) / "transcript.jsonl"
        up, up_url = start([sys.executable, "tests/fake_upstream.py", "--port", "0",
                            "--tokens", str(args.tokens)])
        meter, meter_url = start([sys.executable, "-m", "labctl", "meter", "--upstream", up_url, "--dialect",
                                  "openai", "--listen", "127.0.0.1:0", "--alias", "run-bench", "--json",
                                  "--transcript", str(transcript),
                                  *(["--max-output", str(args.max_output)] if args.max_output else [])],
                                 cwd=args.meter_src.resolve())
        try:
            direct, metered = Client(up_url), Client(meter_url)
            small, big = chat(16, False), chat(32000 if args.max_output else args.tokens, True)
            alternate(direct, metered, small, 200)  # warm-up: connections, caches, the allocator
            alternate(direct, metered, big, 3)
            added: list[float] = []
            lat_ratio, d_meds, m_meds, tput_ratio, d_tps, m_tps, cpu_call, cpu_tok = ([] for _ in range(8))
            for _ in range(args.rounds):
                c0 = cpu_seconds(meter.pid)
                d, m = alternate(direct, metered, small, args.requests)
                c1 = cpu_seconds(meter.pid)
                d_meds.append(statistics.median(d) * 1000)
                m_meds.append(statistics.median(m) * 1000)
                added.append(m_meds[-1] - d_meds[-1])
                lat_ratio.append(m_meds[-1] / d_meds[-1])
                ds, ms = alternate(direct, metered, big, args.streams)
                c2 = cpu_seconds(meter.pid)
                d_tps.append(args.tokens / statistics.median(ds))
                m_tps.append(args.tokens / statistics.median(ms))
                tput_ratio.append(m_tps[-1] / d_tps[-1])
                cpu_call.append((c1 - c0) / args.requests * 1000)
                cpu_tok.append((c2 - c1) / (args.streams * args.tokens) * 1e6)
            completed = asyncio.run(bursts(meter_url, big, args.concurrent, args.bursts))
        finally:
            for proc in (meter, up):
                proc.terminate()  # SIGTERM: the meter writes out every queued record first
                proc.wait(timeout=60)
        recs = [json.loads(line) for line in transcript.read_text().splitlines()]
    calls = 200 + 3 + args.rounds * (args.requests + args.streams)  # one by one, then the bursts
    exchanges = [r for r in recs if r.get("kind") == "exchange"]
    with_usage = sum(1 for r in exchanges if r.get("usage") and r.get("status") == 200)
    burst_recs = sum(1 for r in exchanges[calls:] if r.get("stream") and r.get("usage"))
    lost = (calls + completed) - with_usage
    load1 = os.getloadavg()

    print(f"machine: {os.cpu_count()} CPUs shared by client, upstream and meter; load average "
          f"{load0[0]:.1f} at start, {load1[0]:.1f} at end (other work on the machine skews both targets)")
    print(f"meter: {args.meter_src.resolve()}; {args.rounds} rounds, medians per round, then the median "
          "of the rounds and their range"
          + (f"; max_output {args.max_output} (every stream clamped from 32000)" if args.max_output else ""))
    print(f"\nnon-streaming: {args.requests} calls per target per round, ms to the last byte")
    print(f"  direct median                 {spread(d_meds, '.3f')}")
    print(f"  through the meter median      {spread(m_meds, '.3f')}")
    print(f"  added median latency          {spread(added, '.3f')} ms   goal <= {GOAL_ADDED_MS} ms")
    print(f"  latency ratio (meter/direct)  {spread(lat_ratio, '.2f')}")
    print(f"\nstreaming: {args.streams} calls x {args.tokens} SSE events per target per round, "
          "tokens/s to the last byte")
    print(f"  direct                        {spread(d_tps, '.0f')}")
    print(f"  through the meter             {spread(m_tps, '.0f')}")
    print(f"  throughput ratio (meter/direct) {spread(tput_ratio, '.2f')}   goal >= {GOAL_STREAM_RATIO}")
    print(f"\nthe meter's own CPU: {spread(cpu_call, '.3f')} ms per call; "
          f"{spread(cpu_tok, '.1f')} µs per streamed token")
    if args.bursts:
        print(f"\nconcurrency: {args.bursts} bursts x {args.concurrent} simultaneous streams: {completed} "
              f"completed, {burst_recs} stream records with usage")
    print(f"usage records: {with_usage} for {calls + completed} completed metered calls; lost: {lost}")
    ok = statistics.median(added) <= GOAL_ADDED_MS and statistics.median(tput_ratio) >= GOAL_STREAM_RATIO
    return 0 if ok and lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
