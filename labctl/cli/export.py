"""`labctl export ROUND --format inspect -o FILE`: a round as another tool's log (Inspect AI's eval log).

Thin on purpose, like `labctl report`: refusal reasons come from `labctl.report.inspect_export`, one
line each (a missing round, an unreadable record, the `inspect` extra not installed).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from labctl.cli.console import JsonOpt, RoundArg, emit, fail, out


class ExportFormat(StrEnum):
    """Typer shows an Enum's values as the choices in --help."""

    inspect = "inspect"


FormatOpt = Annotated[ExportFormat, typer.Option("--format", "-f", help="Export format.")]
OutputOpt = Annotated[Path | None, typer.Option(
    "--output", "-o", help="File to write: `.json` for Inspect's JSON log, else its `.eval` log "
    "(default: <round-id>.eval here).")]


def export_command(round_dir: RoundArg, fmt: FormatOpt = ExportFormat.inspect, output: OutputOpt = None,
                   as_json: JsonOpt = False) -> None:
    """Export a round for `inspect view`: one sample per run; a sealed round by run ids only."""
    from labctl.errors import LabctlError
    from labctl.report.inspect_export import export_inspect

    target = output if output is not None else Path(f"{round_dir.resolve().name}.eval")
    try:
        done = export_inspect(round_dir, target)
    except LabctlError as e:
        raise fail(str(e), as_json) from None
    if as_json:
        emit({"ok": True, "round_dir": str(round_dir), "format": fmt.value, "file": str(done.path),
              "samples": done.samples, "sealed": done.sealed})
        return
    blind = " (sealed: run ids only)" if done.sealed else ""
    out.print(f"[green]✓[/] wrote {escape(str(done.path))}: {done.samples} samples{blind}; "
              f"open it with `inspect view --log-dir {escape(str(done.path.parent))}`", highlight=False)
