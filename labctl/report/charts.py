"""report.png: total tokens per contestant (log scale, colored by outcome) and generation speed; one
plain sentence instead of empty axes when no run used a model.

Why a module of its own: matplotlib is heavy to import and only the report draws; it is imported
here lazily, and through the object API (Figure + the Agg canvas), so no global pyplot state or
display backend is ever touched — the chart renders the same on a headless CI box.
"""

from __future__ import annotations

import io
import textwrap
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from labctl.report.data import ContestantData, RoundReport

COLORS = {"Complete": "#2e7d32", "Partial": "#f9a825", "Failed": "#c62828", "Total failure": "#4a148c",
          None: "#9e9e9e"}
"""Outcome → bar color (green → amber → red → purple; gray: ungraded or mixed-less)."""


def _outcome(cd: ContestantData) -> str | None:
    """The best outcome reached across repeats: the bar color shows what the model could do."""
    from labctl.report.data import OUTCOME_RANK

    got = [r.result.outcome for r in cd.runs if r.result.outcome]
    return min(got, key=lambda o: OUTCOME_RANK[o]) if got else None


def _uses_model(cd: ContestantData) -> bool:
    """Local and cloud contestants talk to a model; oracle and nop never do."""
    return cd.contestant.kind in ("local", "cloud")


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


NO_MODEL = "No run in this round used a model: no tokens or generation speed to chart."
NO_TIMINGS = "No llama.cpp timings:\nno local model answered."


def chart_figure(rep: RoundReport) -> Figure:
    """The two panels; missing or zero values are labelled instead of drawn (a log axis has no zero,
    and a missing bar must not read as a tiny one). A round where no run used a model gets one plain
    sentence instead of empty axes; a round without llama.cpp timings (cloud only) gets one instead
    of the speed panel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    title = rep.lab.lab.title or rep.lab.lab.name
    if not any(_uses_model(cd) for cd in rep.contestants):
        fig = Figure(figsize=(11, 1.6), dpi=110, layout="constrained")
        FigureCanvasAgg(fig)
        fig.suptitle(title, fontsize=11)
        fig.text(0.5, 0.4, NO_MODEL, ha="center", va="center", fontsize=12, color="#444")
        return fig

    names = [textwrap.fill(cd.name, 22) for cd in rep.contestants]
    fig = Figure(figsize=(11, 2.4 + 0.6 * len(names)), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    tok_ax, tps_ax = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 2]})
    _tokens(tok_ax, rep, names)
    if any(cd.values("gen_tokens_per_s") for cd in rep.contestants):
        _speed(tps_ax, rep)
    else:
        tps_ax.set_axis_off()
        tps_ax.text(0.5, 0.5, NO_TIMINGS, ha="center", va="center", fontsize=10, color="#444",
                    transform=tps_ax.transAxes)
    fig.suptitle(title, fontsize=11)
    return fig


def _tokens(ax: Axes, rep: RoundReport, names: list[str]) -> None:
    from matplotlib.patches import Patch

    ys = list(range(len(names)))
    positive: list[float] = []
    for y, cd in zip(ys, rep.contestants, strict=True):
        vals = cd.values("total_tokens")
        mean = _mean(vals)
        color = COLORS[_outcome(cd)]
        # a lower bound (a call cut before its usage came, nothing counted it whole): `≥`, hatched
        partial = any(r.metrics.tokens_partial for r in cd.runs)
        if mean and mean > 0:
            positive += [v for v in vals if v > 0] + [mean]
            err = [[mean - min(vals)], [max(vals) - mean]] if len(vals) > 1 else None
            ax.barh(y, mean, color=color, xerr=err, capsize=3, ecolor="#333", hatch="//" if partial else None)
            ax.text(mean, y, f" {'≥ ' if partial else ''}{mean:,.0f}", va="center", fontsize=8)
        else:
            label = (f" no model ({cd.contestant.kind})" if not _uses_model(cd)
                     else " unknown (cut)" if partial else " 0 tokens" if mean == 0 else " no data")
            ax.text(1.1, y, label, va="center", fontsize=8, color=color, fontweight="bold")
    ax.set_xscale("log")
    ax.set_xlim(1, max(positive, default=10) * 8)
    ax.set_title("Total tokens (log scale)")
    ax.set_yticks(ys, names)
    ax.set_ylim(len(names) - 0.5, -0.5)  # every row, bar or not; first contestant on top
    ax.grid(axis="x", which="major", alpha=0.3)
    ax.legend(handles=[Patch(color=c, label=o or "ungraded") for o, c in COLORS.items()],
              loc="lower right", fontsize=7, framealpha=0.9)


def _speed(ax: Axes, rep: RoundReport) -> None:
    top = 0.0
    for y, cd in enumerate(rep.contestants):
        vals = cd.values("gen_tokens_per_s")
        mean = _mean(vals)
        if mean is None:
            ax.text(0, y, " —", va="center", fontsize=8, color="#777")
            continue
        top = max(top, max(vals))
        err = [[mean - min(vals)], [max(vals) - mean]] if len(vals) > 1 else None
        ax.barh(y, mean, color="#1565c0", xerr=err, capsize=3, ecolor="#333")
        ax.text(mean, y, f" {mean:,.1f}", va="center", fontsize=8)
    ax.set_xlim(0, (top or 1) * 1.25)
    ax.set_title("Generation tokens/s (llama.cpp)")
    ax.grid(axis="x", alpha=0.3)


def render_chart(rep: RoundReport) -> bytes:
    """PNG bytes of `chart_figure`."""
    buf = io.BytesIO()
    chart_figure(rep).savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
