"""The statistics of comparing two contestants (or one contestant in two rounds) on the same tasks
and repeats: pure functions, no I/O.

- **McNemar's exact test** on run pairs matched by task and repeat index: only the discordant pairs
  (one side resolved, the other not) carry information; under the null hypothesis each discordant pair
  goes either way with probability ½, so the two-sided p-value is the exact binomial
  2·Σ_{k ≤ min(b, c)} C(b + c, k) / 2^(b+c), capped at 1. Assumes the pairs are independent.
- **The sign test** over tasks: the sign of each task's resolution-rate difference, ties dropped,
  tested by the same exact binomial. Assumes tasks are independent; it needs no repeats.
- **The paired bootstrap**: tasks resampled with replacement, each carrying both sides' runs, so the
  pairing survives the resampling; percentile intervals, seeded (`labctl.report.bootstrap`).
- **The power approximation** for McNemar's test (Connor 1987, "Sample size for testing differences
  in proportions for the paired-sample design", Biometrics 43:207–211):
  n = [z_{α/2}·√ψ + z_β·√(ψ − δ²)]² / δ² pairs, with ψ the discordant proportion and δ the difference
  of the discordant proportions (p₁₀ − p₀₁), normal quantiles from `statistics.NormalDist`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from fractions import Fraction
from math import comb
from statistics import NormalDist

from labctl.report.bootstrap import DRAWS

ALPHA = 0.05
"""The significance level every verdict uses."""
POWER = 0.8
"""The power the repeats estimate aims for."""


def binomial_two_sided(b: int, c: int) -> float:
    """The exact two-sided p-value of b successes against c under Binomial(b + c, ½): twice the smaller
    tail, capped at 1. No trial at all (b = c = 0) is p = 1: nothing speaks against the null."""
    if b < 0 or c < 0:
        raise ValueError(f"counts must be ≥ 0, got {b} and {c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = Fraction(sum(comb(n, k) for k in range(min(b, c) + 1)), 2 ** n)
    return float(min(Fraction(1), 2 * tail))


def mcnemar_exact(b: int, c: int) -> float:
    """McNemar's exact test: b pairs where only the first side resolved, c where only the second."""
    return binomial_two_sided(b, c)


def smallest_p(discordant: int) -> float:
    """The smallest two-sided p-value `discordant` pairs can give (all of them one way): 2 / 2^n."""
    return binomial_two_sided(discordant, 0)


def min_discordant(alpha: float = ALPHA) -> int:
    """The fewest discordant pairs that can reach p < alpha at all (6 for α = 0.05: 2/2⁶ = 0.031)."""
    n = 1
    while smallest_p(n) >= alpha:
        n += 1
    return n


def sign_counts(diffs: Sequence[float]) -> tuple[int, int, int]:
    """(positive, negative, zero) differences."""
    return (sum(d > 0 for d in diffs), sum(d < 0 for d in diffs), sum(d == 0 for d in diffs))


def sign_test(diffs: Sequence[float]) -> float:
    """The two-sided sign test of per-task differences (ties dropped), exact binomial."""
    pos, neg, _ = sign_counts(diffs)
    return binomial_two_sided(pos, neg)


def mcnemar_pairs_needed(b: int, c: int, pairs: int, alpha: float = ALPHA, power: float = POWER
                         ) -> int | None:
    """Connor's (1987) approximate number of matched pairs for McNemar's test to detect the observed
    difference at `alpha` (two-sided) with `power`, from b and c of `pairs` pairs: ψ = (b + c) / pairs,
    δ = (b − c) / pairs. None when no difference was observed (δ = 0): no number of pairs is implied."""
    if pairs <= 0 or b == c:
        return None
    psi, delta = (b + c) / pairs, (b - c) / pairs
    return math.ceil(connor_n(psi, delta, alpha, power))


def connor_n(psi: float, delta: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """n = [z_{α/2}·√ψ + z_β·√(ψ − δ²)]² / δ² (Connor 1987), unrounded."""
    if delta == 0 or not 0 < psi <= 1 or delta * delta > psi:
        raise ValueError(f"Connor's formula needs 0 < δ² ≤ ψ ≤ 1, got ψ={psi} δ={delta}")
    z = NormalDist()
    za, zb = z.inv_cdf(1 - alpha / 2), z.inv_cdf(power)
    return (za * math.sqrt(psi) + zb * math.sqrt(psi - delta * delta)) ** 2 / (delta * delta)


def repeats_needed(pairs_needed: int | None, tasks: int) -> int | None:
    """Repeats per task that give `pairs_needed` pairs when every repeat pairs once per task."""
    if pairs_needed is None or tasks <= 0:
        return None
    return max(1, math.ceil(pairs_needed / tasks))


def bootstrap_stat(n: int, stat: Callable[[list[int]], float | None], seed: int, draws: int = DRAWS,
                   level: float = 0.95) -> tuple[float, float] | None:
    """The `level` percentile interval of `stat` over `draws` resamples (with replacement) of the indices
    0..n-1, the way `bootstrap_interval` resamples tasks. A draw where `stat` is undefined (None: a ratio
    with nothing resolved in it) is left out; None when no draw is defined."""
    if n <= 0:
        return None
    if n == 1:
        one = stat([0])
        return None if one is None else (one, one)
    rng = random.Random(seed)
    vals = sorted(v for v in (stat([rng.randrange(n) for _ in range(n)]) for _ in range(draws))
                  if v is not None)
    if not vals:
        return None
    tail, m = (1 - level) / 2, len(vals)
    return vals[int(tail * (m - 1))], vals[int(round((1 - tail) * (m - 1)))]


def ratio(nums: Sequence[float], dens: Sequence[float], idx: Sequence[int] | None = None) -> float | None:
    """Σ nums / Σ dens over the chosen indices (all when None); None when the denominator is 0."""
    pick = range(len(nums)) if idx is None else idx
    den = sum(dens[i] for i in pick)
    return None if den == 0 else sum(nums[i] for i in pick) / den


def ratio_interval(nums: Sequence[float], dens: Sequence[float], seed: int) -> tuple[float, float] | None:
    """Bootstrap interval of Σ nums / Σ dens, resampling the items (tasks) with replacement."""
    return bootstrap_stat(len(nums), lambda idx: ratio(nums, dens, idx), seed)


def ratio_difference_interval(a: tuple[Sequence[float], Sequence[float]],
                              b: tuple[Sequence[float], Sequence[float]], seed: int
                              ) -> tuple[float, float] | None:
    """Paired bootstrap interval of ratio(a) − ratio(b): the same resampled tasks on both sides."""
    if len(a[0]) != len(b[0]):
        raise ValueError("a paired interval needs the same tasks on both sides")

    def diff(idx: list[int]) -> float | None:
        ra, rb = ratio(*a, idx), ratio(*b, idx)
        return None if ra is None or rb is None else ra - rb

    return bootstrap_stat(len(a[0]), diff, seed)


__all__ = ["ALPHA", "POWER", "binomial_two_sided", "bootstrap_stat", "connor_n", "mcnemar_exact",
           "mcnemar_pairs_needed", "min_discordant", "ratio", "ratio_difference_interval", "ratio_interval",
           "repeats_needed", "sign_counts", "sign_test", "smallest_p"]
