"""The code's shape as contracts: one package per stage of a round, imported only downwards
(import-linter's `layers` contract in pyproject.toml), types that check (mypy, settings in
pyproject.toml), and modules a reader can hold in their head."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 400


def test_packages_import_only_downwards() -> None:
    """A cycle or an upward import (e.g. spec importing run) breaks the contract."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    done = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    assert f"{len(contracts['contracts'])} kept, 0 broken" in done.stdout  # every contract, none skipped


def test_types_check() -> None:
    """mypy over labctl/ (`[tool.mypy]` in pyproject.toml: the files and the strictness) finds nothing."""
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def test_no_module_is_longer_than_a_reader_can_hold() -> None:
    long = {str(p.relative_to(ROOT)): n for p in sorted((ROOT / "labctl").rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split along a concept): {long}"
