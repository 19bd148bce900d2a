"""`labctl watch`, `labctl nudge`, `labctl stop`: a round in flight, seen and (by hand) intervened in.

Watch is read-only and blind (run ids only: `labctl.report.watch`). Nudge and stop hand the run's meter
a command through its control directory on the host (`labctl.meter.control`: no network route, so the
agent cannot reach it); each is recorded in the run's transcript and in the round's operator.jsonl
(`labctl.round.operator`), and counted in the report's Human nudges column.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from labctl.cli.console import EXIT_FAIL, JsonOpt, RoundArg, emit, fail, out
from labctl.round.layout import RoundFileError
from labctl.round.operator import OperatorError, OperatorRecord, intervene

RunArg = Annotated[str, typer.Argument(help="The run id (e.g. run-03), as `labctl watch` shows it.")]


def watch_command(round_dir: RoundArg, once: Annotated[bool, typer.Option(
                      "--once", help="Print one snapshot and exit.")] = False,
                  interval: Annotated[float, typer.Option(help="Seconds between refreshes.", min=0.2)] = 1.0,
                  as_json: JsonOpt = False) -> None:
    """A live view of a round in flight: per run id its status, elapsed time, tokens, tokens/s, tool
    calls, last command, what fired, and the last lines of the model's latest answer."""
    from labctl.report.watch import render, snapshot

    def take() -> dict[str, object]:
        try:
            return snapshot(round_dir)
        except (OSError, ValueError, RoundFileError) as e:
            raise fail(f"{round_dir}: not a round ({str(e).splitlines()[0]})", as_json) from None

    if once or as_json:
        snap = take()
        if as_json:
            emit(snap)
        else:
            out.print(render(snap))
        return
    from rich.live import Live

    with Live(render(take()), console=out, refresh_per_second=4) as live:
        while True:
            time.sleep(interval)
            snap = take()
            live.update(render(snap))
            if not snap["in_flight"]:
                return


def _send(round_dir: Path, run_id: str, kind: str, text: str, as_json: bool) -> OperatorRecord:
    try:
        return intervene(round_dir, run_id, "stop" if kind == "stop" else "nudge", text)
    except (OperatorError, RoundFileError, OSError, ValueError) as e:
        raise fail(str(e).splitlines()[0], as_json, code=EXIT_FAIL) from None


def nudge_command(round_dir: RoundArg, run_id: RunArg,
                  text: Annotated[str, typer.Argument(help="What to tell the model (its next request).")],
                  as_json: JsonOpt = False) -> None:
    """Hand a run's meter a nudge: the text goes into the model's next request as a user message,
    recorded as the operator's (transcript and operator.jsonl)."""
    rec = _send(round_dir, run_id, "nudge", text, as_json)
    if as_json:
        emit({"ok": True, **rec.model_dump()})
    else:
        out.print(f"{run_id}: nudge #{rec.seq} taken by the meter; it goes into the next request",
                  highlight=False)


def stop_command(round_dir: RoundArg, run_id: RunArg, as_json: JsonOpt = False) -> None:
    """Stop a run by hand: its meter refuses every later model call and the runner stops the agent;
    recorded as the operator's (transcript and operator.jsonl)."""
    rec = _send(round_dir, run_id, "stop", "", as_json)
    if as_json:
        emit({"ok": True, **rec.model_dump()})
    else:
        out.print(f"{run_id}: stop #{rec.seq} taken by the meter", highlight=False)
