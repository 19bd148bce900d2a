"""What every wire's reassembler collects from a model call (whole body or stream), so the transcript
records the same shape for chat completions, Anthropic Messages and the Responses API."""

from __future__ import annotations

from typing import Any


class Collected:
    """The parts of one answer as they arrive: text, reasoning, tool calls (keyed by the wire's own
    call key), finish reason, usage and llama.cpp timings; `done` once the terminal event was seen;
    `upstream_models` holds every model name the upstream revealed (to redact them)."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[Any, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.raw_usage: dict[str, Any] | None = None
        self.timings: dict[str, Any] | None = None
        self.done = False
        self.error: Any = None
        self.upstream_models: set[str] = set()
        self.events = 0
