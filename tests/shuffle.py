"""The fast tests (no `docker` mark) in a random order, to prove they do not depend on each other's
leftovers: `LABCTL_TEST_ORDER=random` picks a seed and prints it, `LABCTL_TEST_ORDER=<int>` replays
one; unset, the order is the files'. CI (.ci/run) runs the suite with `random`.

Why not pytest-randomly: it shuffles every test, and the Docker tests share per-module engines,
clusters and built images on purpose (built once per run of the suite). Here only modules made of
fast tests move: they trade places among themselves (the Docker modules keep theirs), and their tests
are shuffled within each module, so a module-scoped fixture is still set up once.
"""

from __future__ import annotations

import os
import random

import pytest

ORDER_ENV = "LABCTL_TEST_ORDER"


def seed_from_env() -> int | None:
    value = os.environ.get(ORDER_ENV, "").strip().lower()
    if value in ("", "file"):
        return None
    if value == "random":
        return random.SystemRandom().randrange(10**6)
    try:
        return int(value)
    except ValueError:
        raise pytest.UsageError(f"{ORDER_ENV}={value!r}: give random, file or an integer seed") from None


def shuffled(items: list[pytest.Item], seed: int) -> list[pytest.Item]:
    """Fast modules permuted among the fast modules' places, each one's tests shuffled; the rest stays."""
    rng = random.Random(seed)
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
    fast = [m for m, its in modules.items() if not any(i.get_closest_marker("docker") for i in its)]
    moved = fast[:]
    rng.shuffle(moved)
    place = dict(zip(fast, moved, strict=True))
    out: list[pytest.Item] = []
    for m in modules:  # dicts keep the collection order of the modules
        its = list(modules[place.get(m, m)])
        if m in place:
            rng.shuffle(its)
        out += its
    return out


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    seed = seed_from_env()
    if seed is None:
        return
    items[:] = shuffled(items, seed)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:  # shown under -q too: a failure found this way is replayed by its seed
        reporter.write_line(f"test order: fast modules shuffled, {ORDER_ENV}={seed} replays it", bold=True)
