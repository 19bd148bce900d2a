"""A run's transcript.jsonl read back, and the figures computed from it that both the grader
(`labctl.run.grade`, writing metrics.json) and the report (`labctl.report.data`, filling what an
older metrics.json lacks) show: one reader and one computation, so the two cannot disagree.

Why in the meter: the meter writes the transcript (`labctl.meter.state`, requests kept as blobs by
`labctl.meter.blobs`), and it sits below both run and report.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from labctl.meter import blobs

Record = dict[str, Any]


def transcript_records(path: Path) -> list[Record]:
    """The transcript's records, a request kept as a blob read back in its place; a line that is no
    JSON object is skipped (a record cut by a kill), a missing file has none."""
    out: list[Record] = []
    with contextlib.suppress(OSError):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if isinstance(rec, dict):
                    out.append(blobs.resolve(rec, path))
    return out


def exchange_records(records: Iterable[Record]) -> list[Record]:
    """The model calls among the records: `kind` "exchange" (written before `kind` existed: absent),
    not the meter's intervention records."""
    return [r for r in records if r.get("kind", "exchange") == "exchange"]


class Speeds(NamedTuple):
    """Tokens per second, token-weighted over llama.cpp's `timings`: all tokens over all time (a mean
    of per-request rates would overweight short requests). None without timings (a cloud model)."""

    prompt_tokens_per_s: float | None
    gen_tokens_per_s: float | None


def speeds(records: Iterable[Record]) -> Speeds:
    """The run's prompt and generation speeds over its exchanges' `timings` (unrounded)."""
    total = {"prompt_n": 0.0, "prompt_ms": 0.0, "predicted_n": 0.0, "predicted_ms": 0.0}
    for r in exchange_records(records):
        t = r.get("timings")
        if isinstance(t, dict):
            for k in total:
                total[k] += float(t.get(k) or 0)

    def rate(n: str, ms: str) -> float | None:
        return total[n] / total[ms] * 1000 if total[ms] else None

    return Speeds(rate("prompt_n", "prompt_ms"), rate("predicted_n", "predicted_ms"))


__all__ = ["Record", "Speeds", "exchange_records", "speeds", "transcript_records"]
