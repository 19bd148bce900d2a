"""GPU allocation for runs side by side on one host: how many GPUs a contestant's plan needs, and a
pool that hands out whole devices so two models never share a GPU.

The planner's per-GPU budget decides: a local contestant whose planned VRAM (`vram_used`) is more
than one GPU's budget spans several (llama.cpp splits layers over the devices it sees). Oracle, nop
and cloud contestants, and every contestant on a CPU profile, take none.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING

from labctl.lock.lockfile import Lock
from labctl.spec.load import LoadedLab
from labctl.spec.profiles import Profile

if TYPE_CHECKING:
    from labctl.plan.planner import Plan


def per_gpu_budget(profile: Profile) -> int:
    """Bytes of one GPU the planner may use: its memory less its share of the profile's reserve."""
    return profile.vram_per_gpu - profile.vram_reserve // max(1, profile.gpu_count)


def gpus_needed(loaded: LoadedLab, lock: Lock, plan: Plan | None = None) -> dict[str, int]:
    """Contestant id → whole GPUs its run takes on this profile (0: none). `plan`: the round's, when
    it was computed already (`RoundContext.plan`)."""
    from labctl.plan.planner import plan_lab  # the planner's imports are heavy; only when a GPU profile asks

    need = {c.id: 0 for c in loaded.lab.contestants}
    profile = loaded.profile
    if not profile.is_gpu:
        return need
    budget = max(1, per_gpu_budget(profile))
    for row in (plan or plan_lab(loaded, lock)).contestants:
        if row.kind == "local" and row.status == "planned":
            # A planned model fits the profile, so this never exceeds gpu_count; the cap is a guard.
            need[row.id] = min(profile.gpu_count, max(1, math.ceil((row.vram_used or 0) / budget)))
    return need


def default_parallel(profile: Profile) -> int:
    """What a profile allows when `--parallel` is not given: one run per GPU; one at a time on a CPU
    profile, where a model server takes every core and two would only slow each other down."""
    return max(1, profile.gpu_count if profile.is_gpu else 1)


def device_flags(devices: list[int]) -> list[str]:
    """`docker run` flags giving a container exactly these GPUs ([]: none). The value is quoted
    because the CLI splits `--gpus` at commas: `--gpus '"device=0,1"'`."""
    return ["--gpus", '"device=' + ",".join(map(str, devices)) + '"'] if devices else []


class GpuPool:
    """The host's GPUs by index; `take` hands out whole free devices or nothing (thread-safe)."""

    def __init__(self, count: int) -> None:
        self._free = list(range(count))
        self._lock = threading.Lock()

    def take(self, n: int) -> list[int] | None:
        """`n` free devices (lowest first), or None when fewer are free now."""
        with self._lock:
            if n > len(self._free):
                return None
            got, self._free = self._free[:n], self._free[n:]
            return got

    def give(self, devices: list[int]) -> None:
        with self._lock:
            self._free = sorted({*self._free, *devices})

    @property
    def free(self) -> int:
        return len(self._free)
