"""The run path's timing spans: JSON lines with $LABCTL_TIMINGS, nothing without it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labctl.engine import timings


class Run:
    run_id = "run-07"

    @timings.timed("phase")
    def phase(self, x: int) -> int:
        return x + 1


def test_spans_append_json_lines(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    monkeypatch.setenv(timings.ENV, str(out))
    with timings.span("outer"):
        assert Run().phase(1) == 2
    with pytest.raises(RuntimeError), timings.span("failed", "run-01"):
        raise RuntimeError("still timed")
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert [(ln["span"], ln["run"]) for ln in lines] == [("phase", "run-07"), ("outer", None),
                                                          ("failed", "run-01")]
    assert all(ln["s"] >= 0 for ln in lines)


def test_without_the_variable_nothing_is_written(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(timings.ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with timings.span("x"):
        assert Run().phase(0) == 1
    assert list(tmp_path.iterdir()) == []
    started = timings.since_process_start()
    assert started is None or started >= 0
