"""`labctl run`, `labctl down`: execute a sealed round, and remove what a round left running; and the
run table both `labctl run` and `labctl round` (`labctl.cli.round`) print.

Before unseal nothing printed here names a contestant: runs are named by `run_label` only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from labctl.cli.console import (
    EXIT_FAIL,
    JsonOpt,
    ProfileOpt,
    RoundArg,
    emit,
    err,
    fail,
    out,
)
from labctl.errors import LabctlError, one_line

if TYPE_CHECKING:
    from labctl.run.context import RoundContext
    from labctl.run.runner import RunSummary
    from labctl.spec.lab import Lab

LabOpt = Annotated[Path | None, typer.Option(
    "--lab", help="The lab file the round was sealed from (default: lab.yaml or labs/<lab>.yaml).")]


def interrupted() -> typer.Exit:
    """Ctrl-C: the runner already removed the run's containers; say how to go on."""
    err.print("interrupted: the current run's containers were removed; `labctl run` resumes", highlight=False)
    return typer.Exit(130)


def say_for(as_json: bool) -> Callable[[str], None]:
    """Progress lines: on stdout, or on stderr when stdout carries the JSON."""
    console = err if as_json else out
    return lambda line: console.print(f"[dim]·[/] {escape(line)}", highlight=False)


def rows_of(summaries: list[RunSummary], mapping: dict[str, str] | None) -> list[dict[str, Any]]:
    rows = []
    for s in summaries:
        m = s.metrics
        rows.append({"run": s.run_id, **({"task": s.task} if s.task else {}),
                     "contestant": mapping.get(s.run_id) if mapping else None,
                     "status": s.status, "outcome": s.outcome, "tool_calls": m.tool_calls,
                     "total_tokens": m.total_tokens, "commits": m.commits_pushed,
                     "wall_time_s": m.wall_time_s, "host": s.host, "reason": s.reason,
                     "skipped": s.skipped})
    return rows


def _table(rows: list[dict[str, Any]], title: str) -> None:
    """Plain text (no box drawing): the table is meant to be pasted into reports and CI logs."""
    cols = ["run", "contestant", "status", "outcome", "tool_calls", "total_tokens", "commits", "wall_time_s",
            "host"]
    if any("task" in r for r in rows):  # a dataset round: which task each run worked on (public)
        cols.insert(1, "task")
    cells = [[("—" if r.get(c) is None else str(r[c])) for c in cols] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
    out.print(title, highlight=False, markup=False)
    out.print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)), highlight=False, markup=False)
    for row in cells:
        out.print("  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)), highlight=False,
                  markup=False)
    for r in rows:
        if r["reason"]:
            out.print(f"  {r['run']}: {r['reason']}", highlight=False, markup=False)


def _controls_alarm(round_dir: Path, lab: Lab | None) -> list[str]:
    """Print the controls' verdict loud and last (under the table, where the eye lands) when they
    failed; returns the failures' lines. Naming control runs before unseal is fine: see
    `labctl.round.controls`. `lab`: the round's, already opened."""
    from labctl.round.controls import control_failures

    lines = [str(f) for f in control_failures(round_dir, lab)]
    if lines:
        err.print("[bold white on red] CONTROLS FAILED [/] [bold red]this round's grades cannot be trusted: "
                  "the task or the harness is broken[/]", highlight=False)
        for line in lines:
            err.print(f"  [red]✗ {escape(line)}[/]", highlight=False)
    return lines


def run_command(round_dir: RoundArg, lab: LabOpt = None, profile: ProfileOpt = None,
                retry_errored: Annotated[bool, typer.Option(
                    "--retry-errored", help="Run the errored runs again too (an upstream outage, "
                    "a server that would not start): their attempt count goes up")] = False,
                parallel: Annotated[int | None, typer.Option(
                    "--parallel", min=1, help="Runs at once on this host (default: what the profile "
                    "allows, one per GPU; 1 on a CPU profile); a model takes the GPUs its plan "
                    "needs")] = None,
                ray: Annotated[str | None, typer.Option(
                    "--ray", metavar="ADDRESS", help="Run each run as a task on this Ray cluster "
                    "(`pip install 'labctl\\[ray]'`); artifacts come back into the round")] = None,
                as_json: JsonOpt = False) -> None:
    """Execute a sealed round's runs in sealed order; finished runs are skipped, interrupted ones redone."""
    from labctl.run.runner import open_round

    try:
        ctx = open_round(round_dir, lab, profile, check_images=ray is None)
        summaries = _execute(ctx, as_json, retry_errored, parallel, ray, lab, profile)
    except (LabctlError, OSError) as e:  # OSError: the round directory itself (a file that cannot be read)
        raise fail(one_line(e), as_json) from None
    except KeyboardInterrupt:
        raise interrupted() from None
    rows = rows_of(summaries, None)
    if report(rows, round_dir, ctx.sealed.round, {},
              f"round {ctx.sealed.round} (sealed: contestants revealed by `labctl unseal`)", as_json,
              ctx.loaded.lab):
        raise typer.Exit(EXIT_FAIL)


def report(rows: list[dict[str, Any]], round_dir: Path, round_id: str, extra: dict[str, Any],
           title: str, as_json: bool, lab: Lab | None = None) -> list[str]:
    """The run table (or its JSON) and the controls alarm; returns the controls that failed."""
    if not as_json:
        _table(rows, title)
    failed = _controls_alarm(round_dir, lab)
    if as_json:
        emit({"ok": not failed, "round": round_id, **extra, "runs": rows, "controls_failed": failed})
    return failed


def _execute(ctx: RoundContext, as_json: bool, retry_errored: bool, parallel: int | None, ray: str | None,
             lab: Path | None, profile: str | None) -> list[RunSummary]:
    """The round's runs: on a Ray cluster, side by side here (`labctl.run.parallel`), or one by one."""
    from labctl.run.gpualloc import default_parallel
    from labctl.run.runner import run_round

    if ray is not None:
        from labctl.run.ray import run_on_ray
        return run_on_ray(ctx, ray, say_for(as_json), retry_errored=retry_errored)
    n = parallel or default_parallel(ctx.loaded.profile)
    if n == 1:
        return run_round(ctx, say_for(as_json), retry_errored=retry_errored)
    from labctl.run.parallel import run_parallel
    live = out if not as_json and out.is_terminal else None
    return run_parallel(ctx, n, say_for(as_json), retry_errored=retry_errored, console=live, lab=lab,
                        profile=profile)


def down_command(round_dir: Annotated[Path | None, typer.Argument(
                     help="Round directory or round id; none: every labctl round")] = None,
                 as_json: JsonOpt = False) -> None:
    """Remove every container, network and volume labelled for the round (or for any round)."""
    from labctl.engine.container import detect_engine
    from labctl.run.runner import down

    round_id = None if round_dir is None else round_dir.name
    try:
        removed = down(detect_engine(), round_id)
    except LabctlError as e:
        raise fail(one_line(e), as_json) from None
    if as_json:
        emit({"ok": True, "round": round_id, "removed": removed})
        return
    n = sum(len(v) for v in removed.values())
    out.print(f"removed {n} object{'' if n == 1 else 's'} of {round_id or 'all labctl rounds'}: "
              + ", ".join(f"{len(v)} {k}" for k, v in removed.items()), highlight=False)
