"""`labctl compare`: two contestants of an unsealed dataset round, pair by pair, on the same tasks and
repeats — or one contestant in two rounds of the same lab (a re-run, another hardware profile).

A run is resolved when its outcome is Complete (`labctl.report.dataset.RESOLVED`, the grading rule's
top class). Tasks whose controls failed are left out, as in the report; so are the controls (oracle
and nop), which exist to check the tasks, not to be ranked. For each pair the comparison holds the
paired difference in resolution rate with a paired bootstrap interval over tasks, McNemar's exact
test on the run pairs matched by task and repeat, the sign test over tasks, tokens and wall time per
resolved run with intervals, and a verdict that says plainly when the data cannot separate the two,
with Connor's estimate of the repeats that would (`labctl.report.paired` holds the math).

Every interval is seeded from the round ids and contestant ids, so the same rounds give the same
document, byte for byte.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from labctl.report.bootstrap import DRAWS, bootstrap_interval, mean, seed_of
from labctl.report.data import ReportError
from labctl.report.dataset import Cell, DatasetReport, is_dataset_round, load_dataset_report
from labctl.report.paired import (
    ALPHA,
    POWER,
    mcnemar_exact,
    mcnemar_pairs_needed,
    min_discordant,
    ratio,
    ratio_difference_interval,
    ratio_interval,
    repeats_needed,
    sign_counts,
    sign_test,
)
from labctl.round.layout import UNSEALED_FILE

FORMAT = "labctl.compare/1"
"""The `--json` document's format tag; bumped when a field changes meaning or goes away."""
CONTROLS = ("oracle", "nop")

Interval = tuple[float, float]


class CompareError(ReportError):
    """The rounds cannot be compared (sealed, one contestant, no common tasks)."""


class Side(BaseModel):
    """One contestant in one round, on the tasks compared."""

    contestant: str
    name: str
    round: str
    label: str
    tasks: int
    runs: int
    resolved_runs: int
    resolution_rate: float | None
    ci95: Interval | None
    tokens_per_resolved: float | None
    tokens_ci95: Interval | None
    wall_s_per_resolved: float | None
    wall_s_ci95: Interval | None


class McNemar(BaseModel):
    """Run pairs matched by task and repeat index: which side resolved."""

    pairs: int
    both: int
    first_only: int
    second_only: int
    neither: int
    p_value: float


class SignTest(BaseModel):
    """Per task, the sign of the resolution-rate difference (first − second)."""

    tasks: int
    first_better: int
    second_better: int
    ties: int
    p_value: float


class Power(BaseModel):
    """Connor (1987)'s approximation for McNemar's test at `alpha`, two-sided, with `power`."""

    method: str = "Connor 1987"
    alpha: float = ALPHA
    power: float = POWER
    pairs_needed: int | None
    repeats_needed: int | None
    """Repeats per task (each repeat gives one pair per task) for `pairs_needed` pairs."""
    more_repeats: int | None


class PairComparison(BaseModel):
    first: Side
    second: Side
    difference: float | None
    """first's resolution rate − second's (the mean over tasks of the per-task difference)."""
    ci95: Interval | None
    """Paired bootstrap interval of `difference`, resampling tasks."""
    mcnemar: McNemar
    sign_test: SignTest
    tokens_difference: float | None
    tokens_difference_ci95: Interval | None
    wall_s_difference: float | None
    wall_s_difference_ci95: Interval | None
    separated: bool
    """p < alpha and the interval excludes 0."""
    verdict: str
    power: Power


class Comparison(BaseModel):
    format: str = FORMAT
    kind: Literal["contestants", "rounds"]
    lab: str
    rounds: list[str]
    tasks: list[str]
    """The tasks compared (counted in every round)."""
    excluded: list[str]
    """Tasks left out: their controls failed (in either round), or a round lacks them."""
    repeats: list[int]
    not_compared: list[str]
    """Contestants left out: the controls, or (two rounds) those in only one of them."""
    alpha: float = ALPHA
    draws: int = DRAWS
    pairs: list[PairComparison]


# --- loading -----------------------------------------------------------------------------------------


def load_round(round_dir: Path) -> DatasetReport:
    """An unsealed dataset round; CompareError says what to do otherwise."""
    if not (round_dir / "sealed.json").is_file():
        raise CompareError(f"{round_dir} is not a round directory (no sealed.json)")
    if not (round_dir / UNSEALED_FILE).is_file():
        raise CompareError(f"{round_dir} is still sealed: a comparison names contestants, so it needs the "
                           f"reveal; run `labctl unseal {round_dir}` once every run finished")
    if not is_dataset_round(round_dir):
        raise CompareError(f"{round_dir} is a one-task round: compare needs a dataset round "
                           "(`task: dataset:` in lab.yaml), where runs pair up by task and repeat")
    return load_dataset_report(round_dir)


def compared_ids(rep: DatasetReport) -> list[str]:
    return [s.id for s in rep.contestants if s.kind not in CONTROLS]


def _runs(rep: DatasetReport, cid: str, tasks: list[str]) -> dict[str, list[Cell]]:
    rows = {r.task: r for r in rep.grid}
    return {t: rows[t].cells.get(cid, []) for t in tasks}


# --- one pair ------------------------------------------------------------------------------------------


def _rate(cells: list[Cell]) -> float:
    return sum(c.resolved for c in cells) / len(cells)


def _sums(runs: dict[str, list[Cell]], tasks: list[str], what: Literal["tokens", "wall"]
          ) -> tuple[list[float], list[float]]:
    """Per task: (tokens or wall seconds over the runs that have them, runs resolved)."""
    nums, dens = [], []
    for t in tasks:
        vals = [c.total_tokens if what == "tokens" else c.wall_s for c in runs[t]]
        nums.append(float(sum(v for v in vals if v is not None)))
        dens.append(float(sum(c.resolved for c in runs[t])))
    return nums, dens


def _side(rep: DatasetReport, cid: str, runs: dict[str, list[Cell]], tasks: list[str], label: str
          ) -> Side:
    name = next(s.name for s in rep.contestants if s.id == cid)
    scores = [_rate(runs[t]) for t in tasks]
    all_runs = [c for t in tasks for c in runs[t]]
    tok, wall = _sums(runs, tasks, "tokens"), _sums(runs, tasks, "wall")
    has_tok = any(c.total_tokens is not None for c in all_runs)
    has_wall = any(c.wall_s is not None for c in all_runs)
    return Side(
        contestant=cid, name=name, round=rep.round, label=label, tasks=len(tasks), runs=len(all_runs),
        resolved_runs=sum(c.resolved for c in all_runs), resolution_rate=mean(scores),
        ci95=bootstrap_interval(scores, seed_of(f"{rep.round}:{cid}")),
        tokens_per_resolved=ratio(*tok) if has_tok else None,
        tokens_ci95=ratio_interval(*tok, seed_of(f"{rep.round}:{cid}:tokens")) if has_tok else None,
        wall_s_per_resolved=ratio(*wall) if has_wall else None,
        wall_s_ci95=ratio_interval(*wall, seed_of(f"{rep.round}:{cid}:wall")) if has_wall else None)


def compare_pair(first: tuple[DatasetReport, str, str], second: tuple[DatasetReport, str, str],
                 tasks: list[str], seed: int) -> PairComparison:
    """`first` and `second` are (round, contestant id, label); `tasks` are counted in both and every
    one has runs on both sides."""
    (ra, ca, la), (rb, cb, lb) = first, second
    a, b = _runs(ra, ca, tasks), _runs(rb, cb, tasks)
    sa, sb = _side(ra, ca, a, tasks, la), _side(rb, cb, b, tasks, lb)
    both = first_only = second_only = neither = 0
    for t in tasks:
        by_repeat = {c.repeat: c for c in b[t]}
        for x in a[t]:
            y = by_repeat.get(x.repeat)
            if y is None:
                continue
            both += x.resolved and y.resolved
            first_only += x.resolved and not y.resolved
            second_only += y.resolved and not x.resolved
            neither += not x.resolved and not y.resolved
    pairs = both + first_only + second_only + neither
    diffs = [_rate(a[t]) - _rate(b[t]) for t in tasks]
    diff, ci = mean(diffs), bootstrap_interval(diffs, seed)
    mc = McNemar(pairs=pairs, both=both, first_only=first_only, second_only=second_only, neither=neither,
                 p_value=mcnemar_exact(first_only, second_only))
    pos, neg, ties = sign_counts(diffs)
    st = SignTest(tasks=len(tasks), first_better=pos, second_better=neg, ties=ties, p_value=sign_test(diffs))
    reps = max((len(a[t]) for t in tasks), default=0)
    need = mcnemar_pairs_needed(first_only, second_only, pairs)
    rn = repeats_needed(need, len(tasks))
    more = None if rn is None else max(0, rn - reps)
    power = Power(pairs_needed=need, repeats_needed=rn, more_repeats=more)
    tok = _difference(sa.tokens_per_resolved, sb.tokens_per_resolved, _sums(a, tasks, "tokens"),
                      _sums(b, tasks, "tokens"), seed + 1)
    wall = _difference(sa.wall_s_per_resolved, sb.wall_s_per_resolved, _sums(a, tasks, "wall"),
                       _sums(b, tasks, "wall"), seed + 2)
    separated = mc.p_value < ALPHA and (ci[0] > 0 or ci[1] < 0)
    return PairComparison(first=sa, second=sb, difference=diff, ci95=ci, mcnemar=mc, sign_test=st,
                          tokens_difference=tok[0], tokens_difference_ci95=tok[1], wall_s_difference=wall[0],
                          wall_s_difference_ci95=wall[1], separated=separated,
                          verdict=verdict(la, lb, diff, ci, mc, power, separated), power=power)


def _difference(va: float | None, vb: float | None, a: tuple[list[float], list[float]],
                b: tuple[list[float], list[float]], seed: int) -> tuple[float | None, Interval | None]:
    if va is None or vb is None:
        return None, None
    return va - vb, ratio_difference_interval(a, b, seed)


def pts(x: float, signed: bool = True) -> str:
    """A rate difference in percentage points: `+25 pts`."""
    return f"{100 * x:+.0f} pts" if signed else f"{100 * x:.0f} pts"


def pval(p: float) -> str:
    return f"{p:.4g}"


def verdict(la: str, lb: str, diff: float, ci: Interval, mc: McNemar, power: Power, separated: bool) -> str:
    """One or two plain sentences: which side the data favours, or why it cannot tell them apart."""
    if separated:
        hi, lo = (la, lb) if diff > 0 else (lb, la)
        return (f"{hi} resolves more than {lo}: {pts(diff)} (95% CI {pts(ci[0])} to {pts(ci[1])}), "
                f"McNemar p = {pval(mc.p_value)} < {ALPHA}.")
    why = []
    if mc.p_value >= ALPHA:
        why.append(f"McNemar p = {pval(mc.p_value)} ≥ {ALPHA}")
    if ci[0] <= 0 <= ci[1]:
        why.append(f"the 95% interval {pts(ci[0])} to {pts(ci[1])} contains 0")
    discordant = mc.first_only + mc.second_only
    least = min_discordant()
    if discordant < least:
        why.append(f"only {discordant} discordant pair(s) (no split of fewer than {least} can reach "
                   f"p < {ALPHA})")
    text = f"The data cannot separate {la} and {lb}: " + "; ".join(why) + "."
    if power.repeats_needed is None:
        return text + (" No run pair went differently, so no number of repeats is implied." if not discordant
                       else " The discordant pairs split evenly, so no number of repeats is implied.")
    more = (f"{power.more_repeats} more" if power.more_repeats else
            "no more by the approximation, yet this draw fell short")
    return text + (f" If the observed difference is real, about {power.repeats_needed} repeats per task "
                   f"({more}; {power.pairs_needed} run pairs) would detect it with {POWER:.0%} power at "
                   f"α = {ALPHA} (Connor 1987).")


# --- whole rounds ----------------------------------------------------------------------------------------


def _counted(rep: DatasetReport) -> list[str]:
    return [t for t in rep.tasks if t not in rep.excluded]


def compare_contestants(rep: DatasetReport) -> Comparison:
    """Every pair of the round's contestants (controls left out), in lab order."""
    ids = compared_ids(rep)
    controls = [s.id for s in rep.contestants if s.kind in CONTROLS]
    if len(ids) < 2:
        only = f"one contestant ({ids[0]})" if ids else "no contestant"
        raise CompareError(f"round {rep.round} has {only} besides the controls (oracle, nop are not "
                           "compared): there is nothing to compare it with; give a second round of the "
                           "same lab to compare it across rounds")
    tasks = [t for t in _counted(rep) if all(_runs(rep, c, [t])[t] for c in ids)]
    if not tasks:
        raise CompareError(f"round {rep.round} has no task every contestant ran (controls failed on all?)")
    names = {s.id: s.name for s in rep.contestants}
    pairs = [compare_pair((rep, a, names[a]), (rep, b, names[b]), tasks, seed_of(f"{rep.round}:{a}:{b}:pair"))
             for a, b in combinations(ids, 2)]
    return Comparison(kind="contestants", lab=rep.lab, rounds=[rep.round], tasks=tasks,
                      excluded=[t for t in rep.tasks if t not in tasks], repeats=[rep.repeats],
                      not_compared=controls, pairs=pairs)


def compare_rounds(r1: DatasetReport, r2: DatasetReport) -> Comparison:
    """Each contestant both rounds share, round 1 against round 2, on the tasks both counted."""
    if r1.round == r2.round:
        raise CompareError(f"both arguments are round {r1.round}: give two different rounds")
    if r1.lab != r2.lab:
        raise CompareError(f"rounds {r1.round} and {r2.round} are of different labs ({r1.lab}, {r2.lab}): "
                           "compare one contestant across rounds of the same lab")
    i1, i2 = compared_ids(r1), compared_ids(r2)
    ids = [c for c in i1 if c in i2]
    if not ids:
        raise CompareError(f"rounds {r1.round} and {r2.round} share no contestant id (controls aside)")
    t2 = set(_counted(r2))
    tasks = [t for t in _counted(r1) if t in t2 and all(_runs(r, c, [t])[t] for r in (r1, r2) for c in ids)]
    if not tasks:
        raise CompareError(f"rounds {r1.round} and {r2.round} share no task counted in both")
    names = {s.id: s.name for s in r1.contestants}
    pairs = [compare_pair((r1, c, f"{names[c]} (1)"), (r2, c, f"{names[c]} (2)"), tasks,
                          seed_of(f"{r1.round}:{r2.round}:{c}:rounds")) for c in ids]
    left = sorted({*r1.tasks, *r2.tasks} - set(tasks))
    others = [c for c in dict.fromkeys([*i1, *i2]) if c not in ids]
    controls = [s.id for s in r1.contestants if s.kind in CONTROLS]
    return Comparison(kind="rounds", lab=r1.lab, rounds=[r1.round, r2.round], tasks=tasks, excluded=left,
                      repeats=[r1.repeats, r2.repeats], not_compared=[*controls, *others], pairs=pairs)


def compare(round_dir: Path, second: Path | None = None) -> Comparison:
    """`labctl compare ROUND [ROUND2]`."""
    rep = load_round(round_dir)
    return compare_contestants(rep) if second is None else compare_rounds(rep, load_round(second))


def report_comparison(rep: DatasetReport) -> Comparison | None:
    """The comparison a dataset round's report carries: None when it has fewer than two contestants."""
    try:
        return compare_contestants(rep)
    except CompareError:
        return None


__all__ = ["FORMAT", "CompareError", "Comparison", "McNemar", "PairComparison", "Power", "Side", "SignTest",
           "compare", "compare_contestants", "compare_pair", "compare_rounds", "load_round", "pts", "pval",
           "report_comparison", "verdict"]
