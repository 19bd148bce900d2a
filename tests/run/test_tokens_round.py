"""A run stopped by its wall time in the middle of a model's answer, end to end in Docker: the run's
tokens are its llama-server's own counters, not the 0 the meter alone would report.

The tiny model (generated, 64k training context) is served with `--ignore-eos` and a max_output of
60,000 tokens, so its first answer takes far longer than the 20 s wall time whatever the machine:
the stop always lands mid-answer. No timing is asserted, only what the stop leaves behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labctl.gguf.store import Store
from labctl.lock.hub import lock_model
from labctl.lock.lockfile import lock_path, read_lock, write_lock
from labctl.run.runner import open_round, run_round
from labctl.spec.load import load_lab
from tests.run.test_runner import build, derived_lab, runner_env, seal  # noqa: F401

pytestmark = pytest.mark.docker

LONG_TALKER = """\
  - id: long-talker
    kind: local
    model:
      generate: {seed: 11, context_length: 65536}
    serve: {context: 65536, max_output: 60000, extra_args: ["--ignore-eos"]}
"""


def test_wall_time_mid_answer_counts_the_servers_tokens(tmp_path: Path) -> None:
    lab = derived_lab(tmp_path, LONG_TALKER, wall="20s")
    loaded = load_lab(lab)
    [c] = loaded.lab.contestants
    lock = read_lock(lock_path(lab))
    write_lock(lock_path(lab), lock.model_copy(update={
        "models": {c.id: lock_model(c, base_dir=loaded.base_dir, store=Store())}}))
    build(lab)
    rd = seal(lab, tmp_path)
    [summary] = run_round(open_round(rd, lab, store=Store()))
    run = rd / "runs" / summary.run_id
    m = json.loads((run / "metrics.json").read_text())
    assert m["stopped_by"] == "wall_time", (summary, m)
    records = [json.loads(x) for x in (run / "transcript.jsonl").read_text().splitlines()]
    cut = [r for r in records if r.get("kind") == "exchange" and (r.get("usage") or {}).get("partial")]
    assert cut and cut[-1]["error"]["type"] == "agent_disconnected", records[-1:]
    srv, meter = m["server_tokens"], m["meter_tokens"]
    assert m["tokens_source"] == "server" and m["tokens_partial"] is False and m["partial_calls"] >= 1, m
    assert m["total_tokens"] == srv["prompt_processed"] + srv["prompt_cached"] + srv["predicted"], m
    assert srv["predicted"] > meter["completion_tokens"] and m["total_tokens"] > meter["total_tokens"], m
    assert m["prompt_tokens"] >= 1000  # mini-swe-agent's first prompt alone is ~2.8k tokens
