"""Grade one run: the task's tests (`labctl.run.verifier`: in the agent's live container, or in a
fresh one), then metrics, then the outcome.

What the verifier sees is what the agent left, as Harbor grades it: the agent's whole filesystem.

The outcome comes from `labctl.round.grading.derive_outcome`, the same function `labctl verify` re-runs,
so the grade in result.json can only differ from the re-derived one when a file was changed.
"""

from __future__ import annotations

from pathlib import Path

from labctl.meter.readback import exchange_records, speeds, transcript_records
from labctl.meter.state import MeterState
from labctl.meter.wire_responses import request_turns
from labctl.round.grading import Reward, check_passed, derive_outcome, named_checks
from labctl.round.records import BuildFigures, RunMetrics
from labctl.run.parts import Workspace, pushed_commits
from labctl.run.pathology import command_results, flags, pathology, structured_calls, text_actions
from labctl.run.verifier import commit_agent, run_live_verifier, run_verifier
from labctl.spec.lab import Outcome
from labctl.spec.pathology import PathologyThresholds
from labctl.spec.task import OutcomeRules

__all__ = ["commit_agent", "outcome", "run_live_verifier", "run_metrics", "run_verifier"]

def checks_summary(reward: Reward | None) -> tuple[int | None, int | None]:
    checks = named_checks(reward)
    if checks is None:
        return None, None
    return sum(1 for v in checks.values() if check_passed(v)), len(checks)


def _check(reward: Reward | None, name: str | None) -> bool | None:
    """A named check as a column: passed or not (`check_passed`: a check written as anything else
    than true or a number ≥ 1 failed); None when the verifier did not write it."""
    checks = named_checks(reward)
    if checks is None or not name or name not in checks:
        return None
    return check_passed(checks[name])


def run_metrics(*, meter_state: MeterState | None, transcript: Path, ws: Workspace | None,
                reward: Reward | None, wall_s: float, needs_model: bool, stopped_by: str | None,
                columns: dict[str, str] | None = None, verifier_s: float | None = None,
                thresholds: PathologyThresholds | None = None) -> RunMetrics:
    """metrics.json. `tool_calls` is present only for contestants with a model: for oracle and nop it
    would be a fiction, and a 0 would grade them Total failure (`derive_outcome` rule 1). The same goes
    for "pathology" (`labctl.run.pathology`) and its "flags": model contestants only. `columns` is
    `report_columns` of the task: "build" and "screenshot" come from the verifier's checks, the
    build's attempt number from the agent's own commands in the transcript. `wall_s` is the agent's
    phase, `verifier_s` the verifier's (the run's total is result.json's started → ended)."""
    columns = columns or {}
    passed, total = checks_summary(reward)
    m = RunMetrics(wall_time_s=round(wall_s, 3), commits_pushed=None if ws is None else pushed_commits(ws),
                   checks_passed=passed, checks_total=total, stopped_by=stopped_by)
    if verifier_s is not None:
        m.verifier_wall_s = round(verifier_s, 3)
    if (shot := _check(reward, columns.get("screenshot_check"))) is not None:
        m.screenshot = shot
    if (built := _check(reward, columns.get("build_check"))) is not None:
        m.build = BuildFigures(passed=built)
    if not needs_model:
        return m
    recs = transcript_records(transcript)
    if m.build is not None and columns.get("build_command"):
        runs = command_results(recs, columns["build_command"])
        m.build.agent_runs = len(runs)
        m.build.attempt = next((i for i, c in enumerate(runs, 1) if c == 0), None)
    exchanges = exchange_records(recs)
    requests = [r["request"] for r in exchanges if isinstance(r.get("request"), dict)]
    last_req = requests[-1] if requests else None
    rates = speeds(exchanges)  # the report's figures too (labctl.meter.readback)
    # No status.json (the meter never published): every counter is 0, as a meter that saw nothing
    # would say; the requests fall back to the transcript's exchanges.
    s = meter_state
    # one definition of an action (labctl.meter.actions): structured calls, plus the executed blocks of
    # a text runtime (requests that declared no tools); prose code of a tool-calling runtime is none
    m.tool_calls = (s.tool_calls if s else structured_calls(recs)) + text_actions(recs)
    m.requests = s.requests if s else len(exchanges)
    m.messages = len(request_turns(last_req) or []) if last_req else 0
    m.prompt_tokens = s.prompt_tokens if s else 0
    m.completion_tokens = s.completion_tokens if s else 0
    m.cached_tokens = s.cached_tokens if s else 0
    m.total_tokens = s.total_tokens if s else 0
    m.cost_usd = s.cost_usd if s else None
    m.prompt_tokens_per_s = None if rates.prompt_tokens_per_s is None else round(rates.prompt_tokens_per_s, 2)
    m.gen_tokens_per_s = None if rates.gen_tokens_per_s is None else round(rates.gen_tokens_per_s, 2)
    m.interventions = dict(s.interventions) if s else {}
    m.nudges = s.nudges if s else 0
    m.upstream_errors = s.errors if s else 0
    m.upstream_errored = s.errored if s else False
    m.pathology = pathology(recs, thresholds, tool_calls=m.tool_calls,
                            build_command=columns.get("build_command"), commits_pushed=m.commits_pushed)
    m.flags = flags(m.pathology, thresholds)
    return m


def outcome(reward: Reward | None, metrics: RunMetrics, rules: OutcomeRules | None) -> Outcome | None:
    """The grade; a reward the rules cannot read is no grade (None) rather than a crash mid-round."""
    try:
        return derive_outcome(reward, metrics, rules)
    except ValueError:
        return None

