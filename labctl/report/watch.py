"""`labctl watch`: a round in flight, one row per run id, read from the files the runs write.

Why from files: a run's meter publishes status.json and appends transcript.jsonl in the run's scratch
directory (`runs/<id>/live.json` says where, `labctl.round.operator`), and a finished run's copies sit
in its run directory; reading them needs no connection to any container and cannot disturb a run.

Blind by construction: it reads sealed.json (the run ids), result.json, the meter's files and the
round's operator log — never unsealed.json or anything else that maps a run to a contestant. The
meter's files name the model by its alias, the run id, only.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from labctl.meter.actions import actions
from labctl.meter.readback import exchange_records, speeds, transcript_records
from labctl.meter.state import MeterState, read_status
from labctl.round.layout import FINISHED, RunResult, read_result, read_sealed, result_path, run_dir
from labctl.round.operator import live_meter

ANSWER_LINES = 3
"""Lines of the model's latest answer shown per run."""


def _result(round_dir: Path, rid: str) -> RunResult | None:
    try:
        return read_result(round_dir, rid) if result_path(round_dir, rid).is_file() else None
    except (OSError, ValueError):
        return None


def _last(records: list[dict[str, Any]]) -> tuple[str | None, list[str]]:
    """The latest answer's last command (or call) and the last lines of its text."""
    for rec in reversed(exchange_records(records)):
        resp = rec.get("response")
        if not isinstance(resp, dict):
            continue
        acts = actions(rec.get("request") if isinstance(rec.get("request"), dict) else None, resp)
        command = (acts[-1].command or acts[-1].key) if acts else None
        text = str(resp.get("content") or resp.get("reasoning") or "")
        return command, [ln for ln in text.splitlines() if ln.strip()][-ANSWER_LINES:]
    return None, []


def _flags(state: MeterState | None, records: list[dict[str, Any]]) -> list[str]:
    """What fired, in the order a reader wants it: stops, errors, interventions, operator's."""
    out: list[str] = []
    if state is not None:
        if state.stopped:
            out.append(f"stopped: {state.stopped_reason}")
        if state.errored:
            out.append(f"errored: {state.last_error}")
        if state.partial_exchanges:
            out.append(f"partial usage ×{state.partial_exchanges}")
        out += [f"{name} ×{n}" for name, n in sorted(state.interventions.items())]
    ops = [r for r in records if r.get("kind") == "operator"]
    out += [f"operator {r.get('action')} #{r.get('seq')}" for r in ops]
    return out


def run_row(round_dir: Path, rid: str, now: float | None = None) -> dict[str, Any]:
    """One run's row: `running` while its meter is live, the result's status once it ended,
    `pending` before it started."""
    now = time.time() if now is None else now
    result = _result(round_dir, rid)
    meter = live_meter(run_dir(round_dir, rid))
    live = meter is not None and (result is None or result.status not in FINISHED)
    if live and meter is not None:
        state, records = read_status(meter / "status.json"), transcript_records(meter / "transcript.jsonl")
        status = "running"
    else:
        d = run_dir(round_dir, rid)
        state, records = read_status(d / "meter-status.json"), transcript_records(d / "transcript.jsonl")
        status = result.status if result is not None else "pending"
    elapsed: float | None = None
    if live and state is not None:
        elapsed = now - state.started_at
    elif result is not None and result.started is not None:
        end = result.ended.timestamp() if result.ended is not None else now
        elapsed = end - result.started.timestamp()
    command, answer = _last(records)
    gen = speeds(records).gen_tokens_per_s
    if gen is None and state is not None and elapsed:
        gen = state.completion_tokens / elapsed if state.completion_tokens else None
    return {"run_id": rid, "status": status, "elapsed_s": None if elapsed is None else round(elapsed, 1),
            "tokens": state.total_tokens if state else None,
            "tokens_per_s": None if gen is None else round(gen, 1),
            "requests": state.requests if state else None, "tool_calls": state.tool_calls if state else None,
            "last_command": command, "flags": _flags(state, records), "answer_tail": answer,
            "operator": {"nudges": state.operator_nudges, "stops": state.operator_stops} if state else None,
            "reason": result.reason if result is not None and not live else None}


def snapshot(round_dir: Path, now: float | None = None) -> dict[str, Any]:
    """Every run of the round in execution order (`--once --json` prints this)."""
    sealed = read_sealed(round_dir)
    rows = [run_row(round_dir, rid, now) for rid in (sealed.order or sealed.run_ids)]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return {"round": sealed.round, "runs": rows, "counts": counts,
            "in_flight": any(r["status"] in ("running", "pending") for r in rows)}


def _cell(v: Any, fmt: str = "{}") -> str:
    return "—" if v is None else fmt.format(v)


def _elapsed(s: float | None) -> str:
    """`42s`, `3m05s`, `1h02m`."""
    if s is None:
        return "—"
    m, sec = divmod(int(s), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"


def render(snap: dict[str, Any]) -> Group:
    """The rich screen: a table of runs, then each live run's latest answer lines."""
    counts = "  ".join(f"{k}: {n}" for k, n in sorted(snap["counts"].items()))
    t = Table(title=f"round {snap['round']}  {counts}", title_justify="left")
    for h in ("Run", "Status", "Elapsed", "Tokens", "tok/s", "Calls", "Last command", "Flags"):
        t.add_column(h, overflow="fold")
    for r in snap["runs"]:
        t.add_row(r["run_id"], r["status"], _elapsed(r["elapsed_s"]), _cell(r["tokens"]),
                  _cell(r["tokens_per_s"]), _cell(r["tool_calls"]), (r["last_command"] or "—")[:60],
                  ", ".join(r["flags"]) or "—")
    parts: list[Table | Text] = [t]
    for r in snap["runs"]:
        if r["status"] == "running" and r["answer_tail"]:
            parts.append(Text(f"{r['run_id']} ▸ " + "\n    ".join(ln[:120] for ln in r["answer_tail"])))
    return Group(*parts)


__all__ = ["render", "run_row", "snapshot"]
