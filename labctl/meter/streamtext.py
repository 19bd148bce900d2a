"""Reading a relayed OpenAI-style stream back for the transcript, without a JSON parse per token.

Why: after the agent has its answer the meter parses the whole stream into the `Reassembler`
(labctl/meter/sserelay.py). Profiled on 500-token streams, that parse was the largest part of the
meter's CPU per token (each event a JSON object of ~200 bytes, of which only a few bytes of text
are new), and that CPU is taken from the upstream and the agent on a shared machine.

How: nearly every event of a stream is a pure text delta whose bytes differ from the previous
one only inside its one JSON string (same id, created, model, key order). The first such event
is parsed in full and becomes a template: its bytes before and after that string. Each later
event that starts and ends with exactly those bytes contributes only its string, and all those
strings are decoded with one JSON parse of an array. Everything else (the role event, tool-call
fragments, finish_reason, usage, timings, a changed template) is parsed in full and fed as before.
The result is the same `Reassembler` state as parsing every event: the template's other fields
were fed once, and the later events repeat them byte for byte.

Safety of the shortcut: the strings are decoded together as `[s1,s2,…]` and must come back as
exactly as many strings as there were events, so no event's middle can be anything but one JSON
string (a middle such as `"a","b"` would add an element; an empty or broken one fails the parse);
any doubt and that run of events is parsed in full.
"""

from __future__ import annotations

import contextlib
from typing import Any

from labctl.meter.transcript import Reassembler, loads

_TEXT_KEYS = {"content": b'"content":', "reasoning_content": b'"reasoning_content":'}
"""Delta keys whose string values are the stream's text, with their compact key bytes."""


def _text_delta(obj: dict[str, Any]) -> str | None:
    """The delta key when `obj` carries nothing for the transcript but one text string (the
    fields around it — id, created, model, fingerprint — are the same in every event)."""
    if any(k in obj for k in ("usage", "timings", "error")):
        return None
    choices = obj.get("choices")
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
        return None
    choice = choices[0]
    if choice.get("index", 0) != 0 or choice.get("finish_reason") is not None:
        return None
    delta = choice.get("delta")
    if not isinstance(delta, dict) or len(delta) != 1:
        return None
    (key, value), = delta.items()
    return key if key in _TEXT_KEYS and isinstance(value, str) else None


def _template(line: bytes, key: str) -> tuple[bytes, bytes] | None:
    """The bytes of `line` before and after its one `key` string value, or None if not unique."""
    name = _TEXT_KEYS[key]
    if line.count(name) != 1:
        return None
    start = line.index(name) + len(name)
    if line[start:start + 1] != b'"':
        return None
    end = start + 1
    while True:  # the closing quote: the first one not escaped by an odd run of backslashes
        end = line.find(b'"', end)
        if end < 0:
            return None
        slashes = len(line[:end]) - len(line[:end].rstrip(b"\\"))
        if slashes % 2 == 0:
            return line[:start], line[end + 1:]
        end += 1


def feed_openai_events(lines: list[bytes], asm: Reassembler) -> None:
    """Feed `asm` the events of `lines` (each one event's JSON, `data: ` and `[DONE]` removed),
    in order, parsing in full only the events that are not a repeat of the current template."""
    prefix = suffix = b""
    key: str | None = None
    run: list[bytes] = []  # the middles (JSON strings) of the template's repeats, not yet fed

    def flush() -> None:
        if not run:
            return
        texts = None
        with contextlib.suppress(ValueError):
            texts = loads(b"[" + b",".join(run) + b"]")
        if isinstance(texts, list) and len(texts) == len(run) and all(isinstance(t, str) for t in texts):
            asm.text_deltas(key == "reasoning_content", texts)
        else:  # not plain strings after all: each event in full
            for middle in run:
                _feed_one(prefix + middle + suffix, asm)
        run.clear()

    for line in lines:
        if key is not None and len(line) > len(prefix) + len(suffix) and line.startswith(prefix) \
                and line.endswith(suffix):
            run.append(line[len(prefix):len(line) - len(suffix)])
            continue
        flush()
        obj = _feed_one(line, asm)
        new_key = _text_delta(obj) if obj is not None else None
        cut = _template(line, new_key) if new_key is not None else None
        key, (prefix, suffix) = (new_key, cut) if cut is not None else (None, (b"", b""))
    flush()


def _feed_one(line: bytes, asm: Reassembler) -> dict[str, Any] | None:
    try:
        obj = loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    asm.event(None, obj)
    return obj
