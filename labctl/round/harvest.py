"""After unseal: each model run's first request, recorded for `labctl plan`'s fit warning
(`labctl.plan.firstprompt.harvest`). Only after unseal: which contestant a run was is the mapping,
and the record is kept by contestant's runtime, version and model."""

from __future__ import annotations

import contextlib
from pathlib import Path

from labctl.errors import LabctlError
from labctl.lock.lockfile import Lock
from labctl.meter.readback import transcript_records
from labctl.plan.firstprompt import harvest
from labctl.round.layout import read_unsealed, run_dir
from labctl.round.opened import read_round_lab, read_round_lock
from labctl.spec.lab import Lab


def harvest_first_prompts(round_dir: Path, lab: Lab | None = None, lock: Lock | None = None) -> int:
    """Record each model run's first request; how many were recorded. Never fails the command.
    `lab`, `lock`: the round's, when the caller holds them already (`labctl round`)."""
    n = 0
    with contextlib.suppress(LabctlError, OSError, ValueError):
        unsealed = read_unsealed(round_dir)
        lab = lab or read_round_lab(round_dir)
        lock = lock or read_round_lock(round_dir)
        by_id = {c.id: c for c in lab.contestants}
        for rid, slot in unsealed.mapping.items():
            c, model = by_id.get(slot.contestant), lock.models.get(slot.contestant)
            agent = lab.agent_for(c) if c else None
            records = transcript_records(run_dir(round_dir, rid) / "transcript.jsonl")
            if agent and model and harvest(records, agent.runtime, agent.version, model.files[0].sha256):
                n += 1
    return n


__all__ = ["harvest_first_prompts"]
