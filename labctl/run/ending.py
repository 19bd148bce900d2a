"""How an agent's session ended, as one record (metrics.json `ended`, `labctl.round.records.Ending`).

Why a module of its own: "why did it end?" has several witnesses and one answer. labctl knows what it
stopped (the session's `stopped_by`: wall time, a budget, an intervention, an upstream failure the
meter reported), the transcript knows what the model server said last (a request refused for its
length, an answer cut at max_output), and only the runtime knows why it gave up by itself (its own
exit status, read by its adapter: `AgentAdapter.ending`). The first witness that explains the end
wins, in that order; the runtime's own line is kept as the detail whenever it said one.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labctl.agents import AgentAdapter
from labctl.agents.endings import clean
from labctl.meter.readback import transcript_records
from labctl.meter.state import MeterState
from labctl.round.records import EndedBy, Ending
from labctl.run.pathology import answered, exchanges, is_context_overflow

CUT = frozenset({"length", "max_tokens"})
"""finish_reason of an answer cut at its output limit: chat completions' `length`, Anthropic's
`max_tokens` (stop_reason); the meter writes a Responses answer incomplete at max_output_tokens as
`length` (`labctl.meter.wire_responses.finish_reason`)."""
BUDGETS = frozenset({"token_budget", "request_budget", "cost_budget"})
OOM_HINT = "the kernel's OOM killer sends it at the task's memory limit (task.toml memory_mb)"
"""Said with a SIGKILL labctl did not send: the usual sender (qwen-code 0.24.4 is killed so at the
smoke task's 1 GiB as its session ends), though the record cannot prove it."""


def killed_by(exit_code: int | None) -> str | None:
    """`SIGKILL` for exit 137 (a shell's and docker exec's 128 + N); None for an ordinary exit."""
    if exit_code is None or not 128 < exit_code < 128 + 65:
        return None
    try:
        return signal.Signals(exit_code - 128).name
    except ValueError:
        return f"signal {exit_code - 128}"


def cut_answers(records: Sequence[dict[str, Any]]) -> int:
    """Answers the model server cut at max_output."""
    return sum(1 for r in answered(records) if r["response"].get("finish_reason") in CUT)


def _error_text(rec: dict[str, Any]) -> str:
    err = rec.get("error")
    if isinstance(err, dict):
        err = err.get("message") or err.get("error") or json.dumps(err, ensure_ascii=False)
    return clean(str(err)) if err else ""


def session_ending(*, stopped_by: str | None, exit_code: int | None, own: str | None,
                   records: Sequence[dict[str, Any]], meter_state: MeterState | None,
                   needs_model: bool) -> Ending:
    """The ending of one session. `stopped_by` is what labctl stopped it for (`RunSession.stopped_by`:
    `wall_time`, `token_budget`, `request_budget`, `cost_budget`, `intervention:<name>`,
    `upstream_error`, or the meter's other reasons), `own` the runtime's own line (its adapter's
    `ending`), `records` the meter's transcript."""
    cut = cut_answers(records) if needs_model else None

    def ended(by: EndedBy, detail: str | None) -> Ending:
        return Ending(by=by, detail=detail, exit_code=exit_code, cut_answers=cut)

    if stopped_by == "wall_time":
        return ended("wall_time", None)
    if stopped_by in BUDGETS:
        return ended("budget", stopped_by)
    if stopped_by and stopped_by.startswith("intervention:"):
        return ended("intervention", stopped_by.split(":", 1)[1])
    if stopped_by == "upstream_error":
        return ended("upstream_error", meter_state.last_error if meter_state else own)
    if stopped_by:
        return ended("meter", stopped_by)
    calls = exchanges(records)
    last = calls[-1] if calls else None
    if last is not None and is_context_overflow(last):
        return ended("context_overflow", own or _error_text(last) or None)
    if meter_state is not None and meter_state.errored:
        return ended("upstream_error", meter_state.last_error or own)
    if last is not None and (last.get("response") or {}).get("finish_reason") in CUT:
        return ended("max_output", own)
    if (sig := killed_by(exit_code)) is not None:
        hint = f"{sig}: {OOM_HINT}" if sig == "SIGKILL" else sig
        return ended("signal", f"{hint}; {own}" if own else hint)
    return ended("agent", own)


def run_ending(adapter: AgentAdapter, run_dir: Path, *, stopped_by: str | None, exit_code: int | None,
               meter_state: MeterState | None) -> Ending:
    """`session_ending` from what the run directory holds once collected: agent.log and
    artifacts/agent/ (read by the runtime's adapter) and transcript.jsonl."""
    log = run_dir / "agent.log"
    text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
    own = adapter.ending(text, run_dir / "artifacts" / "agent", exit_code)
    transcript = run_dir / "transcript.jsonl"
    records = transcript_records(transcript) if adapter.needs_model else []
    return session_ending(stopped_by=stopped_by, exit_code=exit_code, own=own, records=records,
                          meter_state=meter_state, needs_model=adapter.needs_model)


__all__ = ["CUT", "cut_answers", "run_ending", "session_ending"]
