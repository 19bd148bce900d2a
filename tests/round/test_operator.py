"""A round in flight on disk, without docker: `labctl watch --once --json` over a live run (its meter
files where live.json says), operator interventions through a real meter on loopback
(`labctl.round.operator.intervene`), verify holding operator.jsonl and the transcripts together, the
lab's cap and its refusal of operator interventions."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from labctl.meter.server import MeterHandle, meter_in_thread
from labctl.meter.state import MeterConfig, MeterState
from labctl.round.layout import LAB_FILE, RunResult, read_sealed, run_dir, write_result
from labctl.round.operator import (
    OPERATOR_FILE,
    OperatorError,
    clear_live,
    intervene,
    live_meter,
    read_operator,
    write_live,
)
from labctl.round.seal import seal_round
from labctl.round.verify import verify_round
from labctl.spec.load import load_lab
from tests.fake_upstream import serve_fake
from tests.helpers import run_cli as cli
from tests.meter.test_meter import chat_body, post
from tests.round.test_seal import IDS, envelopes, make_lab  # noqa: F401


@pytest.fixture
def sealed(tmp_path: Path, envelopes: Path) -> Path:  # noqa: F811
    from labctl.lock.resolve import require_lock

    loaded = load_lab(make_lab(tmp_path / "lab"))
    return seal_round(loaded, require_lock(loaded), tmp_path / "rounds").round_dir


def _live_files(meter: Path, rid: str) -> None:
    """What a run's meter has written a few calls in: status.json and transcript.jsonl."""
    meter.mkdir(parents=True)
    state = MeterState(alias=rid, dialect="openai", started_at=1000.0, requests=2, forwarded=2, tool_calls=1,
                       prompt_tokens=900, completion_tokens=100, total_tokens=1000, interventions={"wake": 1})
    (meter / "status.json").write_text(state.model_dump_json())
    call = {"id": "c1", "name": "bash", "arguments": json.dumps({"command": "pytest -q tests/"})}
    recs = [{"kind": "exchange", "seq": 1, "request": {"messages": [{"role": "user", "content": "go"}]},
             "response": {"content": "Let me look around.\nFirst the tests.", "tool_calls": [call]},
             "usage": {"total_tokens": 1000}, "timings": {"predicted_n": 50, "predicted_ms": 1000.0}}]
    (meter / "transcript.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_watch_once_json_shows_a_live_run_by_its_id_only(sealed: Path, tmp_path: Path) -> None:
    order = read_sealed(sealed).order
    live, done = order[0], order[1]
    meter = tmp_path / "work" / sealed.name / live / "meter"
    _live_files(meter, live)
    run_dir(sealed, live).mkdir(parents=True)
    write_live(run_dir(sealed, live), meter)
    write_result(sealed, RunResult(run_id=live, status="running", attempts=1))
    write_result(sealed, RunResult(run_id=done, status="done", attempts=1))
    code, stdout, stderr = cli("watch", sealed, "--once", "--json")
    assert code == 0, stderr
    snap = json.loads(stdout)
    rows = {r["run_id"]: r for r in snap["runs"]}
    assert list(rows) == order
    row = rows[live]
    assert row["status"] == "running" and row["tokens"] == 1000 and row["tool_calls"] == 1
    assert row["tokens_per_s"] == 50.0 and row["last_command"] == "pytest -q tests/"
    assert row["answer_tail"] == ["Let me look around.", "First the tests."] and "wake ×1" in row["flags"]
    assert rows[done]["status"] == "done"
    assert {rows[r]["status"] for r in order[2:]} == {"pending"}
    assert not any(cid in stdout for cid in IDS.values())  # blind: run ids only
    code, text, _ = cli("watch", sealed, "--once")
    assert code == 0 and live in text and "running" in text and "pytest -q tests/" in text
    clear_live(run_dir(sealed, live))
    assert live_meter(run_dir(sealed, live)) is None


@pytest.fixture
def live_run(sealed: Path, tmp_path: Path) -> Iterator[tuple[str, Path, MeterHandle]]:
    """The round's first run in flight: a real meter on loopback with its control directory."""
    rid = read_sealed(sealed).order[0]
    meter = tmp_path / "work" / rid / "meter"
    (meter / "control").mkdir(parents=True)
    run_dir(sealed, rid).mkdir(parents=True)
    write_live(run_dir(sealed, rid), meter)
    with serve_fake() as fake:
        cfg = MeterConfig(upstream=fake.url, dialect="openai", transcript=meter / "transcript.jsonl",
                          alias=rid, control_dir=meter / "control")
        with meter_in_thread(cfg) as handle:
            yield rid, meter, handle


def _collect(sealed: Path, rid: str, meter: Path, handle: MeterHandle) -> None:
    """What the session does at the end of a run: the transcript into the run directory."""
    handle.drain()
    shutil.copyfile(meter / "transcript.jsonl", run_dir(sealed, rid) / "transcript.jsonl")


def _operator_problems(round_dir: Path) -> list[str]:
    return [p.what for p in verify_round(round_dir).problems if "operator" in p.what]


def test_nudge_and_stop_are_logged_and_verify_holds_log_and_transcript_together(
        sealed: Path, live_run: tuple[str, Path, MeterHandle]) -> None:
    rid, meter, handle = live_run
    code, stdout, stderr = cli("nudge", sealed, rid, "Read the failing test first.", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["seq"] == 1
    assert post(handle.url, "openai", chat_body("openai")).status_code == 200
    code, _, stderr = cli("stop", sealed, rid)
    assert code == 0, stderr
    assert handle.state.stopped_reason == "operator"
    assert post(handle.url, "openai", chat_body("openai")).status_code == 429
    log = read_operator(sealed)
    assert [(r.run_id, r.seq, r.kind, r.text, r.source) for r in log] == [
        (rid, 1, "nudge", "Read the failing test first.", "operator"), (rid, 2, "stop", "", "operator")]
    _collect(sealed, rid, meter, handle)
    assert _operator_problems(sealed) == []

    transcript = run_dir(sealed, rid) / "transcript.jsonl"
    kept = transcript.read_text()
    transcript.write_text("".join(ln + "\n" for ln in kept.splitlines() if '"action": "stop"' not in ln))
    assert _operator_problems(sealed) == [
        "operator stop #2 is in operator.jsonl but not in the run's transcript"]
    transcript.write_text(kept)

    lines = (sealed / OPERATOR_FILE).read_text().splitlines()
    (sealed / OPERATOR_FILE).write_text(lines[1] + "\n")  # the nudge taken out of the log
    assert _operator_problems(sealed) == [f"operator nudge #1 of {rid} is in its transcript but not in "
                                          "operator.jsonl"]


def _edit_lab(round_dir: Path, extra: str) -> None:
    lab = round_dir / LAB_FILE
    lab.write_text(lab.read_text().replace("interventions:\n", f"interventions:\n  {extra}\n", 1))


def test_the_lab_caps_operator_interventions(sealed: Path, live_run: tuple[str, Path, MeterHandle]) -> None:
    rid, _, handle = live_run
    _edit_lab(sealed, "max_operator: 1")
    intervene(sealed, rid, "nudge", "one")
    with pytest.raises(OperatorError, match=r"cap \(interventions.max_operator\) is 1"):
        intervene(sealed, rid, "stop")
    code, _, stderr = cli("stop", sealed, rid)
    assert code == 1 and "max_operator" in stderr
    assert not handle.state.stopped and len(read_operator(sealed)) == 1


def test_a_lab_that_disallows_operator_interventions_refuses_them(
        sealed: Path, live_run: tuple[str, Path, MeterHandle]) -> None:
    rid, meter, handle = live_run
    _edit_lab(sealed, "operator: false")
    code, _, stderr = cli("nudge", sealed, rid, "psst")
    assert code == 1 and "does not allow operator interventions (interventions.operator: false)" in stderr
    assert not (sealed / OPERATOR_FILE).exists() and list((meter / "control").iterdir()) == []
    assert handle.state.operator_nudges == 0


def test_refused_for_a_run_not_in_flight_or_not_in_the_round(sealed: Path) -> None:
    rid = read_sealed(sealed).order[0]
    with pytest.raises(OperatorError, match="not in flight"):
        intervene(sealed, rid, "stop")
    with pytest.raises(OperatorError, match="is not a run of round"):
        intervene(sealed, "run-99", "stop")
    with pytest.raises(OperatorError, match="needs its text"):
        intervene(sealed, rid, "nudge", " ")
