"""The report of a dataset round (contestants × tasks × repeats): per contestant the resolution
rate over tasks with a 95% bootstrap interval (`labctl.report.bootstrap`), pass@k when the round has
repeats, tokens and wall time per resolved task, and a task × contestant grid whose cells link to
their runs. Markdown, HTML and JSON carry the same numbers. A one-task round keeps its own report
(`labctl.report.render`); `write_report` sends a dataset round here.

A task whose controls failed (its oracle not Complete, or its nop not Failed) is excluded from every
aggregate and named, with the failing control runs, at the top of the report and in the grid: a
broken task must never be scored silently, neither for nor against anyone.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from labctl.report.bootstrap import bootstrap_interval, mean, pass_at_k, seed_of
from labctl.report.data import DASH, ReportError, _run_metrics, read_unsealed_round
from labctl.round.controls import control_failures
from labctl.round.layout import (
    RUNS_DIR,
    RunResult,
    read_result,
    read_sealed,
    result_path,
)

RESOLVED = "Complete"
"""The outcome that counts as a resolved task (Harbor's reward 1; labctl's Complete)."""


class Cell(BaseModel):
    """One run in the grid."""

    run: str
    repeat: int
    status: str
    outcome: str | None
    resolved: bool
    total_tokens: int | None = None
    wall_s: float | None = None
    link: str
    """The run's directory, relative to the round (where the report is written)."""


class TaskRow(BaseModel):
    task: str
    excluded: bool
    cells: dict[str, list[Cell]]
    """Contestant id → its runs of this task, by repeat."""


class ContestantStats(BaseModel):
    id: str
    name: str
    kind: str
    tasks: int
    """Tasks in the aggregate (the excluded ones are not)."""
    runs: int
    resolved_runs: int
    resolution_rate: float | None
    """Mean over tasks of the fraction of the task's repeats resolved."""
    ci95: tuple[float, float] | None
    """95% percentile bootstrap interval of the rate, resampling tasks."""
    pass_at_k: dict[int, float]
    """k → pass@k averaged over tasks (only when the round has repeats > 1)."""
    tokens_per_resolved: float | None
    """All tokens this contestant spent on the counted tasks / tasks-runs resolved."""
    wall_s_per_resolved: float | None
    """All agent wall time on the counted tasks / runs resolved."""


@dataclass(frozen=True)
class Section:
    """A section another module adds to the report (the paired comparison, `labctl.report.compare_text`):
    its Markdown and HTML, placed before the grid, and its data under `key` in the JSON."""

    markdown: str
    html: str
    data: dict[str, Any]
    key: str = "comparison"


class DatasetReport(BaseModel):
    kind: str = "dataset"
    round: str
    lab: str
    title: str
    repeats: int
    forced: bool
    tasks: list[str]
    excluded: dict[str, list[str]]
    """Task → why it is excluded (its failing control runs)."""
    contestants: list[ContestantStats]
    grid: list[TaskRow]


def is_dataset_round(round_dir: Path) -> bool:
    try:
        return read_sealed(round_dir).tasks is not None
    except (OSError, ValueError):
        return False


def load_dataset_report(round_dir: Path) -> DatasetReport:
    """Gather an unsealed dataset round; ReportError says what to do when it cannot."""
    sealed, unsealed, lab = read_unsealed_round(round_dir)
    assert sealed.tasks is not None
    tasks = sorted(sealed.tasks)
    excluded: dict[str, list[str]] = {}
    for f in control_failures(round_dir):
        task = (sealed.run_tasks or {}).get(f.run_id)
        if task is not None:
            excluded.setdefault(task, []).append(str(f))
    ids = [c.id for c in lab.contestants]
    grid = {t: TaskRow(task=t, excluded=t in excluded, cells={c: [] for c in ids}) for t in tasks}
    for rid in sealed.run_ids:
        slot = unsealed.mapping.get(rid)
        if slot is None or slot.task not in grid or slot.contestant not in ids:
            raise ReportError(f"{round_dir}: {rid} maps to no task and contestant of lab.yaml "
                              "(`labctl verify` it)")
        try:
            res = read_result(round_dir, rid) if result_path(round_dir, rid).is_file() else None
        except ValueError as e:
            raise ReportError(f"{result_path(round_dir, rid)}: {str(e).splitlines()[0]}") from e
        res = res or RunResult(run_id=rid)
        m = _run_metrics(round_dir, rid, res)
        tokens, wall = m.total_tokens, m.wall_time_s if m.wall_time_s is not None else m.total_wall_s
        grid[slot.task].cells[slot.contestant].append(Cell(
            run=rid, repeat=slot.repeat, status=res.status, outcome=res.outcome,
            resolved=res.outcome == RESOLVED, total_tokens=tokens if isinstance(tokens, int) else None,
            wall_s=float(wall) if isinstance(wall, int | float) else None, link=f"{RUNS_DIR}/{rid}/"))
    for row in grid.values():
        for cells in row.cells.values():
            cells.sort(key=lambda c: c.repeat)
    counted = [t for t in tasks if t not in excluded]
    stats = [_stats(c.id, c.name or c.id, c.kind, [grid[t].cells[c.id] for t in counted], sealed.repeats,
                    seed_of(f"{sealed.round}:{c.id}")) for c in lab.contestants]
    return DatasetReport(round=sealed.round, lab=lab.lab.name, title=lab.lab.title or lab.lab.name,
                         repeats=sealed.repeats, forced=unsealed.forced, tasks=tasks, excluded=excluded,
                         contestants=stats, grid=[grid[t] for t in tasks])


def _stats(cid: str, name: str, kind: str, per_task: list[list[Cell]], repeats: int, seed: int
           ) -> ContestantStats:
    runs = [c for cells in per_task for c in cells]
    resolved = sum(c.resolved for c in runs)
    scores = [sum(c.resolved for c in cells) / len(cells) for cells in per_task if cells]
    pk: dict[int, float] = {}
    if repeats > 1 and scores:
        for k in range(1, repeats + 1):
            vals = [pass_at_k(len(cells), sum(c.resolved for c in cells), k) for cells in per_task
                    if len(cells) >= k]
            if vals:
                pk[k] = mean(vals)
    tokens = [c.total_tokens for c in runs if c.total_tokens is not None]
    walls = [c.wall_s for c in runs if c.wall_s is not None]
    return ContestantStats(
        id=cid, name=name, kind=kind, tasks=len(scores), runs=len(runs), resolved_runs=resolved,
        resolution_rate=mean(scores) if scores else None,
        ci95=bootstrap_interval(scores, seed) if scores else None, pass_at_k=pk,
        tokens_per_resolved=sum(tokens) / resolved if resolved and tokens else None,
        wall_s_per_resolved=sum(walls) / resolved if resolved and walls else None)


# --- rendering -------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return DASH if x is None else f"{100 * x:.0f}%"


def _num(x: float | None, unit: str = "", digits: int = 0) -> str:
    return DASH if x is None else f"{x:,.{digits}f}{unit}"


def _cell_text(c: Cell) -> str:
    return c.outcome or c.status


def rate_rows(rep: DatasetReport) -> tuple[list[str], list[list[str]]]:
    ks = sorted({k for s in rep.contestants for k in s.pass_at_k})
    head = ["Contestant", "Kind", "Tasks", "Resolved runs", "Resolution rate",
            "95% CI (bootstrap over tasks)", *[f"pass@{k}" for k in ks], "Tokens / resolved",
            "Wall time / resolved"]
    rows = []
    for s in rep.contestants:
        ci = DASH if s.ci95 is None else f"{_pct(s.ci95[0])} – {_pct(s.ci95[1])}"
        rows.append([s.name, s.kind, str(s.tasks), f"{s.resolved_runs}/{s.runs}", _pct(s.resolution_rate), ci,
                     *[_pct(s.pass_at_k.get(k)) for k in ks], _num(s.tokens_per_resolved),
                     _num(s.wall_s_per_resolved, " s", 1)])
    return head, rows


def _exclusion_lines(rep: DatasetReport) -> list[str]:
    return [f"{t}: controls failed — {'; '.join(why)}" for t, why in sorted(rep.excluded.items())]


def render_markdown(rep: DatasetReport, extra: Section | None = None) -> str:
    names = {s.id: s.name for s in rep.contestants}
    counted = len(rep.tasks) - len(rep.excluded)
    out = [f"# {rep.title}", "",
           f"Dataset round `{rep.round}` of lab `{rep.lab}`: {len(rep.tasks)} tasks × "
           f"{len(rep.contestants)} contestants × {rep.repeats} repeat(s); "
           f"{counted} task(s) in the aggregates."]
    if rep.forced:
        out.append("Unsealed with --force: some runs had not finished.")
    if rep.excluded:
        out += ["", f"## Excluded tasks ({len(rep.excluded)})", "",
                "Their controls failed, so the task (or the harness) is broken: they count for no one.", ""]
        out += [f"- **{line.split(':', 1)[0]}**:{line.split(':', 1)[1]}" for line in _exclusion_lines(rep)]
    head, rows = rate_rows(rep)
    out += ["", f"## Resolution rate over {counted} tasks", "", md_table(head, rows)]
    if extra is not None:
        out += ["", extra.markdown]
    out += ["", "## Task × contestant", "", md_table(
        ["Task", *[names[c] for c in names]],
        [[f"~~{r.task}~~ (excluded)" if r.excluded else r.task,
          *[" ".join(f"[{_cell_text(c)}]({c.link})" for c in r.cells[cid]) or DASH for cid in names]]
         for r in rep.grid])]
    return "\n".join(out) + "\n"


def md_table(head: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(head), "|" + "---|" * len(head), *map(line, rows)])


def render_html(rep: DatasetReport, extra: Section | None = None) -> str:
    names = {s.id: s.name for s in rep.contestants}
    esc = html.escape

    def table(head: list[str], rows: list[list[str]]) -> str:
        th = "".join(f"<th>{esc(h)}</th>" for h in head)
        trs = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"

    head, rows = rate_rows(rep)
    parts = [f"<h1>{esc(rep.title)}</h1>",
             f"<p>Dataset round <code>{esc(rep.round)}</code>: {len(rep.tasks)} tasks, "
             f"{len(rep.contestants)} contestants, {rep.repeats} repeat(s).</p>"]
    if rep.excluded:
        items = "".join(f"<li>{esc(line)}</li>" for line in _exclusion_lines(rep))
        parts.append(f'<h2 id="excluded">Excluded tasks</h2><ul>{items}</ul>')
    parts += ["<h2>Resolution rate</h2>", table(head, [[esc(c) for c in r] for r in rows]),
              *([extra.html] if extra is not None else []), "<h2>Task × contestant</h2>",
              table(["Task", *names.values()],
                    [[esc(r.task) + (" <em>(excluded)</em>" if r.excluded else ""),
                      *[" ".join(f'<a href="{esc(c.link)}">{esc(_cell_text(c))}</a>' for c in r.cells[cid])
                        or DASH for cid in names]] for r in rep.grid])]
    return ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>" + esc(rep.title) +
            "</title></head>\n<body>\n" + "\n".join(parts) + "\n</body></html>\n")


def render_json(rep: DatasetReport, extra: Section | None = None) -> dict[str, Any]:
    data = rep.model_dump(mode="json")
    if extra is not None:
        data[extra.key] = extra.data
    data["contestants"] = [{**s, "pass_at_k": {str(k): v for k, v in s["pass_at_k"].items()}}
                           for s in data["contestants"]]
    return data


def render(rep: DatasetReport, fmt: str, extra: Section | None = None) -> str:
    if fmt == "md":
        return render_markdown(rep, extra)
    if fmt == "html":
        return render_html(rep, extra)
    return json.dumps(render_json(rep, extra), indent=2, sort_keys=True) + "\n"


__all__ = ["Cell", "ContestantStats", "DatasetReport", "Section", "TaskRow", "is_dataset_round",
           "load_dataset_report", "md_table", "rate_rows", "render", "render_html", "render_json",
           "render_markdown"]
