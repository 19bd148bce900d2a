"""Round 7's task, tasks/tag-manager, through the real round machinery: its environment image (Node
and npm pinned by integrity, Debian's Chromium, the locked dependencies, no network needed once
built), then `labctl round labs/tag-manager.yaml` — the oracle applies solution/solve.sh and must be
Complete with every check passing; nop must be Failed.

labs/tag-manager.lock is derived offline from labs/smoke.lock (same engine pin and base image), so no
test contacts a registry; the image build itself installs from Debian's mirror and the npm registry.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_runner import ROOT, SMOKE, build, labelled_now, runner_env

from labctl.images import lab_images, settings_for
from labctl.labfile import load_lab
from labctl.lock import LockError, require_lock, spec_sha256
from labctl.lockfile import TaskLock, lock_path, read_lock, write_lock
from labctl.treehash import tree_sha256

__all__ = ["runner_env"]  # test_runner's module fixture: envelopes, scratch, the smoke lock
LAB = ROOT / "labs" / "tag-manager.yaml"
CHECKS = ["tags_lib", "api_route", "admin_page", "admin_nav", "client_mutations", "build", "screenshot",
          "commits_pushed", "no_pr"]
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

