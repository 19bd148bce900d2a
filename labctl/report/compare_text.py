"""A `labctl.report.compare.Comparison` as text: the terminal's `labctl compare`, the stable `--json`
document, and the section a dataset round's report carries (Markdown, HTML and JSON share it).
"""

from __future__ import annotations

import html
import json
from typing import Any

from labctl.report.compare import Comparison, PairComparison, Side, pts, pval
from labctl.report.data import DASH
from labctl.report.dataset import Section, md_table

TITLE = "Paired comparison"


def _pct(x: float | None) -> str:
    return DASH if x is None else f"{100 * x:.0f}%"


def _iv(iv: tuple[float, float] | None, fmt: str = "pct", digits: int = 0) -> str:
    if iv is None:
        return DASH
    if fmt == "pct":
        return f"{_pct(iv[0])} – {_pct(iv[1])}"
    if fmt == "pts":
        return f"{pts(iv[0])} to {pts(iv[1])}"
    return f"{iv[0]:+,.{digits}f} to {iv[1]:+,.{digits}f}" if fmt == "signed" else \
        f"{iv[0]:,.{digits}f} – {iv[1]:,.{digits}f}"


def _num(x: float | None, digits: int = 0, unit: str = "", signed: bool = False) -> str:
    if x is None:
        return DASH
    return (f"{x:+,.{digits}f}" if signed else f"{x:,.{digits}f}") + unit


def _per_resolved(s: Side, what: str) -> str:
    """The value and its interval; a dash alone when nothing was resolved (or measured)."""
    if what == "tokens":
        v, iv, digits, unit = s.tokens_per_resolved, s.tokens_ci95, 0, ""
    else:
        v, iv, digits, unit = s.wall_s_per_resolved, s.wall_s_ci95, 1, " s"
    return DASH if v is None else f"{_num(v, digits, unit)} ({_iv(iv, 'plain', digits)}{unit})"


def _diff(p: PairComparison, what: str) -> str:
    if what == "tokens":
        v, iv, digits, unit = p.tokens_difference, p.tokens_difference_ci95, 0, ""
    else:
        v, iv, digits, unit = p.wall_s_difference, p.wall_s_difference_ci95, 1, " s"
    return DASH if v is None else f"{_num(v, digits, unit, signed=True)} ({_iv(iv, 'signed', digits)}{unit})"


def _mcnemar(p: PairComparison) -> str:
    m = p.mcnemar
    return (f"{m.pairs} run pairs: both {m.both}, {p.first.label} only {m.first_only}, "
            f"{p.second.label} only {m.second_only}, neither {m.neither} → p = {pval(m.p_value)}")


def _sign(p: PairComparison) -> str:
    s = p.sign_test
    return (f"{s.tasks} tasks: {p.first.label} better on {s.first_better}, {p.second.label} on "
            f"{s.second_better}, ties {s.ties} → p = {pval(s.p_value)}")


def intro(c: Comparison) -> str:
    what = (f"round {c.rounds[0]}" if c.kind == "contestants" else f"rounds {c.rounds[0]} (1) and "
            f"{c.rounds[1]} (2)")
    reps = " / ".join(str(r) for r in c.repeats)
    why = "controls" if c.kind == "contestants" else "controls, or in one round only"
    lines = [f"Lab {c.lab}, {what}: {len(c.tasks)} task(s) × {reps} repeat(s) compared"
             + (f"; left out: {', '.join(c.not_compared)} ({why})" if c.not_compared else "") + "."]
    if c.excluded:
        lines.append(f"Tasks not compared (controls failed, or not in every round): {', '.join(c.excluded)}.")
    return "\n".join(lines)


def render_text(c: Comparison) -> str:
    """What `labctl compare` prints."""
    out = [intro(c)]
    for p in c.pairs:
        a, b = p.first, p.second
        rows = [
            ("Resolution rate", f"{a.label} {_pct(a.resolution_rate)} (95% CI {_iv(a.ci95)}); "
                                f"{b.label} {_pct(b.resolution_rate)} (95% CI {_iv(b.ci95)})"),
            ("Difference", DASH if p.difference is None else
             f"{pts(p.difference)} (95% paired bootstrap CI {_iv(p.ci95, 'pts')})"),
            ("McNemar exact", _mcnemar(p)),
            ("Sign test", _sign(p)),
            ("Tokens / resolved", f"{a.label} {_per_resolved(a, 'tokens')}; {b.label} "
                                  f"{_per_resolved(b, 'tokens')}; difference {_diff(p, 'tokens')}"),
            ("Wall / resolved", f"{a.label} {_per_resolved(a, 'wall')}; {b.label} "
                                f"{_per_resolved(b, 'wall')}; difference {_diff(p, 'wall')}"),
            ("Verdict", p.verdict),
        ]
        width = max(len(k) for k, _ in rows)
        out += ["", f"{a.label} vs {b.label}", *[f"  {k:<{width}}  {v}" for k, v in rows]]
    return "\n".join(out) + "\n"


def to_json(c: Comparison) -> dict[str, Any]:
    """The `--json` document (stable: `format` names its version)."""
    return c.model_dump(mode="json")


def json_text(c: Comparison) -> str:
    return json.dumps(to_json(c), indent=2, sort_keys=True) + "\n"


_HEAD = ["Pair (first vs second)", "Difference", "95% CI (paired bootstrap)", "McNemar exact",
         "Sign test over tasks", "Tokens / resolved, difference", "Wall / resolved, difference"]


def _rows(c: Comparison) -> list[list[str]]:
    return [[f"{p.first.label} vs {p.second.label}", DASH if p.difference is None else pts(p.difference),
             _iv(p.ci95, "pts"),
             f"{p.mcnemar.first_only} vs {p.mcnemar.second_only} of {p.mcnemar.pairs}, p = "
             f"{pval(p.mcnemar.p_value)}",
             f"+{p.sign_test.first_better} −{p.sign_test.second_better} ={p.sign_test.ties}, p = "
             f"{pval(p.sign_test.p_value)}",
             _diff(p, "tokens"), _diff(p, "wall")] for p in c.pairs]


NOTE = ("Difference: first − second resolution rate. McNemar's exact test pairs runs by task and repeat "
        "(first only vs second only resolved); the sign test counts tasks each side did better on. "
        "Resolved = outcome Complete; the controls and tasks with failed controls are left out.")


def section(c: Comparison) -> Section:
    """The report's section: Markdown, HTML and the JSON under `comparison`."""
    md = [f"## {TITLE}", "", md_table(_HEAD, _rows(c)), "", NOTE, "",
          *[f"- **{p.first.label} vs {p.second.label}**: {p.verdict}" for p in c.pairs]]
    e = html.escape
    th = "".join(f"<th>{e(h)}</th>" for h in _HEAD)
    trs = "".join("<tr>" + "".join(f"<td>{e(x)}</td>" for x in r) + "</tr>" for r in _rows(c))
    items = "".join(f"<li><b>{e(p.first.label)} vs {e(p.second.label)}:</b> {e(p.verdict)}</li>"
                    for p in c.pairs)
    page = (f'<h2 id="comparison">{TITLE}</h2><table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody>'
            f"</table><p>{e(NOTE)}</p><ul>{items}</ul>")
    return Section(markdown="\n".join(md), html=page, data=to_json(c))


__all__ = ["TITLE", "intro", "json_text", "render_text", "section", "to_json"]
