"""The report's Ended line for every way a session ends, and the Results table's Nudges cell in the
publication's notation (`2 + stop`, `stop`). Pure: records in, words out (a whole round's report:
tests/report/test_report.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from labctl.report.data import ContestantData, ReportMetrics, RunData
from labctl.report.tables import _nudges
from labctl.report.why import ENDED_BY, ended_text, story
from labctl.round.layout import RunResult
from labctl.round.records import Ending
from labctl.spec.lab import Lab
from labctl.spec.located import load_yaml, validate

ROOT = Path(__file__).resolve().parents[2]

CASES = [
    (Ending(by="agent", detail="Submitted — submitted its work", exit_code=0, cut_answers=0), "done", None,
     "the agent ended by itself: Submitted — submitted its work (exit 0)"),
    (Ending(by="agent", detail="RepeatedFormatError — answers it could not parse, several in a row",
            exit_code=0, cut_answers=3), "done", None,
     "the agent ended by itself: RepeatedFormatError — answers it could not parse, several in a row "
     "(exit 0); 3 answers cut at max_output"),
    (Ending(by="agent", exit_code=53, detail="Reached max session turns for this session."), "done", None,
     "the agent ended by itself: Reached max session turns for this session. (exit 53)"),
    (Ending(by="signal", detail="SIGKILL: the kernel's OOM killer sends it at the task's memory limit "
            "(task.toml memory_mb)", exit_code=137, cut_answers=0), "done", None,
     "the agent was killed by a signal labctl did not send: SIGKILL: the kernel's OOM killer sends it at "
     "the task's memory limit (task.toml memory_mb) (exit 137)"),
    (Ending(by="wall_time", exit_code=137, cut_answers=1), "killed", "stopped by wall_time budget",
     "stopped at the lab's wall time (exit 137); 1 answer cut at max_output"
     " — run killed: stopped by wall_time budget"),
    (Ending(by="budget", detail="token_budget", exit_code=1), "killed", "stopped by token_budget budget",
     "stopped by the token budget (exit 1) — run killed: stopped by token_budget budget"),
    (Ending(by="budget", detail="request_budget", exit_code=0), "done", None,
     "stopped by the request budget (exit 0)"),
    (Ending(by="budget", detail="cost_budget", exit_code=0), "done", None,
     "stopped by the cost budget (exit 0)"),
    (Ending(by="intervention", detail="stop-after-loop", exit_code=137), "killed",
     "stopped by intervention:stop-after-loop budget",
     "stopped by the intervention `stop-after-loop` (exit 137) — run killed: stopped by "
     "intervention:stop-after-loop budget"),
    (Ending(by="upstream_error", detail="upstream 500: upstream failed", exit_code=1), "errored",
     "upstream error: upstream 500: upstream failed",
     "an upstream error: upstream 500: upstream failed (exit 1) — run errored: upstream error: upstream "
     "500: upstream failed"),
    (Ending(by="context_overflow", detail="[API Error: 400 the request exceeds the available context size, "
            "try increasing it]", exit_code=1, cut_answers=0), "done", None,
     "a request was refused for its length (context overflow): [API Error: 400 the request exceeds the "
     "available context size, try increasing it] (exit 1)"),
    (Ending(by="max_output", detail="RepeatedFormatError — answers it could not parse, several in a row",
            exit_code=0, cut_answers=1), "done", None,
     "the agent ended after an answer cut at max_output: RepeatedFormatError — answers it could not parse, "
     "several in a row (exit 0)"),
    (Ending(by="max_output", exit_code=0, cut_answers=4), "done", None,
     "the agent ended after an answer cut at max_output (exit 0); 4 answers cut at max_output in all"),
    (Ending(by="meter", detail="repeated_tool_call", exit_code=137), "killed",
     "stopped by repeated_tool_call budget",
     "stopped by the meter: repeated_tool_call (exit 137) — run killed: stopped by repeated_tool_call "
     "budget"),
    (None, "errored", "the verifier wrote no reward",
     "not recorded (the round predates it) — run errored: the verifier wrote no reward"),
    (None, "done", None, "not recorded (the round predates it)"),
]


def test_every_kind_of_ending_has_words() -> None:
    assert {c[0].by for c in CASES if c[0] is not None} == set(ENDED_BY)


@pytest.mark.parametrize(("ending", "status", "reason", "line"), CASES)
def test_the_ended_line(ending: Ending | None, status: str, reason: str | None, line: str) -> None:
    assert ended_text(ending, status, reason) == line


def test_every_story_has_an_ended_line_first() -> None:
    """Today's main printed it only when result.reason was set: a run that ended by itself said nothing."""
    metrics = ReportMetrics(ended=Ending(by="agent", detail="Submitted — submitted its work", exit_code=0))
    told = story(RunData("run-3", "c", 1, RunResult(run_id="run-3", status="done"), metrics), "c")
    assert told.lines[0] == ("Ended", "the agent ended by itself: Submitted — submitted its work (exit 0)")


def _contestant(*runs: ReportMetrics) -> ContestantData:
    lab = validate(Lab, load_yaml(ROOT / "lab.yaml"))
    cd = ContestantData(lab.contestants[0], "Local MoE", "30B")
    cd.runs = [RunData(f"run-{i}", "c", i, RunResult(run_id=f"run-{i}", status="done"), m)
               for i, m in enumerate(runs, 1)]
    return cd


def test_nudges_in_the_publications_notation() -> None:
    stop = "intervention:stop-after-loop"
    assert _nudges(_contestant(ReportMetrics(nudges=2))) == "2"
    assert _nudges(_contestant(ReportMetrics(nudges=2, stopped_by=stop))) == "2 + stop"
    assert _nudges(_contestant(ReportMetrics(nudges=0, stopped_by=stop))) == "stop"
    assert _nudges(_contestant(ReportMetrics(nudges=0, stopped_by="wall_time"))) == "0"
    assert _nudges(_contestant(ReportMetrics())) == "—"  # not measured: no model, or an old round
    assert _nudges(_contestant(ReportMetrics(nudges=1), ReportMetrics(nudges=3, stopped_by=stop))) \
        == "2 (1–3) + 1/2 stop"
