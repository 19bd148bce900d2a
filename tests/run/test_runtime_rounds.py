"""Each runtime in a real, sealed `labctl round` against the tiny random model (issue #14 part 4).

The tiny model answers gibberish, so no runtime can finish the task: what is proven is that the
runtime starts from its baked image with no network but the meter, speaks its own wire to the
meter (Anthropic Messages for Claude Code, Responses for Codex, chat completions for the others)
which forwards it to llama-server and meters it, and ends — by itself, by its own turn limit, or,
for a runtime without one (aider, codex, opencode), by the meter's request budget (the lab's
`budgets.steps`) — as Failed or Total failure inside its wall time, leaving nothing behind.
A runtime whose first prompt cannot fit the tiny model's 4,096-token context is refused by
llama-server on its first request ("exceeds the available context size"): that run is *errored
(configuration)*, not a grade of the model (issue #25), and the round says why.
(Complete, with the scripted model: tests/run/test_runtime_scripted.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labctl.agents import adapter
from labctl.cli.app import app
from labctl.lock.lockfile import lock_path, read_lock, write_lock
from labctl.lock.resolve import spec_sha256
from labctl.spec.load import load_lab
from tests.images.test_runtime_images import RUNTIMES, lock_runtime
from tests.run.test_runner import build, derived_lab, labelled_now, runner_env  # noqa: F401 (fixture)

pytestmark = pytest.mark.docker

TINY = ("  - id: tiny-llama\n    kind: local\n    name: Tiny llama (random weights)\n"
        "    model:\n      generate: {seed: 7}\n")
PATHS = {"claude-code": "/v1/messages", "qwen-code": "/v1/chat/completions", "codex": "/v1/responses",
         "opencode": "/v1/chat/completions", "aider": "/v1/chat/completions"}
"""The wire each runtime speaks to the meter."""
OVERFLOWS = {"aider", "claude-code", "codex", "opencode", "qwen-code"}
"""Runtimes whose first prompt is larger than the tiny lab's context (counted by llama-server in the
tiny model's vocabulary: aider 8,020 tokens, codex 21,516, opencode 22,965, Claude Code 38,970, Qwen
Code 62,388): each is refused at once, and the run is errored (configuration). opencode also asks for
a session title (~900 tokens, answered) beside its first prompt, in either order, and keeps asking
after the refusal until the meter's request budget stops it."""


def runtime_lab(tmp: Path, runtime: str) -> Path:
    """The smoke lab with only the tiny model, driven by `runtime` (its real, whole-tree lock)."""
    lab = derived_lab(tmp, TINY, wall="2m")
    text = lab.read_text()
    old = "runtime: mini-swe-agent\n  version: 2.4.6"
    assert old in text
    lab.write_text(text.replace(old, f"runtime: {runtime}\n  version: {RUNTIMES[runtime]}"))
    lock = read_lock(lock_path(lab))
    lock = lock.model_copy(update={"agent": lock_runtime(runtime, RUNTIMES[runtime]),
                                   "spec_sha256": spec_sha256(load_lab(lab))})
    write_lock(lock_path(lab), lock)
    return lab


@pytest.mark.parametrize("runtime", sorted(PATHS))
def test_tiny_model_round_ends_cleanly(tmp_path: Path, runtime: str) -> None:
    lab = runtime_lab(tmp_path, runtime)
    build(lab)
    done = CliRunner().invoke(app, ["round", str(lab), "--rounds-dir", str(tmp_path / "rounds"), "--json"])
    # exit 1 when a run errored (the operator must look), 0 otherwise
    assert done.exit_code == (1 if runtime in OVERFLOWS else 0), done.output[-3000:]
    report = json.loads(done.stdout)
    [row] = report["runs"]
    run = Path(report["round_dir"]) / "runs" / row["run"]
    agent_log = (run / "agent.log").read_text(errors="replace")
    result = json.loads((run / "result.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    records = [json.loads(x) for x in (run / "transcript.jsonl").read_text().splitlines()]
    exchanges = [r for r in records if r.get("kind") == "exchange"]
    assert exchanges, agent_log[-3000:]  # the runtime reached the model, through the meter only
    assert {r["path"] for r in exchanges} == {PATHS[runtime]}, {r["path"] for r in exchanges}
    if runtime in OVERFLOWS:  # refused on its first request: the configuration's fault, said so
        assert row["status"] == "errored", (row, result, agent_log[-3000:])
        assert result["reason"].startswith("configuration: context overflow on the first request"), result
        assert any("exceeds the available context size" in json.dumps(r) for r in exchanges), exchanges[:2]
        ends = {"context_overflow", "budget"} if runtime == "opencode" else {"context_overflow"}
        assert metrics["ended"]["by"] in ends, metrics["ended"]
        assert labelled_now(report["round"]) == {"containers": [], "networks": [], "volumes": []}
        return
    assert row["outcome"] in ("Failed", "Total failure"), (row, agent_log[-3000:])
    # ended by itself, or stopped by the meter's request budget; never by the wall time
    assert row["status"] == "done" or result.get("reason") == "stopped by request_budget budget", \
        (row, result, agent_log[-3000:])
    steps = load_lab(lab).lab.budgets.steps
    assert steps and sum(r["status"] == 200 for r in exchanges) <= steps  # budgets.steps model calls at most
    # the meter enforces the step limit for a runtime without a turn limit of its own, only for one
    meter = json.loads((run / "meter-status.json").read_text())
    assert meter["request_budget"] == (None if adapter(runtime).limits_steps else steps), meter
    assert labelled_now(report["round"]) == {"containers": [], "networks": [], "volumes": []}
