"""The report's "why": per run, how the agent's session ended (metrics.json `ended`: by itself, in the
runtime's own words, or stopped, and why), the checks that failed with the verifier's own reason for
each, the build (the verifier's verdict and the agent's attempts), the pathology flags and
interventions that fired, and where the time went (agent, verifier, total).

Why a module of its own: the tables (`labctl.report.tables.tables`) compare contestants cell by cell; this
tells one run's story, in the same words in Markdown and HTML (`labctl.report.render`). Everything comes from
the run's metrics as `labctl.report.data` gathered them (metrics.json, transcript.jsonl, reward.json's
"checks" and "notes"), so a round that predates notes simply shows none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from labctl.round.grading import check_passed
from labctl.round.records import Ending
from labctl.spec.units import format_duration

if TYPE_CHECKING:
    from labctl.report.data import ReportMetrics, RoundReport, RunData

NO_NOTE = "(the verifier gave no reason)"
NOT_RECORDED = "not recorded (the round predates it)"

ENDED_BY = {
    "agent": "the agent ended by itself",
    "signal": "the agent was killed by a signal labctl did not send",
    "wall_time": "stopped at the lab's wall time",
    "budget": "stopped by the {detail}",
    "intervention": "stopped by the intervention `{detail}`",
    "upstream_error": "an upstream error",
    "context_overflow": "a request was refused for its length (context overflow)",
    "max_output": "the agent ended after an answer cut at max_output",
    "meter": "stopped by the meter",
}
"""How each `Ending.by` reads; the detail follows after a colon unless the phrase holds it."""


def ended_text(e: Ending | None, status: str, reason: str | None) -> str:
    """The Ended line: what ended the session, the runtime's own word, its exit status and the
    answers cut at max_output; the run's status when it is not `done`, with labctl's reason."""
    if e is None:
        text = NOT_RECORDED
    else:
        phrase = ENDED_BY.get(e.by, e.by)
        detail = (e.detail or "").replace("_", " ") if e.by == "budget" else e.detail
        text = phrase.format(detail=detail) if "{detail}" in phrase else phrase
        if e.detail and "{detail}" not in phrase:
            text += f": {e.detail}"
        if e.exit_code is not None:
            text += f" (exit {e.exit_code})"
        if e.cut_answers and e.by != "max_output":
            text += f"; {plural(e.cut_answers, 'answer')} cut at max_output"
        elif e.cut_answers and e.cut_answers > 1:
            text += f"; {e.cut_answers} answers cut at max_output in all"
    if status != "done" and reason:
        text += f" — run {status}: {reason}"
    return text


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
    ended: Ending | None
    passed: int | None
    total: int | None
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(check, the verifier's note), in the order the verifier wrote them."""
    build: str = "—"
    flags: list[str] = field(default_factory=list)
    interventions: dict[str, int] = field(default_factory=dict)
    times: dict[str, str] = field(default_factory=dict)
    """agent / verifier / total, formatted."""
    verifier_said: str | None = None
    """The verifier's last lines, when its grade has no named checks (`verifier_line`)."""

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
        out = [("Ended", ended_text(self.ended, self.status, self.reason)),
               ("Build", self.build),
               ("Pathology flags", "; ".join(self.flags) or "none"),
               ("Interventions", inter),
               ("Time", ", ".join(f"{k} {v}" for k, v in self.times.items()))]
        if (said := verifier_line(self)) is not None:
            out.insert(1, said)
        return out


def verifier_line(s: RunStory) -> tuple[str, str] | None:
    """Without named checks the reward alone says nothing of why: quote the verifier's own last lines
    (a Terminal-Bench 2 test.sh exits 0 after writing reward 0; its reason is on its stderr/stdout)."""
    if s.total is not None or not s.verifier_said:
        return None
    return ("Verifier said", s.verifier_said)


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
                    status=run.result.status, reason=run.result.reason, ended=m.ended, passed=m.checks_passed,
                    total=m.checks_total, failed=failed, build=_build(m), flags=list(m.flags or []),
                    interventions=interventions, times=times, verifier_said=m.verifier_tail)


def stories(rep: RoundReport) -> list[RunStory]:
    """Every run, in run-id order (as the Runs table)."""
    from labctl.report.tables import run_sort_key

    told = [story(r, cd.name) for cd in rep.contestants for r in cd.runs]
    return sorted(told, key=lambda s: run_sort_key(s.run_id))


__all__ = ["ENDED_BY", "RunStory", "ended_text", "plural", "seconds", "stories", "story"]
