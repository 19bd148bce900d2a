"""`labctl task check TASK`: build a task, run its oracle and nop alone, print the verdict; exit 1 when
the controls fail (`labctl.run.taskcheck`). What a task author runs first."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from labctl.cli.console import DEFAULT_LAB, EXIT_FAIL, JsonOpt, ProfileOpt, emit, err, fail, open_locked, out
from labctl.errors import LabctlError, one_line

task_app = typer.Typer(help="Check Harbor tasks.", no_args_is_help=True)


def warn_tasks(task_dirs: Iterable[Path]) -> list[str]:
    """Print (to stderr, so `--json` output stays clean) what each task.toml says that labctl will not
    act on (`labctl.spec.task.task_warnings`); returns the lines. lock, validate and task check."""
    from labctl.spec.task import task_warnings

    lines = [w for d in task_dirs for w in task_warnings(d)]
    for line in lines:
        err.print(f"[yellow]warning:[/] {escape(line)}", highlight=False)
    return lines


@task_app.command("check")
def task_check_command(
    task: Annotated[Path, typer.Argument(help="A Harbor task directory (task.toml, instruction.md, "
                                              "environment/, tests/, solution/).")],
    lab: Annotated[Path, typer.Option("--lab", help="The lab whose engine, agent, budgets and build "
                                                    "settings the check uses.")] = DEFAULT_LAB,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build TASK, run its oracle and nop in a throw-away round: oracle must be Complete, nop Failed."""
    from labctl.run.taskcheck import check_task

    if not (task / "task.toml").is_file():
        raise fail(f"{task} is not a Harbor task (no task.toml)", as_json)
    loaded, lock = open_locked(lab, profile, as_json)
    warn_tasks([task])
    console = err if as_json else out
    try:
        verdict = check_task(loaded, lock, task,
                             lambda line: console.print(f"[dim]·[/] {escape(line)}", highlight=False))
    except (LabctlError, OSError) as e:  # locking the task (an unpinnable base) or building it
        raise fail(one_line(e), as_json) from None
    except KeyboardInterrupt:
        err.print("interrupted: the check's containers were removed", highlight=False)
        raise typer.Exit(130) from None
    if as_json:
        emit({"ok": verdict.ok, "task": str(task), "failures": [str(f) for f in verdict.failures],
              "runs": {k: {"status": s, "outcome": o, "reason": r} for k, (s, o, r) in verdict.runs.items()}})
    else:
        for who, (status, outcome, reason) in sorted(verdict.runs.items()):
            out.print(f"  {who:<7} {status:<8} {outcome or '—'}" + (f"  ({reason})" if reason else ""),
                      highlight=False, markup=False)
        if verdict.ok:
            out.print(f"[green]✓[/] {escape(str(task))}: controls pass (oracle Complete, nop Failed)",
                      highlight=False)
        else:
            err.print("[bold white on red] CONTROLS FAILED [/] "
                      f"[bold red]{escape(str(task))}: the task or the harness is broken[/]", highlight=False)
            for f in verdict.failures:
                err.print(f"  [red]✗ {escape(str(f))}[/]", highlight=False)
    if not verdict.ok:
        raise typer.Exit(EXIT_FAIL)
