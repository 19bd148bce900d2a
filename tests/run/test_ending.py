"""How a session ended, from its witnesses (`labctl.run.ending`): labctl's own stop first, then the
transcript's last word (a request refused for its length, an answer cut at max_output on any wire),
the meter's upstream errors, and else the runtime's own line. Records shaped as the meter writes
them (`labctl.meter.transcript`): a cut answer's finish_reason is chat completions' `length`,
Anthropic's `max_tokens`, and `length` for a Responses answer incomplete at max_output_tokens."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from labctl.agents import adapter
from labctl.meter.state import MeterState
from labctl.round.records import RunMetrics, read_metrics, write_metrics
from labctl.run.ending import cut_answers, run_ending, session_ending

ENDINGS = Path(__file__).resolve().parents[1] / "agents" / "endings"
OVERFLOW = {"code": 400, "message": "the request exceeds the available context size, try increasing it",
            "type": "exceed_context_size_error", "upstream_status": 400}


def answer(finish: str | None = "stop", calls: int = 0) -> dict[str, Any]:
    return {"kind": "exchange", "status": 200, "error": None, "request": {"messages": []},
            "response": {"content": "…", "tool_calls": [{"id": f"c{i}", "name": "bash", "arguments": "{}"}
                                                        for i in range(calls)], "finish_reason": finish}}


def refused(error: Any, status: int = 400) -> dict[str, Any]:
    return {"kind": "exchange", "status": status, "error": error, "request": {"messages": []},
            "response": None}


def state(**kw: Any) -> MeterState:
    return MeterState(alias="run-1", dialect="openai", started_at=0.0, **kw)


def end(records: list[dict[str, Any]], stopped_by: str | None = None, own: str | None = None,
        meter: MeterState | None = None, exit_code: int | None = 0) -> tuple[str, str | None, int | None]:
    e = session_ending(stopped_by=stopped_by, exit_code=exit_code, own=own, records=records,
                       meter_state=meter, needs_model=True)
    return e.by, e.detail, e.cut_answers


def test_cut_answers_on_every_wire() -> None:
    recs = [answer("length"), answer("max_tokens"), answer("tool_calls", 1), answer("stop"),
            answer("end_turn"), refused(OVERFLOW)]
    assert cut_answers(recs) == 2


def test_labctl_stops_come_first() -> None:
    recs = [answer("length")]
    assert end(recs, "wall_time", own="Operation cancelled.", exit_code=137) == ("wall_time", None, 1)
    assert end(recs, "token_budget") == ("budget", "token_budget", 1)
    assert end(recs, "request_budget") == ("budget", "request_budget", 1)
    assert end(recs, "cost_budget") == ("budget", "cost_budget", 1)  # a priced run's budgets.cost
    assert end(recs, "intervention:stop-after-loop") == ("intervention", "stop-after-loop", 1)
    assert end(recs, "upstream_error", meter=state(errored=True, last_error="upstream 503")) \
        == ("upstream_error", "upstream 503", 1)
    assert end(recs, "repeated_tool_call") == ("meter", "repeated_tool_call", 1)


def test_the_transcript_explains_an_agent_that_gave_up() -> None:
    own = "[API Error: 400 the request exceeds the available context size, try increasing it]"
    assert end([answer(calls=1), refused(OVERFLOW)], own=own, exit_code=1) == ("context_overflow", own, 0)
    # without the runtime's word: the upstream's own message
    assert end([refused(OVERFLOW)], exit_code=1) == (
        "context_overflow", "the request exceeds the available context size, try increasing it", 0)
    # an upstream failure the meter marked, the agent out of retries before labctl's next look
    assert end([answer(), refused("upstream 500", 502)], meter=state(errored=True, last_error="upstream 500"),
               exit_code=1) == ("upstream_error", "upstream 500", 0)
    # the last answer cut at max_output, then the runtime ended (mini: an unparsable answer)
    own = "RepeatedFormatError — answers it could not parse, several in a row"
    assert end([answer("length"), answer("length")], own=own) == ("max_output", own, 2)
    # an earlier cut answer is counted, but it is not how the session ended
    assert end([answer("length"), answer("stop")], own="Submitted — submitted its work") \
        == ("agent", "Submitted — submitted its work", 1)


def test_a_signal_labctl_did_not_send_is_not_an_ending_by_itself() -> None:
    """Exit 128 + N with no stop of labctl's: something else killed the runtime (qwen-code's node is
    OOM-killed at the smoke task's 1 GiB as its session ends: exit 137 after its answer)."""
    by, detail, _ = end([answer("stop")], exit_code=137)
    assert by == "signal" and detail is not None and detail.startswith("SIGKILL: the kernel's OOM killer")
    assert end([answer("stop")], own="Operation cancelled.", exit_code=143) == (
        "signal", "SIGTERM; Operation cancelled.", 0)
    assert end([answer("stop")], exit_code=124)[0] == "agent"  # an exit status, not a signal
    assert end([answer("stop")], "wall_time", exit_code=137)[0] == "wall_time"  # labctl's own SIGKILL


def test_a_control_without_a_model_ended_by_itself() -> None:
    e = session_ending(stopped_by=None, exit_code=0, own=None, records=[], meter_state=None,
                       needs_model=False)
    assert (e.by, e.detail, e.exit_code, e.cut_answers) == ("agent", None, 0, None)


@pytest.mark.parametrize(("case", "by", "start"), [
    ("submitted", "agent", "Submitted"), ("limits", "agent", "LimitsExceeded"),
    ("formaterror", "agent", "RepeatedFormatError"),
    ("overflow", "context_overflow", "litellm.ContextWindow")])
def test_a_collected_run_directory_is_read_and_recorded(tmp_path: Path, case: str, by: str,
                                                        start: str) -> None:
    """What `RunSession.grade` does after collect: the real mini-swe-agent session's agent.log and
    trajectory in the run directory, the meter's transcript beside them; metrics.json keeps `ended`."""
    src = ENDINGS / "mini-swe-agent" / case
    shutil.copyfile(src / "agent.log", tmp_path / "agent.log")
    shutil.copytree(src / "artifacts", tmp_path / "artifacts" / "agent")
    last = refused(OVERFLOW) if case == "overflow" else answer(calls=1)
    (tmp_path / "transcript.jsonl").write_text(json.dumps(last) + "\n")
    e = run_ending(adapter("mini-swe-agent"), tmp_path, stopped_by=None,
                   exit_code=int((src / "exit_code").read_text()), meter_state=state())
    assert e.by == by and e.detail is not None and e.detail.startswith(start)
    write_metrics(tmp_path / "metrics.json", RunMetrics(wall_time_s=1.0, ended=e))
    back = read_metrics(tmp_path / "metrics.json")
    assert back is not None and back.ended == e
    assert json.loads((tmp_path / "metrics.json").read_text())["ended"]["by"] == by
