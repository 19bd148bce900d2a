"""Every runtime drives the scripted model to Complete in a real, sealed round (issue #14 part 4).

The scripted model (tests/scripted_model.py, from the wire work) is a cloud contestant's upstream;
the contestant names its own `agent:` (the harness as a variable), so each runtime is the only
thing that changes between these rounds. The model finds the runtime's shell tool by name, runs the
smoke task's commands through it, then answers with its final text: Complete proves the runtime's
image, its configuration (no prompt left unanswered, the meter its only endpoint) and its wire.
Its first command scans the agent's container for the API key (environments, argument lists,
files), from inside, through the runtime under test.

"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labctl.cli.app import app
from labctl.lock.lockfile import lock_path, read_lock, write_lock
from labctl.lock.resolve import spec_sha256
from labctl.spec.load import load_lab
from tests import scripted_round
from tests.images.test_runtime_images import RUNTIMES, lock_runtime
from tests.run.test_runner import build, derived_lab, labelled_now, runner_env  # noqa: F401 (fixture)
from tests.scripted_model import Plan

pytestmark = pytest.mark.docker

WIRES = {"claude-code": ("anthropic", "/v1/messages"), "codex": ("openai", "/v1/responses"),
         "opencode": ("openai", "/v1/chat/completions"), "qwen-code": ("openai", "/v1/chat/completions"),
         "aider": ("openai", "/v1/chat/completions")}
"""Runtime → (the cloud provider it is paired with, the wire it speaks to the meter).

aider declares no tools: the scripted model answers it with the command in a fenced bash block,
which aider (diff edit format) proposes as a shell command and runs on the yes its adapter answers."""
VERSIONS = RUNTIMES
ENDED = {"claude-code": "completed", "codex": "turn completed", "opencode": "step finished: stop",
         "qwen-code": None, "aider": None}
"""How each runtime says it finished (its adapter's `ending`); qwen-code and aider say nothing beyond
their answer and exit 0."""


KEY_SHAPE = "'sk-scripted-[0-9a-f]*'"
KEY_SCAN = (
    "echo environment entries read: $(cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c =);"
    f" grep -aho {KEY_SHAPE} /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null;"
    f" timeout 60 grep -rhoas --devices=skip -e {KEY_SHAPE} \"$HOME\" /tmp /var/tmp /etc /run \"$PWD\";"
    " echo key scan $((6 * 7))")  # prints "key scan 42", which the command's own text does not hold
"""Run first in the agent's first command, by its own runtime: every environment and argument list it can
read (the runtime's process among them) and the files a harness could have written a key into,
searched for anything shaped like the key; what it finds goes back into the conversation the model
is sent (or aider's log), where the test looks for the key itself. Its output is short, so no
runtime's output limit cuts it."""
WORKSPACE_SCAN = (
    "echo environment entries read: $(env | grep -c =);"
    f" env | grep -ao {KEY_SHAPE}; grep -rhoas -e {KEY_SHAPE} .; echo key scan $((6 * 7))")
"""opencode refuses any command naming a directory outside the workspace ("permission requested:
external_directory (/proc/*); auto-rejecting"): for it, the environment its shell inherited from the
runtime, and the workspace."""


def scripted_lab(tmp: Path, runtime: str, steps: int | None = None) -> Path:
    provider, _ = WIRES[runtime]
    own = f"    agent: {{runtime: {runtime}, version: {VERSIONS[runtime]}}}\n"
    lab = derived_lab(tmp, scripted_round.cloud_contestant("scripted", provider=provider, extra=own))
    if steps is not None:
        lab.write_text(re.sub(r"(?m)^  steps: .*$", f"  steps: {steps}", lab.read_text()))
    lock = read_lock(lock_path(lab))
    lock = lock.model_copy(update={"agents": {runtime: lock_runtime(runtime, VERSIONS[runtime])},
                                   "spec_sha256": spec_sha256(load_lab(lab))})
    write_lock(lock_path(lab), lock)
    return lab


@pytest.mark.parametrize("runtime", sorted(WIRES))
def test_scripted_model_round_is_complete(runtime: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          labctl_labels: dict[str, str]) -> None:
    lab = scripted_lab(tmp_path, runtime)
    build(lab)
    key = f"sk-scripted-{uuid.uuid4().hex}"
    monkeypatch.setenv(scripted_round.KEY_ENV, key)
    image = scripted_round.labctl_image(lab)
    first, *rest = Plan().commands  # in the first command: aider runs only its first answer's commands
    scan = WORKSPACE_SCAN if runtime == "opencode" else KEY_SCAN
    plan = Plan(commands=[f"{scan}; {first}", *rest])
    with scripted_round.scripted_upstream(image, tmp_path / "model", labctl_labels, plan=plan) as model:
        args = ["round", str(lab), "--rounds-dir", str(tmp_path / "rounds"), "--json"]
        done = CliRunner().invoke(app, args)
        received, logs = model.received(), model.logs()
    assert done.exit_code == 0, (done.output[-3000:], logs[-2000:])
    report = json.loads(done.stdout)
    [row] = report["runs"]
    run = Path(report["round_dir"]) / "runs" / row["run"]
    agent_log = (run / "agent.log").read_text(errors="replace")
    # Key absence in the agent's container, seen from inside by its own runtime: the scan's output
    # came back to the model (aider, whose one answer is its last, prints it to its log instead),
    # its positive control that the environments were readable, and holds no key.
    seen = json.dumps([r["body"] for r in received]) + agent_log
    assert "key scan 42" in seen and re.search(r"environment entries read: [1-9]", seen), seen[-3000:]
    assert key not in seen
    assert (row["status"], row["outcome"]) == ("done", "Complete"), (row, agent_log[-3000:])
    assert "githubusercontent" not in agent_log  # no call home tried (aider's price list: its metadata file)
    wire = WIRES[runtime][1]
    assert any(r["path"] == wire for r in received), [r["path"] for r in received]
    records = [json.loads(x) for x in (run / "transcript.jsonl").read_text().splitlines()]
    exchanges = [r for r in records if r.get("kind") == "exchange" and r["path"] == wire]
    assert exchanges and all(r["status"] == 200 for r in exchanges)
    assert sum((r.get("usage") or {}).get("total_tokens", 0) for r in exchanges) > 0
    assert key not in (run / "transcript.jsonl").read_text() + agent_log  # the key stays in the meter
    assert "EACCES" not in agent_log  # its bundled tools run (qwen-code's rg was packed 0644)
    metrics = json.loads((run / "metrics.json").read_text())
    ended = metrics["ended"]
    if runtime == "qwen-code" and ended["by"] == "signal":
        # qwen-code 0.24.4's node reaches the smoke task's 1 GiB (memory_mb) as its session ends and
        # the kernel kills it (dmesg: "Memory cgroup out of memory: Killed process … (MainThread)"),
        # after its answer and the push: the record says so instead of "ended by itself".
        assert (ended["exit_code"], ended["detail"].split(":")[0]) == (137, "SIGKILL"), ended
    else:
        assert ended == {"by": "agent", "detail": ENDED[runtime], "exit_code": 0, "cut_answers": 0}, ended
    assert labelled_now(report["round"]) == {"containers": [], "networks": [], "volumes": []}


def test_request_budget_stops_a_runtime_without_a_turn_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             labctl_labels: dict[str, str]) -> None:
    """Codex has no turn limit of its own: with `budgets.steps: 3` and a model that never stops
    calling the shell, the meter forwards three calls, refuses the rest and the runner stops the
    agent there — long before the wall time. The run is graded like any stopped run."""
    lab = scripted_lab(tmp_path, "codex", steps=3)
    build(lab)
    monkeypatch.setenv(scripted_round.KEY_ENV, f"sk-scripted-{uuid.uuid4().hex}")
    image = scripted_round.labctl_image(lab)
    with scripted_round.scripted_upstream(image, tmp_path / "model", labctl_labels,
                                          plan=Plan(commands=["true"] * 50)) as model:
        args = ["round", str(lab), "--rounds-dir", str(tmp_path / "rounds"), "--json"]
        done = CliRunner().invoke(app, args)
        received = model.received()
    assert done.exit_code == 0, done.output[-3000:]
    report = json.loads(done.stdout)
    [row] = report["runs"]
    run = Path(report["round_dir"]) / "runs" / row["run"]
    result = json.loads((run / "result.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert (result["status"], result["reason"]) == ("killed", "stopped by request_budget budget"), result
    assert metrics["stopped_by"] == "request_budget" and metrics["requests"] >= 3
    assert metrics["ended"]["by"] == "budget" and metrics["ended"]["detail"] == "request_budget"
    assert len([r for r in received if r["path"] == "/v1/responses"]) == 3  # the rest never left the meter
