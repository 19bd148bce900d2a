"""The two wire dialects the meter speaks, and how they become transcript records.

Why a module of its own: the proxy forwards bytes; everything that has to *understand* them —
splitting SSE, reassembling streamed deltas (OpenAI tool-call argument fragments, Anthropic
content blocks) into the transcript's one response shape, normalising `usage`, shaping errors the
way each SDK expects, hiding the model's identity, injecting a nudge — lives here, free of I/O,
so it is tested and reasoned about without a network. Writing the records: labctl/meter/state.py.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import Any, Literal

import orjson

from labctl.meter import actions, wire_responses
from labctl.meter.names import replace_names_bytes
from labctl.meter.reassembly import Collected, partial_usage
from labctl.meter.sse import sse_event

Dialect = Literal["openai", "anthropic", "responses"]
"""A request's wire format: chat completions, Anthropic messages, or OpenAI's Responses API
(labctl/meter/wire_responses.py). As a meter's provider dialect only the first two occur."""

def loads(data: bytes | str) -> Any:
    """`json.loads`, through orjson (2-3x faster: every streamed token and every request body
    is parsed once). What orjson refuses (NaN, integers past 64 bits, lone surrogates) goes to
    Python's json, which took it before orjson was used."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def dump(obj: Any) -> str:
    """Compact JSON with UTF-8 kept as is: the upstreams' own style, so rewritten bodies stay close."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def new_record(seq: int, t_start: float, dialect: Dialect, path: str) -> dict[str, Any]:
    """The skeleton of one exchange record: every key present from the start, filled as it goes."""
    return {"kind": "exchange", "seq": seq, "t_start": t_start, "t_end": None, "latency_ms": None,
            "ttfb_ms": None, "dialect": dialect, "path": path, "stream": False, "request": None,
            "request_bytes": None, "response": None, "usage": None, "timings": None, "status": None,
            "error": None, "forwarded": False, "interventions": None, "clamped": None, "cost_usd": None}


def normalize_usage(dialect: Dialect, usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """The same four keys for both dialects, plus the upstream's own object under `raw`.

    Anthropic's `input_tokens` excludes cached and cache-written tokens, OpenAI's `prompt_tokens`
    includes them; prompt_tokens here always means the whole prompt, so budgets compare alike.
    """
    if not usage:
        return None
    if dialect == "openai":
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    else:
        cached = int(usage.get("cache_read_input_tokens") or 0)
        written = int(usage.get("cache_creation_input_tokens") or 0)
        prompt = int(usage.get("input_tokens") or 0) + cached + written
        completion = int(usage.get("output_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "cached_tokens": cached,
            "total_tokens": prompt + completion, "raw": usage}


class Reassembler(Collected):
    """Builds the transcript's response shape from a whole body or from a stream of events.

    Shape: {content, reasoning, tool_calls: [{id, name, arguments (the JSON text)}], finish_reason,
    model}. `done` says whether the dialect's terminal event was seen: a stream that ends without it
    was dropped. `upstream_models` collects the model names the upstream revealed (to redact them).
    """

    def __init__(self, dialect: Dialect, alias: str) -> None:
        super().__init__(alias)
        self.dialect = dialect

    # -- whole bodies
    def body(self, obj: dict[str, Any]) -> None:
        self._model(obj)
        self.timings = obj.get("timings") or self.timings
        self.raw_usage = obj.get("usage") or self.raw_usage
        self.final_usage = bool(obj.get("usage"))
        self.done = True
        if self.dialect == "openai":
            choice = (obj.get("choices") or [{}])[0]
            msg = choice.get("message") or {}
            self.finish_reason = choice.get("finish_reason")
            self._openai_delta(msg)
        else:
            self.finish_reason = obj.get("stop_reason")
            for i, block in enumerate(obj.get("content") or []):
                self._block_start(i, block)
                if block.get("type") == "tool_use":
                    self.calls[i]["arguments"] = dump(block.get("input") or {})

    # -- streams
    def event(self, name: str | None, obj: dict[str, Any]) -> None:
        """One parsed SSE event."""
        self.events += 1
        if self.dialect == "openai":
            self._model(obj)
            if obj.get("error"):
                self.error = obj["error"]
            if obj.get("usage"):
                self.raw_usage, self.final_usage = obj["usage"], True
            self.timings = obj.get("timings") or self.timings
            for choice in obj.get("choices") or []:
                if choice.get("index", 0) != 0:
                    continue
                self._openai_delta(choice.get("delta") or {})
                self.finish_reason = choice.get("finish_reason") or self.finish_reason
            return
        kind = obj.get("type") or name
        if kind == "message_start":
            msg = obj.get("message") or {}
            self._model(msg)
            self.raw_usage = dict(msg.get("usage") or {})
        elif kind == "content_block_start":
            self._block_start(int(obj.get("index", 0)), obj.get("content_block") or {})
        elif kind == "content_block_delta":
            self._anthropic_delta(int(obj.get("index", 0)), obj.get("delta") or {})
        elif kind == "message_delta":
            self.finish_reason = (obj.get("delta") or {}).get("stop_reason") or self.finish_reason
            self.raw_usage = {**(self.raw_usage or {}), **(obj.get("usage") or {})}
            self.final_usage = self.final_usage or bool(obj.get("usage"))
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            self.error = obj.get("error") or obj

    def text_deltas(self, reasoning: bool, texts: list[str]) -> None:
        """Streamed events that carried nothing but these text deltas (labctl/meter/streamtext.py)."""
        self.events += len(texts)
        (self.reasoning if reasoning else self.text).extend(texts)

    def _model(self, obj: dict[str, Any]) -> None:
        m = obj.get("model")
        if isinstance(m, str) and m and m != self.alias:
            self.upstream_models.add(m)

    def _openai_delta(self, d: dict[str, Any]) -> None:
        if isinstance(d.get("content"), str):
            self.text.append(d["content"])
        if isinstance(d.get("reasoning_content"), str):
            self.reasoning.append(d["reasoning_content"])
        for n, tc in enumerate(d.get("tool_calls") or []):
            call = self.calls.setdefault(int(tc.get("index", n)), {"id": None, "name": None, "arguments": ""})
            fn = tc.get("function") or {}
            call["id"] = tc.get("id") or call["id"]
            call["name"] = fn.get("name") or call["name"]
            if isinstance(fn.get("arguments"), str):
                call["arguments"] += fn["arguments"]
                self.arg_deltas += bool(fn["arguments"])

    def _block_start(self, i: int, block: dict[str, Any]) -> None:
        kind = block.get("type")
        if kind == "text" and block.get("text"):
            self.text.append(block["text"])
        elif kind == "thinking" and block.get("thinking"):
            self.reasoning.append(block["thinking"])
        elif kind in ("tool_use", "server_tool_use"):
            self.calls[i] = {"id": block.get("id"), "name": block.get("name"), "arguments": ""}

    def _anthropic_delta(self, i: int, d: dict[str, Any]) -> None:
        kind = d.get("type")
        if kind == "text_delta":
            self.text.append(d.get("text") or "")
        elif kind == "thinking_delta":
            self.reasoning.append(d.get("thinking") or "")
        elif kind == "input_json_delta" and i in self.calls:
            self.calls[i]["arguments"] += d.get("partial_json") or ""
            self.arg_deltas += bool(d.get("partial_json"))

    def response(self) -> dict[str, Any]:
        return {"content": "".join(self.text) if self.text else None,
                "reasoning": "".join(self.reasoning) if self.reasoning else None,
                "tool_calls": [self.calls[k] for k in sorted(self.calls)],
                "finish_reason": self.finish_reason, "model": self.alias}

    def usage(self) -> dict[str, Any] | None:
        return normalize_usage(self.dialect, self.raw_usage)

    def partial_usage(self) -> dict[str, Any]:
        """What the stream carried, when its closing usage never came (labctl/meter/reassembly.py)."""
        return partial_usage(self.usage(), self.seen_deltas())


AnyReassembler = Reassembler | wire_responses.ResponsesReassembler
"""Either dialect's reassembler: what the proxy's relay and `finish` take (the attributes they read
and `response()` / `usage()` exist on both)."""


def reassembler(dialect: Dialect, alias: str) -> AnyReassembler:
    """The reassembler of a request's dialect (both have the same attributes and `response()`)."""
    if dialect == "responses":
        return wire_responses.ResponsesReassembler(alias)
    return Reassembler(dialect, alias)


def rewrite_identity(raw: bytes, obj: dict[str, Any], alias: str) -> bytes | None:
    """`raw` (the bytes `obj` was parsed from) with the model renamed and the fingerprint removed
    by exact byte edits, so everything else reaches the agent untouched and no re-serialisation is
    paid per streamed token. Each edited pair must occur exactly once, in the compact form llama.cpp
    writes (`"model":"x"`) or spaced as pretty-printing APIs write it (`"model": "x"`); otherwise
    None, and the caller falls back to `scrub`. A pair with unescaped quotes cannot hide inside a
    JSON string, so a match is the field itself."""
    out: bytes | None = raw
    for holder in identity_holders(obj):
        if not isinstance(holder, dict) or out is None:
            continue
        model = holder.get("model")
        if isinstance(model, str) and model != alias:
            out = _edit_once(out, "model", model, _pair("model", alias))
        if "system_fingerprint" in holder and out is not None:
            fp = holder["system_fingerprint"]
            fp = fp if isinstance(fp, str) else None
            out = (_edit_once(out, "system_fingerprint", fp, b"", lead=",")
                   or _edit_once(out, "system_fingerprint", fp, b"", trail=","))
    return out


def _edit_once(raw: bytes, key: str, value: str | None, new: bytes, lead: str = "", trail: str = ""
               ) -> bytes | None:
    """`raw` with the one occurrence of the pair `"key":"value"` (with `lead` before it and `trail`
    after it; compact, or else spaced) replaced by `new`; None when there is not exactly one."""
    pair = lead.encode() + _pair(key, value) + trail.encode()
    n = raw.count(pair)
    if n == 1:
        return raw.replace(pair, new)
    if n == 0:  # the pattern only now: compact is what llama.cpp streams, token after token
        found = _spaced(key, value, lead, trail).findall(raw)
        if len(found) == 1:
            return raw.replace(found[0], new)
    return None


@functools.lru_cache(maxsize=64)
def _spaced(key: str, value: str | None, lead: str = "", trail: str = "") -> re.Pattern[bytes]:
    """`"key" : "value"` with any whitespace around the colon (and a comma before or after)."""
    lead_re = re.escape(lead.encode()) + rb"\s*" if lead else b""
    trail_re = rb"\s*" + re.escape(trail.encode()) if trail else b""
    return re.compile(lead_re + re.escape(json.dumps(key).encode()) + rb"\s*:\s*"
                      + re.escape(json.dumps(value, ensure_ascii=False).encode()) + trail_re)


def identity_holders(obj: dict[str, Any]) -> tuple[Any, Any, Any]:
    """Where a body or event names the model: top level, Anthropic's `message_start.message`,
    a Responses stream event's `response`."""
    return obj, obj.get("message"), obj.get("response")


@functools.lru_cache(maxsize=64)
def _pair(key: str, value: str | None) -> bytes:
    """`"key":"value"` as compact JSON bytes (cached: the same few pairs recur in every event)."""
    return json.dumps({key: value}, separators=(",", ":")).encode()[1:-1]


def with_model(raw: bytes, model: str) -> bytes:
    """A JSON request body naming `model` instead of the agent's alias (unchanged if not an object)."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(obj, dict) or "model" not in obj:
        return raw
    return dump({**obj, "model": model}).encode()


def scrub(obj: dict[str, Any], alias: str) -> bool:
    """Rewrite what names the upstream model in a response body or event: `model` (top level and
    Anthropic's `message.model`) becomes the alias, `system_fingerprint` (engine build) goes.
    True when anything changed, so untouched events are forwarded byte for byte."""
    changed = False
    for holder in identity_holders(obj):
        if isinstance(holder, dict):
            if "model" in holder and holder["model"] != alias:
                holder["model"] = alias
                changed = True
            if "system_fingerprint" in holder:
                del holder["system_fingerprint"]
                changed = True
    return changed


_MODEL_FIELD = re.compile(rb'"model"\s*:\s*"(?:[^"\\]|\\.)*"')
_FINGERPRINT_FIELD = re.compile(rb'"system_fingerprint"\s*:\s*(?:"(?:[^"\\]|\\.)*"|null)\s*,?')


def scrub_bytes(data: bytes, alias: str, names: set[str]) -> bytes:
    """Best effort for bodies that are not JSON (or not parseable): same rewrite, by pattern, plus
    every known upstream model name replaced by the alias (as a whole word)."""
    data = _MODEL_FIELD.sub(b'"model":' + json.dumps(alias).encode(), data)
    data = _FINGERPRINT_FIELD.sub(b"", data)
    return replace_names_bytes(data, frozenset(names), alias)


_DROP_UP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "accept-encoding",
            "authorization", "x-api-key", "api-key", "proxy-authorization", "cookie", "openai-organization",
            "openai-project", "upgrade", "te", "trailer", "expect"}
_KEEP_DOWN = ("Content-Type", "Retry-After")


def upstream_headers(agent: Mapping[str, str], dialect: Dialect, key: str | None) -> dict[str, str]:
    """The agent's headers minus hop-by-hop ones and every credential (its dummy key never leaves
    the meter), plus the real key the way the provider wants it."""
    h = {k: v for k, v in agent.items() if k.lower() not in _DROP_UP}
    h["Content-Type"] = "application/json"
    if dialect == "anthropic":
        if not any(k.lower() == "anthropic-version" for k in h):
            h["anthropic-version"] = "2023-06-01"
        if key:
            h["x-api-key"] = key
    elif key:
        h["Authorization"] = f"Bearer {key}"
    return h


def downstream_headers(upstream: Mapping[str, str]) -> dict[str, str]:
    """Only what an SDK needs; `Server: llama.cpp`, request and organisation ids, provider
    rate-limit headers all stay behind (they name the engine or the provider)."""
    return {k: upstream[k] for k in _KEEP_DOWN if k in upstream}


def models_body(dialect: Dialect, alias: str, listing: bool) -> dict[str, Any]:
    """`GET /v1/models` (or one model) naming the alias only: an upstream list names the real model."""
    one: dict[str, Any] = (
        {"type": "model", "id": alias, "display_name": alias, "created_at": "1970-01-01T00:00:00Z"}
        if dialect == "anthropic" else {"id": alias, "object": "model", "created": 0, "owned_by": "labctl"})
    if not listing:
        return one
    if dialect == "anthropic":
        return {"data": [one], "has_more": False, "first_id": alias, "last_id": alias}
    return {"object": "list", "data": [one]}


def error_body(dialect: Dialect, message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    """An error in the shape each dialect's SDK parses (so the agent shows a clear message)."""
    if dialect == "anthropic":
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def error_event(dialect: Dialect, message: str, kind: str = "api_error") -> bytes:
    """The event that ends a broken stream: Anthropic's `event: error`, OpenAI's `data: {"error"}`."""
    if dialect == "anthropic":
        return sse_event(error_body(dialect, message, kind), event="error")
    if dialect == "responses":
        return wire_responses.error_event(message, kind)
    return sse_event(error_body(dialect, message, kind, code="upstream_error"))


def inject_user_text(dialect: Dialect, body: dict[str, Any], text: str) -> None:
    """Add a user turn saying `text`. When the last turn is already the user's (Anthropic tool
    results, a pending prompt) the text joins it: strict chat templates reject two user turns."""
    if dialect == "responses":
        wire_responses.inject_user_text(body, text)
        return
    msgs = body.setdefault("messages", [])
    last = msgs[-1] if msgs else None
    if last is not None and last.get("role") == "user":
        content = last.get("content")
        if isinstance(content, str):
            last["content"] = f"{content}\n\n{text}" if content else text
        elif isinstance(content, list):
            content.append({"type": "text", "text": text})
        else:
            last["content"] = text
        return
    msgs.append({"role": "user", "content": text if dialect == "openai"
                 else [{"type": "text", "text": text}]})


def call_signature(response: dict[str, Any], request: dict[str, Any] | None = None) -> str | None:
    """What the model asked the runtime to execute, for loop detection: its actions as
    `labctl.meter.actions` defines them (tool calls; fenced blocks only when `request` declared no
    tools), normalised; None when the turn executed nothing."""
    return actions.signature(request, response)
