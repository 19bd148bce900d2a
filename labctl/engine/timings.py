"""Timing spans of the run path, for benchmarks/parallel_round.py: with `LABCTL_TIMINGS=<file>` set,
every span appends one JSON line `{"span", "run", "s", "pid"}` to the file; unset, a span costs one
environment lookup.

Why here, in the engine package: the engine's own calls (image checks, container starts) are spans
as much as the session's phases, and the engine is the lowest layer both use. Appends of one short
line are atomic, so parallel workers share one file.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ParamSpec, TypeVar

ENV = "LABCTL_TIMINGS"
P = ParamSpec("P")
T = TypeVar("T")


def record(span: str, seconds: float, run: str | None = None) -> None:
    """Append one span (nothing without $LABCTL_TIMINGS; a file that cannot be written is ignored)."""
    path = os.environ.get(ENV)
    if not path:
        return
    line = json.dumps({"span": span, "run": run, "s": round(seconds, 4), "pid": os.getpid()}) + "\n"
    with contextlib.suppress(OSError), open(path, "a", encoding="utf-8") as f:
        f.write(line)


@contextlib.contextmanager
def span(name: str, run: str | None = None) -> Iterator[None]:
    """Time the block as `name` (also when it raises)."""
    if not os.environ.get(ENV):
        yield
        return
    t = time.perf_counter()
    try:
        yield
    finally:
        record(name, time.perf_counter() - t, run)


def timed(name: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """A method as the span `name`, of the run its object's `run_id` names."""
    def wrap(method: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(method)
        def timed_method(*args: P.args, **kwargs: P.kwargs) -> T:
            with span(name, getattr(args[0], "run_id", None) if args else None):
                return method(*args, **kwargs)
        return timed_method
    return wrap


def since_process_start() -> float | None:
    """Seconds since this process started (Linux /proc; None elsewhere): the interpreter's and the
    imports' share of a worker before its first span."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
