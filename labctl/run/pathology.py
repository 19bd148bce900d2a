"""Pathology flags: signs in a run's transcript that an agent went wrong in a recognisable way.

Pure functions over the meter's transcript records (`transcript.jsonl`: one `{"kind": "exchange",
"request", "response", "status", "error", …}` per model request, plus intervention records). The
grader adds `pathology(records, …)` to metrics.json under "pathology" and the names of the flags that
fire under "flags"; the thresholds are the lab's `pathology:` (labctl/spec/pathology.py).

A "step" is one answered exchange (a response), numbered from 1. Its actions are what the runtime
executed for it, as `labctl.meter.actions` defines them (the meter's loop detection uses the same
definition): its structured tool calls, and — only when its request declared no tools — the fenced
blocks a text runtime runs. A command's result is read from the next request's observations:
mini-swe-agent 2.4.x (tool calls, config mini.yaml) sends a tool message `{"returncode": N, …}`; its
older text templates sent `<returncode>N</returncode>`; nonzero is a failure. The seed round's own
failure patterns (repetition inside one answer, identical failures, text tool calls, a build never
committed, working-directory amnesia) are measured in labctl/run/patterns.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from pydantic import ValidationError

from labctl.meter import actions as act
from labctl.run import patterns
from labctl.run.patterns import Step, steps
from labctl.spec.pathology import PathologyThresholds, longest_run

STREAK_THRESHOLD = PathologyThresholds().identical_tool_call
"""The default streak threshold (kept for callers that name it)."""
FENCED_BASH = act.FENCE
RETURNCODE = act.RETURNCODE
LLAMA_OVERFLOW = "exceeds the available context size"

Record = dict[str, Any]


def exchanges(records: Iterable[Record]) -> list[Record]:
    return [r for r in records if isinstance(r, dict) and r.get("kind", "exchange") == "exchange"
            and ("request" in r or "response" in r)]


def answered(records: Iterable[Record]) -> list[Record]:
    """Exchanges with a response (failed requests are no step: a retry follows them)."""
    return [r for r in exchanges(records) if isinstance(r.get("response"), dict)]


def actions(response: Record, request: Record | None = None) -> list[str]:
    """The step's actions as comparable keys (`labctl.meter.actions.actions`): `name(canonical args)`
    per tool call; the fenced blocks of the content only when `request` declared no tools."""
    return [a.key for a in act.actions(request, response)]


def _streak(keys: Sequence[str | None]) -> int:
    """Longest run of equal, non-None consecutive keys (`longest_run`'s length)."""
    return len(longest_run(keys))


def _steps(records: Iterable[Record]) -> list[Step]:
    return steps(answered(records))


def identical_tool_call_streak(records: Iterable[Record]) -> int:
    return _streak(["\n".join(a.key for a in s.actions) or None for s in _steps(records)])


def repeated_text_streak(records: Iterable[Record]) -> int:
    keys = []
    for r in answered(records):
        text = act.text(r["response"].get("content")).strip()
        keys.append(text or None)
    return _streak(keys)


def observation_codes(request: Record | None) -> list[int]:
    """Return codes in the messages after the request's last assistant message (the observations of
    the previous step's commands), in order; observations that state none are left out."""
    return [r.code for r in act.observations(request) if r.code is not None]


def steps_with_results(records: Iterable[Record]) -> Iterator[tuple[list[str], list[int | None]]]:
    """Each answered step's actions with the return code of each (read from the next request; None
    when unknown, e.g. the last step)."""
    for s in _steps(records):
        yield [a.key for a in s.actions], [r.code if r else None for r in s.results]


def failing_command_streak(records: Iterable[Record]) -> int:
    """Longest run of consecutive steps issuing the same command(s) where each one failed (a nonzero
    return code in the next request's observation). A step whose result is unknown ends a run."""
    keys: list[str | None] = []
    for acts, codes in steps_with_results(records):
        failed = bool(acts) and any(c is not None and c != 0 for c in codes)
        keys.append("\n".join(acts) if failed else None)
    return _streak(keys)


def command_results(records: Iterable[Record], pattern: str) -> list[int | None]:
    """Return codes, in order, of the agent's actions that match `pattern` (a regex searched in the
    action's text: a tool call's arguments, or a bash block), None where the result is unknown. For
    a build command: how many builds the agent ran, and which attempt first passed."""
    wanted = re.compile(pattern)
    return [code for acts, codes in steps_with_results(records)
            for act_key, code in zip(acts, codes, strict=True) if wanted.search(act_key)]


def text_actions(records: Iterable[Record]) -> int:
    """Actions of a text runtime (aider, mini-swe-agent's text templates): the executed fenced blocks
    of answers to requests that declared no tools; an agent that declared tools acts only by calling
    them, so a fenced block in its text is just text."""
    return sum(len(act.text_blocks(r["response"].get("content"))) for r in answered(records)
               if not act.declares_tools(r.get("request")) and not act.tool_calls(r["response"]))


def structured_calls(records: Iterable[Record]) -> int:
    """Structured tool calls over the run (what the meter counts as `tool_calls`)."""
    return sum(len(act.tool_calls(r["response"])) for r in answered(records))


def action_count(records: Iterable[Record]) -> int:
    """Every action the runtime executed: structured calls plus a text runtime's executed blocks."""
    return sum(len(s.actions) for s in _steps(records))


def zero_tool_calls(records: Iterable[Record]) -> bool:
    return action_count(records) == 0


def _error_text(rec: Record) -> str:
    err = rec.get("error")
    if err is None:
        return ""
    return (err if isinstance(err, str) else json.dumps(err, ensure_ascii=False)).lower()


def is_context_overflow(rec: Record) -> bool:
    """The upstream refused the request for its length: llama.cpp's own message (any status), or an
    HTTP 400 whose error speaks of the context being exceeded / too long."""
    text = _error_text(rec)
    if not text:
        return False
    if LLAMA_OVERFLOW in text or "context_length_exceeded" in text:
        return True
    status = rec.get("status")
    if isinstance(rec.get("error"), dict) and rec["error"].get("upstream_status") is not None:
        status = rec["error"]["upstream_status"]
    return status == 400 and "context" in text and any(w in text for w in ("exceed", "too long", "maximum"))


def context_overflow_rejections(records: Iterable[Record]) -> int:
    return sum(1 for r in exchanges(records) if is_context_overflow(r))


def pathology(records: Sequence[Record], thresholds: PathologyThresholds | None = None, *,
              tool_calls: int | None = None, build_command: str | None = None,
              commits_pushed: int | None = None) -> dict[str, Any]:
    """The "pathology" block of metrics.json. `tool_calls`: the run's count as metrics.json states it
    (zero_tool_calls is its zero, so the two never disagree); `build_command` (the task's report
    column) and `commits_pushed` (a repository task's origin) feed the build-without-commit measure."""
    t = thresholds or PathologyThresholds()
    recs = list(records)
    st = steps(answered(recs))
    return {
        "longest_identical_tool_call_streak": identical_tool_call_streak(recs),
        "repeated_assistant_text_streak": repeated_text_streak(recs),
        "longest_failing_command_streak": failing_command_streak(recs),
        "zero_tool_calls": action_count(recs) == 0 if tool_calls is None else tool_calls == 0,
        "context_overflow_rejections": context_overflow_rejections(recs),
        "repeated_line": patterns.repeated_line(st, t.repeated_line),
        "repeated_failure": patterns.repeated_failure(st),
        "text_tool_calls": patterns.text_tool_calls(st),
        "build_without_commit": patterns.build_without_commit(st, build_command, commits_pushed),
        "cwd_amnesia": patterns.cwd_amnesia(st),
        "thresholds": t.model_dump(),
    }


def _recorded(p: dict[str, Any]) -> PathologyThresholds:
    """The thresholds a metrics.json recorded; the defaults where it has none (or unreadable ones)."""
    try:
        return PathologyThresholds.model_validate(p.get("thresholds") or {})
    except ValidationError:
        return PathologyThresholds()


def flags(p: dict[str, Any], thresholds: PathologyThresholds | int | None = None) -> list[str]:
    """Human-readable names of the pathologies that fire (each seed pattern with its steps). An int
    `thresholds` is the old single streak threshold."""
    if isinstance(thresholds, int):
        t = PathologyThresholds(identical_tool_call=thresholds, identical_text=thresholds,
                                failing_command=thresholds)
    else:
        t = thresholds or _recorded(p)
    out = []
    if p.get("longest_identical_tool_call_streak", 0) >= t.identical_tool_call:
        out.append(f"repeated identical tool call (x{p['longest_identical_tool_call_streak']})")
    if p.get("repeated_assistant_text_streak", 0) >= t.identical_text:
        out.append(f"degenerate loop: identical assistant text (x{p['repeated_assistant_text_streak']})")
    if p.get("longest_failing_command_streak", 0) >= t.failing_command:
        out.append(f"same command failing repeatedly (x{p['longest_failing_command_streak']})")
    if p.get("zero_tool_calls"):
        out.append("zero tool calls")
    if p.get("context_overflow_rejections", 0) >= 1:
        out.append(f"context overflow rejections ({p['context_overflow_rejections']})")
    out += patterns.flags(p, t)
    return out
