"""The lab's max_output held by the meter: every output-length field of every wire clamped to it.

Why the meter and not the server's `-n`: llama.cpp honours a request's own limit over `-n`
(`slot.n_predict_max = task.params.n_predict != -1 ? task.params.n_predict : params_base.n_predict`
in the pinned tools/server/server-context.cpp), and runtimes send their own (qwen-code asks for
32000 tokens), so `-n` only holds for requests that name no limit; a cloud API has no `-n` at all.
The meter sees every request, so it is where "max output" becomes what the model was allowed.

The fields, per request wire (what the pinned llama.cpp and the providers read):
* chat completions: `max_tokens`, `max_completion_tokens` (OpenAI's current name) and llama.cpp's
  own `n_predict` (it reads n_predict, else max_completion_tokens, else max_tokens); when none is
  present, `max_completion_tokens` is set (OpenAI's and llama.cpp's name for it);
* Responses: `max_output_tokens` (llama.cpp maps it to max_tokens), set when absent;
* Anthropic Messages: `max_tokens` (required by the API, so runtimes always send it; set when a
  request lacks it: llama.cpp would otherwise allow 4096).
A value at or below the limit is left alone, as is a value that is not a number (the upstream
answers it) and llama.cpp's -1 ("the server's -n", which is max_output).

Cheap by construction: the fields are looked up in the body the meter parsed anyway, and only a
request that needs a change is edited — by a byte edit of the one field (`set_number`) where that
is provably the top-level field, else by writing the body again.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from labctl.meter.transcript import Dialect, dump

FIELDS: dict[Dialect, tuple[str, ...]] = {
    "openai": ("max_tokens", "max_completion_tokens", "n_predict"),
    "anthropic": ("max_tokens",),
    "responses": ("max_output_tokens",),
}
"""Every output-length field a request of the wire may carry."""
ADDED: dict[Dialect, str] = {"openai": "max_completion_tokens", "anthropic": "max_tokens",
                             "responses": "max_output_tokens"}
"""The field set when a request carries none."""


def clamps(dialect: Dialect, body: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """The edits that hold `body` to `limit` output tokens: `{field, asked, sent}` each (`asked`
    None: the field was absent and is added). Empty when the request already asks for no more."""
    out: list[dict[str, Any]] = []
    present = False
    for name in FIELDS[dialect]:
        if name not in body:
            continue
        present = True
        value = body[name]
        if type(value) in (int, float) and value > limit:
            out.append({"field": name, "asked": value, "sent": limit})
    if not present:
        out.append({"field": ADDED[dialect], "asked": None, "sent": limit})
    return out


_NUMBER = rb"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?"


@functools.lru_cache(maxsize=16)
def _value_after_key(name: str) -> re.Pattern[bytes]:
    """`"name"` then `:` and a JSON number, any whitespace between."""
    return re.compile(re.escape(f'"{name}"'.encode()) + rb"\s*:\s*(" + _NUMBER + rb")")


def set_number(raw: bytes, obj: dict[str, Any], name: str, value: int) -> bytes | None:
    """`raw` (the JSON object `obj` was parsed from) with the top-level field `name` set to `value`
    by a byte edit; None when the edit cannot be shown to hit that field. A present field is
    replaced only when its key occurs exactly once in `raw` (a key in unescaped quotes cannot hide
    inside a JSON string, and `obj` has it at the top level, so the one occurrence is that field);
    an absent one is inserted right after the opening brace."""
    key = f'"{name}"'.encode()
    if name not in obj:
        start = len(raw) - len(raw.lstrip())
        if raw[start:start + 1] != b"{":
            return None
        sep = b"," if obj else b""
        return raw[:start + 1] + key + b":" + str(value).encode() + sep + raw[start + 1:]
    if raw.count(key) != 1:
        return None
    m = _value_after_key(name).search(raw)
    if m is None:
        return None
    return raw[:m.start(1)] + str(value).encode() + raw[m.end(1):]


def apply_bytes(raw: bytes, obj: dict[str, Any], edits: list[dict[str, Any]]) -> bytes | None:
    """`raw` with every clamp of `edits` applied by byte edits; None when one cannot be."""
    out: bytes | None = raw
    for e in edits:
        if out is None:
            return None
        out = set_number(out, obj, e["field"], e["sent"])
    return out


def forwarded_bytes(raw: bytes | None, body: dict[str, Any], forwarded: dict[str, Any],
                    edits: list[dict[str, Any]]) -> bytes:
    """The body sent upstream: `raw` (the agent's bytes, when nothing else changed) with the clamps
    as byte edits, else `forwarded` with them, written again."""
    if raw is not None:
        edited = apply_bytes(raw, body, edits)
        if edited is not None:
            return edited
    return dump({**forwarded, **{e["field"]: e["sent"] for e in edits}}).encode()


__all__ = ["ADDED", "FIELDS", "apply_bytes", "clamps", "forwarded_bytes", "set_number"]
