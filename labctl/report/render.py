"""Rendering a `labctl.report.data.RoundReport`: Markdown, a self-contained HTML page, JSON, and
`write_report`, which writes them into the round with the chart. The cells come from
`labctl.report.tables.tables`, so every format shows the same numbers.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from typing import Any

from labctl.report.cost import cost_json
from labctl.report.data import DASH, Format, ReportError, RoundReport, load_report
from labctl.report.runpage import PAGE, write_run_pages
from labctl.report.tables import tables
from labctl.report.why import RunStory, plural, stories
from labctl.round.controls import with_controls
from labctl.round.layout import RUNS_DIR, write_manifest

WHY = "Why each run ended as it did"


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _intro(rep: RoundReport) -> tuple[str, list[str]]:
    info = rep.lab.lab
    lines = [f"Round `{rep.round}` of lab `{info.name}`: {plural(len(rep.contestants), 'contestant')}, "
             f"{plural(rep.repeats, 'run')}{' each' if len(rep.contestants) != 1 else ''}."]
    if info.source:
        lines.append(f"Published round: {info.source}")
    if info.notes:
        lines.append(info.notes)
    if rep.forced:
        lines.append("Unsealed with --force: some runs had not finished.")
    return (info.title or info.name), lines


def render_markdown(rep: RoundReport, chart: str | None = "report.png") -> str:
    title, intro = _intro(rep)
    parts = [f"# {title}", "", *[f"{line}\n" for line in intro]]
    if chart:
        parts += [f"![Total tokens and generation speed]({chart})", ""]
    for t in tables(rep):
        parts += [f"## {t.title}", "", "| " + " | ".join(t.headers) + " |",
                  "|" + "|".join("---" for _ in t.headers) + "|"]
        parts += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
        parts += ["", t.note, ""] if t.note else [""]
    parts += [f"## {WHY}", ""]
    for s in stories(rep):
        parts += _md_story(s)
    return "\n".join(parts).rstrip() + "\n"


def _md_story(s: RunStory) -> list[str]:
    out = [f"### {s.run_id} · {s.contestant} · {s.outcome}", "", s.checks_line, ""]
    if s.failed:
        out += ["| Check | Why it failed |", "|---|---|"]
        out += [f"| `{c}` | {_md_cell(note)} |" for c, note in s.failed]
        out += [""]
    out += [f"- {label}: {_md_cell(text)}" for label, text in s.lines]
    return [*out, ""]


_CSS = """body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0 .3em;width:100%}th,td{border:1px solid #ccc;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f0f0f0}tr:nth-child(even) td{background:#fafafa}
p.note{color:#666;font-size:13px;margin:0 0 1.2em}img{max-width:100%;border:1px solid #ddd}
article.run{border-left:4px solid #ccc;padding:0 0 0 1em;margin:0 0 1.5em}article.run h3{margin:.2em 0}
article.Complete{border-color:#2e7d32}article.Partial{border-color:#f9a825}article.Failed{border-color:#c62828}
article.Total-failure{border-color:#4a148c}table.failed-checks td:first-child{white-space:nowrap}"""


def _code(text: str) -> str:
    """Escape, then turn Markdown's `code` spans (shared intro and notes) into <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _page_link(run_id: str) -> str:
    """Where a run's page lies, relative to report.html (`labctl.report.runpage`)."""
    return f"{RUNS_DIR}/{html.escape(run_id)}/{PAGE}"


def render_html(rep: RoundReport, png: bytes | None, pages: frozenset[str] = frozenset()) -> str:
    """A self-contained page: inline CSS, the chart inlined as base64, no script, no fetch. The run
    ids in `pages` link to their run pages (the Runs table's Run cell, each run's "why")."""
    e = html.escape
    title, intro = _intro(rep)
    body = [f"<h1>{e(title)}</h1>", *[f"<p>{_code(line)}</p>" for line in intro]]
    if png:
        body.append(f'<img alt="Total tokens and generation speed" '
                    f'src="data:image/png;base64,{base64.b64encode(png).decode()}">')
    for t in tables(rep):
        slug = t.title.lower().replace(" ", "-")
        head = "".join(f"<th>{e(h)}</th>" for h in t.headers)
        rows = "".join("<tr>" + "".join(_cell(c, slug == "runs" and i == 0 and c in pages)
                                        for i, c in enumerate(row)) + "</tr>" for row in t.rows)
        note = f'<p class="note">{_code(t.note)}</p>' if t.note else ""
        body.append(f'<h2>{e(t.title)}</h2><table id="{slug}"><thead><tr>{head}</tr></thead>'
                    f"<tbody>{rows}</tbody></table>{note}")
    body.append(f'<section id="why"><h2>{e(WHY)}</h2>' + "".join(_html_story(s, s.run_id in pages)
                                                                  for s in stories(rep))
                + "</section>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _cell(text: str, linked: bool) -> str:
    e = html.escape
    return f'<td><a href="{_page_link(text)}">{e(text)}</a></td>' if linked else f"<td>{e(text)}</td>"


def _html_story(s: RunStory, linked: bool = False) -> str:
    e = html.escape
    graded = s.outcome in ("Complete", "Partial", "Failed", "Total failure")
    cls = s.outcome.replace(" ", "-") if graded else ""
    out = [f'<article class="run {cls}" id="why-{e(s.run_id)}"><h3>{e(s.run_id)} · {e(s.contestant)} · '
           f"{e(s.outcome)}</h3><p>{e(s.checks_line)}</p>"]
    if s.failed:
        rows = "".join(f"<tr><td><code>{e(c)}</code></td><td>{e(note)}</td></tr>" for c, note in s.failed)
        out.append('<table class="failed-checks"><thead><tr><th>Check</th><th>Why it failed</th></tr></thead>'
                   f"<tbody>{rows}</tbody></table>")
    items = "".join(f"<li><b>{e(label)}:</b> {e(text)}</li>" for label, text in s.lines)
    if linked:
        items += f'<li><a href="{_page_link(s.run_id)}">The conversation, step by step</a></li>'
    out.append(f"<ul>{items}</ul>")
    return "".join(out) + "</article>"


def render_json(rep: RoundReport) -> dict[str, Any]:
    """The data behind the tables: per contestant its runs' metrics, pass@k and published figures."""
    return {
        "round": rep.round, "lab": rep.lab.lab.name, "title": rep.lab.lab.title, "repeats": rep.repeats,
        "forced": rep.forced,
        "contestants": [{
            "id": cd.contestant.id, "name": cd.name, "kind": cd.contestant.kind, "type": cd.type,
            "parameters": None if cd.params == DASH else cd.params,
            "pass_at_1": cd.pass_at(1), f"pass_at_{rep.repeats}": cd.pass_at(rep.repeats),
            "published": cd.published.model_dump(mode="json", exclude_none=True) if cd.published else None,
            "runs": [{"run_id": r.run_id, "repeat": r.repeat, "status": r.result.status,
                      "outcome": r.result.outcome, "attempts": r.result.attempts,
                      "cost_usd": r.metrics.cost_usd,
                      "metrics": r.metrics.model_dump(mode="json", exclude_none=True)}
                     for r in cd.runs],
        } for cd in rep.contestants],
        "cost": cost_json(rep),
        "tables": [{"title": t.title, "headers": t.headers, "rows": t.rows} for t in tables(rep)],
        "why": [{"run_id": s.run_id, "contestant": s.contestant, "outcome": s.outcome,
                 "failed_checks": [{"check": c, "note": n} for c, n in s.failed],
                 **{label.lower().replace(" ", "_"): text for label, text in s.lines}} for s in stories(rep)],
    }


def write_report(round_dir: Path, fmt: Format = "md") -> list[Path]:
    """Write report.<fmt> and report.png into the round, and each run's page (runs/<id>/transcript.html,
    `labctl.report.runpage`), then rewrite the manifest (the round gained files; `labctl verify` lists
    any file the manifest does not). Returns the report and the chart written (the run pages lie in
    their runs' directories).
    A file-system failure is a ReportError ("cannot write the report: …")."""
    try:
        return _write_report(round_dir, fmt)
    except OSError as e:
        raise ReportError(f"cannot write the report: {e}") from e


def _write_report(round_dir: Path, fmt: Format) -> list[Path]:
    from labctl.report.charts import render_chart  # matplotlib is slow to import; only the report needs it
    from labctl.report.compare import report_comparison
    from labctl.report.compare_text import section
    from labctl.report.dataset import is_dataset_round, load_dataset_report, render

    if is_dataset_round(round_dir):  # contestants × tasks: rates, intervals, pairs, the grid (no chart)
        target = round_dir / f"report.{fmt}"
        ds = load_dataset_report(round_dir)
        compared = report_comparison(ds)  # two contestants or more (controls aside)
        text = with_controls(render(ds, fmt, section(compared) if compared else None), fmt, round_dir)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
        names = {c.run: s.name for s in ds.contestants for row in ds.grid
                 for c in row.cells.get(s.id, [])}
        write_run_pages(round_dir, names, report_link=_back(fmt), manifest=False)
        write_manifest(round_dir)
        return [target]
    rep = load_report(round_dir)
    who = {r.run_id: cd.name + (f" · {cd.agent}" if cd.agent != DASH else "")
           for cd in rep.contestants for r in cd.runs}
    pages = write_run_pages(round_dir, who, report_link=_back(fmt), manifest=False)
    png = render_chart(rep)
    chart = round_dir / "report.png"
    chart.write_bytes(png)
    target = round_dir / f"report.{fmt}"
    if fmt == "md":
        text = render_markdown(rep)
    elif fmt == "html":
        text = render_html(rep, png, frozenset(p.parent.name for p in pages))
    else:
        text = json.dumps(render_json(rep), indent=2, sort_keys=True) + "\n"
    text = with_controls(text, fmt, round_dir)  # a failed control goes first on the page
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    write_manifest(round_dir)
    return [target, chart]


def _back(fmt: Format) -> str:
    """A run page's link back to the report, from runs/<id>/."""
    return f"../../report.{fmt}"


__all__ = ["render_html", "render_json", "render_markdown", "write_report"]
