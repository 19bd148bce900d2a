"""What every run of a round shares (`RoundContext`), how a round is opened for running, and the
signal rules of a run (SIGTERM raises like Ctrl-C; cleanup is never cut short).

Apart from the runner so that one run's session (labctl.run.session) and the runner that orders
the runs both build on it without importing each other.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labctl.engine.commands import Docker
from labctl.gguf.store import Store
from labctl.images.specs import image_tags
from labctl.lock.lockfile import Lock
from labctl.lock.resolve import require_lock
from labctl.round.layout import LAB_FILE, SealedRound, read_sealed
from labctl.round.seal import check_envelope, load_envelope
from labctl.run.dataset import check_dataset
from labctl.run.parts import RunError
from labctl.spec.load import LoadedLab, load_lab
from labctl.treehash import tree_sha256


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
    sealed = read_sealed(round_dir)
    loaded = round_lab(round_dir, sealed, lab, profile)
    lock = require_lock(loaded)
    if lock.sha256() != sealed.lock_sha256:
        raise RunError(f"{loaded.path}'s lock is not the one round {sealed.round} was sealed with "
                       "(a different lab, or one locked again since)")
    if loaded.is_dataset:
        check_dataset(loaded, sealed)
    elif (tree := tree_sha256(loaded.task_dir)) != sealed.task_tree_sha256:
        raise RunError(f"task {loaded.task_dir} changed since round {sealed.round} was sealed "
                       f"(tree sha256 {tree[:12]}…, sealed {sealed.task_tree_sha256[:12]}…)")
    env = load_envelope(sealed.round)
    if problems := check_envelope(env, sealed):
        raise RunError("; ".join(problems))
    tags = sealed.images if sealed.images and profile is None else image_tags(loaded, lock)
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
