"""Harbor tasks written elsewhere run unchanged and are graded right; the controls raise the alarm.

Fast tests: Harbor's flat reward.json keys are named checks for the one grading rule. Docker tests
(one small round per task, oracle + nop, debian-slim images that build in seconds):

* tests/harbor_tasks/root-owned: files the Dockerfile copied into WORKDIR belong to root and the
  solution edits and runs them; the tests check a file under /etc; reward.json in Harbor's flat form.
* tests/harbor_tasks/user-image: the Dockerfile says USER; the agent and the verifier are that user.
* the root-owned task with a solution that fails: `round`, the report and `verify` say
  "controls failed", naming the run and its failing checks.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labctl.engine.container import detect_engine
from labctl.round.grading import derive_outcome, named_checks
from labctl.run.runner import down
from tests.run.test_runner import ROOT, SMOKE, build, derived_lab, labctl, labelled_now, runner_env, seal

__all__ = ["runner_env"]  # the module fixture of test_runner: envelopes, scratch, the smoke lock

TASKS = Path(__file__).resolve().parents[1] / "harbor_tasks"
CONTROLS = "  - id: oracle\n    kind: oracle\n  - id: nop\n    kind: nop\n"
NOTHING = {"containers": [], "networks": [], "volumes": []}


# --- fast: the grading rule ----------------------------------------------------------------------


def test_flat_reward_json_keys_are_named_checks() -> None:
    """`{"reward": 0, "name_argument": 1}`: every other numeric or boolean key is a named check that
    outcome rules grade by, beside labctl's `checks` object (which wins a clash)."""
    flat = {"reward": 0, "name_argument": 1, "parses": True, "note": "text", "score": 0.5}
    assert named_checks(flat) == {"name_argument": 1, "parses": True, "score": 0.5}
    assert named_checks({"reward": 1}) is None and named_checks(1.0) is None
    both = {"reward": 1, "a": 0, "checks": {"a": True, "b": False}}
    assert named_checks(both) == {"a": True, "b": False}
    rules = {"complete": ["name_argument", "parses"], "partial": ["parses"]}
    assert derive_outcome(flat, {}, rules) == "Complete"  # the checks decide, not reward 0
    assert derive_outcome({**flat, "name_argument": 0}, {}, rules) == "Partial"
    assert derive_outcome({"reward": 1, "parses": 0}, {}, rules) == "Failed"
    assert derive_outcome({"reward": 0.5, "x": 1}, {}, None) == "Partial"  # no rules: the reward


# --- docker: rounds of Harbor tasks --------------------------------------------------------------


def task_lab(tmp: Path, task: Path, contestants: str = CONTROLS) -> Path:
    """The smoke lab on `task` with `contestants`, locked offline from labs/smoke.lock (the task's
    base image is the smoke task's, debian:bookworm-slim)."""
    return derived_lab(tmp, contestants, wall="1m", task=task)


def run_round(lab: Path, tmp: Path) -> tuple[subprocess.CompletedProcess[str], dict]:
    done = subprocess.run([sys.executable, "-m", "labctl", "round", str(lab), "--rounds-dir",
                           str(tmp / "rounds"), "--json"], cwd=tmp, capture_output=True, text=True,
                          timeout=900)
    return done, json.loads(done.stdout)


def cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "labctl", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.docker
@pytest.mark.parametrize("task", ["root-owned", "user-image"])
def test_harbor_task_runs_unchanged(tmp_path: Path, task: str) -> None:
    """Oracle Complete, nop Failed through `labctl round`: the agent worked in the image's WORKDIR as
    the image's user on the image's files, and the verifier saw its whole filesystem."""
    lab = task_lab(tmp_path, TASKS / task)
    build(lab)
    done, data = run_round(lab, tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {r["contestant"]: r for r in data["runs"]}
    assert rows["oracle"]["outcome"] == "Complete", (rows, done.stderr)
    assert rows["nop"]["outcome"] == "Failed", rows
    assert data["controls_failed"] == [] and "CONTROLS FAILED" not in done.stderr
    rd = Path(data["round_dir"])
    oracle = rd / "runs" / rows["oracle"]["run"]
    metrics = json.loads((oracle / "metrics.json").read_text())
    assert metrics["commits_pushed"] is None  # no repository: nothing to push, no bundle
    assert not (oracle / "workspace.bundle").exists()
    if task == "root-owned":  # Harbor's flat keys counted as the named checks they are
        assert (metrics["checks_passed"], metrics["checks_total"]) == (3, 3)
    else:
        assert "as builder" in (oracle / "verifier" / "stdout.txt").read_text()
    check = cli("verify", rd, cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert labelled_now(data["round"]) == NOTHING
    assert detect_engine().labelled_images({"labctl.round": data["round"]}) == []


@pytest.mark.docker
def test_broken_task_fails_the_controls_everywhere(tmp_path: Path) -> None:
    """A solution that fails: `round` exits non-zero naming the oracle's run and its failing checks,
    the report says it before anything else, and `verify` fails on it."""
    task = tmp_path / "task"
    shutil.copytree(TASKS / "root-owned", task)
    (task / "solution" / "solve.sh").write_text("#!/usr/bin/env bash\necho broken >&2\nexit 3\n")
    lab = task_lab(tmp_path, task)
    build(lab)
    done, data = run_round(lab, tmp_path)
    assert done.returncode == 1
    oracle = next(r for r in data["runs"] if r["contestant"] == "oracle")
    assert oracle["outcome"] == "Failed"
    [failure] = data["controls_failed"]
    assert failure.startswith(f"{oracle['run']} (oracle) is Failed")
    assert "config_written, result_written, script_fixed" in failure
    assert "CONTROLS FAILED" in done.stderr and oracle["run"] in done.stderr
    rd = Path(data["round_dir"])
    for fmt in ("md", "html", "json"):
        rep = cli("report", rd, "--format", fmt, cwd=tmp_path)
        assert rep.returncode == 0, rep.stderr
        text = (rd / f"report.{fmt}").read_text()
        if fmt == "json":
            assert json.loads(text)["controls"]["ok"] is False
        else:
            body = text.split("<body>", 1)[-1]
            assert "CONTROLS FAILED" in body[:300] and oracle["run"] in body[:800], body[:800]
    check = cli("verify", rd, cwd=tmp_path)
    assert check.returncode == 1
    assert f"controls failed: {oracle['run']} (oracle)" in check.stderr, check.stderr
    assert "script_fixed" in check.stderr


# --- containers that end on their own; resume from the round's own lab --------------------------

SLOW_SOLVE = (ROOT / "tasks" / "smoke-hello" / "solution" / "solve.sh").read_text().replace(
    "set -euo pipefail\n", "set -euo pipefail\nsleep 8\n", 1)
CLOUDY = ("  - id: cloudy\n    kind: cloud\n    provider: openai\n    model: gpt-x\n"
          "    api_key_env: LABCTL_TEST_KEY\n    base_url: http://192.0.2.1:9\n")


def running(round_id: str) -> list[str]:
    return detect_engine()("ps", "--filter", f"label=labctl.round={round_id}", "--filter", "status=running",
                           "--format", "{{.Names}}").stdout.split()


@pytest.mark.docker
def test_kill9_leaves_nothing_running_and_resume_finds_the_lab(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """`labctl run` killed with -9 while the agent and the meter run: both end by themselves (their
    first process carries the run's deadline). `labctl run rounds/<R>` from a directory with no lab in
    it resumes with the round's own lab.yaml and lab.lock; `--lab` naming another lab is refused."""

    lab = derived_lab(tmp_path, CLOUDY + "  - id: oracle\n    kind: oracle\n", wall="20s", solve=SLOW_SOLVE)
    with lab.open("a") as f:  # no egress gateway: its deadline outlasts the verifier, minutes to wait here
        f.write("network: {egress: none}\n")
    build(lab)
    monkeypatch.setenv("LABCTL_TEST_KEY", "sk-test-123")
    rd = seal(lab, tmp_path)
    round_id = rd.name
    # A failed assertion below must not leave the killed round's containers behind for later tests.
    request.addfinalizer(lambda: down(detect_engine(), round_id))
    proc = subprocess.Popen([sys.executable, "-m", "labctl", "run", str(rd), "--lab", str(lab)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not {"agent", "meter"} <= {n.rsplit("-", 1)[-1] for n in running(round_id)}:  # the cloud run
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    # Nobody removes them now; each must stop by its own deadline, which its first process carries
    # (`timeout N …` or `sleep N`): `docker wait` returns when they have. The wait's own timeout is
    # a hang guard, twice the longest deadline, not a timing.
    left = running(round_id)
    engine = detect_engine()
    deadlines = []
    for name in left:
        first = json.loads(engine("inspect", "--format", "{{json .Config.Entrypoint}}", name).stdout)
        args = json.loads(engine("inspect", "--format", "{{json .Config.Cmd}}", name).stdout)
        assert first in (["timeout"], ["sleep"]) and args[0].isdigit(), (name, first, args)
        deadlines.append(int(args[0]))
    if left:
        engine("wait", *left, check=False, timeout=2 * max(deadlines) + 60)
    assert running(round_id) == []

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    refused = labctl("run", rd, "--lab", SMOKE, cwd=elsewhere)
    assert refused.returncode == 1 and "not the one round" in refused.stderr, refused.stderr
    done = labctl("run", rd.resolve(), cwd=elsewhere)
    assert done.returncode == 0, done.stdout + done.stderr
    found = [json.loads((d / "result.json").read_text()) for d in (rd / "runs").iterdir()]
    results = {r.get("control"): r for r in found}  # result.json leaves out a null control
    assert results["oracle"]["outcome"] == "Complete"
    assert results[None]["attempts"] == 2 and results[None]["status"] in ("errored", "killed")
    assert labelled_now(round_id) == NOTHING
    assert detect_engine().labelled_images({"labctl.round": round_id}) == []


@pytest.mark.docker
def test_task_check_gives_the_verdict(tmp_path: Path) -> None:
    """`labctl task check TASK --lab LAB`: oracle + nop alone in a throw-away round; exit 0 and a
    verdict for a sound task, exit 1 naming the failing control for a broken one; nothing left."""
    lab = task_lab(tmp_path, TASKS / "root-owned", contestants="  - id: oracle\n    kind: oracle\n")
    envelopes = Path(os.environ["LABCTL_ENVELOPES"])
    before = sorted(envelopes.glob("*.json")) if envelopes.is_dir() else []
    good = cli("task", "check", TASKS / "root-owned", "--lab", lab, "--json", cwd=tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    data = json.loads(good.stdout)
    assert data["ok"] and data["runs"]["oracle"]["outcome"] == "Complete"
    assert data["runs"]["nop"]["outcome"] == "Failed"
    broken = tmp_path / "broken"
    shutil.copytree(TASKS / "root-owned", broken)
    (broken / "solution" / "solve.sh").write_text("#!/usr/bin/env bash\nexit 3\n")
    bad = cli("task", "check", broken, "--lab", lab, cwd=tmp_path)
    assert bad.returncode == 1 and "CONTROLS FAILED" in bad.stderr and "(oracle) is Failed" in bad.stderr
    assert sorted(envelopes.glob("*.json")) == before  # the throw-away rounds' envelopes are gone
