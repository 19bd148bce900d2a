"""report.png: total tokens per contestant (log scale, colored by outcome) and generation speed.

Why a module of its own: matplotlib is heavy to import and only the report draws; it is imported
here lazily, and through the object API (Figure + the Agg canvas), so no global pyplot state or
display backend is ever touched — the chart renders the same on a headless CI box.
"""

from __future__ import annotations

import io
import textwrap
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labctl.report import ContestantData, RoundReport

COLORS = {"Complete": "#2e7d32", "Partial": "#f9a825", "Failed": "#c62828", "Total failure": "#4a148c",
          None: "#9e9e9e"}
"""Outcome → bar color (green → amber → red → purple; gray: ungraded or mixed-less)."""


def _outcome(cd: ContestantData) -> str | None:
    """The best outcome reached across repeats: the bar color shows what the model could do."""
    from labctl.report import OUTCOME_RANK

    got = [r.result.outcome for r in cd.runs if r.result.outcome]
    return min(got, key=lambda o: OUTCOME_RANK[o]) if got else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def render_chart(rep: RoundReport) -> bytes:
    """PNG bytes of the two panels; missing or zero values are labelled instead of drawn (a log
    axis has no zero, and a missing bar must not read as a tiny one)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    names = [textwrap.fill(cd.name, 22) for cd in rep.contestants]
    ys = list(range(len(names)))
    fig = Figure(figsize=(11, 2.4 + 0.6 * len(names)), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    tok_ax, tps_ax = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 2]})

    positive: list[float] = []
    for y, cd in zip(ys, rep.contestants, strict=True):
        vals = cd.values("total_tokens")
        mean = _mean(vals)
        color = COLORS[_outcome(cd)]
        if mean and mean > 0:
            positive += [v for v in vals if v > 0] + [mean]
            err = [[mean - min(vals)], [max(vals) - mean]] if len(vals) > 1 else None
            tok_ax.barh(y, mean, color=color, xerr=err, capsize=3, ecolor="#333")
            tok_ax.text(mean, y, f" {mean:,.0f}", va="center", fontsize=8)
        else:
            tok_ax.text(1.1, y, "0 tokens" if mean == 0 else " no data", va="center", fontsize=8,
                        color=color, fontweight="bold")
    tok_ax.set_xscale("log")
    tok_ax.set_xlim(1, max(positive, default=10) * 8)
    tok_ax.set_title("Total tokens (log scale)")
    tok_ax.set_yticks(ys, names)
    tok_ax.set_ylim(len(names) - 0.5, -0.5)  # every row, bar or not; first contestant on top
    tok_ax.grid(axis="x", which="major", alpha=0.3)
    tok_ax.legend(handles=[Patch(color=c, label=o or "ungraded") for o, c in COLORS.items()],
                  loc="lower right", fontsize=7, framealpha=0.9)

    top = 0.0
    for y, cd in zip(ys, rep.contestants, strict=True):
        vals = cd.values("gen_tps")
        mean = _mean(vals)
        if mean is None:
            tps_ax.text(0, y, " —", va="center", fontsize=8, color="#777")
            continue
        top = max(top, max(vals))
        err = [[mean - min(vals)], [max(vals) - mean]] if len(vals) > 1 else None
        tps_ax.barh(y, mean, color="#1565c0", xerr=err, capsize=3, ecolor="#333")
        tps_ax.text(mean, y, f" {mean:,.1f}", va="center", fontsize=8)
    tps_ax.set_xlim(0, (top or 1) * 1.25)
    tps_ax.set_title("Generation tokens/s (llama.cpp)")
    tps_ax.grid(axis="x", alpha=0.3)

    fig.suptitle(rep.lab.lab.title or rep.lab.lab.name, fontsize=11)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
