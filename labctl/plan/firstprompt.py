"""How big each agent runtime's first request is, and whether it fits a contestant's context.

Why: a runtime's first prompt (its system prompt, every tool schema, the instruction) is sent before
the model has said a word. Qwen Code's is ~9.3k tokens; on an 8k context llama.cpp refuses it
("exceeds the available context size") and the run never starts — a configuration failure, not the
model's. `labctl plan` warns when context < first prompt + max_output.

Where the figure comes from, per runtime *version* (the prompt changes between versions):
1. measured: at unseal, each run with a model records its first request (`harvest`): the prompt
   tokens llama-server counted (`usage.prompt_tokens`, or the count in its overflow refusal) and the
   request's bytes, per model, in `~/.cache/labctl/first-prompt/<runtime>@<version>.json`;
2. else `KNOWN`: figures measured on real runs and written down here.
Tokens are the planned model's own count where it was measured. A figure in bytes only (measured on
another model, whose tokenizer may differ a lot) is turned into tokens as
bytes / 4 (English prose and code run ~4 bytes per token in the BPE vocabularies of the Round 7 models;
JSON tool schemas run fewer, so the estimate is low there); either way the warning adds a 15% margin,
because the figure was counted with another model's tokenizer.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

BYTES_PER_TOKEN = 4
_OVERFLOW_TOKENS = re.compile(r"request \((\d+) tokens\) exceeds the available context size")
"""llama.cpp's refusal names the prompt's size in the model's own tokens."""
MARGIN = 0.15
"""Added to a first-prompt figure before comparing: it was likely counted with another tokenizer."""


class FirstPrompt(BaseModel):
    """One runtime version's first request, as measured."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    runtime: str
    version: str
    prompt_tokens: int | None = None
    """Tokens of the rendered first prompt, as the serving model counted them."""
    request_bytes: int | None = None
    """Bytes of the first request's body (messages, tools and all)."""
    source: str
    """Where the figure comes from (`run` = recorded from a run on this machine)."""

    def tokens(self) -> int | None:
        """The token figure: the model's count, else bytes / 4."""
        if self.prompt_tokens:
            return self.prompt_tokens
        return math.ceil(self.request_bytes / BYTES_PER_TOKEN) if self.request_bytes else None


KNOWN: dict[tuple[str, str], FirstPrompt] = {
    ("qwen-code", "0.24.4"): FirstPrompt(
        runtime="qwen-code", version="0.24.4", prompt_tokens=9322,
        source="issue #25: llama-server's log of qwen-code's first request (SmolLM2-135M's tokenizer)"),
}


def record_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "labctl" / "first-prompt"


def _path(runtime: str, version: str) -> Path:
    return record_dir() / f"{runtime}@{version}.json"


class Measured(BaseModel):
    """`<runtime>@<version>.json`: the first request as each model's tokenizer counted it."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    by_model: dict[str, FirstPrompt] = {}
    """Model sha256 → the figure measured on a run of that model."""


def _measured(runtime: str, version: str) -> Measured:
    with contextlib.suppress(OSError, ValueError):
        return Measured.model_validate_json(_path(runtime, version).read_text())
    return Measured()


def record(fp: FirstPrompt, model_sha256: str) -> None:
    """Keep a measured figure (the latest run of a model wins: one version sends one first prompt)."""
    m = _measured(fp.runtime, fp.version)
    m.by_model[model_sha256] = fp
    d = record_dir()
    with contextlib.suppress(OSError):
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(m.model_dump_json(indent=2))
        os.replace(tmp, _path(fp.runtime, fp.version))


def lookup(runtime: str, version: str, model_sha256: str | None = None) -> FirstPrompt | None:
    """The figure for this runtime version: measured on this very model (its own tokenizer's count);
    else measured on another model, as bytes / 4 (a count in another tokenizer says little: the tiny
    test model's vocabulary needs 3× the tokens of a real one); else the written-down one; else None."""
    m = _measured(runtime, version)
    if model_sha256 and (same := m.by_model.get(model_sha256)):
        return same
    if sizes := [f.request_bytes for f in m.by_model.values() if f.request_bytes]:
        return FirstPrompt(runtime=runtime, version=version, request_bytes=max(sizes),
                           source="measured on another model")
    return KNOWN.get((runtime, version))


def opens_a_conversation(request: object) -> bool:
    """The request holds no turn of the model yet: no assistant message and no tool call or tool
    result, in any of the wires the meter forwards (chat completions' and Messages' `messages`,
    Responses' `input` items). Such a request is a runtime's first prompt (or a side request beside
    it, like opencode's session title)."""
    if not isinstance(request, dict):
        return False
    items = request.get("messages", request.get("input"))
    if isinstance(items, str):  # Responses' plain-text input
        return True
    if not isinstance(items, list):
        return False
    for item in items:
        if not isinstance(item, dict):
            continue
        if item.get("role") in ("assistant", "tool") or item.get("type") in _MODEL_TURN_ITEMS:
            return False
        content = item.get("content")
        if isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result"
                                             for b in content):
            return False
    return True


_MODEL_TURN_ITEMS = ("function_call", "function_call_output", "custom_tool_call", "custom_tool_call_output",
                     "reasoning")
"""Responses input items that only follow a turn of the model."""


def opening_requests(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The exchanges sent before the model had a turn: every one until the first answered (a
    runtime's first prompt, whatever it holds: aider's carries example turns of its edit format),
    and any later one that opens a new conversation (opencode asks for a session title beside its
    first prompt, in either order)."""
    out: list[dict[str, Any]] = []
    answered = False
    for r in records:
        if r.get("kind", "exchange") != "exchange" or "request" not in r:
            continue
        if not answered or opens_a_conversation(r.get("request")):
            out.append(r)
        answered = answered or (r.get("status") == 200 and isinstance(r.get("response"), dict))
    return out


def first_prompt(records: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The run's first prompt: the largest of its opening requests (by bytes). The largest, not the
    first record: a runtime may send a small side request beside it (opencode's session title)."""
    return max(opening_requests(records), key=lambda r: r.get("request_bytes") or 0, default=None)


def harvest(records: Iterable[dict[str, Any]], runtime: str, version: str, model_sha256: str
            ) -> FirstPrompt | None:
    """Record the first prompt of one finished run from its transcript's records (request bodies
    resolved): the prompt tokens llama-server counted (`usage.prompt_tokens`, or the count in its
    overflow refusal) and the request's bytes. Called at unseal, never after a run: a record
    appearing right after run-3 would tell an operator watching the cache which model run-3 was."""
    first = first_prompt(records)
    if first is None:
        return None
    err = first.get("error")
    counted = _OVERFLOW_TOKENS.search(err if isinstance(err, str) else json.dumps(err)) if err else None
    tokens = int(counted.group(1)) if counted else ((first.get("usage") or {}).get("prompt_tokens") or None)
    size = first.get("request_bytes")
    if not tokens and not isinstance(size, int):
        return None
    fp = FirstPrompt(runtime=runtime, version=version, prompt_tokens=tokens,
                     request_bytes=size if isinstance(size, int) else None, source="measured on this model")
    record(fp, model_sha256)
    return fp


def fit_warning(context: int | None, max_output: int | None, fp: FirstPrompt | None) -> str | None:
    """The plan's warning when the runtime's first prompt plus max_output does not fit the context."""
    tokens = fp.tokens() if fp else None
    if not context or not tokens or fp is None:
        return None
    need = math.ceil(tokens * (1 + MARGIN)) + (max_output or 0)
    if need <= context:
        return None
    how = "tokens" if fp.prompt_tokens else f"tokens, from {fp.request_bytes:,} bytes / {BYTES_PER_TOKEN}"
    return (f"{fp.runtime} {fp.version}'s first prompt is ~{tokens:,} {how} ({fp.source}); with max_output "
            f"{max_output or 0:,} and a {int(MARGIN * 100)}% margin it needs {need:,} tokens of context, "
            f"the plan gives {context:,}: its first request may be refused (the run then errors)")
