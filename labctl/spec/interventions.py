"""`interventions:` in lab.yaml: declared nudges and stops, applied by the meter to every agent alike."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from labctl.spec.base import ID, Spec
from labctl.spec.units import Duration


class Trigger(Spec):
    """When an intervention fires; exactly one condition."""

    idle: Duration | None = None
    """No model request for this long."""
    repeated_tool_call: int | None = Field(default=None, ge=2)
    """The same tool call this many times in a row."""
    repeated_failure: int | None = Field(default=None, ge=2)
    """The same command failing with the same error this many times (read from the tool results
    each request carries; other commands between the failures do not reset the count, the command
    passing or failing differently does): `2` fires on the second identical failure."""
    elapsed: Duration | None = None
    """This much wall time has passed."""

    @model_validator(mode="after")
    def _exactly_one(self) -> Trigger:
        if sum(v is not None for v in self.model_dump().values()) != 1:
            raise ValueError("a trigger needs exactly one of: idle, repeated_tool_call, "
                             "repeated_failure, elapsed")
        return self


class Intervention(Spec):
    """A declared nudge or stop, applied by the proxy to every agent alike."""

    name: ID
    """Name shown in the transcript and metrics."""
    action: Literal["nudge", "stop"]
    """nudge: inject `message` as a user message; stop: end the run (after `message`, if any)."""
    trigger: Trigger
    message: str | None = None
    """Text of the nudge."""
    max: int | None = Field(default=None, ge=1)
    """Most times this intervention may fire in one run."""

    @model_validator(mode="after")
    def _nudge_has_message(self) -> Intervention:
        if self.action == "nudge" and not self.message:
            raise ValueError("a nudge needs a message")
        return self


class Interventions(Spec):
    """Declared interventions; `[]` reproduces a zero-hand-holding round."""

    max_nudges: int | None = Field(default=None, ge=0)
    """Most nudges of all kinds in one run."""
    rules: list[Intervention] = []
    operator: bool = True
    """Whether the operator may intervene in a run by hand (`labctl nudge`, `labctl stop`). Every such
    intervention is recorded in the run's transcript and the round's operator.jsonl, and the report
    counts it (Human nudges); `false` makes a round where nobody could have helped any contestant."""
    max_operator: int | None = Field(default=None, ge=0)
    """Most operator interventions (nudges and stops together) in one run; None: no cap."""
