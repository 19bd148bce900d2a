"""Round 7's task, tasks/tag-manager, through the real round machinery: its environment image (Node
and npm pinned by integrity, Debian's Chromium, the locked dependencies, no network needed once
built), then `labctl round labs/tag-manager.yaml` — the oracle applies solution/solve.sh and must be
Complete with every check passing; nop must be Failed — and the published Results table reproduced:
six workspaces left as each published contestant left its own (tests/round7_endings.py), graded by
the task's real tests/test.sh in the real task image through the runner's own `run_verifier`,
`run_metrics` and `derive_outcome`, must get the published class.

labs/tag-manager.lock is derived offline from labs/smoke.lock (same engine pin and base image), so no
test contacts a registry; the image build itself installs from Debian's mirror and the npm registry.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from labctl.engine.container import detect_engine
from labctl.engine.names import run_labels
from labctl.images.specs import lab_images, settings_for
from labctl.lock.lockfile import TaskLock, lock_path, read_lock, write_lock
from labctl.lock.resolve import LockError, require_lock, spec_sha256
from labctl.meter.state import MeterState
from labctl.report.data import RunData, _run_metrics
from labctl.report.why import story
from labctl.round.layout import RunResult
from labctl.round.records import write_metrics
from labctl.run.grade import outcome, run_metrics, run_verifier
from labctl.run.parts import WORKSPACE, make_workspace
from labctl.spec.lab import Lab
from labctl.spec.load import load_lab
from labctl.spec.located import load_yaml, validate
from labctl.spec.task import read_task
from labctl.treehash import tree_sha256
from tests.round7_endings import ENDINGS, Ending
from tests.run.test_runner import ROOT, SMOKE, build, labelled_now, runner_env

__all__ = ["runner_env"]  # test_runner's module fixture: envelopes, scratch, the smoke lock
LAB = ROOT / "labs" / "tag-manager.yaml"
CHECKS = ["tags_lib", "api_route", "admin_page", "admin_nav", "client_mutations", "build", "screenshot",
          "logical_commits", "pushed", "no_pr"]
pytestmark = [pytest.mark.docker, pytest.mark.browser]


def ensure_lock() -> None:
    loaded = load_lab(LAB)
    task = loaded.task_dir
    try:
        if require_lock(loaded).task.tree_sha256 == tree_sha256(task):
            return
    except LockError:
        pass  # missing or stale: derive a current one
    base = read_lock(lock_path(SMOKE))
    write_lock(lock_path(LAB), base.model_copy(update={
        "lab": loaded.lab.lab.name, "spec_sha256": spec_sha256(loaded), "models": {}, "agent": None,
        "task": TaskLock(path="../tasks/tag-manager", tree_sha256=tree_sha256(task))}))


@pytest.fixture(scope="module")
def task_image(runner_env: None) -> str:
    ensure_lock()
    build(LAB)
    loaded = load_lab(LAB)
    specs = lab_images(loaded, require_lock(loaded), settings=settings_for(loaded))
    return next(s.tag for s in specs if s.name == "task-tag-manager")


def in_image(image: str, script: str, *mounts: str, user: str = "1000:1000"
             ) -> subprocess.CompletedProcess[str]:
    vols = [a for m in mounts for a in ("-v", m)]
    return subprocess.run(["docker", "run", "--rm", "--network", "none", "-u", user, "-e", "HOME=/tmp",
                           *vols, image, "bash", "-c", script], capture_output=True, text=True, timeout=300)


def test_environment_is_pinned_and_works_offline(task_image: str) -> None:
    """The pinned Node and npm; `npm ci` of the locked dependencies with no network at all, from the
    image's cache, as a non-root user; Chromium driven by the global playwright-core."""
    done = in_image(task_image, """set -e
        node --version; npm --version
        mkdir /tmp/w && cd /tmp/w && cp /opt/quillpost/package*.json . && npm ci --no-audit --no-fund
        test -x node_modules/.bin/next
        node -e '
          const { chromium } = require("playwright-core");
          (async () => {
            const b = await chromium.launch({ executablePath: "/usr/bin/chromium", chromiumSandbox: false });
            const p = await b.newPage(); await p.setContent("<p id=x>ok</p>");
            console.log("page:" + await p.textContent("#x")); await b.close();
          })().catch(e => { console.error(e); process.exit(1); });'
    """)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.split()
    assert lines[:2] == ["v22.23.3", "10.9.9"]
    assert "page:ok" in lines


def test_gh_records_a_pull_request_attempt_and_fails(task_image: str, tmp_path: Path) -> None:
    origin = tmp_path / "origin.git"
    origin.mkdir()
    origin.chmod(0o777)
    quiet = in_image(task_image, "gh auth status", f"{origin}:/origin.git")
    assert quiet.returncode != 0 and not (origin / "labctl-pull-requests.log").exists()
    done = in_image(task_image, "gh pr create --fill", f"{origin}:/origin.git")
    assert done.returncode != 0 and "cannot reach github.com" in done.stderr
    assert "gh pr create --fill" in (origin / "labctl-pull-requests.log").read_text()


def test_round_oracle_complete_nop_failed(task_image: str, tmp_path: Path) -> None:
    """The issue's bar: through `labctl round`, the oracle is Complete with all nine checks and the
    nop is Failed (its base commit builds, no PR, everything else missing); the round verifies and
    nothing is left behind."""
    proc = subprocess.run([sys.executable, "-m", "labctl", "round", str(LAB), "--rounds-dir",
                           str(tmp_path / "rounds"), "--json"], cwd=ROOT, capture_output=True, text=True,
                          timeout=2400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    data = json.loads(proc.stdout)
    rows = {r["contestant"]: r for r in data["runs"]}
    rd = Path(data["round_dir"])

    def checks(who: str) -> dict[str, bool]:
        reward = json.loads((rd / "runs" / rows[who]["run"] / "verifier" / "reward.json").read_text())
        assert list(reward["checks"]) == CHECKS
        return reward["checks"]

    oracle, nop = checks("oracle"), checks("nop")
    assert rows["oracle"]["outcome"] == "Complete", oracle
    assert all(oracle.values()) and rows["oracle"]["commits"] >= 2
    assert rows["nop"]["outcome"] == "Failed" and rows["nop"]["commits"] == 0
    assert nop == {c: c in ("build", "no_pr") for c in CHECKS}, nop
    check = subprocess.run([sys.executable, "-m", "labctl", "verify", str(rd)], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert labelled_now(data["round"]) == {"containers": [], "networks": [], "volumes": []}



PUBLISHED = {c.id: c.published for c in validate(Lab, load_yaml(ROOT / "lab.yaml")).contestants}


@pytest.mark.parametrize("ending", ENDINGS, ids=[f"{e.run}-{e.contestant}" for e in ENDINGS])
def test_published_results_table_reproduced(task_image: str, tmp_path: Path, ending: Ending) -> None:
    """One row of the published Results table: the workspace as the contestant left it, graded by the
    real verifier container; the class (and the commits, build and screenshot cells) as published,
    and every failed check with a reason of its own (a failed build still names missing files)."""
    published = PUBLISHED[ending.contestant]
    assert published is not None and published.outcome == ending.outcome, "lab.yaml disagrees"
    task = ROOT / "tasks" / "tag-manager"
    work = tmp_path / "work"
    ws = make_workspace(task, work, ending.run)
    ending.leave(ws)
    round_id = f"table-{uuid.uuid4().hex[:8]}"  # unique: an interrupted session's container may linger
    run_dir = tmp_path / "runs" / ending.run
    docker = detect_engine()
    try:
        # The task image stands in for the committed agent container: a repository task's verifier
        # gets the workspace and origin mounted, as in a run.
        reward, note = run_verifier(docker, image=task_image, user=docker.image_user(task_image) or "0",
                                    workdir=WORKSPACE, task_dir=task, ws=ws, run_dir=run_dir,
                                    round_id=round_id, run_id=ending.run, scratch=work)
    finally:
        docker.remove_labelled(run_labels(round_id, ending.run))
    assert isinstance(reward, dict), note + (run_dir / "verifier" / "stdout.txt").read_text()[-3000:]
    checks, notes = reward["checks"], reward.get("notes", {})
    assert list(checks) == CHECKS
    assert set(notes) == {c for c, ok in checks.items() if not ok}, "every failed check has its note"
    assert all(notes.values()), notes
    # The meter's count is the published one (a real run's meter-status.json); no transcript here.
    meter = MeterState(alias=ending.run, dialect="openai", started_at=0.0, tool_calls=ending.tool_calls)
    metrics = run_metrics(meter_state=meter,
                          transcript=run_dir / "transcript.jsonl", ws=ws, reward=reward, wall_s=0.0,
                          needs_model=True, stopped_by=None, columns=read_task(task).report_columns())
    got = outcome(reward, metrics, read_task(task).labctl.outcome)
    stdout = (run_dir / "verifier" / "stdout.txt").read_text()
    assert got == ending.outcome, f"{got} != {ending.outcome}: {checks} {notes}\n{stdout[-3000:]}"
    if published.commits is not None:
        assert metrics.commits_pushed == published.commits
    if published.build is not None:
        assert metrics.build is not None and metrics.build.passed is published.build.passed
    if published.screenshot is not None:
        assert metrics.screenshot is published.screenshot

    if ending.outcome == "Complete":
        assert all(checks.values()), notes
    elif ending.contestant == "qwen3-coder-30b-a3b":  # pushed working code, one commit, no screenshot
        assert not checks["logical_commits"] and checks["pushed"] and not checks["screenshot"]
        assert notes["logical_commits"] == "the branch has 1 commit beyond the base (need at least 2)"
    elif ending.contestant == "qwen3.6-35b-a3b":  # built, never committed
        assert checks["build"] and not checks["pushed"]
        assert notes["pushed"].startswith("nothing committed or pushed")
    elif ending.contestant == "hermes-4-14b":  # the build note is the bundler's own error
        assert notes["build"] == ("npm run build exited 1: ./src/app/api/admin/tags/route.ts:3:1 "
                                  "Module not found: Can't resolve '../../../lib/tags'")
        assert checks["tags_lib"] and notes["admin_page"] == "not tried in the running app: the build failed"
    elif ending.contestant == "gemma-4-12b":  # TypeScript's error, with file:line:col
        build_note = r"npm run build exited 1: src/lib/tags\.ts:\d+:\d+ TS\d+: .*"
        assert re.fullmatch(build_note, notes["build"]), notes
    elif ending.contestant == "devstral-24b":  # as cloned: the base builds, nothing else
        assert {c for c, ok in checks.items() if ok} == {"build", "no_pr"}
        assert notes["admin_page"].startswith("src/app/admin/tags/page.tsx does not exist; ")
    # The report's "why" for this run, from the run directory as the runner leaves it.
    write_metrics(run_dir / "metrics.json", metrics)
    result = RunResult(run_id=ending.run, status="done", outcome=got)
    gathered = _run_metrics(tmp_path, ending.run, result)
    told = story(RunData(ending.run, ending.contestant, 1, result, gathered), ending.contestant)
    assert told.failed == [(c, notes[c]) for c in CHECKS if not checks[c]]
    assert dict(told.lines)["Build"].startswith("passes" if checks["build"] else "fails")
    assert labelled_now(round_id) == {"containers": [], "networks": [], "volumes": []}
