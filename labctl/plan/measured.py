"""The record `labctl plan --measure` writes beside the lock, and how llama.cpp's breakdown is read.

Kept apart from `labctl.plan.measure` (which runs llama.cpp) so `labctl plan` can show measured next to
planned without importing the runner. Sizes from llama.cpp's own table are whole MiB, as it prints.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel

_ROW = re.compile(r"memory_breakdown_print: \|\s+- (?P<name>.+?)\s+\|(?P<vals>[^|]*)\|")


class Speed(BaseModel):
    prompt_tokens: int
    prompt_per_second: float
    generated_tokens: int
    generated_per_second: float


class Fitter(BaseModel):
    """What `llama-fit-params` chose (`-c N -ngl M …` on its stdout) for the same flags with `-c 0`."""

    ok: bool
    context: int | None = None
    gpu_layers: int | None = None
    args: str = ""
    error: str | None = None


class Measured(BaseModel):
    """One contestant: planned next to what llama.cpp did with the planned flags on the twin."""

    id: str
    twin_source: str
    twin_bytes: int
    args: list[str]
    loaded: bool
    error_kind: str | None = None
    error: str | None = None
    fitter: Fitter | None = None
    breakdown: dict[str, dict[str, int]] = {}
    """llama.cpp's memory breakdown in MiB per device / host / buffer type: model, context, compute,
    self (= their sum) and, for a GPU, total, free and unaccounted."""
    kv_mib: float | None = None
    recurrent_mib: float | None = None
    compute_mib: float | None = None
    n_ctx: int | None = None
    speed: Speed | None = None
    planned: dict[str, int | None] = {}
    """The planner's bytes: kv, compute, output, weights, vram_used / ram_used, context."""

    def totals(self, gpu: bool) -> tuple[float | None, float | None, float | None]:
        """(context, compute, self) MiB from llama.cpp's breakdown: the GPU rows (those with a `total`)
        on a GPU profile, every row on CPU; None when llama.cpp printed no breakdown."""
        rows = [r for r in self.breakdown.values() if ("total" in r) == gpu] if gpu else \
            list(self.breakdown.values())
        if not rows:
            return None, None, None
        return (float(sum(r["context"] for r in rows)), float(sum(r["compute"] for r in rows)),
                float(sum(r["self"] for r in rows)))


class Measurement(BaseModel):
    lab: str
    profile: str
    date: str
    host: dict[str, Any]
    """GPU name, driver, CUDA version, total and free VRAM (MiB) before the ballast; or the CPU."""
    llama_cpp: dict[str, str]
    """llama-server's `--version`: build number and commit."""
    free_target_mib: int | None = None
    """Free VRAM the ballast held the GPU to (the planner's budget); None on CPU or when not needed."""
    contestants: list[Measured]


def measured_path(lab_path: Path, profile: str) -> Path:
    """`lab.yaml` → `lab.measured.rtx5090-32g.json`, beside `lab.lock`."""
    return lab_path.with_name(f"{lab_path.stem}.measured.{profile}.json")


def read_measured(lab_path: Path, profile: str) -> Measurement | None:
    p = measured_path(lab_path, profile)
    if not p.is_file():
        return None
    try:
        return Measurement.model_validate_json(p.read_text())
    except ValueError:
        return None


def parse_breakdown(log: str) -> dict[str, dict[str, int]]:
    """The table llama.cpp prints at exit (common_memory_breakdown_print), in MiB per row."""
    rows: dict[str, dict[str, int]] = {}
    for m in _ROW.finditer(log):
        nums = [int(x) for x in re.findall(r"-?\d+", m["vals"])]
        keys: tuple[str, ...]
        if len(nums) == 7:
            keys = ("total", "free", "self", "model", "context", "compute", "unaccounted")
        elif len(nums) == 4:
            keys = ("self", "model", "context", "compute")
        else:
            continue
        rows[m["name"]] = dict(zip(keys, nums, strict=True))
    return rows


