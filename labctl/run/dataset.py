"""A dataset round at run time: give each run the view of the round it needs — the lab as if the run's
task were its only one, that task's images (shared by every task with the same environment) and that
task's outcome rules. `labctl.run.session` then runs it exactly as it runs a one-task round. (Its
tasks are checked against the seal when the round is opened: `labctl.round.opened.check_tasks`.)"""

from __future__ import annotations

import dataclasses

from labctl.run.context import RoundContext
from labctl.spec.dataset import agent_image_name, image_groups, image_slug
from labctl.spec.load import LoadedLab


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


def task_image(images: dict[str, str]) -> str:
    """The name of a run's task image among its images (`for_run` leaves it one)."""
    return next(n for n in images if n.startswith("task-"))


__all__ = ["for_run", "task_image", "task_images"]
