"""`labctl task check TASK`: what a task author runs first. The task's images are built, then its
oracle and nop run alone in a throw-away round; the verdict is the round's controls
(`labctl.round.controls`): the oracle must grade Complete, the nop Failed.

The throw-away lab is the operator's lab (its engine, agent, budgets, profile and build settings) with
the task replaced — a dataset lab's `task:` (dataset, paths, glob, select) becomes the one task — one
run each (`round.repeats` 1) and oracle + nop as the only contestants, locked from the lab's own lock:
only the task's entries change (the spec hash, the task tree, and the task Dockerfile's base images when the
lab's lock does not pin them yet, resolved as `labctl lock` does). Its round directory and envelope
live under a temporary directory and are removed afterwards; docker objects are removed by label
like any round's.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from labctl.errors import LabctlError
from labctl.lock.lockfile import Lock, lock_path, write_lock
from labctl.lock.resolve import spec_sha256
from labctl.round.controls import ControlFailure, control_failures
from labctl.spec.load import LoadedLab, load_lab
from labctl.treehash import tree_sha256

Say = Callable[[str], None]
CONTESTANTS = [{"id": "oracle", "kind": "oracle", "name": "Reference solution"},
               {"id": "nop", "kind": "nop", "name": "Does nothing"}]


@dataclass
class TaskVerdict:
    task: Path
    runs: dict[str, tuple[str, str | None, str | None]]
    """contestant (oracle / nop) → (status, outcome, reason)."""
    failures: list[ControlFailure]

    @property
    def ok(self) -> bool:
        return not self.failures and {"oracle", "nop"} <= set(self.runs)


def control_lab(loaded: LoadedLab, lock: Lock, task: Path, dest: Path) -> Path:
    """Write dest/lab.yaml + dest/lab.lock: `loaded` on `task` with oracle and nop only. Relative paths
    of the lab stay relative to its own directory (`load_lab(..., base_dir=)` reads it that way)."""
    from labctl.lock.registry import dockerfile_bases
    from labctl.lock.resolve import _image

    data = yaml.safe_load(loaded.path.read_text(encoding="utf-8"))
    data["task"] = {"path": str(task.resolve())}
    data["round"] = {**(data.get("round") or {}), "repeats": 1}
    data["contestants"] = CONTESTANTS
    dest.mkdir(parents=True, exist_ok=True)
    lab = dest / "lab.yaml"
    lab.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    try:
        new = load_lab(lab, base_dir=loaded.base_dir)
    except LabctlError as e:  # name the operator's lab: the throw-away one is gone when this is read
        raise LabctlError(f"{loaded.path}: cannot check {task} with this lab: "
                          f"{str(e).replace(str(lab), 'lab.yaml')}") from None
    images = dict(lock.images)
    dockerfile = task / "environment" / "Dockerfile"
    if dockerfile.is_file():
        from labctl.images.specs import settings_for

        mirrors = settings_for(loaded).mirrors
        for ref in dockerfile_bases(dockerfile):
            if ref not in images:
                images[ref] = _image(ref, mirrors)
    write_lock(lock_path(lab), lock.model_copy(update={
        "spec_sha256": spec_sha256(new), "models": {}, "images": images, "tasks": None,
        "task": lock.task.model_copy(update={"path": str(task.resolve()),
                                             "tree_sha256": tree_sha256(task)})}))
    return lab


def check_task(loaded: LoadedLab, lock: Lock, task: Path, say: Say = lambda s: None) -> TaskVerdict:
    """Build, seal, run oracle + nop, unseal, judge; nothing of it stays but the built images."""
    from labctl.engine.container import detect_engine
    from labctl.images.build import build_all
    from labctl.images.specs import lab_images, settings_for
    from labctl.round.layout import read_result, read_unsealed
    from labctl.round.seal import envelope_path, seal_round, unseal_round
    from labctl.run.parts import RunError
    from labctl.run.runner import open_round, run_round

    tmp = Path(tempfile.mkdtemp(prefix="labctl-task-check-"))
    try:
        lab = control_lab(loaded, lock, task, tmp)
        new = load_lab(lab, base_dir=loaded.base_dir)
        from labctl.lock.resolve import require_lock

        new_lock = require_lock(new)
        say("build (images already present are reused)")
        specs = lab_images(new, new_lock, new.profile, settings_for(new))
        results = build_all(detect_engine(), specs, log_dir=loaded.base_dir / ".labctl" / "logs")
        if failed := [r for r in results if r.status == "failed"]:
            raise RunError(f"image {failed[0].name} failed to build (see .labctl/logs)")
        made = seal_round(new, new_lock, tmp / "rounds", {s.name: s.tag for s in specs})
        try:
            ctx = open_round(made.round_dir, lab)
            run_round(ctx, say)
            unseal_round(made.round_dir)
            mapping = read_unsealed(made.round_dir).mapping
            runs: dict[str, tuple[str, str | None, str | None]] = {}
            for rid, slot in mapping.items():
                res = read_result(made.round_dir, rid)
                runs[slot.contestant] = (res.status, res.outcome, res.reason)
            return TaskVerdict(task, runs, control_failures(made.round_dir))
        finally:
            envelope_path(made.record.round).unlink(missing_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["TaskVerdict", "check_task", "control_lab"]
