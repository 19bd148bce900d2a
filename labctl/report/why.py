"""The report's "why": per run, the checks that failed with the verifier's own reason for each, the
build (the verifier's verdict and the agent's attempts), the pathology flags and interventions that
fired, and where the time went (agent, verifier, total).

Why a module of its own: the tables (`labctl.report.tables.tables`) compare contestants cell by cell; this
tells one run's story, in the same words in Markdown and HTML (`labctl.report.render`). Everything comes from
the run's metrics as `labctl.report.data` gathered them (metrics.json, transcript.jsonl, reward.json's
"checks" and "notes"), so a round that predates notes simply shows none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from labctl.round.records import check_passed
from labctl.spec.units import format_duration

if TYPE_CHECKING:
    from labctl.report.data import ReportMetrics, RoundReport, RunData

NO_NOTE = "(the verifier gave no reason)"


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """`1 run`, `2 runs`, `0 checks`."""
    return f"{n} {noun if n == 1 else (nouns or noun + 's')}"


def seconds(v: Any) -> str:
    """`42s`, `11m5s`; a dash when unknown."""
    if type(v) not in (int, float):
        return "—"
    return f"{v:.0f}s" if v < 60 else format_duration(round(v))


@dataclass
class RunStory:
    """One run, told: what failed and why, and what happened on the way."""

    run_id: str
    contestant: str
    outcome: str
    status: str
    reason: str | None
    passed: int | None
    total: int | None
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(check, the verifier's note), in the order the verifier wrote them."""
    build: str = "—"
    flags: list[str] = field(default_factory=list)
    interventions: dict[str, int] = field(default_factory=dict)
    times: dict[str, str] = field(default_factory=dict)
    """agent / verifier / total, formatted."""

    @property
    def checks_line(self) -> str:
        if self.total is None:
            return "No verifier checks were recorded."
        if not self.failed:
            return f"All {plural(self.total, 'check')} passed."
        return f"{len(self.failed)} of {plural(self.total, 'check')} failed:"

    @property
    def lines(self) -> list[tuple[str, str]]:
        """(label, text) of the facts under the checks, the same in every format."""
        inter = ", ".join(f"{name} ×{n}" for name, n in self.interventions.items()) or "none"
        out = [("Build", self.build),
               ("Pathology flags", "; ".join(self.flags) or "none"),
               ("Interventions", inter),
               ("Time", ", ".join(f"{k} {v}" for k, v in self.times.items()))]
        if self.reason:
            out.insert(0, ("Ended", f"{self.status}: {self.reason}"))
        return out


def _build(m: ReportMetrics) -> str:
    """The verifier's verdict, then the agent's own build commands (`[labctl.report] build_command`)."""
    b = m.build
    if b is None:
        return "—"
    verdict = "passes" if b.passed else "fails"
    runs, attempt = b.agent_runs, b.attempt
    if runs is None:
        return f"{verdict} in the verifier"
    if runs == 0:
        agent = "the agent never ran the build"
    elif attempt is not None:
        agent = f"the agent's build passed on attempt {attempt} of {runs}"
    else:
        agent = f"the agent ran the build {plural(runs, 'time')}, none passed"
    return f"{verdict} in the verifier; {agent}"


def story(run: RunData, contestant: str) -> RunStory:
    m = run.metrics
    notes = m.notes or {}
    failed = [] if m.checks is None else [
        (c, str(notes.get(c) or NO_NOTE)) for c, v in m.checks.items() if not check_passed(v)]
    times = {"agent": seconds(m.wall_time_s), "verifier": seconds(m.verifier_wall_s),
             "total": seconds(m.total_wall_s)}
    interventions = {name: n for name, n in (m.interventions or {}).items() if n > 0}
    return RunStory(run_id=run.run_id, contestant=contestant, outcome=run.outcome_label,
                    status=run.result.status, reason=run.result.reason, passed=m.checks_passed,
                    total=m.checks_total, failed=failed, build=_build(m), flags=list(m.flags or []),
                    interventions=interventions, times=times)


def stories(rep: RoundReport) -> list[RunStory]:
    """Every run, in run-id order (as the Runs table)."""
    from labctl.report.tables import run_sort_key

    told = [story(r, cd.name) for cd in rep.contestants for r in cd.runs]
    return sorted(told, key=lambda s: run_sort_key(s.run_id))


__all__ = ["RunStory", "plural", "seconds", "stories", "story"]
