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
        self.final_usage = False
        """The upstream's closing usage was seen (chat: the usage chunk or body; Anthropic:
        message_delta's or the body's; Responses: the final response's). Without it, a forwarded
        answer's tokens are only what the stream carried (`partial_usage`)."""
        self.arg_deltas = 0
        """Tool-call argument fragments received (each at least one token)."""

    def seen_deltas(self) -> int:
        """Pieces of output received: non-empty text and reasoning deltas and argument fragments.
        Each carried at least one token, so this is a lower bound of the tokens generated."""
        return sum(1 for t in self.text if t) + sum(1 for t in self.reasoning if t) + self.arg_deltas


def partial_usage(usage: dict[str, Any] | None, seen: int) -> dict[str, Any]:
    """The usage of an answer whose closing usage never came (a stream cut by the agent, the meter
    or the upstream): what the stream did carry (`usage`, normalised: Anthropic's message_start
    counts the prompt) and at least one token per output delta seen, marked `partial` — a lower
    bound, never a zero passed off as a count."""
    u = usage or {}
    prompt = int(u.get("prompt_tokens") or 0)
    completion = max(int(u.get("completion_tokens") or 0), seen)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "cached_tokens": int(u.get("cached_tokens") or 0), "total_tokens": prompt + completion,
            "raw": u.get("raw"), "partial": True}
