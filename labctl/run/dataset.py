"""A dataset round at run time: check its tasks against the seal, and give each run the view of the
round it needs — the lab as if the run's task were its only one, that task's images (shared by every
task with the same environment) and that task's outcome rules. `labctl.run.session` then runs it exactly
as it runs a one-task round."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from labctl.round.layout import SealedRound
from labctl.run.parts import RunError
from labctl.spec.dataset import agent_image_name, image_groups, image_slug
from labctl.spec.load import LoadedLab
from labctl.treehash import tree_sha256

if TYPE_CHECKING:
    from labctl.run.runner import RoundContext


def check_dataset(loaded: LoadedLab, sealed: SealedRound) -> None:
    """The lab's selected tasks must be the sealed ones, each with its sealed tree hash."""
    if sealed.tasks is None:
        raise RunError(f"round {sealed.round} was sealed for one task, but {loaded.path} runs a dataset")
    if set(loaded.tasks) != set(sealed.tasks):
        raise RunError(f"{loaded.path} selects other tasks than round {sealed.round} was sealed with")
    for name, d in loaded.tasks.items():
        tree = tree_sha256(d)
        if tree != sealed.tasks[name].tree_sha256:
            raise RunError(f"task {name} ({d}) changed since round {sealed.round} was sealed (tree sha256 "
                           f"{tree[:12]}…, sealed {sealed.tasks[name].tree_sha256[:12]}…)")


def task_images(images: dict[str, str], loaded: LoadedLab, task: str) -> dict[str, str]:
    """The image keys a one-task run expects (`task-…`, `agent-<runtime>`, `llama-server`, `labctl`),
    mapped to the dataset images of `task`'s environment group."""
    group = image_groups(loaded.tasks)[task]
    out = {k: v for k, v in images.items() if not k.startswith(("task-", "agent-"))}
    key = f"task-{image_slug(group)}"
    out[key] = images[key]
    runtimes = {"oracle", "nop"} | ({loaded.lab.agent.runtime} if loaded.lab.agent else set())
    for rt in runtimes:
        if (name := agent_image_name(rt, group)) in images:
            out[f"agent-{rt}"] = images[name]
    return out


def for_run(ctx: RoundContext, run_id: str) -> RoundContext:
    """`ctx` as a one-task round of `run_id`'s task; `ctx` itself for a one-task round."""
    task = (ctx.sealed.run_tasks or {}).get(run_id)
    if task is None:
        return ctx
    return dataclasses.replace(
        ctx, loaded=ctx.loaded.for_task(task), images=task_images(ctx.images, ctx.loaded, task),
        sealed=ctx.sealed.model_copy(update={"outcome_rules": ctx.sealed.rules_for(run_id)}))


__all__ = ["check_dataset", "for_run", "task_images"]
