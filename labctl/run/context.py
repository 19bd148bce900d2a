"""What every run of a round shares (`RoundContext`), how a round is opened for running, and the
signal rules of a run (SIGTERM raises like Ctrl-C; cleanup is never cut short).

The bottom of `labctl.run`'s inner order (pyproject's import contract): the runner, a run's plan
(labctl.run.runplan), its session (labctl.run.session) and the dataset view (labctl.run.dataset) all
build on it, and it imports none of them.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labctl.engine.container import Engine, detect_engine
from labctl.gguf.store import Store
from labctl.images.specs import image_tags
from labctl.lock.lockfile import Lock
from labctl.plan.planner import Plan, plan_lab
from labctl.round.layout import SealedRound
from labctl.round.opened import OpenedRound, open_sealed
from labctl.round.seal import check_envelope, load_envelope
from labctl.run.parts import RunError
from labctl.spec.load import LoadedLab


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
    docker: Engine
    store: Store
    mapping: dict[str, str] = field(repr=False)
    """run id → contestant id (from the envelope: never print it, never write it into the round)."""
    plan: Plan
    """The round's plan (`labctl.plan.planner`), computed once when the round is opened."""


def open_round(round_dir: Path, lab: Path | None = None, profile: str | None = None,
               docker: Engine | None = None, store: Store | None = None,
               check_images: bool = True, opened: OpenedRound | None = None,
               plan: Plan | None = None) -> RoundContext:
    """Load and cross-check everything a run needs, before any container starts: the lab and its lock
    must be the ones sealed (`labctl.round.opened`; `opened`: that state already in hand, as `labctl
    round` has it after the seal), the envelope must open the commitment, every image must exist
    (here; `check_images=False` when the runs execute elsewhere, on a Ray cluster's nodes). The plan
    is computed here, once per round, for every run's `RunPlan` (`plan`: computed already)."""
    o = opened or open_sealed(round_dir, lab, profile)
    sealed, loaded, lock = o.sealed, o.loaded, o.lock
    try:
        env = load_envelope(sealed.round)
    except ValueError as e:  # an envelope that does not parse: the round cannot run
        raise RunError(str(e)) from None
    if problems := check_envelope(env, sealed):
        raise RunError("; ".join(problems))
    tags = sealed.images if sealed.images and profile is None else image_tags(loaded, lock)
    mapping = {rid: slot.contestant for rid, slot in env.mapping.items()}
    plan = plan or plan_lab(loaded, lock)
    if not check_images:  # no Docker needed on the machine that only starts the round
        return RoundContext(round_dir=round_dir, sealed=sealed, loaded=loaded, lock=lock, images=tags,
                            docker=docker or Engine(cli=["docker"]), store=store or Store(), mapping=mapping,
                            plan=plan)
    docker = docker or detect_engine()
    missing = [t for t in tags.values() if not docker.image_present(t)]
    if missing:
        raise RunError(f"image {missing[0]} is missing ({len(missing)} missing): "
                       f"run `labctl build {loaded.path}`")
    return RoundContext(round_dir=round_dir, sealed=sealed, loaded=loaded, lock=lock, images=tags,
                        docker=docker, store=store or Store(), mapping=mapping, plan=plan)


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise Interrupted(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)



@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Cleanup must finish even when Ctrl-C is pressed again; the signal is delivered afterwards."""
    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
