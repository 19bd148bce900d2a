"""labctl's labels and object names on the engine, and the flags that carry and find labels.

Blindness: every name and label made here comes from the round id and the run id only
(`labctl.round.seal.run_label`); a contestant id or model name must never be passed in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

ROUND_LABEL = "labctl.round"
RUN_LABEL = "labctl.run"
ROLE_LABEL = "labctl.role"


def run_labels(round_id: str, run_id: str, role: str | None = None) -> dict[str, str]:
    labels = {ROUND_LABEL: round_id, RUN_LABEL: run_id}
    if role:
        labels[ROLE_LABEL] = role
    return labels


def object_name(round_id: str, run_id: str, role: str) -> str:
    """`lc-<round>-<run>-<role>`: unique per run, meaningful to an operator, naming nobody."""
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", f"lc-{round_id}-{run_id}-{role}")


def label_flags(labels: Mapping[str, str]) -> list[str]:
    flags: list[str] = []
    for k, v in labels.items():
        flags += ["--label", f"{k}={v}"]
    return flags


def label_filters(labels: Mapping[str, str | None]) -> list[str]:
    """`--filter label=K[=V]` for each label (None: any value)."""
    flt: list[str] = []
    for k, v in labels.items():
        flt += ["--filter", f"label={k}" + ("" if v is None else f"={v}")]
    return flt
