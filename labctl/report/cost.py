"""What the runs cost, in USD at each cloud contestant's declared price: the report's Cost table,
its figures for `--json`, and the measured cost gap beside the published token gap.

Why its own module: a cost figure has to say what it is *not*. A run's cost is the sum of its
exchanges' `cost_usd` (the meter's, from the declared price and each wire's own usage fields:
labctl/meter/cost.py), so a contestant without a price (every local model: their compute and energy
are not measured yet, #32 part 2) is "not priced" — never a 0 that would read as free.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from labctl.report.data import DASH, ContestantData, RoundReport

NOT_PRICED = "not priced"


@dataclass(frozen=True)
class CostFigures:
    """One contestant's cost figures; every USD figure None when not priced (or not measured)."""

    priced: bool
    """The contestant declares a `price` (cloud only)."""
    run_costs: list[float]
    """USD per run, of the runs whose meter priced its exchanges."""
    total_usd: float | None
    """USD over those runs."""
    complete_runs: int
    """Runs graded Complete (a resolved task)."""
    usd_per_complete: float | None
    """`total_usd` over the Complete runs: what one resolved task cost; None without a Complete."""
    tokens_per_usd: float | None
    """Total tokens of the priced runs over their USD: how far a dollar goes."""
    price: dict[str, Any] | None
    """The declared price (USD per million tokens, `as_of`, `source`)."""


def has_model(cd: ContestantData) -> bool:
    return cd.contestant.kind in ("local", "cloud")


def figures(cd: ContestantData) -> CostFigures:
    price = getattr(cd.contestant, "price", None)
    priced_runs = [r for r in cd.runs if r.metrics.cost_usd is not None]
    costs = [float(r.metrics.cost_usd or 0.0) for r in priced_runs]
    total = sum(costs) if price is not None and priced_runs else None
    complete = sum(r.result.outcome == "Complete" for r in cd.runs)
    tokens = sum(int(r.metrics.total_tokens or 0) for r in priced_runs)
    return CostFigures(
        priced=price is not None, run_costs=costs, total_usd=total, complete_runs=complete,
        usd_per_complete=total / complete if total is not None and complete else None,
        tokens_per_usd=tokens / total if total else None,
        price=price.model_dump(mode="json") if price is not None else None)


def usd(v: float) -> str:
    """Dollars to the cent, and to a hundredth of a cent below a dollar (an agent call is cents)."""
    return f"${v:,.2f}" if v >= 1 else f"${v:.4f}"


def _runs_cell(f: CostFigures) -> str:
    if not f.run_costs:
        return DASH
    if len(f.run_costs) == 1:
        return usd(f.run_costs[0])
    lo, hi = min(f.run_costs), max(f.run_costs)
    mean = usd(sum(f.run_costs) / len(f.run_costs))
    return mean if lo == hi else f"{mean} ({usd(lo)}–{usd(hi)})"


def _price_cell(f: CostFigures) -> str:
    p = f.price or {}
    return (f"${p['input']:g} / ${p['output']:g} / ${p['cache_read']:g} / ${p['cache_write']:g} "
            f"(as of {p['as_of']})")


def cost_table(rep: RoundReport) -> tuple[str, list[str], list[list[str]], str] | None:
    """The Cost table, when any contestant is priced: (title, headers, rows, note)."""
    rows = []
    for cd in rep.contestants:
        if not has_model(cd):
            continue
        f = figures(cd)
        if not f.priced:
            rows.append([cd.name, NOT_PRICED, NOT_PRICED, NOT_PRICED, NOT_PRICED, NOT_PRICED])
            continue
        rows.append([cd.name, _price_cell(f), _runs_cell(f),
                     DASH if f.total_usd is None else usd(f.total_usd),
                     DASH if f.usd_per_complete is None else usd(f.usd_per_complete),
                     DASH if f.tokens_per_usd is None else f"{f.tokens_per_usd:,.0f}"])
    if not any(figures(cd).priced for cd in rep.contestants):
        return None
    note = ("USD at each cloud contestant's declared price (input / output / cache read / cache write, "
            "per million tokens): each model call priced from its own wire's usage fields, summed per "
            "run. Per resolved task: the runs' cost over their Complete runs. `not priced`: no price, "
            "so no cost measured — the local models' compute and energy are not measured yet.")
    gap = cost_gap_line(rep)
    return ("Cost", ["Model", "Price", "Cost / run", "Total cost", "Cost / resolved task", "Tokens / $"],
            rows, note + (f" {gap}" if gap else ""))


def cost_gap(rep: RoundReport) -> tuple[ContestantData, float, ContestantData, float] | None:
    """(dearest, its USD per resolved task, cheapest, its) among the priced contestants that
    resolved a task; None with fewer than two."""
    per = [(cd, f.usd_per_complete) for cd in rep.contestants
           if (f := figures(cd)).priced and f.usd_per_complete]
    if len(per) < 2:
        return None
    per.sort(key=lambda x: x[1] or 0.0)
    (lo_cd, lo), (hi_cd, hi) = per[0], per[-1]
    return hi_cd, float(hi or 0.0), lo_cd, float(lo or 0.0)


def cost_gap_line(rep: RoundReport) -> str | None:
    """The measured cost gap, with the published token gap beside it where the lab carries one.
    Local models are not priced, so the published local-over-cloud token gap has no measured cost
    counterpart yet; the line says so rather than compare a token ratio with a price."""
    published = rep.lab.lab.token_gap
    pub = f"Published token gap: {published.low:g}–{published.high:g}×" if published else None
    gap = cost_gap(rep)
    if gap is not None:
        hi_cd, hi, lo_cd, lo = gap
        line = (f"Cost gap (measured): {hi_cd.name} {usd(hi)} per resolved task, {lo_cd.name} {usd(lo)}: "
                f"{hi / lo:.1f}×.")
        return f"{line} {pub}." if pub else line
    if pub and any(figures(cd).priced for cd in rep.contestants):
        return f"{pub}; no measured cost gap: the local models are not priced."
    return None


def cost_json(rep: RoundReport) -> dict[str, Any]:
    """Every cost figure for `--json`: per contestant (priced or not), and the gap."""
    gap = cost_gap(rep)
    return {
        "contestants": {cd.contestant.id: asdict(figures(cd)) for cd in rep.contestants if has_model(cd)},
        "gap": None if gap is None else {
            "dearest": gap[0].contestant.id, "dearest_usd_per_complete": gap[1],
            "cheapest": gap[2].contestant.id, "cheapest_usd_per_complete": gap[3], "ratio": gap[1] / gap[3]},
        "published_token_gap": (rep.lab.lab.token_gap.model_dump(mode="json")
                                if rep.lab.lab.token_gap else None),
        "line": cost_gap_line(rep),
    }


__all__ = ["NOT_PRICED", "CostFigures", "cost_gap", "cost_gap_line", "cost_json", "cost_table", "figures",
           "usd"]
