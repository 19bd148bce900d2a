"""Partial token figures in the report: a run whose figure is a lower bound (a call cut mid-stream
that no server counter covered) reads `≥ N` in the tables and on the chart, and one that counted
nothing reads `unknown (cut)` — never 0 — while `labctl verify` still passes on the round."""

from __future__ import annotations

import json
from pathlib import Path

from labctl.report.charts import chart_figure
from labctl.report.data import load_report
from labctl.report.tables import PARTIAL_NOTE
from labctl.round.layout import run_dir
from labctl.round.seal import load_envelope
from tests.report.test_report import NAMES, cli, make_round, table
from tests.round.test_seal import LOCAL, envelopes  # noqa: F401


def _mark_local(rd: Path, **figures: object) -> None:
    for rid, slot in load_envelope(rd.name).mapping.items():
        if slot.contestant == LOCAL:
            path = run_dir(rd, rid) / "metrics.json"
            path.write_text(json.dumps({**json.loads(path.read_text()), **figures}) + "\n")


def test_a_lower_bound_reads_as_one(tmp_path: Path, envelopes: Path) -> None:  # noqa: F811
    rd = make_round(tmp_path)
    _mark_local(rd, total_tokens=9822, tokens_partial=True, tokens_source="meter", partial_calls=1)
    code, _, stderr = cli("report", rd)
    assert code == 0, stderr
    md = (rd / "report.md").read_text()
    t = NAMES[LOCAL]
    assert table(md, "Results")[t][1] == "≥ 9,822"
    assert table(md, "Token efficiency")[t][0] == "≥ 9,822"
    assert table(md, "The Numbers")[t][2] == "≥ 9,822"
    assert PARTIAL_NOTE in md
    chart = chart_figure(load_report(rd))
    assert " ≥ 9,822" in [x.get_text() for x in chart.axes[0].texts]
    assert cli("verify", rd)[0] == 0


def test_a_partial_zero_is_unknown_not_zero(tmp_path: Path, envelopes: Path) -> None:  # noqa: F811
    rd = make_round(tmp_path)
    _mark_local(rd, total_tokens=0, tokens_partial=True, tokens_source="meter", partial_calls=1)
    assert cli("report", rd)[0] == 0
    md = (rd / "report.md").read_text()
    assert table(md, "Results")[NAMES[LOCAL]][1] == "unknown (cut)"
    assert " unknown (cut)" in [x.get_text() for x in chart_figure(load_report(rd)).axes[0].texts]


def test_whole_figures_carry_no_mark(tmp_path: Path, envelopes: Path) -> None:  # noqa: F811
    rd = make_round(tmp_path)
    _mark_local(rd, total_tokens=9822, tokens_partial=False, tokens_source="server")
    assert cli("report", rd)[0] == 0
    md = (rd / "report.md").read_text()
    assert table(md, "Results")[NAMES[LOCAL]][1] == "9,822" and "≥" not in md
