"""What a published round says, as data: each contestant's figures (`Published`, a contestant's
`published:` block) and the round's setup and headline (`PublishedSetup`, `TokenGap`, under `lab:`).

labctl measures none of this; the report puts it beside what it measured, cell by cell. Facts, not
prose: the article's "3rd try" is `build: {passed: true, attempt: 3}`, its "0/7" is
`build: {passed: false, attempts: 7}`, its "2 + stop" is `nudges: 2, human_stop: true`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from labctl.spec.units import Count, Duration

Outcome = Literal["Complete", "Partial", "Failed", "Total failure"]


class _Fact(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)


class BuildResult(_Fact):
    """Did `npm run build` (or the task's build) pass, and on which attempt."""

    passed: bool
    """True when the build passed at some point."""
    attempt: int | None = Field(default=None, ge=1)
    """Attempt on which it first passed (the article's "3rd try" is 3)."""
    attempts: int | None = Field(default=None, ge=0)
    """Builds tried in all, when none passed (the article's "0/7" is 7)."""

    @model_validator(mode="after")
    def _consistent(self) -> BuildResult:
        if self.passed and self.attempts is not None and self.attempt is None:
            raise ValueError("a passed build gives `attempt` (the one that passed), not `attempts`")
        if not self.passed and self.attempt is not None:
            raise ValueError("a build that never passed has no passing `attempt`; give `attempts`")
        return self


class Published(_Fact):
    """A contestant's figures as published, shown beside the measured ones in the report."""

    run: str | None = Field(default=None, pattern=r"^[\w.-]+$")
    """The published run id, e.g. `run-14`."""
    type: str | None = None
    """As the publication labels it, e.g. `Local MoE`."""
    quant: str | None = None
    """Quantization and size as published, e.g. `UD-Q4_K_XL (21GB)`."""
    vram: str | None = None
    """VRAM use as published, e.g. `~21GB`."""
    parameters: str | None = None
    """Parameter count as published, e.g. `30B (3B active)`."""
    context: int | None = None
    """Context window used."""
    max_output: int | None = None
    """Max output tokens used."""
    tool_calls: int | None = None
    """Structured tool calls."""
    total_tokens: Count | None = None
    """Total tokens, prompt and completion."""
    messages: int | None = None
    """Messages in the session."""
    commits: int | None = None
    """Commits pushed to the run's branch."""
    commit_messages: list[str] = []
    """The pushed commits' messages as published, newest first (as `git log` lists them)."""
    build: BuildResult | None = None
    screenshot: bool | None = None
    """Whether the screenshot was taken (null where the publication does not say)."""
    nudges: int | None = None
    """Human nudges (labctl calls these interventions)."""
    human_stop: bool | None = None
    """The operator ended the session by saying "stop" (the article's "+ stop")."""
    wall_time: Duration | None = None
    outcome: Outcome | None = None
    """The class in the publication's Results table."""
    numbers_outcome: Outcome | None = None
    """The class in its Numbers table, where that one says otherwise (Devstral: Failed there)."""
    notes: str = ""
    """The publication's one-line verdict."""


class PublishedSetup(_Fact):
    """The published round's machine and method, as the article lists them."""

    cpu: str | None = None
    ram: str | None = None
    gpu: str | None = None
    inference: str | None = None
    """The inference server and its version, e.g. `llama.cpp b9660`."""
    agent_platform: str | None = None
    """What drove the models, e.g. `Coder Agents v2.34.0`."""
    os: str | None = None
    serving: str | None = None
    """Server settings in words, e.g. `flash attention, q8_0 KV cache`."""
    runs: str | None = None
    """The run ids and how they were isolated."""
    assignment: str | None = None
    """How models were assigned to runs, e.g. `randomized and sealed before execution`."""


class TokenGap(_Fact):
    """The article's headline: the local models that tried used `low`–`high` times the cloud model's
    tokens (Round 7: 100–200×)."""

    low: float = Field(gt=0)
    high: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> TokenGap:
        if self.high < self.low:
            raise ValueError("high must not be below low")
        return self


__all__ = ["BuildResult", "Outcome", "Published", "PublishedSetup", "TokenGap"]
