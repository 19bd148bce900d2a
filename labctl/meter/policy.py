"""When the meter intervenes: the lab's declared nudges and stops, decided from time and the model's
answers alone (pure decisions, tested without a network), applied to every agent alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from labctl.meter.actions import FailureTally, actions, error_excerpt, last_step
from labctl.meter.state import MeterState
from labctl.meter.transcript import Dialect, call_signature, inject_user_text
from labctl.meter.wire_responses import request_turns
from labctl.spec.interventions import Intervention, Interventions


@dataclass
class Fired:
    rule: Intervention
    detail: dict[str, Any]


class InterventionPolicy:
    """Decides, before each request is forwarded, which declared interventions fire.

    Triggers: `repeated_tool_call` (the model asked for the same call N turns in a row, see
    `call_signature`), `repeated_failure` (the request carries the N-th failure of one command with
    one and the same error: the observations of the previous answer's actions, read from the
    request's own turns, `labctl.meter.actions`; other commands between them do not reset the count,
    the command passing or failing differently does), `idle` (the agent spent that long between the
    end of one model answer and its next request) and `elapsed` (fires once). A stop wins over
    nudges; after a repeated-call firing the streak starts again; a repeated failure fires on each
    request that brings the N-th or a later identical failure (up to the rule's `max`).
    """

    def __init__(self, spec: Interventions) -> None:
        self.spec = spec
        self.fired: dict[str, int] = {}
        self.nudges = 0
        self.streak = 0
        self.last_call: str | None = None
        self.failures = FailureTally()
        self.failure: dict[str, Any] | None = None
        """The identical failure the current request brought (count, command, error), if any."""
        self._step_seen: tuple[int, str] | None = None
        self._reads_results = any(r.trigger.repeated_failure is not None for r in spec.rules)

    def observe(self, response: dict[str, Any], request: dict[str, Any] | None = None) -> None:
        """Feed each model answer (with the request it answers), so loops are seen as they form."""
        sig = call_signature(response, request)
        self.streak = self.streak + 1 if sig is not None and sig == self.last_call else (1 if sig else 0)
        self.last_call = sig

    def apply(self, now: float, state: MeterState, rec: dict[str, Any], dialect: Dialect,
              body: dict[str, Any], log: Callable[[dict[str, Any]], None]) -> Intervention | None:
        """Fire what is due for the request `rec` / `body`: count it in the state, log an
        `intervention` record, inject each nudge into `body`. Returns the stop rule, if one fired."""
        if self._reads_results:
            self.read_results(body)
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

    def read_results(self, body: dict[str, Any]) -> None:
        """Count the failures the request reports for the previous answer's actions. A request that
        repeats a step already counted (a retry, a side request on the same conversation) counts
        nothing again."""
        self.failure = None
        turn, results = last_step(body)
        if turn is None or not results:
            return
        acts = actions(body, turn)
        step = (len(request_turns(body) or []), "\n".join(a.key for a in acts))
        if step == self._step_seen:
            return
        self._step_seen = step
        for a, r in zip(acts, results, strict=False):
            n = self.failures.add(a, r)
            if n and (self.failure is None or n > self.failure["repeats"]):
                self.failure = {"repeats": n, "command": a.command or a.key, "error": error_excerpt(r)}

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
        if t.repeated_failure is not None and self.failure and self.failure["repeats"] >= t.repeated_failure:
            return dict(self.failure)
        if t.idle is not None and state.last_response_time is not None:
            gap = now - state.last_response_time
            if gap >= t.idle:
                return {"idle_s": round(gap, 3)}
        if t.elapsed is not None and not self.fired.get(rule.name) and now - state.started_at >= t.elapsed:
            return {"elapsed_s": round(now - state.started_at, 3)}
        return None
