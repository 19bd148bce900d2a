"""`labctl round` with the preflight, the served-context check and the first-request fit, end to end
on the smoke task with the real llama-server image and the real mini-swe-agent: one tiny model whose
context cannot hold mini-swe-agent's first prompt (the run errors: configuration, not Total failure),
one served above its training context with YaRN (the served-context check passes: it really serves it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labctl.gguf.store import Store
from labctl.lock.hub import lock_model
from labctl.lock.lockfile import lock_path, read_lock, write_lock
from labctl.spec.lab import LocalContestant
from labctl.spec.load import load_lab
from tests.run.test_runner import ROOT, build, derived_lab, labctl, runner_env  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.docker, pytest.mark.llama]

CONTESTANTS = """  - id: cramped
    kind: local
    model: {generate: {seed: 7}}
    serve: {context: 1024}
  - id: stretched
    kind: local
    model: {generate: {seed: 7}}
    serve: {context: 8192, allow_rope_scaling: true}
  - id: nop
    kind: nop
"""


def test_round_preflight_overflow_and_yarn(tmp_path: Path) -> None:
    lab = derived_lab(tmp_path, CONTESTANTS, wall="1m")
    loaded = load_lab(lab)
    lock = read_lock(lock_path(lab))
    models = {c.id: lock_model(c, base_dir=loaded.base_dir, store=Store())
              for c in loaded.lab.contestants if isinstance(c, LocalContestant)}
    write_lock(lock_path(lab), lock.model_copy(update={"models": models}))
    build(lab)
    done = labctl("round", lab, "--rounds-dir", tmp_path / "rounds", "--json", cwd=ROOT)
    said = done.stdout + done.stderr
    assert "preflight cramped: tool calling: the template carries tools, but no structured call" in said
    data = json.loads(done.stdout)
    rows = {r["contestant"]: r for r in data["runs"]}
    cramped, stretched = rows["cramped"], rows["stretched"]
    assert cramped["status"] == "errored", cramped
    assert cramped["reason"].startswith("configuration: context overflow on the first request"), cramped
    assert stretched["reason"] is None or "context" not in stretched["reason"], stretched
    assert stretched["status"] == "done", stretched  # served 8192 as planned (YaRN), so it ran
    rd = Path(data["round_dir"])
    pre = json.loads((rd / "preflight.json").read_text())["contestants"]
    assert set(pre) == {"cramped", "stretched"}  # by contestant; no run id anywhere in it
    assert pre["stretched"]["served_context"] == pre["stretched"]["planned_context"] == 8192
    assert not any(r["run"] in (rd / "preflight.json").read_text() for r in data["runs"])
    assert "preflight.json" in json.loads((rd / "manifest.json").read_text())["files"]
    assert labctl("verify", rd, cwd=ROOT).returncode == 0
    assert labctl("report", rd, cwd=ROOT).returncode == 0
    assert "## Tool calling" in (rd / "report.md").read_text()
