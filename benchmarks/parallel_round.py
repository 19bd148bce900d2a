"""A round of K runs one after another vs `labctl run --parallel K`, on the smoke lab's CPU-light
controls (oracle and nop, K/2 repeats each), plus one run alone as the yardstick.

Goals (issues #16, #27): K parallel runs take ≤ 1.5× one run for K = 4 on a 2-core machine, and the
harness's own time per run (a run's wall time outside the agent) stays within 2× the floor of the
containers a run starts (that many `docker run --rm` of the base image, measured in the same sitting).
Run from the repository root after `make demo` has locked and built the smoke lab: `python
benchmarks/parallel_round.py [K]` (default 4). Prints the times, the ratios and where a run's time
goes (the run path's `LABCTL_TIMINGS` spans, labctl/engine/timings.py); asserts nothing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from labctl.agents.endings import read_json
from labctl.lock.lockfile import lock_path, read_lock, write_lock
from labctl.lock.resolve import require_lock, spec_sha256
from labctl.round.layout import read_result, read_sealed
from labctl.round.seal import seal_round
from labctl.spec.load import load_lab
from labctl.treehash import tree_sha256

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "labs" / "smoke.yaml"
CONTROLS = "  - id: oracle\n    kind: oracle\n  - id: nop\n    kind: nop\n"


def controls_lab(tmp: Path, repeats: int, contestants: str = CONTROLS) -> Path:
    """The smoke lab with only controls and `repeats`, locked from labs/smoke.lock (offline)."""
    task = ROOT / "tasks" / "smoke-hello"
    text = SMOKE.read_text().replace("path: ../tasks/smoke-hello", f"path: {task}")
    text = re.sub(r"^  repeats: .*$", f"  repeats: {repeats}", text, flags=re.M)
    lab = tmp / "lab.yaml"
    lab.write_text(text[: text.index("contestants:")] + "contestants:\n" + contestants)
    base = read_lock(lock_path(SMOKE))
    lock = base.model_copy(update={
        "spec_sha256": spec_sha256(load_lab(lab)), "models": {},
        "task": base.task.model_copy(update={"path": str(task), "tree_sha256": tree_sha256(task)})})
    write_lock(lock_path(lab), lock)
    return lab


def timed_round(lab: Path, rounds: Path, parallel: int, timings: Path | None = None) -> tuple[float, Path]:
    loaded = load_lab(lab)
    rd = seal_round(loaded, require_lock(loaded), rounds).round_dir
    env = {**os.environ, **({"LABCTL_TIMINGS": str(timings)} if timings else {})}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "labctl", "run", str(rd), "--lab", str(lab), "--parallel",
                    str(parallel)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t, rd


CONTAINER_SPANS = ("container create", "verifier container")
"""The spans that each start one container of a run (the iptables helper, not root, is another)."""


def breakdown(timings: Path) -> tuple[dict[str, float], float]:
    """Mean seconds per run of each span (spans of one worker process belong to its run), and the
    containers a run starts."""
    runs: dict[int, str] = {}
    lines = [json.loads(ln) for ln in timings.read_text().splitlines()] if timings.is_file() else []
    for ln in lines:
        if ln["run"]:
            runs.setdefault(ln["pid"], ln["run"])
    n = max(1, len(set(runs.values())))
    per: dict[str, float] = {}
    containers = 0
    for ln in lines:
        per[ln["span"]] = per.get(ln["span"], 0.0) + ln["s"] / n
        containers += ln["span"] in CONTAINER_SPANS
    return per, containers / n


def harness_overhead(rd: Path) -> float:
    """Mean seconds per run outside the agent: the run's recorded span less the agent's wall time."""
    spans = []
    for rid in read_sealed(rd).run_ids:
        res = read_result(rd, rid)
        agent = (read_json(rd / "runs" / rid / "metrics.json") or {}).get("wall_time_s") or 0.0
        if res.started and res.ended:
            spans.append((res.ended - res.started).total_seconds() - float(agent))
    return sum(spans) / max(1, len(spans))


def container_floor() -> float:
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run(["docker", "run", "--rm", "debian:bookworm-slim", "true"], check=True,
                       stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> int:
    k = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    if not lock_path(SMOKE).exists():
        print("labs/smoke.lock is missing: run `make demo` first", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        os.environ.setdefault("LABCTL_ENVELOPES", str(tmp / "envelopes"))
        (tmp / "one").mkdir()
        (tmp / "k").mkdir()
        one_lab = controls_lab(tmp / "one", 1, "  - id: oracle\n    kind: oracle\n")
        k_lab = controls_lab(tmp / "k", max(1, k // 2))
        subprocess.run([sys.executable, "-m", "labctl", "build", str(k_lab)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        one, _ = timed_round(one_lab, tmp / "rounds", 1)
        seq, _ = timed_round(k_lab, tmp / "rounds", 1)
        par, rd = timed_round(k_lab, tmp / "rounds", k, tmp / "timings.jsonl")
        floor = container_floor()
        overhead = harness_overhead(rd)
        spans, containers = breakdown(tmp / "timings.jsonl")
    n = 2 * max(1, k // 2)
    print(f"one run:                 {one:7.1f} s")
    print(f"{n} runs sequential:      {seq:7.1f} s")
    print(f"{n} runs --parallel {k}:    {par:7.1f} s")
    print(f"speed-up (seq / par):    {seq / par:7.2f}x")
    print(f"parallel / one run:      {par / one:7.2f}x   (goal ≤ 1.5 for K = 4)")
    print(f"harness time per run:    {overhead:7.1f} s   container start floor {floor:.2f} s "
          f"→ {overhead / floor:.1f}x one container")
    if containers:
        print(f"containers per run:      {containers:7.1f}     their floor {containers * floor:.2f} s "
              f"→ {overhead / (containers * floor):.1f}x (goal ≤ 2)")
        print(f"where a run's time goes (--parallel {k}, mean s per run; nested spans overlap):")
        for name, s in spans.items():
            print(f"  {name:24s} {s:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
