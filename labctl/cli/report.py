"""`labctl report ROUND`: write the round's report (Markdown, JSON or HTML) and chart into it.

Thin on purpose: refusal reasons come from `labctl.report.data.ReportError`, one line each, so the CLI
and any other caller say the same thing.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from labctl.cli.console import JsonOpt, emit, fail, out


class ReportFormat(StrEnum):
    """Typer shows an Enum's values as the choices in --help."""

    md = "md"
    json = "json"
    html = "html"


UnsealedRoundArg = Annotated[Path, typer.Argument(help="Round directory, e.g. rounds/<round-id> (unsealed).")]
FormatOpt = Annotated[ReportFormat, typer.Option("--format", "-f", help="Report file format.")]


def report_command(round_dir: UnsealedRoundArg, fmt: FormatOpt = ReportFormat.md,
                   as_json: JsonOpt = False) -> None:
    """Write report.<format> and report.png into an unsealed round; the manifest is updated."""
    from labctl.report.data import ReportError
    from labctl.report.render import write_report

    try:
        written = write_report(round_dir, fmt.value)
    except ReportError as e:
        raise fail(str(e), as_json) from None
    if as_json:
        emit({"ok": True, "round_dir": str(round_dir), "files": [str(p) for p in written]})
        return
    for p in written:
        out.print(f"[green]✓[/] wrote {escape(str(p))}", highlight=False)
