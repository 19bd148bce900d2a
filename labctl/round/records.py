"""The run → verify → report contract: metrics.json as a typed record (the rule for "a check passed"
is the grading rule's: `labctl.round.grading.check_passed`).

Why here: the runner writes metrics.json (`labctl.run.grade.run_metrics`), `labctl verify` re-grades
from it and `labctl report` tabulates it; round sits below run and report and above the meter, so one
definition serves all three (the meter's status.json record, `MeterState`, lives with the meter that
writes it: `labctl.meter.state`).

Every figure is optional: a missing key is "not measured" (None), never 0, because 0 means something
(`tool_calls == 0` grades a run Total failure). Unknown keys are ignored, so rounds written by older or
newer labctl versions still read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from labctl.round.layout import write_json


class BuildFigures(BaseModel):
    """The report's Build column, from the task's `[labctl.report]` build check."""

    model_config = ConfigDict(extra="ignore")

    passed: bool
    """The verifier's build check passed."""
    agent_runs: int | None = None
    """How often the agent itself ran the build command (model contestants only)."""
    attempt: int | None = None
    """Which of the agent's builds first succeeded (1-based); None when none did."""


class TokenFigures(BaseModel):
    """A run's token totals as one source counted them (the meter, from the upstream's usage)."""

    model_config = ConfigDict(extra="ignore")

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    total_tokens: int = 0


class ServerCounters(BaseModel):
    """llama-server's own token counters (its `/metrics`, `--metrics`), read at the end of a run:
    everything the run's server did, whether or not an answer ever carried its usage."""

    model_config = ConfigDict(extra="ignore")

    prompt_processed: int
    """`llamacpp:prompt_tokens_total`: prompt tokens evaluated (cached ones excluded), counted per
    batch, so a prompt cut mid-way counts what was evaluated."""
    prompt_cached: int
    """`llamacpp:prompt_tokens_cached_total`: prompt tokens reused from the KV cache."""
    predicted: int
    """`llamacpp:tokens_predicted_total`: tokens generated, a cancelled answer's included (counted
    when its slot is released)."""
    busy: bool = False
    """A request was still being processed when the counters were read: its generation is missing."""

    @property
    def prompt(self) -> int:
        """The whole prompts, as usage's prompt_tokens counts them (evaluated + cached)."""
        return self.prompt_processed + self.prompt_cached


EndedBy = Literal["agent", "signal", "wall_time", "budget", "intervention", "upstream_error",
                  "context_overflow", "max_output", "meter"]
"""What ended the agent's session: the agent itself (`agent`), a signal labctl did not send
(`signal`: exit 128 + N, e.g. the kernel's OOM killer at the task's memory limit), labctl's wall
time, a token or request budget, a declared intervention's stop, an upstream failure, a request
refused for its length (`context_overflow`), an answer cut at max_output (`max_output`: the agent
ended right after one), or the meter's stop for another reason."""


class Ending(BaseModel):
    """metrics.json `ended`: how the agent's session ended (`labctl.run.ending`)."""

    model_config = ConfigDict(extra="ignore")

    by: EndedBy
    """What ended it (`EndedBy`)."""
    detail: str | None = None
    """The runtime's own word (mini-swe-agent's `Submitted`, qwen-code's `[API Error: 400 …]`) or the
    stopping rule (`token_budget`, `cost_budget`, the intervention's name, the upstream's error), one line."""
    exit_code: int | None = None
    """The agent command's exit status (None when it never ran)."""
    cut_answers: int | None = None
    """Answers cut at max_output over the run (finish_reason `length`, Anthropic `max_tokens`,
    Responses incomplete at max_output_tokens); None for contestants without a model."""


class RunMetrics(BaseModel):
    """One run's metrics.json. The same names are used by the runner, `labctl verify` and the report."""

    model_config = ConfigDict(extra="ignore")

    wall_time_s: float | None = None
    """The agent's phase in seconds (start of the agent → it ended or was stopped)."""
    verifier_wall_s: float | None = None
    """The verifier's phase in seconds (absent in rounds written before it was recorded)."""
    commits_pushed: int | None = None
    """Commits the agent pushed beyond the base; None for a task without a repository."""
    checks_passed: int | None = None
    """Named checks in reward.json that passed (`labctl.round.grading.check_passed`); None when it
    names none."""
    checks_total: int | None = None
    """Named checks in reward.json; None when it names none."""
    stopped_by: str | None = None
    """What ended the agent early: `wall_time`, `upstream_error`, `token_budget`, `request_budget`,
    `cost_budget`, `intervention:<name>`, `meter`; None when the agent ended by itself."""
    screenshot: bool | None = None
    """The verifier's screenshot check (tasks whose `[labctl.report]` names one)."""
    build: BuildFigures | None = None
    """The verifier's build check and the agent's own builds (tasks whose `[labctl.report]` names one)."""
    tool_calls: int | None = None
    """Tool calls the model made, as the meter counted them. None for contestants without a model
    (oracle, nop): a 0 would grade them Total failure."""
    requests: int | None = None
    """Model calls the meter received."""
    messages: int | None = None
    """Messages in the last request (the conversation's length at the end)."""
    prompt_tokens: int | None = None
    """Prompt tokens over the run, as the upstream reported them."""
    completion_tokens: int | None = None
    """Completion tokens over the run."""
    cached_tokens: int | None = None
    """Prompt tokens served from the upstream's cache."""
    total_tokens: int | None = None
    """Prompt + completion tokens over the run."""
    cost_usd: float | None = None
    """USD at the contestant's declared price (the meter's running total, each exchange priced from its
    wire's own usage fields); None when not priced (local models, unpriced cloud ones), never 0."""
    tokens_source: Literal["meter", "server"] | None = None
    """Where the token figures come from: `meter` (the upstream's usage, as the meter recorded it) or
    `server` (reconciled with llama-server's own counters: `labctl.round.tokens.reconcile`)."""
    tokens_partial: bool | None = None
    """The token figures are a lower bound: a call was cut before its usage came and nothing
    counted it whole (reports show `≥ N`)."""
    partial_calls: int | None = None
    """Calls whose closing usage never came (cut mid-stream); the meter counted what they carried."""
    meter_tokens: TokenFigures | None = None
    """The meter's own figures, kept beside the reconciled ones (`tokens_source: server`)."""
    server_tokens: ServerCounters | None = None
    """llama-server's own counters at the end of the run (local contestants)."""
    output_clamped: int | None = None
    """Calls that asked for more than max_output and got max_output (labctl/meter/limits.py)."""
    prompt_tokens_per_s: float | None = None
    """Prompt processing speed, token-weighted over llama.cpp's `timings` (None without timings)."""
    gen_tokens_per_s: float | None = None
    """Generation speed, token-weighted over llama.cpp's `timings` (None without timings)."""
    interventions: dict[str, int] | None = None
    """Firings per intervention rule name."""
    nudges: int | None = None
    """Nudges the meter injected."""
    upstream_errors: int | None = None
    """Upstream failures the meter saw (5xx, bad key, unreachable, dropped streams)."""
    upstream_errored: bool | None = None
    """Any upstream failure: the run is ungraded (`labctl.round.grading.derive_outcome` rule 0) and re-run."""
    pathology: dict[str, Any] | None = None
    """Behaviour measures from the transcript (`labctl.run.pathology`): the old streak counts, and the
    seed's patterns (`repeated_line`, `repeated_failure`, `text_tool_calls`, `build_without_commit`,
    `cwd_amnesia`), each with the steps where it shows, plus the `thresholds` applied; model
    contestants only."""
    flags: list[str] | None = None
    """Pathology measures at or over the lab's `pathology:` thresholds, in words; model contestants only."""
    ended: Ending | None = None
    """How the agent's session ended (absent in rounds written before it was recorded)."""

    @field_validator("interventions", mode="before")
    @classmethod
    def _count_only(cls, v: Any) -> Any:
        """A bare count (written by early versions) keeps its number under an unnamed rule."""
        if type(v) is int:
            return {"(rule not recorded)": v} if v > 0 else {}
        return v

    @property
    def interventions_fired(self) -> int | None:
        """All interventions that fired, over every rule."""
        return None if self.interventions is None else sum(self.interventions.values())


def read_metrics(path: Path) -> RunMetrics | None:
    """metrics.json as a record; None when there is none. Raises ValueError when it is not JSON or
    not a metrics object (verify reports that as a problem of the file)."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return RunMetrics.model_validate(data)


def write_metrics(path: Path, metrics: RunMetrics) -> None:
    """The one writer of metrics.json, atomic as every round record (`labctl.round.layout.write_json`,
    result.json's too). Only what was measured is written (unset figures stay absent, a measured None
    stays null), so a file says which figures its run had."""
    write_json(path, metrics.model_dump(mode="json", exclude_unset=True))


__all__ = ["BuildFigures", "EndedBy", "Ending", "RunMetrics", "ServerCounters", "TokenFigures",
           "read_metrics", "write_metrics"]
