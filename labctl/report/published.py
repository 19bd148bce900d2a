"""The published figures in the report: how each is written beside its measured twin, and the token
efficiency gap (the article's headline) recomputed from measured data.

Why a module of its own: `labctl.report.data` gathers and tabulates what was measured; this is the one place
that knows how a publication writes its figures ("3rd try", "0/7", "2 + stop", the run id), so the
tables can show `measured / pub X` in the publication's own terms.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from labctl.spec.published import BuildResult, Published

if TYPE_CHECKING:
    from labctl.report.data import ContestantData, RoundReport


def pub(cell: str, published: Any, fmt: Callable[[Any], str] = str) -> str:
    """`measured / pub X` when the figure was published; the measured cell alone when it was not."""
    return cell if published is None else f"{cell} / pub {fmt(published)}"


def pub_build(b: BuildResult) -> str:
    """`pass (attempt 3)`, `fail (0/7)`, `pass`, `fail`."""
    if b.passed:
        return "pass" + (f" (attempt {b.attempt})" if b.attempt else "")
    return "fail" + (f" (0/{b.attempts})" if b.attempts else "")


def pub_nudges(p: Published) -> str | None:
    """The human help as published: `3`, `2 + stop`, `stop`; None when not published."""
    if p.human_stop:
        return f"{p.nudges} + stop" if p.nudges else "stop"
    return None if p.nudges is None else str(p.nudges)


def run_cell(cd: ContestantData) -> str:
    """The measured run ids beside the published one: `run-3 / pub run-14`."""
    measured = ", ".join(r.run_id for r in cd.runs) or "—"
    return pub(measured, cd.published.run if cd.published else None)


def _tried(cd: ContestantData) -> list[float]:
    """Total tokens of the runs that made at least one tool call ("the models that tried")."""
    return [float(tokens) for r in cd.runs
            if (tokens := r.metrics.total_tokens) is not None and r.metrics.tool_calls]


def _per_complete(cds: list[ContestantData]) -> float | None:
    """Total tokens of these contestants' runs over their Complete runs; None without a Complete."""
    runs = [r for cd in cds for r in cd.runs]
    complete = sum(r.result.outcome == "Complete" for r in runs)
    tokens = sum(float(v) for r in runs if (v := r.metrics.total_tokens) is not None)
    return tokens / complete if complete else None


def _tokens(n: float) -> str:
    for div, unit in ((1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def _times(x: float) -> str:
    return f"{x:.0f}×" if x >= 10 else f"{x:.1f}×"


def token_gap_line(rep: RoundReport) -> str | None:
    """The article's headline from measured data: tokens per Complete run of the cloud contestants
    against what the local contestants spent, when a round has both. Local models that reach Complete
    are compared per Complete too; otherwise per run, over the runs that tried (a tool call or more),
    as the article compares them. None when the round lacks either side or a cloud Complete."""
    cloud = [cd for cd in rep.contestants if cd.contestant.kind == "cloud"]
    local = [cd for cd in rep.contestants if cd.contestant.kind == "local"]
    per_cloud = _per_complete(cloud)
    gap = rep.lab.lab.token_gap
    published = f" Published: {gap.low:g}–{gap.high:g}×." if gap else ""
    if not local or per_cloud is None or per_cloud <= 0:
        return None
    head = (f"Token efficiency gap (measured): the cloud model used {_tokens(per_cloud)} tokens per "
            "Complete run")
    per_local = _per_complete(local)
    if per_local is not None:
        return f"{head}, the local models {_tokens(per_local)}: {_times(per_local / per_cloud)}.{published}"
    tried = [v for cd in local for v in _tried(cd)]
    if not tried:
        return f"{head}; no local model made a tool call.{published}"
    lo, hi = min(tried), max(tried)
    spent = _tokens(lo) if lo == hi else f"{_tokens(lo)}–{_tokens(hi)}"
    ratio = _times(lo / per_cloud) if lo == hi else f"{lo / per_cloud:.0f}–{_times(hi / per_cloud)}"
    return (f"{head}; the local models that tried reached no Complete and used {spent} tokens per run: "
            f"{ratio}.{published}")


__all__ = ["pub", "pub_build", "pub_nudges", "run_cell", "token_gap_line"]
