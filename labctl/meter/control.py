"""The operator's control channel into a running meter: `labctl nudge` and `labctl stop`.

Why files and not a port: the meter's HTTP side is the agent's only way out of its container, so any
route on it is reachable by the agent. The channel is a directory, `control/`, inside the meter's own
bind-mounted scratch directory on the host (`RunSession._start_meter`): the host writes
`control/<seq>.json` atomically (a temporary name, then a rename), the meter polls the directory and
takes each file by renaming it to `<seq>.taken`. The agent container mounts no part of that
directory and the meter serves no route that reads or writes it, so the agent cannot reach the channel
by construction, whatever it sends.

The rename settles the race between a meter that takes a command and an operator who gives up
waiting: whoever renames or removes `<seq>.json` first wins (`send` tells which), so an operator log
entry is written exactly when the meter took the command and its transcript records it. A number is
reserved first, `<seq>.seq` created exclusively, so two operators at once never share one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from labctl.meter.state import MeterState
from labctl.meter.transcript import Dialect, inject_user_text

OperatorKind = Literal["nudge", "stop"]
CONTROL_DIR = "control"
"""The channel's directory inside a run's meter directory."""
POLL_S = 0.25
"""How often the meter looks for commands between requests (a stop must reach the runner, which polls
status.json at 0.25 s, even while no request comes)."""
TAKE_TIMEOUT_S = 10.0
"""How long `send` waits for the meter to take a command before withdrawing it."""


class ControlError(RuntimeError):
    """A command the meter did not take (no meter running, or it did not answer in time)."""


@dataclass(frozen=True)
class Command:
    """One operator intervention, as written to `control/<seq>.json` and recorded."""

    seq: int
    kind: OperatorKind
    text: str
    time: float

    def record(self) -> dict[str, Any]:
        """The transcript record (`kind` "operator", `source` "operator": never the contestant)."""
        return {"kind": "operator", "source": "operator", "seq": self.seq, "action": self.kind,
                "text": self.text, "t": self.time}


def _next_seq(d: Path) -> int:
    seen = [int(p.name.split(".")[0]) for p in d.iterdir() if p.name.split(".")[0].isdigit()]
    return max(seen, default=0) + 1


def send(meter_dir: Path, kind: OperatorKind, text: str = "", timeout_s: float = TAKE_TIMEOUT_S) -> Command:
    """Hand the meter in `meter_dir` one command and wait until it took it. Raises ControlError when it
    did not within `timeout_s` (the command is withdrawn: the meter will never see it)."""
    d = meter_dir / CONTROL_DIR
    if not d.is_dir():  # (the run's session made it beside status.json when it started the meter)
        raise ControlError(f"{d} does not exist: the run's meter has no control channel (not running?)")
    while True:  # a number reserved by an exclusive create: two operators at once never share one
        seq = _next_seq(d)
        try:
            os.close(os.open(d / f"{seq}.seq", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            break
        except FileExistsError:
            continue
    cmd = Command(seq, kind, text, time.time())
    final = d / f"{cmd.seq}.json"
    tmp = d / f".{cmd.seq}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"seq": cmd.seq, "kind": kind, "text": text, "time": cmd.time}))
    os.replace(tmp, final)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not final.exists():
            return cmd
        time.sleep(0.05)
    try:
        final.unlink()  # withdrawn before the meter took it
    except FileNotFoundError:
        return cmd  # the meter took it just now
    raise ControlError(f"the meter did not take the {kind} within {timeout_s:.0f} s (has the run ended?)")


class ControlReader:
    """The meter's side: takes the commands waiting in its control directory, oldest first, records
    each in the transcript at once (so the record exists exactly when `send` reports it taken), stops
    the run on a stop and keeps nudges for the next forwarded request."""

    def __init__(self, control_dir: Path, state: MeterState, log: Callable[[dict[str, Any]], None],
                 publish: Callable[..., None]) -> None:
        self.dir, self.state, self.log, self.publish = control_dir, state, log, publish
        self.pending: list[Command] = []
        """Nudges taken but not yet injected (they go into the next forwarded request)."""

    def take(self) -> list[Command]:
        """Commands newly written; each is renamed `<seq>.taken` so it is taken once."""
        out: list[Command] = []
        with contextlib.suppress(OSError):
            names = sorted((p for p in self.dir.iterdir() if p.suffix == ".json" and p.stem.isdigit()),
                           key=lambda p: int(p.stem))
            for p in names:
                taken = p.with_suffix(".taken")
                try:
                    os.rename(p, taken)
                except OSError:
                    continue  # withdrawn by the operator meanwhile
                try:
                    data = json.loads(taken.read_text(encoding="utf-8"))
                    kind: OperatorKind = "stop" if data["kind"] == "stop" else "nudge"
                    if data["kind"] not in ("nudge", "stop"):
                        continue  # not a command: nothing is recorded for it
                    out.append(Command(int(p.stem), kind, str(data.get("text") or ""), float(data["time"])))
                except (OSError, ValueError, TypeError, KeyError):
                    continue
        return out

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Poll every POLL_S on the meter's loop, for as long as it runs."""
        self.poll()
        loop.call_later(POLL_S, self.start, loop)

    def poll(self) -> None:
        """Take what is waiting: record each command, stop on a stop, and publish the state at once
        (the runner stops the agent when status.json says stopped)."""
        taken = self.take()
        for cmd in taken:
            self.log(cmd.record())
            if cmd.kind == "stop":
                self.state.operator_stops += 1
                self.state.stop("operator")
            else:
                self.state.operator_nudges += 1
                self.pending.append(cmd)
        if taken:
            self.publish(now=True)

    def inject(self, rec: dict[str, Any], dialect: Dialect, body: dict[str, Any]) -> None:
        """The nudges taken since the last forwarded request, as user text in this one (the way
        declared nudges are: `inject_user_text`), named `operator:<seq>` in the record."""
        for cmd in self.pending:
            inject_user_text(dialect, body, cmd.text)
            rec["interventions"] = [*(rec.get("interventions") or []), f"operator:{cmd.seq}"]
        self.pending = []


__all__ = ["CONTROL_DIR", "POLL_S", "Command", "ControlError", "ControlReader", "OperatorKind", "send"]
