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
from pathlib import Path

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


def harvest(run_dir: Path, runtime: str, version: str, model_sha256: str) -> FirstPrompt | None:
    """Record the first request of one finished run from its transcript: the prompt tokens llama-server
    counted (`usage.prompt_tokens`, or the count in its overflow refusal) and the request's bytes.
    Called at unseal, never after a run: a record appearing right after run-3 would tell an operator
    watching the cache which model run-3 was."""
    path = run_dir / "transcript.jsonl"
    first = None
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if isinstance(rec, dict) and rec.get("kind", "exchange") == "exchange" and "request" in rec:
                    first = rec
                    break
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
