"""A round's operator: where a run in flight keeps its live meter files, the operator's hand-made
interventions (`labctl nudge`, `labctl stop`) and their log, and the check that the log and the
transcripts agree.

Why here: the run path writes the live pointer, the CLI the interventions, and verify and the report
read them back; all of them sit above `labctl.round`, and the files are part of the round.

* `runs/<id>/live.json` names the run's meter directory while the run is in flight (its scratch under
  LABCTL_WORK_DIR, which the round directory does not otherwise name). The session writes it when the
  meter starts and removes it when the run ends. It names a path made of the round and run ids only.
* `operator.jsonl` (round directory) lists every operator intervention the meter took: run id, time,
  kind, text, `source: operator`. The meter records the same command in the run's transcript (a record
  of `kind` "operator"), so a human's help can be neither hidden nor invented afterwards: verify
  checks the two against each other.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from labctl.errors import LabctlError
from labctl.meter import control
from labctl.meter.readback import transcript_records
from labctl.round.layout import RUNS_DIR, Record, read_jsonl, read_sealed, run_dir, transcript_path
from labctl.round.opened import read_round_lab

LIVE_FILE = "live.json"
OPERATOR_FILE = "operator.jsonl"


class OperatorError(LabctlError, RuntimeError):
    """An operator intervention refused: not allowed by the lab, over its cap, no such run, not live."""


class OperatorRecord(Record):
    """One line of operator.jsonl."""

    run_id: str
    seq: int
    """The command's number in the run's control channel (the transcript record's `seq`)."""
    time: float
    """When the operator sent it (Unix time)."""
    kind: Literal["nudge", "stop"]
    text: str = ""
    source: Literal["operator"] = "operator"
    """Always the operator: never the contestant, never a declared rule."""


# --- the live pointer ------------------------------------------------------------------------------


def write_live(run: Path, meter_dir: Path) -> None:
    """Say where the run's live meter files are (atomically: a watcher never reads half a file)."""
    tmp = run / f".{LIVE_FILE}.tmp"
    tmp.write_text(json.dumps({"meter": str(meter_dir.resolve())}), encoding="utf-8")
    os.replace(tmp, run / LIVE_FILE)


def clear_live(run: Path) -> None:
    with contextlib.suppress(OSError):
        (run / LIVE_FILE).unlink()


def live_meter(run: Path) -> Path | None:
    """The meter directory of a run in flight; None when the run is not live (or left no pointer)."""
    try:
        data = json.loads((run / LIVE_FILE).read_text(encoding="utf-8"))
        return Path(data["meter"]) if isinstance(data, dict) and isinstance(data.get("meter"), str) else None
    except (OSError, ValueError):
        return None


# --- the operator log ------------------------------------------------------------------------------


def read_operator(round_dir: Path) -> list[OperatorRecord]:
    """operator.jsonl's records (none when there is no file); ValueError names a line that is not one."""
    path = round_dir / OPERATOR_FILE
    return read_jsonl(OperatorRecord, path) if path.is_file() else []


def _append(round_dir: Path, rec: OperatorRecord) -> None:
    with open(round_dir / OPERATOR_FILE, "a", encoding="utf-8") as f:
        f.write(rec.model_dump_json() + "\n")
        f.flush()
        os.fsync(f.fileno())


def intervene(round_dir: Path, run_id: str, kind: control.OperatorKind, text: str = "",
              timeout_s: float = control.TAKE_TIMEOUT_S) -> OperatorRecord:
    """Send one operator intervention to a run in flight and log it. Refused (OperatorError) when the
    round's lab disallows operator interventions or the run reached `max_operator`, when the run is no
    run of the round or not in flight, or when its meter did not take it."""
    sealed = read_sealed(round_dir)
    if run_id not in sealed.run_ids:
        raise OperatorError(f"{run_id} is not a run of round {sealed.round}")
    if kind == "nudge" and not text.strip():
        raise OperatorError("a nudge needs its text")
    rules = read_round_lab(round_dir).interventions
    if not rules.operator:
        raise OperatorError(f"round {sealed.round}'s lab does not allow operator interventions "
                            "(interventions.operator: false)")
    done = sum(r.run_id == run_id for r in read_operator(round_dir))
    if rules.max_operator is not None and done >= rules.max_operator:
        raise OperatorError(f"{run_id} already had {done} operator intervention(s): the lab's cap "
                            f"(interventions.max_operator) is {rules.max_operator}")
    meter = live_meter(run_dir(round_dir, run_id))
    if meter is None:
        raise OperatorError(f"{run_id} is not in flight (no {LIVE_FILE}): nothing to {kind}")
    try:
        cmd = control.send(meter, kind, text, timeout_s=timeout_s)
    except control.ControlError as e:
        raise OperatorError(f"{run_id}: {e}") from None
    rec = OperatorRecord(run_id=run_id, seq=cmd.seq, time=cmd.time, kind=kind, text=text)
    _append(round_dir, rec)
    return rec


# --- verify ----------------------------------------------------------------------------------------


def _key(run_id: str, seq: Any, kind: Any, text: Any, t: Any) -> tuple[str, int, str, str, float]:
    return run_id, int(seq), str(kind), str(text or ""), round(float(t), 3)


def _transcript_keys(round_dir: Path, run_ids: Iterable[str]) -> set[tuple[str, int, str, str, float]]:
    out = set()
    for rid in run_ids:
        for r in transcript_records(transcript_path(round_dir, rid)):
            if r.get("kind") == "operator":
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    out.add(_key(rid, r["seq"], r["action"], r.get("text"), r["t"]))
    return out


def operator_problems(round_dir: Path) -> list[tuple[str, str, str | None]]:
    """(relpath, what, run id) for every operator intervention that one of the two records holds and
    the other does not: the round's operator.jsonl and the runs' transcripts must list the same."""
    try:
        log = read_operator(round_dir)
    except (OSError, ValueError) as e:
        return [(OPERATOR_FILE, f"not an operator log: {e}", None)]
    logged = {_key(r.run_id, r.seq, r.kind, r.text, r.time) for r in log}
    runs = {p.name for p in (round_dir / RUNS_DIR).glob("*") if p.is_dir()} | {r.run_id for r in log}
    recorded = _transcript_keys(round_dir, sorted(runs))
    out: list[tuple[str, str, str | None]] = []
    for rid, seq, kind, _, _ in sorted(logged - recorded):
        out.append((f"{RUNS_DIR}/{rid}/transcript.jsonl",
                    f"operator {kind} #{seq} is in {OPERATOR_FILE} but not in the run's transcript", rid))
    for rid, seq, kind, _, _ in sorted(recorded - logged):
        out.append((OPERATOR_FILE, f"operator {kind} #{seq} of {rid} is in its transcript but not in "
                                   f"{OPERATOR_FILE}", rid))
    return out


def operator_counts(round_dir: Path, run_id: str) -> tuple[int, int]:
    """(nudges, stops) the operator gave one run, from its transcript (what the meter took)."""
    recs = [r for r in transcript_records(transcript_path(round_dir, run_id)) if r.get("kind") == "operator"]
    return sum(r.get("action") == "nudge" for r in recs), sum(r.get("action") == "stop" for r in recs)


__all__ = ["LIVE_FILE", "OPERATOR_FILE", "OperatorError", "OperatorRecord", "clear_live", "intervene",
           "live_meter", "operator_counts", "operator_problems", "read_operator", "write_live"]
