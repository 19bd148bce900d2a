"""One run of a sealed round in a process of its own: what `labctl run --parallel N` starts per run
(`labctl.run.parallel`). `python -m labctl.run.worker ROUND RUN_ID --attempts N [--gpus 0,1] [--lab L]
[--profile P]`.

A process per run, not a thread, because signals are the runner's stop protocol (SIGINT/SIGTERM →
`execute_run` records the run as interrupted and removes its containers), and only a process's main
thread receives them. The worker dies with its parent: Linux's parent-death signal turns a `labctl
run` killed with -9 into a SIGTERM here, so the run still cleans up and stays `running` for resume.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """SIGTERM when the parent exits (Linux prctl); elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        raise SystemExit(143)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="labctl.run.worker")
    p.add_argument("round_dir", type=Path)
    p.add_argument("run_id")
    p.add_argument("--attempts", type=int, required=True)
    p.add_argument("--gpus", default=None, help="comma-separated GPU indices; absent: the profile's")
    p.add_argument("--lab", type=Path, default=None)
    p.add_argument("--profile", default=None)
    args = p.parse_args(argv)
    die_with_parent()
    from labctl.errors import LabctlError
    from labctl.run.context import Interrupted, open_round, sigterm_raises
    from labctl.run.runner import execute_run

    def say(line: str) -> None:
        print(line, flush=True)

    gpus = [int(g) for g in args.gpus.split(",") if g] if args.gpus is not None else None
    from labctl.engine.timings import record, since_process_start, span

    record("worker start", since_process_start() or 0.0, args.run_id)  # the interpreter and imports
    try:
        with sigterm_raises():
            with span("open_round", args.run_id):
                ctx = open_round(args.round_dir, args.lab, args.profile)
            execute_run(ctx, args.run_id, args.attempts, say, gpus=gpus)
    except (KeyboardInterrupt, Interrupted):
        return 130
    except LabctlError as e:  # a round that does not open (labctl.round.opened), a run that cannot start
        say(f"error: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
