"""Spread of a dataset round's scores: a percentile bootstrap over tasks, and pass@k.

Tasks are the unit that varies (a model is good at some, bad at others), so the interval resamples
tasks with replacement, each carrying its own per-task score (the fraction of its repeats resolved).
The generator is seeded from the round id: the same round gives the same report, byte for byte.
"""

from __future__ import annotations

import hashlib
import random
from math import comb

DRAWS = 2000
"""Bootstrap resamples: enough for stable 2.5 / 97.5 percentiles at report precision."""


def seed_of(text: str) -> int:
    """A stable 64-bit seed from a string (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def bootstrap_interval(scores: list[float], seed: int, draws: int = DRAWS,
                       level: float = 0.95) -> tuple[float, float]:
    """The `level` percentile interval of the mean of `scores` (one per task) over `draws` resamples
    of the tasks with replacement. One task (or none) has no spread to speak of: (its score, its score)."""
    if not scores:
        raise ValueError("no scores to bootstrap")
    if len(scores) == 1:
        return scores[0], scores[0]
    rng = random.Random(seed)
    n = len(scores)
    means = sorted(mean([scores[rng.randrange(n)] for _ in range(n)]) for _ in range(draws))
    tail = (1 - level) / 2
    lo = means[int(tail * (draws - 1))]
    hi = means[int(round((1 - tail) * (draws - 1)))]
    return lo, hi


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimator of pass@k from n samples with c correct (Chen et al. 2021, HumanEval):
    1 - C(n-c, k) / C(n, k), the chance that at least one of k samples drawn from the n is correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 ≤ c ≤ n and 1 ≤ k ≤ n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


__all__ = ["DRAWS", "bootstrap_interval", "mean", "pass_at_k", "seed_of"]
