"""Shared test helpers: run the real CLI in-process, copy labs into a scratch directory, wait for a
meter's transcript records, verify a round as a user does."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from labctl.cli.app import app

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str | Path) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `labctl ARGS`; an uncaught exception fails the test."""
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def verify_passes(rd: Path) -> None:
    """`labctl verify ROUND` in its own process, as a user runs it: it must pass."""
    check = subprocess.run([sys.executable, "-m", "labctl", "verify", str(rd)], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr


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


def meter_records(directory: Path, n: int, kind: str = "exchange") -> list[dict[str, Any]]:
    """The records of `kind` in `directory`/transcript.jsonl, once at least n exchanges are written
    (the meter records after the agent has its answer), or what is there after 10 s."""
    path = directory / "transcript.jsonl"
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
        if sum(r["kind"] == "exchange" for r in lines) >= n or time.monotonic() > deadline:
            return [r for r in lines if r["kind"] == kind]
        time.sleep(0.01)
