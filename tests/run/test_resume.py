"""`labctl run` killed with SIGKILL (no handler, no cleanup) at several points, then run again.

What a resume must do: leave every finished run's files byte for byte as they were, remove what
the killed attempt left (by label), start the interrupted run from scratch with attempts == 2,
carry on with the rest, and end in a round that `labctl verify` accepts. `labctl down` must remove
everything a kill -9 left behind.

Contestants are oracle and nop (seconds per run); the oracle's solution and the verifier are slowed
by a few seconds so each kill point is hit reliably.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from labctl.engine.container import detect_engine
from labctl.lock.lockfile import lock_path, read_lock, write_lock
from labctl.round.layout import FINISHED, read_result, result_path
from labctl.round.seal import unseal_round
from labctl.treehash import tree_sha256
from tests.helpers import verify_passes as verify
from tests.run.test_runner import ROOT, build, derived_lab, labctl, labelled_now, runner_env, seal

pytestmark = pytest.mark.docker
__all__ = ["runner_env"]  # the module fixture of test_runner: envelopes, scratch, the smoke lock

NOTHING = {"containers": [], "networks": [], "volumes": []}
CONTESTANTS = "  - id: oracle\n    kind: oracle\n  - id: nop\n    kind: nop\n"
SLOW_SOLVE = (ROOT / "tasks" / "smoke-hello" / "solution" / "solve.sh").read_text().replace(
    "set -euo pipefail\n", "set -euo pipefail\nsleep 4\n", 1)
POLL_S = 0.1
KILL_POINT_TIMEOUT_S = 120


def slow_lab(tmp: Path, verifier_sleep: int = 0) -> Path:
    """oracle + nop on a copy of the smoke task whose solution (and, optionally, verifier) sleeps."""
    lab = derived_lab(tmp, CONTESTANTS, wall="2m", solve=SLOW_SOLVE)
    if verifier_sleep:
        task = tmp / "task"
        test_sh = task / "tests" / "test.sh"
        test_sh.write_text(test_sh.read_text().replace("set -u\n", f"set -u\nsleep {verifier_sleep}\n", 1))
        lock = read_lock(lock_path(lab))
        write_lock(lock_path(lab), lock.model_copy(update={
            "task": lock.task.model_copy(update={"tree_sha256": tree_sha256(task)})}))
    build(lab)
    return lab


def order(rd: Path) -> list[str]:
    return list(json.loads((rd / "sealed.json").read_text())["order"])


def tree_hashes(d: Path) -> dict[str, str]:
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def start_run(rd: Path, lab: Path, tmp: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "labctl", "run", str(rd), "--lab", str(lab)],
                            cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_when(proc: subprocess.Popen[str], ready: Callable[[], bool], what: str,
              timeout_s: float = KILL_POINT_TIMEOUT_S) -> None:
    """SIGKILL `proc` as soon as `ready()` holds (it must, before the run ends on its own, and
    within `timeout_s`: a guard against a hang, not a timing)."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            out, errs = proc.communicate()
            pytest.fail(f"never reached the kill point ({what}): rc={proc.returncode}\n{out}\n{errs}")
        time.sleep(POLL_S)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def containers(round_id: str, run_id: str) -> list[str]:
    return detect_engine().labelled({"labctl.round": round_id, "labctl.run": run_id})["containers"]


def status(rd: Path, run_id: str) -> str | None:
    try:
        return read_result(rd, run_id).status
    except (OSError, ValueError):
        return None  # not written yet, or mid-replace


def resume(rd: Path, lab: Path, tmp: Path) -> float:
    t0 = time.monotonic()
    done = labctl("run", rd, "--lab", lab, cwd=tmp)
    assert done.returncode == 0, done.stdout + done.stderr
    assert labelled_now(rd.name) == NOTHING
    return time.monotonic() - t0


def unseal_and_verify(rd: Path) -> None:
    verify(rd)  # sealed: the manifest and every run's grade
    unseal_round(rd)
    verify(rd)  # unsealed: the commitment too, and every run finished
    mapping = json.loads((rd / "unsealed.json").read_text())["mapping"]
    outcomes = {m["contestant"]: read_result(rd, rid).outcome for rid, m in mapping.items()}
    assert outcomes == {"oracle": "Complete", "nop": "Failed"}


# --- the kill points -------------------------------------------------------------------------------


def test_kill_during_first_agent(tmp_path: Path) -> None:
    """(a) kill -9 while the first run's agent runs: its containers are left behind; the resume
    removes them, redoes the run (attempts 2) and runs the second one."""
    lab = slow_lab(tmp_path)
    rd = seal(lab, tmp_path)
    first, second = order(rd)
    proc = start_run(rd, lab, tmp_path)
    kill_when(proc, lambda: any(n.endswith("agent") for n in containers(rd.name, first)), "first agent")
    assert labelled_now(rd.name)["containers"], "a kill -9 cleans nothing up: something must be left"
    killed = read_result(rd, first)
    assert killed.status == "running" and killed.attempts == 1
    assert not result_path(rd, second).exists()

    resume(rd, lab, tmp_path)
    a, b = read_result(rd, first), read_result(rd, second)
    assert (a.status, a.attempts) == ("done", 2)
    assert (b.status, b.attempts) == ("done", 1)
    unseal_and_verify(rd)


def test_kill_between_runs_and_stale_manifest(tmp_path: Path) -> None:
    """(b) kill -9 right after the first run's result.json says done: the first run's files never
    change again; the second (interrupted or never started) completes. A manifest left stale by a kill
    after the last result.json is rewritten by the next `labctl run`, which changes no run file."""
    lab = slow_lab(tmp_path)
    rd = seal(lab, tmp_path)
    seal_manifest = (rd / "manifest.json").read_bytes()
    first, second = order(rd)
    proc = start_run(rd, lab, tmp_path)
    kill_when(proc, lambda: status(rd, first) in FINISHED, "first run finished")
    assert read_result(rd, first).status == "done"
    before = tree_hashes(rd / "runs" / first)
    started_second = result_path(rd, second).exists()

    resume(rd, lab, tmp_path)
    assert tree_hashes(rd / "runs" / first) == before
    assert read_result(rd, first).attempts == 1
    b = read_result(rd, second)
    assert b.status == "done" and b.attempts == (2 if started_second else 1)

    # A kill between the last run's result.json and its manifest rewrite: the manifest is stale.
    runs_before = tree_hashes(rd / "runs")
    (rd / "manifest.json").write_bytes(seal_manifest)
    resume(rd, lab, tmp_path)  # every run skipped
    assert tree_hashes(rd / "runs") == runs_before
    unseal_and_verify(rd)


def test_kill_during_grading_then_down(tmp_path: Path) -> None:
    """(c) kill -9 while the first run's verifier runs; `labctl down` then removes everything labelled
    for the round; the resume redoes the run from scratch (stale files of the killed attempt gone)."""
    lab = slow_lab(tmp_path, verifier_sleep=4)
    rd = seal(lab, tmp_path)
    first, second = order(rd)
    proc = start_run(rd, lab, tmp_path)
    kill_when(proc, lambda: any(n.endswith("verifier") for n in containers(rd.name, first)), "grading")
    assert labelled_now(rd.name)["containers"]
    assert read_result(rd, first).status == "running"
    stale = rd / "runs" / first / "verifier" / "left-by-attempt-1"
    stale.write_text("stale")

    down = labctl("down", rd, cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert labelled_now(rd.name) == NOTHING

    resume(rd, lab, tmp_path)
    assert not stale.exists()
    a, b = read_result(rd, first), read_result(rd, second)
    assert (a.status, a.attempts) == ("done", 2)
    assert (b.status, b.attempts) == ("done", 1)
    unseal_and_verify(rd)


def test_run_refuses_a_round_changed_since_its_seal(tmp_path: Path) -> None:
    """Running rewrites the manifest; it must not bless a sealed file edited before the run."""
    from labctl.run.parts import RunError
    from labctl.run.runner import open_round, run_round

    lab = derived_lab(tmp_path, "  - {id: nop, kind: nop}\n")
    build(lab)  # open_round checks the images first; this test must not depend on another's builds
    round_dir = seal(lab, tmp_path)
    sealed = round_dir / "sealed.json"
    sealed.write_text(sealed.read_text().replace('"repeats": 1', '"repeats": 1 '))
    with pytest.raises(RunError, match="changed since it was sealed"):
        run_round(open_round(round_dir, lab, None))
