"""`labctl run ROUND --parallel N`: up to N runs of a round at once on this host, each in its own
process (`labctl.run.worker`) with its own networks, meter and containers (their names already carry
round + run id), and a GPU allocation from `labctl.run.gpualloc` (never two models on one GPU).

Runs start in sealed order as slots and GPUs free up; a run that needs more GPUs than are free now
waits while later, smaller ones (controls, cloud) go ahead. Resume is the sequential runner's
(`runner.next_attempt`). Ctrl-C or SIGTERM is passed to every run in flight, each removes its own
containers and stays `running`; the round is resumed by running `labctl run` again. The manifest is
rewritten whenever a run ends and once more when the last one has.

Progress: one rich live table (run, status, host, elapsed, tokens so far) on a terminal; plain lines
otherwise (CI logs, `--json`). Runs are named by run id only: nothing here names a contestant.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from labctl.meter.state import read_status
from labctl.round.layout import RunResult, read_result, result_path, write_manifest, write_result
from labctl.round.seal import sealed_files_changed
from labctl.run.context import Interrupted, RoundContext, signals_deferred, sigterm_raises
from labctl.run.gpualloc import GpuPool, gpus_needed
from labctl.run.parts import RunError, work_root
from labctl.run.runner import RunSummary, next_attempt, now, summary

Say = Callable[[str], None]
POLL_S = 0.2
STOP_WAIT_S = 120
"""How long an interrupted round waits for its runs to clean up before killing their processes."""


@dataclass
class Slot:
    """A run in flight: its worker process, GPUs and the last line it printed."""

    rid: str
    attempts: int
    proc: subprocess.Popen[bytes]
    gpus: list[int]
    log: Path
    started: float = field(default_factory=time.monotonic)
    last: str = ""


def safe_manifest(round_dir: Path) -> None:
    """Rewrite the manifest while other runs may be writing: a file that vanishes under the walk
    (a run emptying its directory) makes it walk again."""
    with signals_deferred():
        for _ in range(10):
            try:
                write_manifest(round_dir)
                return
            except FileNotFoundError:
                time.sleep(0.05)
        write_manifest(round_dir)


def tokens_so_far(round_id: str, rid: str) -> int | None:
    """The meter's running token count, from its status file in the run's scratch."""
    state = read_status(work_root() / round_id / rid / "meter" / "status.json")
    return state.total_tokens if state else None


class Progress:
    """The live table on a terminal; plain `say` lines elsewhere."""

    def __init__(self, ctx: RoundContext, console: Console | None, say: Say) -> None:
        self.ctx, self.say = ctx, say
        self.rows: dict[str, dict[str, str]] = {}
        self.live = Live(console=console, auto_refresh=False) if console is not None else None

    def line(self, rid: str, text: str) -> None:
        if self.live is None:
            self.say(text if text.startswith(rid) else f"{rid}: {text}")

    def set(self, rid: str, **cells: str) -> None:
        self.rows.setdefault(rid, {"status": "pending", "host": "", "elapsed": "", "tokens": "",
                                   "note": ""}).update(cells)

    def refresh(self) -> None:
        if self.live is None:
            return
        t = Table(title=f"round {self.ctx.sealed.round}", title_justify="left")
        for col in ("run", "status", "host", "elapsed", "tokens", "note"):
            t.add_column(col, no_wrap=col != "note", overflow="ellipsis")
        for rid in self.ctx.sealed.order:
            r = self.rows.get(rid, {})
            t.add_row(rid, r.get("status", "pending"), r.get("host", ""), r.get("elapsed", ""),
                      r.get("tokens", ""), r.get("note", "")[-60:])
        self.live.update(t, refresh=True)

    @contextlib.contextmanager
    def shown(self) -> Iterator[None]:
        if self.live is None:
            yield
            return
        with self.live:
            yield
            self.refresh()


def run_parallel(ctx: RoundContext, parallel: int, say: Say = lambda s: None, retry_errored: bool = False,
                 console: Console | None = None, lab: Path | None = None,
                 profile: str | None = None) -> list[RunSummary]:
    """Every run of the round, up to `parallel` at once; `console`: draw the live table there.
    `lab`/`profile` are passed on to each run's worker (as `labctl run --lab/--profile`)."""
    if changed := sealed_files_changed(ctx.round_dir):
        raise RunError("the round changed since it was sealed: " + "; ".join(changed))
    need = gpus_needed(ctx.loaded, ctx.lock, ctx.plan)
    pool = GpuPool(ctx.loaded.profile.gpu_count if ctx.loaded.profile.is_gpu else 0)
    progress = Progress(ctx, console, say)
    queue: list[tuple[str, int]] = []
    done: dict[str, RunSummary] = {}
    for rid in ctx.sealed.order:
        attempts = next_attempt(ctx, rid, retry_errored, say)
        if attempts is None:
            res = read_result(ctx.round_dir, rid)
            done[rid] = summary(ctx, rid, res, skipped=True)
            progress.set(rid, status=f"{res.status} (skipped)", host=res.host or "")
        else:
            queue.append((rid, attempts))
    running: dict[str, Slot] = {}
    with progress.shown(), sigterm_raises():
        try:
            while queue or running:
                _start_what_fits(ctx, queue, running, parallel, need, pool, progress, lab, profile)
                for rid in [r for r, s in running.items() if s.proc.poll() is not None]:
                    slot = running.pop(rid)
                    pool.give(slot.gpus)
                    lines = slot.log.read_text(errors="replace").splitlines()
                    slot.last = lines[-1] if lines else slot.last  # for _finish: the follower may lag
                    done[rid] = _finish(ctx, slot, progress)
                    safe_manifest(ctx.round_dir)
                for rid, slot in running.items():
                    tok = tokens_so_far(ctx.sealed.round, rid)
                    progress.set(rid, elapsed=f"{time.monotonic() - slot.started:.0f}s",
                                 tokens="" if tok is None else str(tok), note=slot.last)
                progress.refresh()
                time.sleep(POLL_S)
        except (KeyboardInterrupt, Interrupted):
            _stop_all(running, progress)
            raise
        finally:
            safe_manifest(ctx.round_dir)
    return [done[rid] for rid in ctx.sealed.order if rid in done]


def _start_what_fits(ctx: RoundContext, queue: list[tuple[str, int]], running: dict[str, Slot], parallel: int,
                     need: dict[str, int], pool: GpuPool, progress: Progress, lab: Path | None,
                     profile: str | None) -> None:
    for item in list(queue):
        if len(running) >= parallel:
            return
        rid, attempts = item
        devices = pool.take(need.get(ctx.mapping[rid], 0))
        if devices is None:
            continue  # not enough GPUs free now: a later run that needs fewer may start
        queue.remove(item)
        cmd = [sys.executable, "-m", "labctl.run.worker", str(ctx.round_dir), rid,
               "--attempts", str(attempts)]
        if ctx.loaded.profile.is_gpu:
            cmd += ["--gpus", ",".join(map(str, devices))]
        cmd += [*(["--lab", str(lab)] if lab else []), *(["--profile", profile] if profile else [])]
        # Its own session: a terminal's Ctrl-C reaches this process only, which passes it on once.
        # Its output goes to a file, not a pipe: a worker outliving a killed `labctl run` must not
        # die of a broken pipe halfway through its cleanup.
        log = work_root() / ctx.sealed.round / f"{rid}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as sink:
            proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=os.environ.copy())
        slot = Slot(rid, attempts, proc, devices, log=log)
        running[rid] = slot
        threading.Thread(target=_follow, args=(slot, progress), daemon=True).start()
        progress.set(rid, status="running", host="this host" + (f" gpu {','.join(map(str, devices))}"
                                                              if devices else ""))
        progress.line(rid, f"started (attempt {attempts})" + (f" on GPU {devices}" if devices else ""))


def _follow(slot: Slot, progress: Progress) -> None:
    """Pass the worker's lines on as it writes them, until it has exited and all are read."""
    with slot.log.open(errors="replace") as f:
        while True:
            exited = slot.proc.poll() is not None
            while line := f.readline():
                slot.last = line.rstrip()
                progress.line(slot.rid, slot.last)
            if exited:
                return
            time.sleep(POLL_S)


def _finish(ctx: RoundContext, slot: Slot, progress: Progress) -> RunSummary:
    """The run's result; a worker that died without recording an end leaves an errored run."""
    rid = slot.rid
    res = read_result(ctx.round_dir, rid) if result_path(ctx.round_dir, rid).is_file() else None
    if res is None or res.status == "running" or res.attempts != slot.attempts:
        why = slot.last or f"exit status {slot.proc.returncode}"
        res = RunResult(run_id=rid, status="errored", attempts=slot.attempts,
                        started=res.started if res else None, ended=now(),
                        reason=f"the run's worker process failed: {why}",
                        control=res.control if res else None, host=res.host if res else None)
        write_result(ctx.round_dir, res)
    progress.set(rid, status=res.status + (f", {res.outcome}" if res.outcome else ""), note=res.reason or "")
    progress.line(rid, f"{res.status}" + (f", {res.outcome}" if res.outcome else "")
                  + (f" ({res.reason})" if res.reason else ""))
    return summary(ctx, rid, res, skipped=False)


def _stop_all(running: dict[str, Slot], progress: Progress) -> None:
    """Ctrl-C / SIGTERM: every run in flight gets SIGINT, cleans up and stays `running` (resume)."""
    with signals_deferred():
        for slot in running.values():
            with contextlib.suppress(ProcessLookupError):
                slot.proc.send_signal(2)  # SIGINT: execute_run's KeyboardInterrupt path
        deadline = time.monotonic() + STOP_WAIT_S
        for slot in running.values():
            try:
                slot.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                slot.proc.kill()
                slot.proc.wait()
            progress.set(slot.rid, status="interrupted")
