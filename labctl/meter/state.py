"""What a meter is told (`MeterConfig`) and what it keeps (`MeterState`; the transcript and status
files are written by labctl/meter/recorder.py); when it intervenes is labctl/meter/policy.py.

Why apart from the proxy: a runner in another process reads `MeterState` from status.json and
builds `MeterConfig` from the lab without the HTTP machinery; the policy is pure decisions over
time and model answers, tested without a network; and the files are written off the event loop.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from labctl.errors import LabctlError
from labctl.meter.cost import add_cost
from labctl.meter.transcript import Dialect
from labctl.spec.interventions import Interventions
from labctl.spec.price import Price


class MeterConfigError(LabctlError, ValueError):
    """A meter that cannot start as configured (an unset API key variable, an upstream that is no
    http(s) URL, a bad --listen or interventions file): `labctl meter` reports it and exits."""


class MeterConfig(BaseModel):
    """Everything one meter needs. The runner builds it and starts the meter with `to_argv()`; the CLI
    parses those options back into it (tests/engine/test_meter_argv.py holds the round trip)."""

    model_config = ConfigDict(extra="forbid")

    upstream: str
    """Base URL of the model server, e.g. `http://llama:8080` or `https://api.anthropic.com`."""
    dialect: Dialect
    """Provider dialect: how the key is sent, how generic errors and the model list are shaped."""
    transcript: Path
    """The JSONL transcript; appended to."""
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    """0 picks a free port (the handle says which)."""
    status_path: Path | None = None
    """Where the state is published on every request (default: status.json beside the transcript)."""
    alias: str = "model"
    """The only model name the agent ever sees (e.g. the run id)."""
    upstream_model: str | None = None
    """Model id sent upstream in place of the agent's (cloud contestants); never recorded."""
    api_key_env: str | None = None
    """Host environment variable holding the real API key, injected into every upstream request."""
    token_budget: int | None = Field(default=None, ge=1)
    """Prompt + completion tokens across the run; once spent, requests are refused with 429."""
    request_budget: int | None = Field(default=None, ge=1)
    """Model calls forwarded across the run; the call that reaches it completes, later ones are
    refused with 429 and the run is stopped (`request_budget`). The backstop for runtimes with no
    turn limit of their own."""
    price: Price | None = None
    """The contestant's declared price: every exchange's `cost_usd` (labctl/meter/cost.py)."""
    cost_budget: float | None = Field(default=None, gt=0)
    """USD across the run (needs `price`); the call that crosses it completes, the next is refused."""
    interventions: Interventions = Interventions()
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 900.0
    """Longest silence from the upstream (a slow model, not streaming) before the call fails."""
    keepalive_s: float = 4.0
    """Idle upstream connections close before llama-server's own 5 s keep-alive ends them."""
    max_request_bytes: int = Field(default=32 << 20, ge=1024)
    """Largest request body forwarded; a larger one is answered 413 by the meter itself (and recorded)."""
    max_output: int | None = Field(default=None, ge=1)
    """The contestant's max_output: every output-length field of every request is clamped to it,
    and set where a request names none (labctl/meter/limits.py); None leaves requests as they are."""
    blob_bytes: int | None = Field(default=1 << 20, ge=0)
    """Request bodies larger than this go to `transcript.blobs/<sha256>`, referenced from their
    record (labctl/meter/blobs.py); None keeps every body inline."""
    control_dir: Path | None = None
    """The operator's control channel, a directory on the host polled for `labctl nudge` / `labctl stop`
    (labctl/meter/control.py); None: no operator interventions. Never an HTTP route: the agent reaches
    the meter's port, never this directory."""

    def status_file(self) -> Path:
        return self.status_path or self.transcript.with_name("status.json")

    def to_argv(self, interventions_file: str | Path | None = None) -> list[str]:
        """The `labctl meter` options that give this config back (labctl/cli/meter.py), defaults left
        out: how a runner starts a meter in a container. The interventions table travels as a JSON
        file (`interventions.model_dump_json(exclude_none=True)`) the caller writes where the meter
        reads it, `interventions_file`. The timeouts have no option: they must be the defaults."""
        fixed = {"connect_timeout_s", "read_timeout_s", "keepalive_s"}
        if changed := sorted(k for k in fixed if getattr(self, k) != MeterConfig.model_fields[k].default):
            raise ValueError(f"labctl meter has no option for {', '.join(changed)}")
        if self.interventions != Interventions() and interventions_file is None:
            raise ValueError("the interventions table needs a file (interventions_file)")
        host = f"[{self.host}]" if ":" in self.host else self.host
        argv = ["--upstream", self.upstream, "--dialect", self.dialect, "--listen", f"{host}:{self.port}",
                "--transcript", str(self.transcript), "--alias", self.alias]
        optional: list[tuple[str, object]] = [
            ("--api-key-env", self.api_key_env), ("--upstream-model", self.upstream_model),
            ("--max-output", self.max_output), ("--token-budget", self.token_budget),
            ("--request-budget", self.request_budget), ("--cost-budget", self.cost_budget),
            ("--price", self.price.model_dump_json() if self.price else None),
            ("--interventions", interventions_file if self.interventions != Interventions() else None),
            ("--status", self.status_path), ("--control", self.control_dir)]
        argv += [f for flag, v in optional if v is not None for f in (flag, str(v))]
        if self.max_request_bytes != MeterConfig.model_fields["max_request_bytes"].default:
            argv += ["--max-request-bytes", str(self.max_request_bytes)]
        if self.blob_bytes != MeterConfig.model_fields["blob_bytes"].default:
            argv += ["--blob-bytes", str(-1 if self.blob_bytes is None else self.blob_bytes)]
        return argv


class MeterState(BaseModel):
    """What the runner reads: counters, the budget, errors and why the run should stop. Published as
    status.json (and at `GET /_labctl/status`); `read_status` is how a runner reads it back."""

    model_config = ConfigDict(extra="ignore")

    alias: str
    """The model name the agent sees (the run id)."""
    dialect: Dialect
    """The upstream's dialect (`MeterConfig.dialect`)."""
    started_at: float
    """When the meter started (Unix time)."""
    requests: int = 0
    """Model calls received (forwarded or refused)."""
    forwarded: int = 0
    """Model calls passed on to the upstream."""
    refused: int = 0
    """Model calls the meter answered itself (budget spent, stopped, too large)."""
    tool_calls: int = 0
    """Tool calls in the model's answers."""
    prompt_tokens: int = 0
    """Prompt tokens, as the upstream's usage reported them."""
    completion_tokens: int = 0
    """Completion tokens, as the upstream's usage reported them."""
    cached_tokens: int = 0
    """Prompt tokens the upstream served from its cache."""
    total_tokens: int = 0
    """Prompt + completion tokens: what `token_budget` is spent in."""
    token_budget: int | None = None
    """`MeterConfig.token_budget`: prompt + completion tokens allowed; None for no budget."""
    request_budget: int | None = None
    """`MeterConfig.request_budget`: model calls the meter forwards; None for no budget."""
    cost_usd: float | None = None
    """USD spent, the sum of the exchanges' `cost_usd`; None when unpriced (never a 0 for a local model)."""
    cost_budget: float | None = None
    """`MeterConfig.cost_budget`: USD allowed; None for no budget."""
    max_output: int | None = None
    """`MeterConfig.max_output`: the most output tokens any request was allowed."""
    clamped: int = 0
    """Model calls that asked for more output than max_output and were forwarded with max_output."""
    limit_added: int = 0
    """Model calls that named no output limit and were forwarded with max_output."""
    partial_exchanges: int = 0
    """Forwarded calls whose closing usage never came (cut by the agent's end, a stop, a dropped
    stream): their tokens above are what the stream carried, a lower bound."""
    budget_exceeded: bool = False
    """A budget is spent (total_tokens >= token_budget, forwarded >= request_budget, cost_usd >=
    cost_budget): later calls are refused."""
    errors: int = 0
    """Upstream failures: 5xx, bad key/URL, unreachable, dropped streams."""
    errored: bool = False
    """Any upstream failure happened: the run's outcome may not be the model's doing."""
    last_error: str | None = None
    """The latest upstream failure, in words."""
    stopped: bool = False
    """The run should stop: the runner stops the agent when it reads this."""
    stopped_reason: str | None = None
    """`token_budget`, `request_budget`, `cost_budget`, `intervention:<name>` or `operator`."""
    nudges: int = 0
    """Nudges injected into requests."""
    stops: int = 0
    """Stop interventions that fired."""
    interventions: dict[str, int] = {}
    """Firings per intervention name."""
    operator_nudges: int = 0
    """Nudges the operator sent (`labctl nudge`), taken from the control channel."""
    operator_stops: int = 0
    """Stops the operator sent (`labctl stop`); the run's `stopped_reason` is then `operator`."""
    last_request_time: float | None = None
    """When the latest model call arrived (Unix time)."""
    last_response_time: float | None = None
    """When the latest model answer ended (Unix time): the `idle` trigger counts from it."""
    updated_at: float = 0.0
    """When this state was last published (Unix time)."""

    def add_usage(self, usage: dict[str, Any] | None, tool_calls: int, cost: float | None = None) -> None:
        """Count one answer (`cost`: its USD, None unpriced); the call that crosses a budget completes,
        the next is refused."""
        self.tool_calls += tool_calls
        self.cost_usd = add_cost(self.cost_usd, cost)
        if usage:
            self.partial_exchanges += bool(usage.get("partial"))
            self.prompt_tokens += usage["prompt_tokens"]
            self.completion_tokens += usage["completion_tokens"]
            self.cached_tokens += usage["cached_tokens"]
            self.total_tokens += usage["total_tokens"]
        spent = self.token_budget is not None and self.total_tokens >= self.token_budget
        calls = self.request_budget is not None and self.forwarded >= self.request_budget
        paid = self.cost_budget is not None and (self.cost_usd or 0.0) >= self.cost_budget
        if (spent or calls or paid) and not self.budget_exceeded:
            self.budget_exceeded = True
            self.stop("token_budget" if spent else "cost_budget" if paid else "request_budget")

    def count_clamps(self, edits: list[dict[str, Any]]) -> None:
        """One call held to max_output (labctl/meter/limits.py `clamps`)."""
        if any(e["asked"] is not None for e in edits):
            self.clamped += 1
        else:
            self.limit_added += 1

    @classmethod
    def starting(cls, cfg: MeterConfig) -> MeterState:
        """A new meter's state: its limits from `cfg`, nothing spent (a cost only where priced)."""
        return cls(alias=cfg.alias, dialect=cfg.dialect, started_at=time.time(),
                   token_budget=cfg.token_budget, request_budget=cfg.request_budget,
                   max_output=cfg.max_output, cost_budget=cfg.cost_budget,
                   cost_usd=0.0 if cfg.price else None)

    def why_stopped(self) -> str:
        """The stop in words, for the refusal of every later call."""
        reason = str(self.stopped_reason)
        return (f"the {reason.split('_')[0]} budget is spent" if reason.endswith("_budget")
                else f"the run was stopped ({reason})")

    def stop(self, reason: str) -> None:
        if not self.stopped:
            self.stopped, self.stopped_reason = True, reason

    def refusal(self) -> tuple[str, str]:
        """(message, error kind) for a model call after the run stopped."""
        return (f"labctl meter: {self.why_stopped()}; no more model calls",
                "budget_exceeded" if self.budget_exceeded else "run_stopped")

    def add_error(self, message: str) -> None:
        self.errors += 1
        self.errored = True
        self.last_error = message


def read_status(path: Path) -> MeterState | None:
    """status.json as the meter last published it; None when there is none yet or it cannot be read
    (the meter replaces it atomically, so a half-written file is not a case; an older labctl's file
    without a newer field reads with its default)."""
    try:
        return MeterState.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
