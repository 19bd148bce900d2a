"""`labctl round` with the scripted model (tests/scripted_model.py) as the one contestant, a
cloud model behind the meter, driven by mini-swe-agent: the harness proven end to end on a real
runtime — the run is Complete, the transcript holds every model call with its tool call and
usage, and the run's metrics count the requests, tool calls and tokens the model saw."""

from __future__ import annotations

import html
import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labctl.cli.app import app
from tests.run.test_runner import build, derived_lab, labelled_now, runner_env  # noqa: F401 (fixture)
from tests.scripted_model import MODEL, SMOKE_WORK, SUBMIT
from tests.scripted_round import KEY_ENV, cloud_contestant, labctl_image, scripted_upstream

pytestmark = pytest.mark.docker
PLACEHOLDER = "labctl-proxy-placeholder"  # the agent's dummy key (labctl/agents/mini_swe_agent.py)


def test_round_with_the_scripted_model_is_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   labctl_labels: dict[str, str]) -> None:
    lab = derived_lab(tmp_path, cloud_contestant("scripted", provider="openai"))
    build(lab)  # what `labctl round` would build; done first to know the labctl image's tag
    key = f"sk-scripted-{uuid.uuid4().hex}"
    monkeypatch.setenv(KEY_ENV, key)
    with scripted_upstream(labctl_image(lab), tmp_path / "model", labctl_labels) as model:
        args = ["round", str(lab), "--rounds-dir", str(tmp_path / "rounds"), "--json"]
        done = CliRunner().invoke(app, args)
        received = model.received()
        model_logs = model.logs()
    assert done.exit_code == 0, (done.output, model_logs[-2000:])
    report = json.loads(done.stdout)
    [row] = report["runs"]
    run = Path(report["round_dir"]) / "runs" / row["run"]
    agent_log = (run / "agent.log").read_text(errors="replace") if (run / "agent.log").is_file() else ""
    assert (row["status"], row["outcome"]) == ("done", "Complete"), (row, agent_log[-3000:])
    assert row["contestant"] == "scripted" and row["commits"] == 1

    # mini-swe-agent declared its `bash` tool; the model ran the plan through it, one call a turn.
    assert [r["path"] for r in received] == ["/v1/chat/completions"] * 2
    for r in received:
        headers = {k.lower(): v for k, v in r["headers"].items()}
        assert headers["authorization"] == f"Bearer {key}" and PLACEHOLDER not in json.dumps(r)
        assert r["body"]["model"] == "scripted-model-1"
    exchanges = [json.loads(x) for x in (run / "transcript.jsonl").read_text().splitlines()]
    exchanges = [r for r in exchanges if r["kind"] == "exchange"]
    calls = [json.loads(c["arguments"])["command"] for r in exchanges for c in r["response"]["tool_calls"]]
    assert calls == [SMOKE_WORK, SUBMIT]
    for r in exchanges:
        assert r["status"] == 200 and r["error"] is None, r
        assert r["usage"]["prompt_tokens"] > 0 and r["usage"]["completion_tokens"] > 0, r["usage"]

    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["requests"], metrics["tool_calls"]) == (2, 2), metrics
    assert metrics["total_tokens"] == sum(r["usage"]["total_tokens"] for r in exchanges) > 0
    assert row["tool_calls"] == 2 and row["total_tokens"] == metrics["total_tokens"]
    # how the session ended, in mini-swe-agent's own word (its trajectory), as the report tells it
    assert metrics["ended"] == {"by": "agent", "detail": "Submitted — submitted its work", "exit_code": 0,
                                "cut_answers": 0}, metrics
    seen = (run / "transcript.jsonl").read_text() + agent_log
    assert key not in seen and MODEL not in seen
    # the run's page (issue #29), written with the report: both calls, at their steps, and the name
    made = CliRunner().invoke(app, ["report", report["round_dir"], "--format", "html"])
    assert made.exit_code == 0, made.output
    page = (run / "transcript.html").read_text()
    step1, step2 = page.index("Step 1"), page.index("Step 2")  # (the opening prompt names SUBMIT too)
    assert step1 < page.index(html.escape(SMOKE_WORK), step1) < step2 < page.index(html.escape(SUBMIT), step2)
    assert "scripted" in page and key not in page and MODEL not in page
    assert f'runs/{row["run"]}/transcript.html' in (Path(report["round_dir"]) / "report.html").read_text()
    assert labelled_now(report["round"]) == {"containers": [], "networks": [], "volumes": []}
