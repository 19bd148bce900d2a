"""Shared test helpers: run the real CLI in-process and copy labs into a scratch directory."""

from __future__ import annotations

import shutil
from pathlib import Path

from typer.testing import CliRunner

from labctl.cli.app import app

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str | Path) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `labctl ARGS`; an uncaught exception fails the test."""
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def lab_copy(tmp: Path, text: str | None = None, name: str = "lab.yaml") -> Path:
    """The top-level lab (or `text`) in `tmp`, next to a copy of tasks/ so task paths resolve."""
    if not (tmp / "tasks").exists():
        shutil.copytree(ROOT / "tasks", tmp / "tasks")
    path = tmp / name
    path.write_text((ROOT / "lab.yaml").read_text() if text is None else text, encoding="utf-8")
    return path


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line number of the nth line containing `needle`."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    return hits[nth - 1]
