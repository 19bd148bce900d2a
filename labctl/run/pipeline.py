"""`labctl round`'s whole story below the CLI: `do_round` locks the lab on its first run (or checks
its lock), fetches, builds the missing images, runs the tool-call preflight, seals, runs every run,
unseals and records the first prompts, and returns a typed `RoundOutcome` for the CLI to render.

State is derived once and handed down: the lab and lock loaded here are the ones sealed
(`labctl.round.seal`), opened for running without reading them again (`labctl.round.opened.
opened_from`), planned once (`labctl.run.context.open_round`), and given to the first-prompt harvest.
Progress lines go through `say`; before unseal none of them names a contestant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from labctl.engine.container import detect_engine
from labctl.errors import LabctlError, one_line
from labctl.gguf.store import Store
from labctl.images.build import build_all
from labctl.images.specs import lab_images, settings_for
from labctl.lock.entries import lock_entries
from labctl.lock.fetch import fetch
from labctl.lock.lockfile import Lock, lock_path, write_lock
from labctl.lock.resolve import LockError, require_lock, resolve
from labctl.plan.planner import Plan, plan_lab
from labctl.plan.preflight import LabPreflight, write_preflight
from labctl.round.harvest import harvest_first_prompts
from labctl.round.layout import write_manifest
from labctl.round.opened import opened_from
from labctl.round.seal import seal_round, unseal_round
from labctl.run.context import open_round
from labctl.run.parts import RunError
from labctl.run.preflight import run_preflight
from labctl.run.runner import RunSummary, run_round
from labctl.spec.load import LoadedLab, load_lab

Say = Callable[[str], None]


class FirstLockError(LabctlError):
    """A lab without a lock that cannot be locked on `labctl round`'s first run."""


@dataclass(frozen=True)
class RoundOutcome:
    """What `labctl round` did: the round it made, its runs and, after unseal, who ran them."""

    round_dir: Path
    round_id: str
    commitment: str
    loaded: LoadedLab
    """The lab the round was sealed from (its controls are judged with it)."""
    lock: Lock
    summaries: list[RunSummary]
    mapping: dict[str, str]
    """run id → contestant id, revealed by the unseal."""
    preflight: LabPreflight | None
    locked: bool
    """Whether this run wrote the lab's first lock."""


def lock_first_run(lab: Path, profile: str | None, say: Say) -> tuple[LoadedLab, Lock, bool]:
    """The lab, its lock and whether it was locked now. A lab that has no lock yet is locked now, as
    `labctl lock` would, and what was pinned is said; an existing lock is only checked, and a lab that
    drifted from it stops the round: what changed is for a person to look at (`labctl lock --check`),
    not to paper over. Raises SpecError (the lab), FirstLockError or LockError."""
    path = lock_path(lab)
    locked = not path.exists()
    first: LoadedLab | None = None
    if locked:
        first = load_lab(lab)  # the lab's own profile, as `labctl lock` locks it
        say(f"no {path.name} yet: locking {lab} (first run)")
        try:
            new = resolve(first, Store())
        except LockError as e:
            raise FirstLockError(f"cannot lock {lab}: " + "; ".join(e.problems)) from None
        write_lock(path, new)
        for entry, pin in lock_entries(new).items():
            say(f"pinned {entry}: {pin}")
        say(f"wrote {path} (sha256 {new.sha256()[:12]}); later rounds check against it")
    loaded = first if first is not None and profile is None else load_lab(lab, profile=profile)
    return loaded, require_lock(loaded), locked


def preflight(loaded: LoadedLab, lock: Lock, plan: Plan, say: Say) -> LabPreflight | None:
    """The tool-call preflight before the first model run (`labctl.plan.probe`): warns, never stops the
    round; a preflight that cannot run is said and skipped."""
    if not any(c.status == "planned" for c in plan.contestants):
        return None
    say("preflight: one tool call asked of each local model (cached per model and llama.cpp build)")
    try:
        return run_preflight(loaded, lock, plan, None, say=say)
    except (LabctlError, OSError) as e:
        say(f"preflight skipped: {one_line(e)}")
        return None


def do_round(lab: Path, profile: str | None, rounds_dir: Path, say: Say = lambda s: None,
             console: Console | None = None) -> RoundOutcome:
    """Lock (a first run) or check the lock → fetch → build (missing images only) → preflight → seal →
    run → unseal → first prompts. `console` shows the image builds' progress. Raises LabctlError
    (FetchError from the fetch) or OSError; Ctrl-C leaves the round resumable by `labctl run`."""
    loaded, lock, locked = lock_first_run(lab, profile, say)
    say("fetch")
    fetch(lock, Store(), progress=False, base_dir=loaded.base_dir)
    say("build (images already present are reused)")
    specs = lab_images(loaded, lock, loaded.profile, settings_for(loaded))
    results = build_all(detect_engine(), specs, log_dir=loaded.base_dir / ".labctl" / "logs", console=console)
    if failed := [r for r in results if r.status == "failed"]:
        raise RunError(f"image {failed[0].name} failed to build (see .labctl/logs)")
    plan = plan_lab(loaded, lock)  # once per round: the preflight's and every run's
    pre = preflight(loaded, lock, plan, say)
    made = seal_round(loaded, lock, rounds_dir, {s.name: s.tag for s in specs})
    say(f"sealed {made.record.round}: commitment {made.record.commitment}")
    if pre is not None:  # by contestant (public in lab.yaml), never by run id
        write_preflight(made.round_dir, pre)
        write_manifest(made.round_dir)
    # The lab and lock just sealed, handed down: the round's copies are these bytes.
    opened = opened_from(made.round_dir, made.record, loaded, lock)
    ctx = open_round(made.round_dir, profile=profile, opened=opened, plan=plan)
    summaries = run_round(ctx, say)
    unsealed = unseal_round(made.round_dir)
    harvest_first_prompts(made.round_dir, loaded.lab, lock)  # for `plan`'s fit warning; only now: blindness
    return RoundOutcome(round_dir=made.round_dir, round_id=made.record.round,
                        commitment=made.record.commitment, loaded=loaded, lock=lock, summaries=summaries,
                        mapping={k: v.contestant for k, v in unsealed.mapping.items()}, preflight=pre,
                        locked=locked)


__all__ = ["FirstLockError", "RoundOutcome", "do_round", "lock_first_run", "preflight"]
