"""`labctl run --parallel N` against a real Docker engine: runs really overlap, the round verifies,
and Ctrl-C, a kill -9 (then resume) and `labctl down` work with runs in flight.

oracle + nop, two repeats each (four runs); the oracle's solution and the verifier sleep a few
seconds so runs are still in flight when the test acts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labctl.engine.container import detect_engine
from labctl.round.layout import FINISHED, read_result, read_unsealed
from labctl.round.seal import unseal_round
from labctl.treehash import tree_sha256
from tests.helpers import verify_passes as verify
from tests.run.test_runner import build, derived_lab, labctl, labelled_now, runner_env, seal

pytestmark = pytest.mark.docker
__all__ = ["runner_env"]  # the module fixture of test_runner: envelopes, scratch, the smoke lock

CONTESTANTS = "  - id: oracle\n    kind: oracle\n  - id: nop\n    kind: nop\n"
WAIT_S = 180


def repeated_lab(tmp: Path, sleep: int = 6, repeats: int = 2) -> Path:
    """oracle + nop × `repeats`, on a copy of the smoke task whose solution and verifier sleep."""
    from labctl.lock.lockfile import lock_path, read_lock, write_lock

    root = Path(__file__).resolve().parents[2]
    solve = (root / "tasks" / "smoke-hello" / "solution" / "solve.sh").read_text().replace(
        "set -euo pipefail\n", f"set -euo pipefail\nsleep {sleep}\n", 1)
    lab = derived_lab(tmp, CONTESTANTS, wall="2m", solve=solve)
    test_sh = tmp / "task" / "tests" / "test.sh"
    test_sh.write_text(test_sh.read_text().replace("set -u\n", "set -u\nsleep 2\n", 1))
    lock = read_lock(lock_path(lab))
    write_lock(lock_path(lab), lock.model_copy(update={
        "task": lock.task.model_copy(update={"tree_sha256": tree_sha256(tmp / "task")})}))
    lab.write_text(lab.read_text().replace("  repeats: 1\n", f"  repeats: {repeats}\n"))
    build(lab)
    return lab


def agents(round_id: str) -> list[str]:
    return detect_engine()("ps", "-q", "--filter", f"label=labctl.round={round_id}",
                           "--filter", "label=labctl.role=agent", check=False).stdout.split()


def start(rd: Path, lab: Path, *args: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "labctl", "run", str(rd), "--lab", str(lab), *args]
    return subprocess.Popen(argv, cwd=rd.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_agents(proc: subprocess.Popen[str], round_id: str, n: int) -> None:
    """Until `n` agent containers of the round run at once (the runs overlap)."""
    deadline = time.monotonic() + WAIT_S
    while len(agents(round_id)) < n:
        if proc.poll() is not None or time.monotonic() > deadline:
            out, errs = proc.communicate()
            pytest.fail(f"never {n} runs at once: rc={proc.returncode}\n{out}\n{errs}")
        time.sleep(0.2)


def workers(rd: Path) -> list[int]:
    """Pids of the round's run workers (`labctl.run.worker`) still alive."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"labctl.run.worker" in argv and str(rd).encode() in argv:
            found.append(int(proc.name))
    return found


def outcomes(rd: Path) -> list[tuple[str, str, str | None]]:
    mapping = read_unsealed(rd).mapping
    return sorted((mapping[rid].contestant, (r := read_result(rd, rid)).status, r.outcome) for rid in mapping)


def test_parallel_round_overlaps_and_verifies(tmp_path: Path) -> None:
    lab = repeated_lab(tmp_path)
    rd = seal(lab, tmp_path)
    proc = start(rd, lab, "--parallel", "4", "--json")
    wait_agents(proc, rd.name, 2)
    out, errs = proc.communicate(timeout=600)
    assert proc.returncode == 0, errs
    rows = json.loads(out)["runs"]
    assert len(rows) == 4 and all(r["host"] for r in rows)
    assert not any(c in out for c in ("oracle", "nop")), out  # blind before unseal
    unseal_round(rd)
    assert outcomes(rd) == [("nop", "done", "Failed")] * 2 + [("oracle", "done", "Complete")] * 2
    verify(rd)
    assert labelled_now(rd.name) == {"containers": [], "networks": [], "volumes": []}


def test_parallel_interrupt_kill_and_resume(tmp_path: Path) -> None:
    """Ctrl-C with two runs in flight: both clean up and stay `running`; then kill -9 with two in
    flight: the runs' workers die with it (cleaning up); a third `labctl run` finishes the round."""
    lab = repeated_lab(tmp_path, sleep=20)
    rd = seal(lab, tmp_path)
    nothing = {"containers": [], "networks": [], "volumes": []}

    proc = start(rd, lab, "--parallel", "2")
    wait_agents(proc, rd.name, 2)
    proc.send_signal(signal.SIGINT)
    _, errs = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 130, errs
    assert labelled_now(rd.name) == nothing
    states = [read_result(rd, p.name) for p in (rd / "runs").iterdir()]
    assert sum(s.status == "running" for s in states) == 2, states

    proc = start(rd, lab, "--parallel", "2")
    wait_agents(proc, rd.name, 2)
    assert len(workers(rd)) == 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    deadline = time.monotonic() + WAIT_S  # the workers get SIGTERM from the kernel, clean up and exit
    while workers(rd):
        assert time.monotonic() < deadline, workers(rd)
        time.sleep(0.5)
    # What a worker could not remove (a `docker create` already sent when the signal came) the
    # resume removes by label, as after any kill.

    done = labctl("run", rd, "--lab", lab, "--parallel", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    results = [read_result(rd, rid) for rid in json.loads((rd / "sealed.json").read_text())["run_ids"]]
    assert all(r.status in FINISHED for r in results)
    assert max(r.attempts for r in results) >= 2  # the interrupted ones were started again
    unseal_round(rd)
    assert outcomes(rd) == [("nop", "done", "Failed")] * 2 + [("oracle", "done", "Complete")] * 2
    verify(rd)
    assert labelled_now(rd.name) == nothing


def test_down_with_runs_in_flight(tmp_path: Path) -> None:
    lab = repeated_lab(tmp_path, sleep=20)
    rd = seal(lab, tmp_path)
    proc = start(rd, lab, "--parallel", "2")
    wait_agents(proc, rd.name, 2)
    down = labctl("down", rd, "--json", cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert len(json.loads(down.stdout)["removed"]["containers"]) >= 2
    proc.communicate(timeout=600)  # the round goes on: the two runs lost their containers
    assert labelled_now(rd.name) == {"containers": [], "networks": [], "volumes": []}
    results = [read_result(rd, p.name) for p in (rd / "runs").iterdir()]
    assert len(results) == 4 and all(r.status in FINISHED for r in results), results
