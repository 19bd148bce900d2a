"""Server-sent events, the framing every streaming wire uses: split a byte stream into events, read
an event's `event:` and `data:` fields, write one."""

from __future__ import annotations

import json
import re
from typing import Any

_EVENT_END = re.compile(rb"\r?\n\r?\n")


class SSESplitter:
    """Cuts a byte stream into whole SSE events (each with its blank-line terminator).

    Upstreams flush at arbitrary byte boundaries; only whole events can be parsed, rewritten and
    forwarded, so a partial tail waits for the next chunk (never more than one event is held).
    """

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._buf + chunk if self._buf else chunk
        events: list[bytes] = []
        start = 0
        for m in _EVENT_END.finditer(buf):
            events.append(buf[start:m.end()])
            start = m.end()
        self._buf = buf[start:]
        return events

    @property
    def pending(self) -> bytes:
        """Bytes of an unfinished event (what a dropped stream cut off)."""
        return self._buf


def sse_fields(raw: bytes) -> tuple[str | None, bytes | None]:
    """(event name, data) of one SSE event; multi-line data is joined with newlines as the spec says.
    Data stays bytes: json.loads takes them, and no decode is spent on the hot path."""
    event: str | None = None
    data: list[bytes] = []
    for line in raw.splitlines():
        if line.startswith(b"data:"):
            data.append(line[5:].removeprefix(b" "))
        elif line.startswith(b"event:"):
            event = line[6:].strip().decode("utf-8", errors="replace")
    return event, (b"\n".join(data) if data else None)


def sse_event(data: dict[str, Any], event: str | None = None) -> bytes:
    """Serialise one event the way the upstreams do (compact JSON, `event:` line for Anthropic)."""
    body = f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"
    return (f"event: {event}\n" + body if event else body).encode()
