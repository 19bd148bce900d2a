"""The run → verify → report contract: metrics.json as a typed record, and the one rule for "a check
passed".

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
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from labctl.round.layout import json_text


def check_passed(value: Any) -> bool:
    """The one rule for a named check in reward.json: JSON `true`, or a number ≥ 1 (Harbor's flat form
    writes 0 / 1; a score above 1 is still a pass). Everything else fails: `false`, 0, a fraction
    (0.5 is a partial score, not a pass), null, and strings (`"1"`, `"true"`: a verifier that writes
    strings is broken, and a string "false" must never pass). Grade, verify and report all use this."""
    return value is True or (type(value) in (int, float) and value >= 1)


class BuildFigures(BaseModel):
    """The report's Build column, from the task's `[labctl.report]` build check."""

    model_config = ConfigDict(extra="ignore")

    passed: bool
    """The verifier's build check passed."""
    agent_runs: int | None = None
    """How often the agent itself ran the build command (model contestants only)."""
    attempt: int | None = None
    """Which of the agent's builds first succeeded (1-based); None when none did."""


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
    """Named checks in reward.json that passed (`check_passed`); None when it names none."""
    checks_total: int | None = None
    """Named checks in reward.json; None when it names none."""
    stopped_by: str | None = None
    """What ended the agent early: `wall_time`, `upstream_error`, `token_budget`,
    `intervention:<name>`, `meter`; None when the agent ended by itself."""
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
    """Any upstream failure: the run is ungraded (`derive_outcome` rule 0) and re-run."""
    pathology: dict[str, Any] | None = None
    """Behaviour measures from the transcript (`labctl.run.pathology`); model contestants only."""
    flags: list[str] | None = None
    """Pathology measures over their thresholds, in words; model contestants only."""

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
    """Write atomically. Only what was measured is written (unset figures stay absent, a measured None
    stays null), so a file says which figures its run had."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json_text(metrics.model_dump(mode="json", exclude_unset=True)), encoding="utf-8")
    tmp.replace(path)


__all__ = ["BuildFigures", "RunMetrics", "check_passed", "read_metrics", "write_metrics"]
