"""`labctl run`: execute a sealed round's runs one at a time, each in isolation (design.md, "One run,
in isolation").

Per run, every container, network and volume carries `labctl.round=<round id>` and
`labctl.run=<run id>` and is named from those two ids only:

    agent net (internal):  agent container ── meter (alias `meter`)
    model net (internal):                     meter ── llama-server (alias `server`)   local
    egress net (bridge):                      meter ── provider API                    cloud

The agent reaches nothing but the meter: not the server (other network), not the internet (its
network is internal), not the host (the internal networks are fenced, `labctl.fence`), and it never
holds an API key (only the meter's environment does).

Resume: a run whose result.json is finished (done, errored, killed) is skipped (errored ones run
again with `labctl run --retry-errored`); one found
`running` was interrupted: what it left is removed by label, its run directory is emptied (but for
result.json) and it starts again (attempts + 1). Resume keys on the run ids and the sealed lock hash
only, never on container ids or ports.
SIGINT/SIGTERM stop the current run, remove everything labelled for it, and leave it `running`.
"""

from __future__ import annotations

import contextlib
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from labctl.fence import Fence, Netfilter
from labctl.labfile import LoadedLab, load_lab
from labctl.lock import require_lock
from labctl.lockfile import Lock
from labctl.rounddir import (
    FINISHED,
    LAB_FILE,
    RunResult,
    SealedRound,
    read_result,
    read_sealed,
    result_path,
    run_dir,
    write_manifest,
    write_result,
)
from labctl.runparts import ROUND_LABEL, RUN_LABEL, Docker, RunError, read_json
from labctl.seal import check_envelope, load_envelope, sealed_files_changed
from labctl.session import RunSession, _signals_deferred
from labctl.store import Store
from labctl.treehash import tree_sha256

Say = Callable[[str], None]


class Interrupted(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so every `finally` cleans up."""


@dataclass
class RoundContext:
    """What every run of a round shares: the lab it was sealed from, images, store and the envelope
    (read here, never printed)."""

    round_dir: Path
    sealed: SealedRound
    loaded: LoadedLab
    lock: Lock
    images: dict[str, str]
    docker: Docker
    store: Store
    mapping: dict[str, str] = field(repr=False)
    """run id → contestant id (from the envelope: never print it, never write it into the round)."""


def round_lab(round_dir: Path, sealed: SealedRound, lab: Path | None,
              profile: str | None = None) -> LoadedLab:
    """The lab a round runs with: its own lab.yaml and lab.lock copies, whose relative paths start at
    the lab's directory recorded at seal time (`lab_dir`), wherever labctl is started. `lab` (`--lab`)
    overrides; `open_round` then checks that its lock is the one sealed."""
    if lab is not None:
        return load_lab(lab, profile=profile)
    base = Path(sealed.lab_dir) if sealed.lab_dir else None
    if base is None or not base.is_dir():
        where = f"its lab directory {base} is gone" if base else "it records no lab directory"
        raise RunError(f"cannot resolve the paths of round {sealed.round}'s lab.yaml ({where}): "
                       "pass --lab PATH (the lab it was sealed from)")
    return load_lab(round_dir / LAB_FILE, profile=profile, base_dir=base)


def open_round(round_dir: Path, lab: Path | None = None, profile: str | None = None,
               docker: Docker | None = None, store: Store | None = None,
               check_images: bool = True) -> RoundContext:
    """Load and cross-check everything a run needs, before any container starts: the lab and its lock
    must be the ones sealed, the envelope must open the commitment, every image must exist (here;
    `check_images=False` when the runs execute elsewhere, on a Ray cluster's nodes)."""
    from labctl.images import lab_images, settings_for  # heavy imports only when running

    sealed = read_sealed(round_dir)
    loaded = round_lab(round_dir, sealed, lab, profile)
    lock = require_lock(loaded)
    if lock.sha256() != sealed.lock_sha256:
        raise RunError(f"{loaded.path}'s lock is not the one round {sealed.round} was sealed with "
                       "(a different lab, or one locked again since)")
    if (tree := tree_sha256(loaded.task_dir)) != sealed.task_tree_sha256:
        raise RunError(f"task {loaded.task_dir} changed since round {sealed.round} was sealed "
                       f"(tree sha256 {tree[:12]}…, sealed {sealed.task_tree_sha256[:12]}…)")
    env = load_envelope(sealed.round)
    if problems := check_envelope(env, sealed):
        raise RunError("; ".join(problems))
    tags = {s.name: s.tag for s in lab_images(loaded, lock, loaded.profile, settings_for(loaded))}
    if not check_images:  # no Docker needed on the machine that only starts the round
        return RoundContext(round_dir=round_dir, sealed=sealed, loaded=loaded, lock=lock, images=tags,
                            docker=docker or Docker(["docker"]), store=store or Store(),
                            mapping={rid: slot.contestant for rid, slot in env.mapping.items()})
    docker = docker or Docker.detect()
    missing = [t for t in tags.values() if not docker.image_present(t)]
    if missing:
        raise RunError(f"image {missing[0]} is missing ({len(missing)} missing): "
                       f"run `labctl build {loaded.path}`")
    return RoundContext(round_dir=round_dir, sealed=sealed, loaded=loaded, lock=lock, images=tags,
                        docker=docker, store=store or Store(),
                        mapping={rid: slot.contestant for rid, slot in env.mapping.items()})


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise Interrupted(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def this_host() -> str:
    """The name a run records as where it ran."""
    return socket.gethostname()


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def execute_run(ctx: RoundContext, run_id: str, attempts: int, say: Say = lambda s: None,
                gpus: list[int] | None = None, host: str | None = None) -> RunResult:
    """One run from scratch to result.json; never leaves a labelled object behind. `gpus`: the
    devices it may use (`labctl.gpualloc`, None: all); `host`: where it runs (default this host)."""
    kind = next(c.kind for c in ctx.loaded.lab.contestants if c.id == ctx.mapping[run_id])
    result = RunResult(run_id=run_id, status="running", attempts=attempts, started=now(),
                       control=kind if kind in ("oracle", "nop") else None, host=host or this_host())
    write_result(ctx.round_dir, result)
    session = RunSession(ctx, run_id, say, gpus)
    try:
        session.setup()
        say(f"{run_id}: agent running (wall time {ctx.loaded.lab.budgets.wall_time:.0f}s)")
        session.run_agent()
        session.collect()
        result = session.grade(result)
    except (KeyboardInterrupt, Interrupted) as e:
        result.reason = f"interrupted ({type(e).__name__}); `labctl run` starts it again"
        result.ended = now()
        write_result(ctx.round_dir, result)  # still `running`: a re-run resumes it
        raise
    except RunError as e:
        result.status, result.reason = "errored", str(e)
    finally:
        session.cleanup()
    result.ended = now()
    write_result(ctx.round_dir, result)
    return result


@dataclass
class RunSummary:
    run_id: str
    status: str
    outcome: str | None
    skipped: bool
    reason: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    host: str | None = None


def run_round(ctx: RoundContext, say: Say = lambda s: None, retry_errored: bool = False) -> list[RunSummary]:
    """Every run in sealed order; finished ones are skipped (resume), errored ones too unless
    `retry_errored`. The manifest is rewritten after each run so the round directory verifies at any
    point between runs."""
    changed = sealed_files_changed(ctx.round_dir)
    if changed:
        # Rewriting the manifest below would bless the change; refuse instead.
        raise RunError("the round changed since it was sealed: " + "; ".join(changed))
    out: list[RunSummary] = []
    with _sigterm_raises():
        for rid in ctx.sealed.order:
            attempts = next_attempt(ctx, rid, retry_errored, say)
            if attempts is None:
                out.append(summary(ctx, rid, read_result(ctx.round_dir, rid), skipped=True))
                continue
            try:
                res = execute_run(ctx, rid, attempts, say)
            finally:
                with _signals_deferred():
                    write_manifest(ctx.round_dir)
            say(f"{rid}: {res.status}" + (f", {res.outcome}" if res.outcome else "")
                + (f" ({res.reason})" if res.reason else ""))
            out.append(summary(ctx, rid, res, skipped=False))
        if all(s.skipped for s in out):
            # Nothing ran: a kill between the last result.json and its manifest rewrite left the
            # manifest stale, and no later run would ever rewrite it.
            with _signals_deferred():
                write_manifest(ctx.round_dir)
    return out


def next_attempt(ctx: RoundContext, rid: str, retry_errored: bool, say: Say) -> int | None:
    """The attempt number a run starts with now, or None when it is finished and skipped (resume)."""
    if not result_path(ctx.round_dir, rid).is_file():
        return 1
    prev = read_result(ctx.round_dir, rid)
    if prev.status in FINISHED and not (retry_errored and prev.status == "errored"):
        say(f"{rid}: {prev.status}, skipped")
        return None
    attempts = prev.attempts + 1
    if prev.status == "running":
        say(f"{rid}: was interrupted; cleaning up and starting again (attempt {attempts})")
    elif prev.status == "errored":
        say(f"{rid}: errored ({prev.reason}); starting again (attempt {attempts})")
    return attempts


def summary(ctx: RoundContext, rid: str, res: RunResult, skipped: bool) -> RunSummary:
    metrics = read_json(run_dir(ctx.round_dir, rid) / "metrics.json") or {}
    return RunSummary(rid, res.status, res.outcome, skipped, res.reason, metrics, res.host)


def down(docker: Docker, round_id: str | None) -> dict[str, list[str]]:
    """Remove what a round (or every labctl round) left running."""
    labels: dict[str, str | None] = {ROUND_LABEL: round_id}
    removed = docker.remove_labelled(labels)
    fence = Fence(Netfilter(docker, labels={ROUND_LABEL: round_id or "down"}), round_id)
    removed["firewall rules"] = fence.clear()
    return removed


__all__ = ["RUN_LABEL", "Interrupted", "RoundContext", "RunError", "RunSession", "RunSummary", "down",
           "execute_run", "open_round", "run_round"]
