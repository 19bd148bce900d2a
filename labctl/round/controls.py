"""The round's controls: the oracle (the task's reference solution) must grade Complete, the nop (an
agent that does nothing) must grade Failed or Total failure. When either does not, the task or the
harness is broken and no model's grade in the round means anything, so it is said first everywhere:
`labctl run` / `round` (their final table, non-zero exit), `labctl verify` (a problem, exit 1), and
the report (before the title, and a `controls` key in JSON).

What may be shown before unseal: which runs are controls and how they were graded. The seal hides
which *model* ran where; oracle and nop are no model, and a run without a model is already told
apart by its metrics (no tool calls). So "controls failed: run-12 (oracle) …" names no contestant
that blindness protects. Before unseal the kinds come from result.json's `control` (written by the
runner from the envelope); after unseal from the revealed mapping and lab.yaml, which also overrule
result.json, so a result.json edited to hide a control does not hide it from `labctl verify`.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labctl.round.grading import check_passed, named_checks, read_reward
from labctl.round.layout import (
    UNSEALED_FILE,
    RunResult,
    read_result,
    read_sealed,
    read_unsealed,
    result_path,
    run_dir,
)
from labctl.round.opened import read_round_lab
from labctl.spec.lab import Lab
from labctl.spec.located import SpecError

PASSING = {"oracle": ("Complete",), "nop": ("Failed", "Total failure")}
"""The outcomes each control must reach."""


@dataclass
class ControlFailure:
    """One control run that did not grade as it must."""

    run_id: str
    kind: str
    status: str
    outcome: str | None
    checks: list[str]
    """For the oracle: the named checks that failed; for the nop: those that passed."""
    task: str | None = None
    """The run's task in a dataset round: that task is excluded from the aggregates."""

    def __str__(self) -> str:
        got = self.outcome or f"{self.status}, ungraded"
        must = " or ".join(PASSING[self.kind])
        on = f", task {self.task}" if self.task else ""
        text = f"{self.run_id} ({self.kind}{on}) is {got}, must be {must}"
        if self.checks:
            text += ("; failing checks: " if self.kind == "oracle" else "; passing checks: ")
            text += ", ".join(self.checks)
        return text


def control_kinds(round_dir: Path, lab: Lab | None = None) -> dict[str, str]:
    """run id → "oracle" | "nop" for the round's control runs (see the module docstring). `lab`: the
    round's lab when the caller holds it already (`labctl round`, `labctl run`)."""
    sealed = read_sealed(round_dir)
    if (round_dir / UNSEALED_FILE).is_file():
        try:
            mapping = read_unsealed(round_dir).mapping
            lab = lab or read_round_lab(round_dir)
        except (OSError, ValueError, SpecError):
            pass  # `labctl verify` reports the unreadable files; fall back to result.json
        else:
            kinds = {c.id: c.kind for c in lab.contestants}
            return {rid: kinds[s.contestant] for rid, s in mapping.items()
                    if kinds.get(s.contestant) in PASSING}
    out: dict[str, str] = {}
    for rid in sealed.run_ids:
        res = _result(round_dir, rid)
        if res is not None and res.control:
            out[rid] = res.control
    return out


def _result(round_dir: Path, rid: str) -> RunResult | None:
    try:
        return read_result(round_dir, rid) if result_path(round_dir, rid).is_file() else None
    except ValueError:
        return None


def _checks(round_dir: Path, rid: str, kind: str) -> list[str]:
    try:
        reward, _ = read_reward(run_dir(round_dir, rid))
    except (OSError, ValueError):
        return []
    checks = named_checks(reward) or {}
    want_passed = kind == "nop"  # a nop's passing checks are what is wrong with the task
    return sorted(k for k, v in checks.items() if check_passed(v) == want_passed)


def control_failures(round_dir: Path, lab: Lab | None = None) -> list[ControlFailure]:
    """Every finished control run whose outcome is not its must; runs still running are not judged
    (a round in progress has not failed its controls yet)."""
    out: list[ControlFailure] = []
    try:
        run_tasks = read_sealed(round_dir).run_tasks or {}
    except (OSError, ValueError):
        run_tasks = {}
    for rid, kind in sorted(control_kinds(round_dir, lab).items()):
        res = _result(round_dir, rid)
        if res is None or res.status not in ("done", "errored", "killed"):
            continue
        if res.outcome in PASSING[kind]:
            continue
        out.append(ControlFailure(rid, kind, res.status, res.outcome, _checks(round_dir, rid, kind),
                                  run_tasks.get(rid)))
    return out


def controls_json(round_dir: Path) -> dict[str, Any]:
    failures = control_failures(round_dir)
    return {"ok": not failures, "runs": control_kinds(round_dir),
            "failures": [{"run": f.run_id, "kind": f.kind, "status": f.status, "outcome": f.outcome,
                          "checks": f.checks, "text": str(f), **({"task": f.task} if f.task else {})}
                         for f in failures]}


def with_controls(text: str, fmt: str, round_dir: Path) -> str:
    """A rendered report with the controls' verdict as the first thing on the page when they failed
    (Markdown and HTML), or its `controls` key (JSON: always present)."""
    failures = control_failures(round_dir)
    if fmt == "json":
        data = json.loads(text)
        data["controls"] = controls_json(round_dir)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"
    if not failures:
        return text
    if fmt == "html":
        items = "".join(f"<li>{html.escape(str(f))}</li>" for f in failures)
        banner = (f'<div id="controls-failed" style="border:3px solid #c00;background:#fee;padding:.5em 1em">'
                  f"<h1>CONTROLS FAILED</h1><p>This round's grades cannot be trusted: the task or the "
                  f"harness is broken.</p><ul>{items}</ul></div>\n")
        return text.replace("<body>\n", "<body>\n" + banner, 1)
    lines = ["> **CONTROLS FAILED** — this round's grades cannot be trusted: the task or the harness is "
             "broken.", ">"] + [f"> - {f}" for f in failures]
    return "\n".join(lines) + "\n\n" + text


__all__ = ["ControlFailure", "control_failures", "control_kinds", "controls_json", "with_controls"]
