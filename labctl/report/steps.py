"""A run's transcript as the steps a reader follows on its run page (`labctl.report.runpage`): each
model call with its answer, what the runtime executed for it and what came back, its tokens and
llama.cpp timings, the interventions the meter fired on it and the pathology flags anchored there.

Why here and not in `labctl.run.pathology`: the report sits beside the run path, never above it
(pyproject's import-linter contract), so it cannot import the grader. It needs nothing of it either:
the steps are numbered as the grader numbers them (answered exchanges from 1), the executed actions
and their observations come from the one definition both share (`labctl.meter.actions`), and where a
seed pattern fired comes from metrics.json's own `pathology` block, which records its steps. Only the
three streak measures record a length and no position, so their place is found again here, by the
same rule (`labctl.spec.pathology.longest_run`). Pure functions, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from labctl.meter import actions as act
from labctl.meter.readback import Record, exchange_records
from labctl.meter.wire_responses import request_turns
from labctl.spec.pathology import longest_run


@dataclass
class Call:
    """One thing the runtime executed for an answer, and what the agent got back for it."""

    name: str
    arguments: str
    """The arguments pretty-printed (a tool call), or the block itself (a text runtime)."""
    command: str | None
    result: act.Result | None
    """The observation in the next request; None when there is none (the last step, a stop)."""
    more: bool = True
    """The arguments say more than the command (a shell tool's lone `command` does not)."""


@dataclass
class Step:
    """One exchange with the model: answered (numbered as the grader numbers steps) or not."""

    n: int | None
    """1-based step number among the answered exchanges; None for a request with no answer."""
    seq: int | None
    answer: str
    reasoning: str
    calls: list[Call]
    finish_reason: str | None
    usage: dict[str, Any]
    timings: dict[str, Any]
    latency_ms: float | None
    status: Any
    error: str | None
    interventions: list[Record] = field(default_factory=list)
    """The meter's intervention records fired on this request (before it was forwarded)."""
    flags: list[str] = field(default_factory=list)
    """Pathology flags (metrics.json `flags`) anchored at this step."""


def _pretty(arguments: Any) -> str:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return arguments
    return json.dumps(arguments, indent=2, ensure_ascii=False)


def _parsed(arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return {}
    return arguments if isinstance(arguments, dict) else {}


def _calls(request: Record | None, response: Record, nxt: Record | None) -> list[Call]:
    """The executed actions aligned with their observations, as `labctl.run.patterns.steps` aligns
    them; a structured call shows its own name and arguments rather than the comparable key."""
    acts = act.actions(request, response)
    raw = [c for c in response.get("tool_calls") or [] if isinstance(c, dict)]
    obs = act.observations(nxt)
    out = []
    for i, a in enumerate(acts):
        rc = raw[i] if i < len(raw) else None
        if rc is not None:
            fn = rc["function"] if isinstance(rc.get("function"), dict) else rc
            name, raw_args = str(fn.get("name") or "(unnamed tool)"), fn.get("arguments", fn.get("input"))
            args = _pretty(raw_args)
            more = a.command is None or len(_parsed(raw_args)) != 1
        else:
            name, args, more = ("shell block" if a.command is not None else "edit block"), a.key, False
        out.append(Call(name, args, a.command, obs[i] if i < len(obs) else None, more))
    return out


def _error(rec: Record) -> str | None:
    err = rec.get("error")
    if err is None:
        return None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return f"{err.get('type') or 'error'}: {err['message']}"
    return err if isinstance(err, str) else json.dumps(err, ensure_ascii=False)


def steps(records: Sequence[Record]) -> list[Step]:
    """Every exchange in transcript order; interventions attached to the request they fired on (an
    intervention record's `seq` is its exchange's)."""
    exchanges = [r for r in exchange_records(records) if isinstance(r, dict)]
    answered = [r for r in exchanges if isinstance(r.get("response"), dict)]
    following = {id(r): (answered[i + 1].get("request") if i + 1 < len(answered) else None)
                 for i, r in enumerate(answered)}
    number = {id(r): i for i, r in enumerate(answered, 1)}
    out = []
    for r in exchanges:
        resp = r.get("response") if isinstance(r.get("response"), dict) else None
        lat, usage, timings = r.get("latency_ms"), r.get("usage"), r.get("timings")
        out.append(Step(
            n=number.get(id(r)), seq=r.get("seq") if type(r.get("seq")) is int else None,
            answer=act.text(resp.get("content")) if resp else "",
            reasoning=str(resp.get("reasoning") or "") if resp else "",
            calls=_calls(r.get("request"), resp, following[id(r)]) if resp else [],
            finish_reason=str(resp.get("finish_reason")) if resp and resp.get("finish_reason") else None,
            usage=usage if isinstance(usage, dict) else {},
            timings=timings if isinstance(timings, dict) else {},
            latency_ms=float(lat) if isinstance(lat, int | float) else None,
            status=r.get("status"), error=_error(r)))
    by_seq = {s.seq: s for s in out if s.seq is not None}
    # an operator's nudge (`labctl nudge`) went into the request naming it `operator:<seq>`
    by_name = {name: st for st, r in zip(out, exchanges, strict=True)
               for name in (r.get("interventions") or [])}
    for rec in records:
        seq, kind = rec.get("seq"), rec.get("kind")
        s = (by_seq.get(seq) if kind == "intervention" and type(seq) is int
             else by_name.get(f"operator:{seq}") if kind == "operator" else None)
        if s is not None:
            s.interventions.append(rec)
    return out


def orphan_interventions(records: Sequence[Record], st: Sequence[Step]) -> list[Record]:
    """Interventions whose request is not in the transcript (a record cut by a kill): shown after
    the last step rather than lost."""
    placed = {id(i) for s in st for i in s.interventions}
    return [r for r in records if r.get("kind") in ("intervention", "operator") and id(r) not in placed]


def first_prompt(records: Sequence[Record]) -> str:
    """The conversation as the first request opened it (system prompt, task), one turn a paragraph."""
    for r in exchange_records(records):
        turns = request_turns(r.get("request") or {}) if isinstance(r.get("request"), dict) else None
        if isinstance(turns, list):
            sys = r["request"].get("system") or r["request"].get("instructions")
            parts = [f"[system]\n{act.text(sys)}"] if sys else []
            parts += [f"[{t.get('role', '?')}]\n{act.text(t.get('content'))}"
                      for t in turns if isinstance(t, dict)]
            return "\n\n".join(parts)
    return ""


# --- where the pathology flags fired ---------------------------------------------------------------


def _streaks(answered: list[Step]) -> dict[str, list[int]]:
    """Flag prefix → step numbers of the three streak measures."""
    calls = ["\n".join(f"{c.name}({c.arguments})" for c in s.calls) or None for s in answered]
    text = [s.answer.strip() or None for s in answered]
    failing = ["\n".join(f"{c.name}({c.arguments})" for c in s.calls)
               if s.calls and any(c.result is not None and c.result.failed for c in s.calls) else None
               for s in answered]
    return {"repeated identical tool call": [answered[i].n or 0 for i in longest_run(calls)],
            "degenerate loop": [answered[i].n or 0 for i in longest_run(text)],
            "same command failing repeatedly": [answered[i].n or 0 for i in longest_run(failing)]}


def _ints(v: Any) -> list[int]:
    if type(v) is int:
        return [v]
    if isinstance(v, list):
        return [n for x in v for n in _ints(x)]
    return []


def anchor_flags(st: Sequence[Step], flags: Sequence[str], pathology: dict[str, Any] | None) -> list[str]:
    """Attach each fired flag to the steps where it shows; returns the flags with no step (zero tool
    calls, context overflow), which belong to the run as a whole."""
    p = pathology or {}

    def at(key: str, sub: str) -> list[int]:
        block = p.get(key)
        return _ints(block.get(sub)) if isinstance(block, dict) else []

    answered = [s for s in st if s.n is not None]
    where = {"repeated line in one answer": at("repeated_line", "steps") or at("repeated_line", "step"),
             "same command failing with the same error": at("repeated_failure", "steps"),
             "tool calls written as text": at("text_tool_calls", "steps"),
             "build passed": at("build_without_commit", "build_step"),
             "working-directory amnesia": at("cwd_amnesia", "steps"), **_streaks(answered)}
    by_n = {s.n: s for s in answered}
    loose = []
    for flag in flags:
        ns = next((v for k, v in where.items() if flag.startswith(k)), [])
        hit = [by_n[n] for n in dict.fromkeys(ns) if n in by_n]
        for s in hit:
            s.flags.append(flag)
        if not hit:
            loose.append(flag)
    return loose


__all__ = ["Call", "Step", "anchor_flags", "first_prompt", "orphan_interventions", "steps"]
