"""A round opened once: the one reader of a round's lab.yaml and lab.lock, and the checks that tie
them to sealed.json, shared by everyone who reads a round (runner, Ray node, verify, controls,
report, the first-prompt harvest).

Two views of the same files:
* the record (`read_round_lab`, `read_round_lock`): the lab as a model, no paths resolved, for
  code that only reads what the round recorded (verify, controls, report);
* the runnable round (`open_sealed`, `opened_from`; on a Ray node, `sent_loaded`): a `LoadedLab`
  whose relative paths start at the lab's directory recorded at seal time, and its lock, both
  checked against sealed.json. `labctl round`,
  which has just sealed the lab it holds, hands that state in (`opened_from`) instead of reading the
  files again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from labctl.errors import LabctlError
from labctl.lock.lockfile import Lock, read_lock
from labctl.lock.resolve import require_lock
from labctl.round.layout import LAB_FILE, LOCK_FILE, SealedRound, read_sealed
from labctl.spec.lab import Lab
from labctl.spec.load import LoadedLab, load_lab
from labctl.spec.located import load_yaml, validate
from labctl.spec.profiles import Profile
from labctl.treehash import tree_sha256


class RoundError(LabctlError, RuntimeError):
    """A round that cannot be opened for running: its lab, lock or tasks are not the sealed ones."""


def read_round_lab(round_dir: Path) -> Lab:
    """The round's lab.yaml as recorded (validated, paths unresolved). Raises SpecError or OSError."""
    lab: Lab = validate(Lab, load_yaml(round_dir / LAB_FILE))
    return lab


def read_round_lock(round_dir: Path) -> Lock:
    """The round's lab.lock. Raises OSError or ValueError (a lock that does not parse)."""
    return read_lock(round_dir / LOCK_FILE)


@dataclass(frozen=True)
class OpenedRound:
    """A round's sealed record with the lab and lock it runs with, checked against each other."""

    round_dir: Path
    sealed: SealedRound
    loaded: LoadedLab
    lock: Lock


def round_loaded(round_dir: Path, sealed: SealedRound, lab: Path | None,
                 profile: str | None = None) -> LoadedLab:
    """The lab a round runs with: its own lab.yaml and lab.lock copies, whose relative paths start at
    the lab's directory recorded at seal time (`lab_dir`), wherever labctl is started. `lab` (`--lab`)
    overrides; `opened_from` then checks that its lock is the one sealed."""
    if lab is not None:
        return load_lab(lab, profile=profile)
    base = Path(sealed.lab_dir) if sealed.lab_dir else None
    if base is None or not base.is_dir():
        where = f"its lab directory {base} is gone" if base else "it records no lab directory"
        raise RoundError(f"cannot resolve the paths of round {sealed.round}'s lab.yaml ({where}): "
                         "pass --lab PATH (the lab it was sealed from)")
    return load_lab(round_dir / LAB_FILE, profile=profile, base_dir=base)


def sent_loaded(round_dir: Path, task_dir: Path, profile: Profile, base: Path) -> LoadedLab:
    """The lab of a round whose files were sent to another machine (a Ray node, `labctl.run.ray`): the
    recorded lab.yaml with its task at `task_dir` and the sender's resolved profile; relative paths
    start at `base` (the node's scratch)."""
    doc = load_yaml(round_dir / LAB_FILE)
    lab: Lab = validate(Lab, doc)
    lab = lab.model_copy(update={"task": lab.task.model_copy(update={"path": task_dir})})
    return LoadedLab(lab, doc, profile, "sent by the round's runner", base=base)


def check_lock(loaded: LoadedLab, lock: Lock, sealed: SealedRound) -> None:
    """The lock must be the one the round was sealed with."""
    if lock.sha256() != sealed.lock_sha256:
        raise RoundError(f"{loaded.path}'s lock is not the one round {sealed.round} was sealed with "
                         "(a different lab, or one locked again since)")


def check_tasks(loaded: LoadedLab, sealed: SealedRound) -> None:
    """The lab's task (or a dataset's selected tasks) must be the sealed ones, tree for tree."""
    if not loaded.is_dataset:
        if (tree := tree_sha256(loaded.task_dir)) != sealed.task_tree_sha256:
            raise RoundError(f"task {loaded.task_dir} changed since round {sealed.round} was sealed "
                             f"(tree sha256 {tree[:12]}…, sealed {sealed.task_tree_sha256[:12]}…)")
        return
    if sealed.tasks is None:
        raise RoundError(f"round {sealed.round} was sealed for one task, but {loaded.path} runs a dataset")
    if set(loaded.tasks) != set(sealed.tasks):
        raise RoundError(f"{loaded.path} selects other tasks than round {sealed.round} was sealed with")
    for name, d in loaded.tasks.items():
        tree = tree_sha256(d)
        if tree != sealed.tasks[name].tree_sha256:
            raise RoundError(f"task {name} ({d}) changed since round {sealed.round} was sealed (tree "
                             f"sha256 {tree[:12]}…, sealed {sealed.tasks[name].tree_sha256[:12]}…)")


def opened_from(round_dir: Path, sealed: SealedRound, loaded: LoadedLab, lock: Lock) -> OpenedRound:
    """A round from state already in hand (the lab and lock `labctl round` just sealed), checked as
    `open_sealed` checks it."""
    check_lock(loaded, lock, sealed)
    check_tasks(loaded, sealed)
    return OpenedRound(round_dir, sealed, loaded, lock)


def open_sealed(round_dir: Path, lab: Path | None = None, profile: str | None = None) -> OpenedRound:
    """Read sealed.json, the lab and its lock once, and check them against each other."""
    sealed = read_sealed(round_dir)
    loaded = round_loaded(round_dir, sealed, lab, profile)
    return opened_from(round_dir, sealed, loaded, require_lock(loaded))


__all__ = ["OpenedRound", "RoundError", "check_lock", "check_tasks", "open_sealed", "opened_from",
           "read_round_lab", "read_round_lock", "round_loaded", "sent_loaded"]
