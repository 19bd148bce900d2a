"""Relaying a streamed answer at the upstream's pace: byte edits on the way, parsing afterwards.

Why apart from the proxy and the dialects: every streamed token passes through here, so this is
the meter's hot path. Profiling showed that parsing each SSE event as it passed (a json.loads,
an event split, a rewrite per event) cost the meter about a third of direct throughput. Now each
upstream chunk is cut at its last whole event and forwarded after plain `bytes.replace` edits
(model name → alias, fingerprint removed) over the whole chunk, checked to be complete by
counting; the chunk's bytes are kept and parsed into the `Reassembler` in one batch once the
agent has its last byte (OpenAI-style text deltas read back by template: labctl/meter/streamtext.py).
A chunk the byte edits cannot vouch for (a model name not seen yet, another JSON spacing, the
usage chunk the agent did not ask for) takes the careful path: each event parsed, edited or
dropped, as before. Both paths feed the reassembler in stream order.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from labctl.meter import wire_responses
from labctl.meter.sse import SSESplitter, sse_fields
from labctl.meter.streamtext import feed_openai_events
from labctl.meter.transcript import (
    AnyReassembler,
    Dialect,
    Reassembler,
    dump,
    identity_holders,
    loads,
    rewrite_identity,
    scrub,
    scrub_bytes,
)

_TERMINAL_HINT = {"openai": b"[DONE]", "anthropic": b"message_stop", "responses": b"response."}
"""A substring every terminal event holds: `in` (memchr speed) before the regex runs."""
_TERMINAL = {
    "openai": re.compile(rb"(?m)^data: ?\[DONE\]\r?$"),
    "anthropic": re.compile(rb'(?m)^event: ?message_stop\r?$|"type"\s*:\s*"message_stop"'),
    "responses": wire_responses.TERMINAL,
}
"""The dialect's end-of-stream event, found in bytes (JSON strings hold no raw newline or
unescaped quote, so model text cannot fake it): a stream without it was dropped."""
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
_SIMPLE_EVENTS = re.compile(rb"((?:event: ?([^\r\n]*)\r?\n)?data: ?([^\r\n]*)\r?\n\r?\n)")
"""Events of one optional `event:` line and one `data:` line: what every upstream sends."""
_MODEL_KEY = b'"model"'
_FINGERPRINT_KEY = b'"system_fingerprint"'


@functools.lru_cache(maxsize=256)
def _pair(key: str, value: str | None) -> bytes:
    """`"key":"value"` as the upstreams write it. Cached: it runs for every name on every chunk,
    and a json.dumps with custom separators builds a new encoder each time (profiled: a third of
    the relay's CPU per streamed token)."""
    return json.dumps({key: value}, separators=(",", ":")).encode()[1:-1]


def _has_terminal(dialect: Dialect, part: bytes) -> bool:
    """Whether `part` holds the dialect's terminal event: the regex runs only over the lines that
    hold its hint substring (a multi-line `^` search tries every position of a 100 kB chunk)."""
    hint, pattern = _TERMINAL_HINT[dialect], _TERMINAL[dialect]
    at = part.rfind(hint)  # the terminal is the last event: search from the end
    while at >= 0:
        start = part.rfind(b"\n", 0, at) + 1
        end = part.find(b"\n", at)
        if pattern.search(part, start, len(part) if end < 0 else end + 1):
            return True
        at = part.rfind(hint, 0, start)
    return False


def last_boundary(buf: bytes) -> int:
    """End of the last whole event in `buf` (0: none yet). `\\r\\n\\r\\n` ends in `\\n\\r\\n`."""
    lf = buf.rfind(b"\n\n")
    crlf = buf.rfind(b"\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 3 if crlf >= 0 else 0)


def _split_point(part: bytes) -> int:
    """An event boundary inside `part` near its middle (0: `part` is one event)."""
    mid = len(part) // 2
    before = last_boundary(part[:mid])
    if before:
        return before
    after = part.find(b"\n\n", mid)
    crlf = part.find(b"\n\r\n", mid)
    ends = [i + 2 for i in (after,) if i >= 0] + [i + 3 for i in (crlf,) if i >= 0]
    cut = min(ends, default=0)
    return cut if cut < len(part) else 0


class StreamRelay:
    """One streamed answer: `feed` each upstream chunk and forward what it returns; `ended` says
    whether the terminal event passed; `finish()` parses everything into `asm` afterwards.

    `names` (upstream model names) and `fingerprints` are the meter's own sets, shared across
    calls: once a name is known, every later chunk that carries it takes the fast path.
    """

    def __init__(self, asm: AnyReassembler, dialect: Dialect, alias: str, names: set[str],
                 fingerprints: set[str | None], hide_usage: bool) -> None:
        self.asm, self.dialect, self.alias = asm, dialect, alias
        self.names, self.fingerprints, self.hide_usage = names, fingerprints, hide_usage
        self.alias_pair = _pair("model", alias)
        self.ended = False
        self.slow_chunks = 0
        """Chunks that took the careful path (the benchmark and tests look)."""
        self._tail = b""
        self._sizes = (-1, -1)
        self._model_edits: list[bytes] = []
        self._fp_edits: list[bytes] = []
        self._kept: list[bytes | tuple[str | None, dict[str, Any]]] = []
        """In stream order: raw chunks (parsed in `finish`) and events already parsed."""

    @property
    def pending(self) -> bytes:
        """An unfinished event (what a dropped stream cut off); never forwarded."""
        return self._tail

    def feed(self, chunk: bytes) -> bytes:
        buf = self._tail + chunk if self._tail else chunk
        if buf.endswith(b"\n\n"):  # the common case, one check: the chunk ends an event
            part, self._tail = buf, b""
        else:
            cut = last_boundary(buf)
            if cut == 0:
                self._tail = buf
                return b""
            part, self._tail = buf[:cut], buf[cut:]
        if not self.ended and _has_terminal(self.dialect, part):
            self.ended = True
        out = self._edit(part)
        if out is not None:
            self._kept.append(part)
            return out
        return self._relay(part)

    def _relay(self, part: bytes) -> bytes:
        """Byte edits where they suffice; otherwise halve at an event boundary and try each half,
        so one event that needs care (the first naming the model, the usage chunk) costs a
        parse of itself, not of the hundred events that arrived with it."""
        out = self._edit(part)
        if out is not None:
            self._kept.append(part)
            return out
        cut = _split_point(part)
        if cut:
            return self._relay(part[:cut]) + self._relay(part[cut:])
        self.slow_chunks += 1
        return b"".join(self._careful(ev) for ev in SSESplitter().feed(part))

    def _edit(self, part: bytes) -> bytes | None:
        """`part` with identities rewritten by byte edits, or None when the edits cannot be shown
        complete: every `"model"` key must end up holding the alias, no fingerprint may remain,
        and a usage object the agent did not ask for must go (that needs the careful path)."""
        if self._sizes != (len(self.names), len(self.fingerprints)):
            self._prepare_edits()
        models = part.count(_MODEL_KEY)
        out = part
        if models:
            for pair in self._model_edits:
                out = out.replace(pair, self.alias_pair)
            if out.count(self.alias_pair) != models:
                return None
        if _FINGERPRINT_KEY in out:
            for pair in self._fp_edits:  # `,"fp":…` first: the upstreams never write it first
                out = out.replace(pair, b"")
                if _FINGERPRINT_KEY not in out:
                    break
            else:
                return None
        if self.hide_usage and b'"usage"' in out and _USAGE_OBJECT.search(out):
            return None
        return out

    def _prepare_edits(self) -> None:
        """The byte pairs `_edit` replaces, built again only when a name or fingerprint was
        learnt (the sets only grow): per chunk, building them cost as much as the edits."""
        self._sizes = (len(self.names), len(self.fingerprints))
        self._model_edits = [_pair("model", n) for n in self.names if n and n != self.alias]
        self._fp_edits = []
        for fp in self.fingerprints:
            pair = _pair("system_fingerprint", fp)
            self._fp_edits += [b"," + pair, pair + b","]

    def _careful(self, ev: bytes) -> bytes:
        """One whole event parsed, remembered (model name, fingerprint), edited or dropped."""
        name, data = sse_fields(ev)
        if data is None or data == b"[DONE]":
            return ev
        try:
            obj = loads(data)
        except ValueError:
            return scrub_bytes(ev, self.alias, self.names)
        if not isinstance(obj, dict):
            return ev
        for holder in identity_holders(obj):
            if isinstance(holder, dict):
                model = holder.get("model")
                if isinstance(model, str) and model and model != self.alias:
                    self.names.add(model)
                if "system_fingerprint" in holder:
                    fp = holder["system_fingerprint"]
                    self.fingerprints.add(fp if isinstance(fp, str) else None)
        self._kept.append((name, obj))
        if self.hide_usage and obj.get("choices") == [] and "usage" in obj:
            return b""
        out = rewrite_identity(ev, obj, self.alias)
        if out is None:  # not the compact form: edit the object (its model names are noted above)
            scrub(obj, self.alias)
            out = (f"event: {name}\n" if name else "").encode() + b"data: " + dump(obj).encode() + b"\n\n"
        return out

    def finish(self) -> None:
        """Feed every kept event to the reassembler, in order (after the agent has its answer).
        Consecutive raw chunks are whole events, so they are joined and parsed in one go: one
        json.loads per stream instead of one per upstream chunk."""
        raw: list[bytes] = []
        for item in [*self._kept, None]:
            if isinstance(item, bytes):
                raw.append(item)
                continue
            if raw:
                joined = b"".join(raw)
                lines = _data_lines(joined) if self.dialect == "openai" else None
                # the chat dialect's fast path (its asm is always the chat Reassembler)
                if lines is not None and isinstance(self.asm, Reassembler):
                    feed_openai_events(lines, self.asm)
                else:
                    for name, obj in parse_events(joined):
                        self.asm.event(name, obj)
                raw.clear()
            if item is not None:
                self.asm.event(*item)
        self._kept.clear()
        self.asm.done = self.asm.done or self.ended


def parse_events(raw: bytes) -> list[tuple[str | None, dict[str, Any]]]:
    """The JSON-object events in `raw` (whole events), `[DONE]` and other non-objects left out.
    One json.loads for the common shape; event by event otherwise."""
    objs = _data_only(raw)
    if objs is not None:
        return [(None, obj) for obj in objs if isinstance(obj, dict)]
    found = _SIMPLE_EVENTS.findall(raw)
    if sum(len(whole) for whole, _, _ in found) == len(raw):
        kept = [(name, data) for _, name, data in found if data != b"[DONE]"]
        try:
            objs = loads(b"[" + b",".join(data for _, data in kept) + b"]")
        except ValueError:
            objs = None
        if isinstance(objs, list) and len(objs) == len(kept):
            return [(name.decode("utf-8", errors="replace").strip() or None, obj)
                    for (name, _), obj in zip(kept, objs, strict=True) if isinstance(obj, dict)]
    out: list[tuple[str | None, dict[str, Any]]] = []
    for ev in SSESplitter().feed(raw):
        name, data = sse_fields(ev)
        if data is None or data == b"[DONE]":
            continue
        try:
            obj = loads(data)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append((name, obj))
    return out


def _data_lines(raw: bytes) -> list[bytes] | None:
    """OpenAI's shape, `data: <one line>` + blank line per event: each event's data, `[DONE]`
    left out. Only when the newline count proves there is no other line."""
    events = raw.count(b"\n\n")
    if not raw.startswith(b"data: ") or raw.count(b"\n") != 2 * events or not raw.endswith(b"\n\n"):
        return None
    if raw.count(b"\n\ndata: ") != events - 1:
        return None
    return [line for line in raw[6:-2].split(b"\n\ndata: ") if line != b"[DONE]"]


def _data_only(raw: bytes) -> list[Any] | None:
    """The events of OpenAI's shape (`_data_lines`) parsed as one JSON array."""
    lines = _data_lines(raw)
    if lines is None:
        return None
    try:
        objs = loads(b"[" + b",".join(lines) + b"]")
    except ValueError:
        return None
    return objs if isinstance(objs, list) and len(objs) == len(lines) else None
