"""`labctl compare ROUND [ROUND2]`: every pair of a dataset round's contestants on the same tasks and
repeats, or each contestant of one lab in two rounds (round 1 against round 2).

Thin on purpose: the statistics are `labctl.report.paired`, the assembly `labctl.report.compare`, the
text `labctl.report.compare_text`; a refusal is a `CompareError` (a `ReportError`), one line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from labctl.cli.console import JsonOpt, fail

FirstArg = Annotated[Path, typer.Argument(metavar="ROUND",
                                          help="An unsealed dataset round, e.g. rounds/<round-id>.")]
SecondArg = Annotated[Path | None, typer.Argument(metavar="ROUND2",
    help="A second unsealed round of the same lab: compare each contestant round 1 vs round 2.")]


def compare_command(round_dir: FirstArg, second: SecondArg = None, as_json: JsonOpt = False) -> None:
    """Paired comparison: resolution-rate difference with a bootstrap interval, McNemar's exact test,
    the sign test over tasks, tokens and wall time per resolved run, and the repeats that would tell
    two contestants apart when the data cannot."""
    from labctl.report.compare import compare
    from labctl.report.compare_text import json_text, render_text
    from labctl.report.data import ReportError

    try:
        result = compare(round_dir, second)
    except ReportError as e:
        raise fail(str(e), as_json) from None
    sys.stdout.write(json_text(result) if as_json else render_text(result))
