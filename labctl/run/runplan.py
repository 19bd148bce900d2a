"""What one run is, worked out once before its first container: `RunPlan`.

The round is opened once (`labctl.run.context.open_round`: lab, lock, envelope, images, the plan of
every contestant); a run then needs its own slice of that — its task (task.toml read once), its
contestant and agent runtime (looked up once), its plan row (from the round's plan, never planned
again), its images, and the user and working directory its agent and verifier run as (each image
inspected once). The session (`labctl.run.session`) and the runner (`labctl.run.runner`) read these
fields instead of deriving them again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from labctl.plan.planner import ContestantPlan
from labctl.run.context import RoundContext
from labctl.run.dataset import for_run, task_image
from labctl.run.parts import WORKSPACE
from labctl.spec.lab import CloudContestant, Contestant, Lab, LocalContestant
from labctl.spec.task import Task, read_task

CONTROLS = ("oracle", "nop")
"""Contestant kinds that are controls: their runtime is their kind, they need no model."""


@dataclass(frozen=True)
class RunPlan:
    """One run's fixed facts (see the module docstring). `ctx` is the run's view of the round: for a
    dataset round, the lab as if the run's task were its only one, with that task's images."""

    run_id: str
    ctx: RoundContext
    contestant: Contestant
    runtime: str
    """The agent runtime (`labctl.agents`), or the control's kind (oracle, nop)."""
    task: Task
    row: ContestantPlan | None
    """A local contestant's row of the round's plan (None for cloud contestants and controls)."""
    task_name: str | None
    """The run's task in a dataset round (None: the lab's one task)."""
    repository: bool
    """A repository task (`[labctl.repository]`): a fresh clone at /workspace."""
    user: str
    """The agent's user: the task image's (Harbor's model) or, in a repository task, the agent image's."""
    verifier_user: str
    """The verifier's user: always the task image's (Harbor runs tests/test.sh in the task's container)."""
    workdir: str
    """The agent's working directory: the task image's WORKDIR, or /workspace in a repository task."""

    @property
    def images(self) -> dict[str, str]:
        return self.ctx.images

    @property
    def control(self) -> Literal["oracle", "nop"] | None:
        """"oracle" | "nop" for a control run."""
        kind = self.contestant.kind
        return kind if kind == "oracle" or kind == "nop" else None

    @property
    def dialect(self) -> str:
        """The wire dialect the agent speaks to the meter."""
        return self.contestant.provider if isinstance(self.contestant, CloudContestant) else "openai"


def plan_run(ctx: RoundContext, run_id: str) -> RunPlan:
    """The run's plan from the opened round: no file read twice, no image inspected twice."""
    task_name = (ctx.sealed.run_tasks or {}).get(run_id)
    ctx = for_run(ctx, run_id)
    cid = ctx.mapping[run_id]
    contestant = next(c for c in ctx.loaded.lab.contestants if c.id == cid)
    kind = contestant.kind
    agent = ctx.loaded.lab.agent_for(contestant)
    runtime = kind if kind in CONTROLS else (agent.runtime if agent else "")
    task = read_task(ctx.loaded.task_dir)
    repository = task.repository_dir is not None
    docker = ctx.docker
    task_img = ctx.images[task_image(ctx.images)]
    verifier_user = docker.image_user(task_img) or "0"
    if repository:  # the agent image's own user, in the clone
        user, workdir = docker.image_user(ctx.images[f"agent-{runtime}"]) or "agent", WORKSPACE
    else:  # Harbor's model: the task image's user and WORKDIR
        user, workdir = verifier_user, docker.image_workdir(task_img)
    row = (next(r for r in ctx.plan.contestants if r.id == cid)
           if isinstance(contestant, LocalContestant) else None)
    return RunPlan(run_id=run_id, ctx=ctx, contestant=contestant, runtime=runtime, task=task, row=row,
                   task_name=task_name, repository=repository, user=user, verifier_user=verifier_user,
                   workdir=workdir)


__all__ = ["RunPlan", "plan_run"]


def cost_fields(lab: Lab, c: CloudContestant) -> dict[str, object]:
    """The meter config's price and cost budget for a cloud contestant (`MeterConfig.price`,
    `cost_budget`). An unpriced contestant gets neither: its exchanges have no cost to record or to
    spend a budget in, so `budgets.cost` does not limit it (README "What a run costs")."""
    if c.price is None:
        return {}
    return {"price": c.price, **({"cost_budget": lab.budgets.cost} if lab.budgets.cost is not None else {})}
