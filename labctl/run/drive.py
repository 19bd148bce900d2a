"""Drive the agent's command to its end: it exits, the wall time runs out, or the meter says stop.

Kept apart from the session (labctl/run/session.py), which builds the command and decides how a
runtime is stopped; this is only the loop that watches it, readable on one screen.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from labctl.meter.state import read_status

POLL_S = 0.25
BUDGETS = ("token_budget", "request_budget", "cost_budget")


@dataclass
class Driven:
    """How the agent's command ended."""

    stopped_by: str | None
    """`wall_time`, the meter's stop reason, `upstream_error`; None when the agent exited by itself."""
    wall_s: float
    """Seconds from the command's start to its end."""
    exit_code: int | None
    """The command's exit status (negative: killed by that signal, as Popen says)."""


def drive(argv: Sequence[str], log: Path, wall_s: float, status: Path | None,
          stop: Callable[[str | None], None]) -> Driven:
    """Run `argv` (its output to `log`) until it exits, `wall_s` passes, or the meter's status file
    (`status`; None: no meter) says it stopped the run or the upstream failed; then `stop(reason)`
    ends it. A run whose upstream errored is errored whatever follows (`--retry-errored` runs it
    again): the agent's retries must not burn the wall-time budget against a failing upstream."""
    stopped_by: str | None = None
    t0 = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            while proc.poll() is None:
                if time.monotonic() >= t0 + wall_s:
                    stopped_by = "wall_time"
                    break
                state = read_status(status) if status else None
                if state and state.stopped:
                    stopped_by = state.stopped_reason or "meter"
                    break
                if state and state.errored:
                    stopped_by = "upstream_error"
                    break
                time.sleep(POLL_S)
        finally:
            if proc.poll() is None:
                stop(stopped_by)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    if stopped_by is None and status:
        # The agent may exit on the meter's refusal before the next poll saw the stop: a budget
        # stopped it all the same.
        state = read_status(status)
        if state and state.stopped and state.stopped_reason in BUDGETS:
            stopped_by = state.stopped_reason
    return Driven(stopped_by, time.monotonic() - t0, proc.returncode)
