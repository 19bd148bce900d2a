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

from labctl.spec.units import format_duration

if TYPE_CHECKING:
    from labctl.report.data import RoundReport, RunData

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


def _build(m: dict[str, Any]) -> str:
    """The verifier's verdict, then the agent's own build commands (`[labctl.report] build_command`)."""
    b = m.get("build")
    if not isinstance(b, dict) or "passed" not in b:
        return "—"
    verdict = "passes" if b["passed"] else "fails"
    runs, attempt = b.get("agent_runs"), b.get("attempt")
    if type(runs) is not int:
        return f"{verdict} in the verifier"
    if runs == 0:
        agent = "the agent never ran the build"
    elif type(attempt) is int:
        agent = f"the agent's build passed on attempt {attempt} of {runs}"
    else:
        agent = f"the agent ran the build {plural(runs, 'time')}, none passed"
    return f"{verdict} in the verifier; {agent}"


def _interventions(m: dict[str, Any]) -> dict[str, int]:
    by_rule = m.get("interventions_by_rule")
    if isinstance(by_rule, dict):
        return {str(k): int(v) for k, v in by_rule.items() if type(v) is int and v > 0}
    n = m.get("interventions")
    return {"(rule not recorded)": n} if type(n) is int and n > 0 else {}


def story(run: RunData, contestant: str) -> RunStory:
    m = run.metrics
    checks = m.get("checks") if isinstance(m.get("checks"), dict) else None
    notes = m.get("notes") if isinstance(m.get("notes"), dict) else {}
    failed = [] if checks is None else [
        (c, str(notes.get(c) or NO_NOTE)) for c, v in checks.items() if not (v is True or v == 1)]
    passed = m.get("checks_passed") if type(m.get("checks_passed")) is int else None
    total = m.get("checks_total") if type(m.get("checks_total")) is int else None
    times = {"agent": seconds(m.get("wall_time_s")), "verifier": seconds(m.get("verifier_wall_s")),
             "total": seconds(m.get("total_wall_s"))}
    flags = [str(f) for f in m.get("flags") or []] if isinstance(m.get("flags"), list) else []
    return RunStory(run_id=run.run_id, contestant=contestant, outcome=run.outcome_label,
                    status=run.result.status, reason=run.result.reason, passed=passed, total=total,
                    failed=failed, build=_build(m), flags=flags, interventions=_interventions(m), times=times)


def stories(rep: RoundReport) -> list[RunStory]:
    """Every run, in run-id order (as the Runs table)."""
    from labctl.report.tables import run_sort_key

    told = [story(r, cd.name) for cd in rep.contestants for r in cd.runs]
    return sorted(told, key=lambda s: run_sort_key(s.run_id))


__all__ = ["RunStory", "plural", "seconds", "stories", "story"]
