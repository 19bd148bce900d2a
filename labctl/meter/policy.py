"""When the meter intervenes: the lab's declared nudges and stops, decided from time and the model's
answers alone (pure decisions, tested without a network), applied to every agent alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from labctl.meter.state import MeterState
from labctl.meter.transcript import Dialect, call_signature, inject_user_text
from labctl.spec.interventions import Intervention, Interventions


@dataclass
class Fired:
    rule: Intervention
    detail: dict[str, Any]


class InterventionPolicy:
    """Decides, before each request is forwarded, which declared interventions fire.

    Implemented triggers: `repeated_tool_call` (the model asked for the same call N turns in a
    row, see `call_signature`), `idle` (the agent spent that long between the end of one model
    answer and its next request) and `elapsed` (fires once). `repeated_failure` needs tool results
    read alike for every agent and comes with the full intervention protocol; it never fires yet.
    A stop wins over nudges; after a repeated-call firing the streak starts again.
    """

    def __init__(self, spec: Interventions) -> None:
        self.spec = spec
        self.fired: dict[str, int] = {}
        self.nudges = 0
        self.streak = 0
        self.last_call: str | None = None

    def observe(self, response: dict[str, Any]) -> None:
        """Feed each model answer, so loops are seen as they form."""
        sig = call_signature(response)
        self.streak = self.streak + 1 if sig is not None and sig == self.last_call else (1 if sig else 0)
        self.last_call = sig

    def apply(self, now: float, state: MeterState, rec: dict[str, Any], dialect: Dialect,
              body: dict[str, Any], log: Callable[[dict[str, Any]], None]) -> Intervention | None:
        """Fire what is due for the request `rec` / `body`: count it in the state, log an
        `intervention` record, inject each nudge into `body`. Returns the stop rule, if one fired."""
        for f in self.decide(now, state):
            r = f.rule
            state.interventions[r.name] = state.interventions.get(r.name, 0) + 1
            log({"kind": "intervention", "seq": rec["seq"], "t": now, "name": r.name, "action": r.action,
                 "trigger": r.trigger.model_dump(exclude_none=True), "message": r.message,
                 "detail": f.detail})
            rec["interventions"] = [*(rec.get("interventions") or []), r.name]
            if r.action == "stop":
                state.stops += 1
                state.stop(f"intervention:{r.name}")
                return r
            state.nudges += 1
            inject_user_text(dialect, body, r.message or "")
        return None

    def decide(self, now: float, state: MeterState) -> list[Fired]:
        out: list[Fired] = []
        for rule in self.spec.rules:
            if rule.max is not None and self.fired.get(rule.name, 0) >= rule.max:
                continue
            cap = self.spec.max_nudges
            if rule.action == "nudge" and cap is not None and self.nudges >= cap:
                continue
            detail = self._triggered(rule, now, state)
            if detail is None:
                continue
            self.fired[rule.name] = self.fired.get(rule.name, 0) + 1
            if rule.trigger.repeated_tool_call is not None:
                self.streak = 0
            if rule.action == "stop":
                return [Fired(rule, detail)]
            self.nudges += 1
            out.append(Fired(rule, detail))
        return out

    def _triggered(self, rule: Intervention, now: float, state: MeterState) -> dict[str, Any] | None:
        t = rule.trigger
        if t.repeated_tool_call is not None and self.streak >= t.repeated_tool_call:
            return {"repeats": self.streak, "call": self.last_call}
        if t.idle is not None and state.last_response_time is not None:
            gap = now - state.last_response_time
            if gap >= t.idle:
                return {"idle_s": round(gap, 3)}
        if t.elapsed is not None and not self.fired.get(rule.name) and now - state.started_at >= t.elapsed:
            return {"elapsed_s": round(now - state.started_at, 3)}
        return None
