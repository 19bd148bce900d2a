"""The report's cost figures: a Cost table where any contestant is priced, `not priced` (never 0 or
$0) for the local models, cost per resolved task and tokens per dollar, the published token gap
beside the measured cost gap, and every figure in `--json`. Built from an in-memory round (the
figures come from metrics.json's `cost_usd`, written by the grader from the meter's status)."""

from __future__ import annotations

from pathlib import Path

import pytest

from labctl.report.cost import NOT_PRICED, cost_json
from labctl.report.data import ContestantData, ReportMetrics, RoundReport, RunData
from labctl.report.render import render_json, render_markdown
from labctl.report.tables import tables
from labctl.round.layout import RunResult
from labctl.spec.load import load_lab
from tests.helpers import ROOT, lab_copy
from tests.report.test_report import table
from tests.spec.test_price_spec import ANCHOR, PRICE

LAB = (ROOT / "lab.yaml").read_text()
OTHER = """  - id: gpt-x
    kind: cloud
    name: GPT X
    provider: openai
    model: gpt-x
    api_key_env: OPENAI_API_KEY
    price: {input: 1.25, output: 10, cache_read: 0.125, cache_write: 0, as_of: 2026-06-01,
            source: https://openai.com/api/pricing}
"""


Runs = dict[str, list[tuple[str, float | None, int]]]


def report(tmp_path: Path, *, second: bool, runs: Runs) -> RoundReport:
    """A round of lab.yaml (Claude priced; with `second`, a second priced cloud contestant), each
    contestant in `runs` with its runs as (outcome, cost_usd, total_tokens)."""
    text = LAB.replace(ANCHOR, ANCHOR + PRICE)
    if second:
        text = text.replace("  - id: claude-sonnet-4\n", OTHER + "  - id: claude-sonnet-4\n")
    lab = load_lab(lab_copy(tmp_path, text)).lab
    cds = []
    for c in lab.contestants:
        cd = ContestantData(c, "Cloud" if c.kind == "cloud" else "Local", "—")
        for i, (outcome, cost, tokens) in enumerate(runs.get(c.id, []), 1):
            rid = f"run-{c.id}-{i}"
            result = RunResult.model_validate({"run_id": rid, "status": "done", "outcome": outcome})
            cd.runs.append(RunData(rid, c.id, i, result,
                                   ReportMetrics(cost_usd=cost, total_tokens=tokens, tool_calls=3)))
        if cd.runs:
            cds.append(cd)
    return RoundReport("r1", lab, max(len(v) for v in runs.values()), False, cds)


def test_priced_and_unpriced_contestants(tmp_path: Path) -> None:
    rep = report(tmp_path, second=False, runs={
        "claude-sonnet-4": [("Complete", 0.30, 19_000), ("Failed", 0.10, 9_000)],
        "qwen3-coder-30b-a3b": [("Failed", None, 1_500_000), ("Failed", None, 2_500_000)]})
    md = render_markdown(rep, chart=None)
    cost = table(md, "Cost")
    assert cost["Claude Sonnet 4"] == ["$3 / $15 / $0.3 / $3.75 (as of 2026-06-01)",
                                       "$0.2000 ($0.1000–$0.3000)", "$0.4000", "$0.4000", "70,000"]
    local = next(k for k in cost if k.startswith("Qwen3-Coder"))
    assert cost[local] == [NOT_PRICED] * 5  # not measured, never $0
    assert "$0.0000" not in md
    assert "Published token gap: 100–200×; no measured cost gap: the local models are not priced." in md
    data = render_json(rep)
    claude = data["cost"]["contestants"]["claude-sonnet-4"]
    assert claude["priced"] and claude["total_usd"] == pytest.approx(0.4)
    assert claude["usd_per_complete"] == pytest.approx(0.4)  # one Complete run: all it cost
    assert claude["tokens_per_usd"] == pytest.approx(70_000)
    assert claude["price"]["source"] == "https://www.anthropic.com/pricing"
    qwen = data["cost"]["contestants"]["qwen3-coder-30b-a3b"]
    assert not qwen["priced"] and qwen["total_usd"] is None and qwen["tokens_per_usd"] is None
    runs = {r["run_id"]: r["cost_usd"] for c in data["contestants"] for r in c["runs"]}
    assert runs["run-claude-sonnet-4-1"] == 0.30 and runs["run-qwen3-coder-30b-a3b-1"] is None
    assert data["cost"]["published_token_gap"] == {"low": 100.0, "high": 200.0}
    assert data["cost"]["gap"] is None


def test_the_measured_cost_gap_beside_the_published_token_gap(tmp_path: Path) -> None:
    rep = report(tmp_path, second=True, runs={"claude-sonnet-4": [("Complete", 0.60, 20_000)],
                                              "gpt-x": [("Complete", 0.15, 30_000)]})
    gap = cost_json(rep)
    assert gap["gap"]["dearest"] == "claude-sonnet-4" and gap["gap"]["cheapest"] == "gpt-x"
    assert gap["gap"]["ratio"] == pytest.approx(4.0)
    note = next(t.note for t in tables(rep) if t.title == "Cost")
    assert ("Cost gap (measured): Claude Sonnet 4 $0.6000 per resolved task, GPT X $0.1500: 4.0×. "
            "Published token gap: 100–200×.") in note


def test_no_price_no_cost_table(tmp_path: Path) -> None:
    rep = report(tmp_path, second=False, runs={"qwen3-coder-30b-a3b": [("Failed", None, 10)]})
    assert "Cost" not in [t.title for t in tables(rep)]
    assert cost_json(rep)["line"] is None
