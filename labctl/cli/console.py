"""Shared pieces of the command line: consoles, `--json` output, and lab loading with clean errors.

Command modules (`labctl/cli/*.py`) import from here, never from `labctl.cli.app`, so the CLI can
import them without a cycle.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from labctl.lock.lockfile import Lock
from labctl.spec.load import DEFAULT_LAB, LoadedLab, load_lab
from labctl.spec.located import SpecError

# soft_wrap: a long line stays one line (greppable, copyable); emoji off: `lab.yaml:100:6` must not
# turn into an emoji code.
# Piped output (CI logs, `| less`) gets room for the wide tables instead of rich's 80 columns.
_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160
out = Console(soft_wrap=True, emoji=False, width=_WIDTH)
err = Console(stderr=True, soft_wrap=True, emoji=False, width=_WIDTH)

EXIT_SPEC = 2
"""Exit status for wrong input (a wrong lab file, like a usage error)."""
EXIT_FAIL = 1
"""Exit status for a failed operation (a download, a hash mismatch, drift)."""

LabArg = Annotated[Path, typer.Argument(help="Lab file.", show_default=True)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
RoundArg = Annotated[Path, typer.Argument(help="Round directory, e.g. rounds/<round-id>.")]
ProfileOpt = Annotated[
    str | None, typer.Option("--profile", "-p", help="Hardware profile (overrides the lab's).")
]

__all__ = ["DEFAULT_LAB", "EXIT_FAIL", "EXIT_SPEC", "JsonOpt", "LabArg", "ProfileOpt", "emit", "err",
           "fail", "fail_spec", "open_lab", "open_locked", "out"]


def emit(data: Any) -> None:
    """JSON to stdout, unstyled, for scripts."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def fail_spec(e: SpecError, as_json: bool) -> typer.Exit:
    """Print located issues (and JSON when asked); the caller raises the returned Exit."""
    if as_json:
        emit({"ok": False, "errors": [i.as_dict() for i in e.issues]})
    for issue in e.issues:
        err.print(str(issue), markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_SPEC)


def fail(message: str, as_json: bool, code: int = EXIT_FAIL, **extra: Any) -> typer.Exit:
    """One clear line on stderr (and JSON when asked); the caller raises the returned Exit."""
    if as_json:
        emit({"ok": False, "error": message, **extra})
    err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def refuse(problems: list[str], as_json: bool) -> typer.Exit:
    """Several problems at once (an unsafe bundle, a round that does not check out), one per line."""
    if as_json:
        emit({"ok": False, "errors": problems})
    for p in problems:
        err.print(f"error: {p}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_FAIL)


def open_lab(path: Path, profile: str | None = None, as_json: bool = False) -> LoadedLab:
    try:
        return load_lab(path, profile=profile)
    except SpecError as e:
        raise fail_spec(e, as_json) from None


def open_locked(path: Path, profile: str | None = None, as_json: bool = False) -> tuple[LoadedLab, Lock]:
    """The lab and its lock, refusing a missing, invalid or stale lock with the command to run."""
    from labctl.lock.resolve import (  # resolvers are heavy; only commands that run need them
        LockError,
        require_lock,
    )

    loaded = open_lab(path, profile, as_json)
    try:
        return loaded, require_lock(loaded)
    except LockError as e:
        raise fail("; ".join(e.problems), as_json) from None
