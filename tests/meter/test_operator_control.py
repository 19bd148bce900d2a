"""The operator's control channel (labctl/meter/control.py) against a real meter on loopback: a nudge
reaches the model's next request and is recorded as the operator's, a stop stops the meter and the
next call is refused, and a command no meter takes is withdrawn."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from labctl.meter import control
from labctl.meter.state import read_status
from labctl.round.operator import operator_counts
from tests.fake_upstream import serve_fake
from tests.helpers import meter_records as records
from tests.meter.test_meter import chat_body, metered, post

NUDGE = "Operator here: run the tests before you finish."


def _control(tmp_path: Path) -> Path:
    (tmp_path / control.CONTROL_DIR).mkdir()
    return tmp_path / control.CONTROL_DIR


def _user_texts(body: dict[str, object]) -> str:
    return str(body.get("messages"))


def test_nudge_reaches_the_next_request_and_is_recorded(tmp_path: Path) -> None:
    with serve_fake() as fake, metered(tmp_path, fake, control_dir=_control(tmp_path)) as meter:
        assert post(meter.url, "openai", chat_body("openai")).status_code == 200
        assert NUDGE not in _user_texts(fake.received[-1].body)
        cmd = control.send(tmp_path, "nudge", NUDGE)  # returns once the meter took it
        assert cmd.seq == 1 and meter.state.operator_nudges == 1 and not meter.state.stopped
        assert post(meter.url, "openai", chat_body("openai")).status_code == 200
        assert NUDGE in _user_texts(fake.received[-1].body)  # the model saw it
        assert post(meter.url, "openai", chat_body("openai")).status_code == 200
        assert NUDGE not in _user_texts(fake.received[-1].body)  # once only
        meter.drain()
    ops = records(tmp_path, 3, kind="operator")
    assert ops == [{"kind": "operator", "source": "operator", "seq": 1, "action": "nudge", "text": NUDGE,
                    "t": cmd.time}]
    exchanges = records(tmp_path, 3)
    assert [e["interventions"] for e in exchanges] == [None, ["operator:1"], None]
    assert NUDGE in str(exchanges[1]["request"])  # the transcript keeps the request as forwarded
    assert (tmp_path / "control" / "1.taken").is_file() and not (tmp_path / "control" / "1.json").exists()


def test_stop_stops_the_meter_and_refuses_the_next_call(tmp_path: Path) -> None:
    with serve_fake() as fake, metered(tmp_path, fake, control_dir=_control(tmp_path)) as meter:
        assert post(meter.url, "openai", chat_body("openai")).status_code == 200
        control.send(tmp_path, "stop")
        assert meter.state.stopped and meter.state.stopped_reason == "operator"
        deadline = time.monotonic() + 5  # published at once, without waiting for a request
        while not ((s := read_status(tmp_path / "status.json")) and s.stopped) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert s is not None and s.stopped_reason == "operator" and s.operator_stops == 1
        seen = len(fake.received)
        r = post(meter.url, "openai", chat_body("openai"))
        assert r.status_code == 429 and "stopped (operator)" in r.text
        assert len(fake.received) == seen  # nothing more reached the model
        meter.drain()
    assert [r["action"] for r in records(tmp_path, 2, kind="operator")] == ["stop"]


def test_a_command_no_meter_takes_is_withdrawn(tmp_path: Path) -> None:
    _control(tmp_path)
    with pytest.raises(control.ControlError, match="did not take"):
        control.send(tmp_path, "nudge", NUDGE, timeout_s=0.3)
    assert [p.name for p in (tmp_path / "control").iterdir()] == ["1.seq"]  # a later meter never sees it
    with pytest.raises(control.ControlError, match="no control channel"):
        control.send(tmp_path / "elsewhere", "stop")


def test_without_a_control_dir_the_meter_takes_nothing(tmp_path: Path) -> None:
    d = _control(tmp_path)
    with serve_fake() as fake, metered(tmp_path, fake) as meter:  # control_dir not configured
        with pytest.raises(control.ControlError):
            control.send(tmp_path, "stop", timeout_s=0.6)
        assert not meter.state.stopped
    assert [p.name for p in d.iterdir()] == ["1.seq"]


def test_operator_counts_read_the_transcript(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "run-01"
    run.mkdir(parents=True)
    recs = [control.Command(i, k, "t", 1.0).record() for i, k in ((1, "nudge"), (2, "nudge"), (3, "stop"))]
    (run / "transcript.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert operator_counts(tmp_path, "run-01") == (2, 1)


def test_operators_at_once_get_distinct_numbers(tmp_path: Path) -> None:
    """Commands sent side by side are each taken once, under numbers of their own."""
    from concurrent.futures import ThreadPoolExecutor

    with serve_fake() as fake, metered(tmp_path, fake, control_dir=_control(tmp_path)) as meter:
        with ThreadPoolExecutor(4) as pool:
            cmds = list(pool.map(lambda i: control.send(tmp_path, "nudge", f"n{i}"), range(6)))
        assert sorted(c.seq for c in cmds) == [1, 2, 3, 4, 5, 6] and meter.state.operator_nudges == 6
        assert post(meter.url, "openai", chat_body("openai")).status_code == 200
        assert all(f"n{i}" in _user_texts(fake.received[-1].body) for i in range(6))
