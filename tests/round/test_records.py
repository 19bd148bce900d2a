"""The one "a check passed" rule (`labctl.round.records.check_passed`): the grader (metrics.json's
checks_passed and its Build / Screenshot columns), `labctl verify` (`derive_outcome`, the control
runs' failing checks) and the report (checks passed, the failed checks a run's story lists) read the
same reward.json the same way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from labctl.report.data import RunData, _run_metrics
from labctl.report.why import story
from labctl.round.controls import _checks
from labctl.round.grading import check_passed, derive_outcome, read_reward
from labctl.round.layout import RunResult, run_dir
from labctl.round.records import RunMetrics, read_metrics, write_metrics
from labctl.run.grade import _check, checks_summary
from labctl.spec.task import OutcomeRules

CHECKS: dict[str, Any] = {"one_float": 1.0, "half": 0.5, "two": 2, "true": True, "string_one": "1",
                          "false": False, "zero": 0, "string_true": "true"}
PASS = {"one_float", "two", "true"}
"""A number ≥ 1 or JSON true; a fraction, zero, false and any string fail."""


@pytest.mark.parametrize("value, want", [(True, True), (1, True), (1.0, True), (2, True), (1.5, True),
                                         (False, False), (0, False), (0.5, False), (0.999, False),
                                         (-1, False), ("1", False), ("true", False), (None, False),
                                         ([1], False), ({"passed": True}, False)])
def test_check_passed(value: object, want: bool) -> None:
    assert check_passed(value) is want


@pytest.mark.parametrize("form", ["checks", "flat"])
def test_grade_verify_and_report_agree_on_one_reward(tmp_path: Path, form: str) -> None:
    """Harbor's flat form (numbers and booleans beside `reward`) and labctl's `checks` object."""
    checks = CHECKS if form == "checks" else {k: v for k, v in CHECKS.items() if not isinstance(v, str)}
    reward_doc = {"reward": 0, "checks": checks} if form == "checks" else {"reward": 0, **checks}
    rid = "run-1"
    vdir = run_dir(tmp_path, rid) / "verifier"
    vdir.mkdir(parents=True)
    (vdir / "reward.json").write_text(json.dumps(reward_doc))
    reward, _ = read_reward(run_dir(tmp_path, rid))
    want_pass = {k for k in checks if k in PASS}

    # grade: checks_passed / checks_total, and each check as a column
    assert checks_summary(reward) == (len(want_pass), len(checks))
    assert {k for k in checks if _check(reward, k)} == want_pass
    assert all(_check(reward, k) is False for k in set(checks) - want_pass)
    # verify: a check alone as the Complete rule grades Complete exactly when it passed
    for name in checks:
        got = derive_outcome(reward, RunMetrics(), OutcomeRules(complete=[name]))
        assert got == ("Complete" if name in want_pass else "Failed"), name
    # verify's controls: an oracle's failing checks are the rest
    assert _checks(tmp_path, rid, "oracle") == sorted(set(checks) - want_pass)
    assert _checks(tmp_path, rid, "nop") == sorted(want_pass)
    # report: checks passed, and the failed checks of the run's story
    gathered = _run_metrics(tmp_path, rid)
    assert (gathered.checks_passed, gathered.checks_total) == (len(want_pass), len(checks))
    told = story(RunData(rid, "c", 1, RunResult(run_id=rid, status="done"), gathered), "c")
    assert {c for c, _ in told.failed} == set(checks) - want_pass


def test_metrics_file_round_trips_and_old_files_read(tmp_path: Path) -> None:
    """What the runner writes reads back the same; figures it never measured stay absent (not 0:
    `tool_calls == 0` would grade Total failure); a file with unknown or missing keys reads."""
    path = tmp_path / "metrics.json"
    m = RunMetrics(wall_time_s=3.5, commits_pushed=None, checks_passed=2, checks_total=3)
    write_metrics(path, m)
    on_disk = json.loads(path.read_text())
    assert on_disk == {"wall_time_s": 3.5, "commits_pushed": None, "checks_passed": 2, "checks_total": 3}
    back = read_metrics(path)
    assert back == m and back is not None and back.tool_calls is None
    assert derive_outcome(1.0, back, None) == "Complete"  # no tool_calls: a control, never Total failure
    path.write_text(json.dumps({"tool_calls": 0, "some_future_figure": [1]}))
    old = read_metrics(path)
    assert old is not None and old.tool_calls == 0 and derive_outcome(1.0, old, None) == "Total failure"
    assert read_metrics(tmp_path / "absent.json") is None
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a JSON object"):
        read_metrics(path)
    path.write_text(json.dumps({"tool_calls": "many"}))
    with pytest.raises(ValueError):
        read_metrics(path)
