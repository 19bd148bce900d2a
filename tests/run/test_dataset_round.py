"""A dataset round on Docker: labs/dataset.yaml (oracle, nop and the tiny model over the five tasks of
tests/dataset_tasks) sealed, run, killed with SIGKILL mid-dataset, resumed, unsealed and reported.

One test, because every step needs the one before it and each docker round costs minutes: the
images (one task image for the five tasks, which share an environment, and one agent image per
runtime on it), the interleaved sealed order, the resume that runs only the missing runs, the
broken task's failed controls (loud at `run`, named in the report, excluded from every aggregate,
a problem for `verify`), and the report's rates, intervals and grid.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from labctl.images.specs import lab_images, settings_for
from labctl.lock.lockfile import TaskLock, lock_path, read_lock, write_lock
from labctl.lock.resolve import spec_sha256, task_locks
from labctl.round.layout import FINISHED, read_result, read_sealed
from labctl.round.seal import unseal_round
from labctl.spec.dataset import dataset_label
from labctl.spec.load import load_lab
from tests.run.test_resume import kill_when, start_run, status, tree_hashes
from tests.run.test_runner import ROOT, SMOKE, build, labctl, labelled_now, runner_env, seal

__all__ = ["runner_env"]  # test_runner's module fixture: envelopes, scratch, labs/smoke.lock

pytestmark = pytest.mark.docker
DATASET = ROOT / "labs" / "dataset.yaml"
NOTHING = {"containers": [], "networks": [], "volumes": []}
TASKS = ["broken-oracle", "make-report", "repo-note", "shout", "sum-numbers"]


def dataset_lock() -> None:
    """labs/dataset.lock derived offline from labs/smoke.lock (same engine, base image, agent and
    tiny model); only the lab, its spec hash and the task pins differ."""
    loaded = load_lab(DATASET)
    base = read_lock(lock_path(SMOKE))
    write_lock(lock_path(DATASET), base.model_copy(update={
        "lab": loaded.lab.lab.name, "spec_sha256": spec_sha256(loaded),
        "task": TaskLock(path=dataset_label(loaded.lab.task), tree_sha256=loaded.tree_sha256()),
        "tasks": task_locks(loaded)}))


def test_dataset_round_resumes_reports_and_excludes_the_broken_task(tmp_path: Path) -> None:
    dataset_lock()
    fetched = labctl("fetch", DATASET, cwd=tmp_path)  # `labctl run` serves only what the store holds
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    loaded = load_lab(DATASET)
    names = [s.name for s in lab_images(loaded, read_lock(lock_path(DATASET)), settings=settings_for(loaded))]
    assert [n for n in names if n.startswith("task-")] == ["task-broken-oracle"], names  # one, shared
    build(DATASET)
    rd = seal(DATASET, tmp_path)
    sealed = read_sealed(rd)
    assert len(sealed.run_ids) == 15 and sorted(set((sealed.run_tasks or {}).values())) == TASKS

    # Kill -9 mid-dataset, after a few runs finished: those must never run again.
    proc = start_run(rd, DATASET, tmp_path)
    kill_when(proc, lambda: sum(status(rd, r) in FINISHED for r in sealed.run_ids) >= 2, "2 runs finished",
              timeout_s=900)  # a tiny-model run takes a while
    done_before = {r: tree_hashes(rd / "runs" / r) for r in sealed.run_ids if status(rd, r) in FINISHED}
    assert 2 <= len(done_before) < 15
    resumed = labctl("run", rd, "--lab", DATASET, cwd=tmp_path)
    # The broken task's oracle fails its control: `labctl run` says so loudly and exits 1.
    assert resumed.returncode == 1, resumed.stdout + resumed.stderr
    assert "CONTROLS FAILED" in resumed.stderr and "task broken-oracle" in resumed.stderr, resumed.stderr
    for r in done_before:
        assert f"{r}: {read_result(rd, r).status}, skipped" in resumed.stdout, resumed.stdout
        assert tree_hashes(rd / "runs" / r) == done_before[r]  # not one byte of a finished run changed
    results = {r: read_result(rd, r) for r in sealed.run_ids}
    assert all(res.status in FINISHED for res in results.values()), results
    assert sum(res.attempts == 2 for res in results.values()) <= 1  # at most the one the kill cut
    assert all(res.attempts == 1 for r, res in results.items() if r in done_before)
    assert {res.task for res in results.values()} == set(TASKS)
    assert labelled_now(rd.name) == NOTHING

    unseal_round(rd)
    for fmt in ("md", "json"):
        made = subprocess.run([sys.executable, "-m", "labctl", "report", str(rd), "--format", fmt],
                              capture_output=True, text=True, timeout=300)
        assert made.returncode == 0, made.stdout + made.stderr
    data = json.loads((rd / "report.json").read_text())
    assert data["kind"] == "dataset" and list(data["excluded"]) == ["broken-oracle"]
    assert data["controls"]["ok"] is False
    stats = {s["id"]: s for s in data["contestants"]}
    assert stats["oracle"]["tasks"] == 4 and stats["oracle"]["resolution_rate"] == 1.0
    assert stats["oracle"]["ci95"] == [1.0, 1.0]
    assert stats["nop"]["resolution_rate"] == 0.0 and stats["nop"]["tokens_per_resolved"] is None
    tiny = stats["tiny-llama"]
    assert tiny["tasks"] == 4 and tiny["runs"] == 4 and tiny["ci95"] is not None
    assert tiny["ci95"][0] <= tiny["resolution_rate"] <= tiny["ci95"][1]
    grid = {row["task"]: row for row in data["grid"]}
    assert sorted(grid) == TASKS and grid["broken-oracle"]["excluded"] is True
    assert grid["repo-note"]["cells"]["oracle"][0]["outcome"] == "Complete"  # the repository task
    assert grid["broken-oracle"]["cells"]["oracle"][0]["outcome"] == "Failed"
    assert all(len(cells) == 1 for row in grid.values() for cells in row["cells"].values())
    tiny_cells = [c for row in grid.values() for c in row["cells"]["tiny-llama"]]
    why = {c["run"]: (c["status"], results[c["run"]].reason) for c in tiny_cells}
    assert all(c["status"] in ("done", "killed") for c in tiny_cells), why  # graded, not errored
    assert all(c["total_tokens"] and c["total_tokens"] > 0 for c in tiny_cells), why  # real usage
    md = (rd / "report.md").read_text()
    assert md.startswith("> **CONTROLS FAILED**")
    assert "## Excluded tasks (1)" in md and "**broken-oracle**" in md
    assert "95% CI (bootstrap over tasks)" in md and "~~broken-oracle~~ (excluded)" in md
    link = grid["sum-numbers"]["cells"]["oracle"][0]["link"]
    assert f"[Complete]({link})" in md and (rd / link / "result.json").is_file()

    check = subprocess.run([sys.executable, "-m", "labctl", "verify", str(rd), "--json"], capture_output=True,
                           text=True, timeout=300)
    assert check.returncode == 1
    problems = [p["what"] for p in json.loads(check.stdout)["problems"]]
    assert problems and all("controls failed" in p and "task broken-oracle" in p for p in problems), problems
