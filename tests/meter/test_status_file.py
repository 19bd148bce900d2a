"""status.json: what the meter publishes (`Recorder.publish`) is what a runner reads back
(`read_status`), typed; a file from an older meter, lacking newer fields, still reads."""

from __future__ import annotations

import json
from pathlib import Path

from labctl.meter.recorder import Recorder
from labctl.meter.state import MeterState, read_status


def test_published_status_reads_back(tmp_path: Path) -> None:
    status = tmp_path / "status.json"
    rec = Recorder(tmp_path / "transcript.jsonl", status, alias="run-1")
    try:
        state = MeterState(alias="run-1", dialect="openai", started_at=1.0, token_budget=10)
        usage = {"prompt_tokens": 8, "completion_tokens": 4, "cached_tokens": 0, "total_tokens": 12}
        state.add_usage(usage, 2)
        state.add_error("upstream 502")
        rec.publish(state)
        rec.drain()
    finally:
        rec.close()
    got = read_status(status)
    assert got == state
    assert got is not None and got.stopped and got.stopped_reason == "token_budget" and got.tool_calls == 2
    assert got.errored and got.last_error == "upstream 502"


def test_missing_or_old_status(tmp_path: Path) -> None:
    assert read_status(tmp_path / "none.json") is None
    old = tmp_path / "status.json"
    old.write_text(json.dumps({"alias": "run-1", "dialect": "openai", "started_at": 0, "tool_calls": 3}))
    got = read_status(old)
    assert got is not None and got.tool_calls == 3 and got.stopped is False and got.interventions == {}
    old.write_text("{")
    assert read_status(old) is None
