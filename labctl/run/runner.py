"""`labctl run`: execute a sealed round's runs one at a time, each in isolation (README, "One run,
in isolation").

Per run, every container, network and volume carries `labctl.round=<round id>` and
`labctl.run=<run id>` and is named from those two ids only:

    agent net (internal):  agent container ── meter (alias `meter`)
    model net (internal):                     meter ── llama-server (alias `server`)   local
    egress net (bridge):                      meter ── provider API                    cloud
    outside net (bridge):  egress gateway (allowlist) or the agent itself (open)   `labctl.run.egress`

The agent reaches the meter and, beyond it, only what the lab's network policy allows (none: nothing;
allowlist: the registries through the egress gateway; open: the outside): never the server (other
network), never the host (every network is fenced, `labctl.engine.fence`), and it never holds an API
key (only the meter's environment does).

Resume: a run whose result.json is finished (done, errored, killed) is skipped (errored ones run
again with `labctl run --retry-errored`); one found
`running` was interrupted: what it left is removed by label, its run directory is emptied (but for
result.json) and it starts again (attempts + 1). Resume keys on the run ids and the sealed lock hash
only, never on container ids or ports.
SIGINT/SIGTERM stop the current run, remove everything labelled for it, and leave it `running`.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from labctl.engine.container import Engine, EngineError
from labctl.engine.fence import Fence, Netfilter
from labctl.engine.names import ROUND_LABEL, RUN_LABEL
from labctl.round.layout import (
    FINISHED,
    RunResult,
    metrics_path,
    read_result,
    result_path,
    write_manifest,
    write_result,
)
from labctl.round.records import RunMetrics, read_metrics
from labctl.round.seal import sealed_files_changed
from labctl.run.context import (
    Interrupted,
    RoundContext,
    open_round,
    signals_deferred,
    sigterm_raises,
)
from labctl.run.parts import RunError
from labctl.run.runplan import plan_run
from labctl.run.session import RunSession

Say = Callable[[str], None]


def this_host() -> str:
    """The name a run records as where it ran."""
    return socket.gethostname()


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def execute_run(ctx: RoundContext, run_id: str, attempts: int, say: Say = lambda s: None,
                gpus: list[int] | None = None, host: str | None = None) -> RunResult:
    """One run from scratch to result.json; never leaves a labelled object behind. `gpus`: the
    devices it may use (`labctl.run.gpualloc`, None: all); `host`: where it runs (default this host)."""
    plan = plan_run(ctx, run_id)  # the run's task, contestant, images and users, worked out once
    ctx = plan.ctx  # a dataset round: this run's task, its images and its rules
    result = RunResult(run_id=run_id, status="running", attempts=attempts, started=now(), task=plan.task_name,
                       control=plan.control, host=host or this_host())
    write_result(ctx.round_dir, result)
    session = RunSession(ctx, plan, say, gpus)
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
    except (RunError, EngineError) as e:  # an engine command that failed ends the run as errored
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
    metrics: RunMetrics = field(default_factory=RunMetrics)
    task: str | None = None
    """The run's task in a dataset round."""
    host: str | None = None
    """Where the run ran (a host name; a Ray node for `labctl run --ray`)."""


def run_round(ctx: RoundContext, say: Say = lambda s: None, retry_errored: bool = False) -> list[RunSummary]:
    """Every run in sealed order; finished ones are skipped (resume), errored ones too unless
    `retry_errored`. The manifest is rewritten after each run so the round directory verifies at any
    point between runs."""
    changed = sealed_files_changed(ctx.round_dir)
    if changed:
        # Rewriting the manifest below would bless the change; refuse instead.
        raise RunError("the round changed since it was sealed: " + "; ".join(changed))
    out: list[RunSummary] = []
    with sigterm_raises():
        for rid in ctx.sealed.order:
            attempts = next_attempt(ctx, rid, retry_errored, say)
            if attempts is None:
                out.append(summary(ctx, rid, read_result(ctx.round_dir, rid), skipped=True))
                continue
            try:
                res = execute_run(ctx, rid, attempts, say)
            finally:
                with signals_deferred():
                    write_manifest(ctx.round_dir)
            say(f"{rid}: {res.status}" + (f", {res.outcome}" if res.outcome else "")
                + (f" ({res.reason})" if res.reason else ""))
            out.append(summary(ctx, rid, res, skipped=False))
        if all(s.skipped for s in out):
            # Nothing ran: a kill between the last result.json and its manifest rewrite left the
            # manifest stale, and no later run would ever rewrite it.
            with signals_deferred():
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
    try:
        metrics = read_metrics(metrics_path(ctx.round_dir, rid)) or RunMetrics()
    except (OSError, ValueError):  # a summary line, not a verification: `labctl verify` names the file
        metrics = RunMetrics()
    return RunSummary(rid, res.status, res.outcome, skipped, res.reason, metrics, res.task, res.host)


def down(docker: Engine, round_id: str | None) -> dict[str, list[str]]:
    """Remove what a round (or every labctl round) left running."""
    labels: dict[str, str | None] = {ROUND_LABEL: round_id}
    removed = docker.remove_labelled(labels)
    fence = Fence(Netfilter(docker, labels={ROUND_LABEL: round_id or "down"}), round_id)
    removed["firewall rules"] = fence.clear()
    return removed


__all__ = ["RUN_LABEL", "Interrupted", "RoundContext", "RunError", "RunSession", "RunSummary", "down",
           "execute_run", "open_round", "run_round"]
