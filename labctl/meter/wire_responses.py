"""OpenAI's Responses API (`POST /v1/responses`) as the meter reads it: the wire codex speaks.

Why a module of its own: the Responses API shapes nothing like chat completions — the request is
`input` items instead of `messages`, the answer is `output` items (message, reasoning,
function_call), a stream is named events (`response.output_text.delta`,
`response.function_call_arguments.delta`, …, ending in `response.completed`) and usage is
`input_tokens` / `output_tokens` inside the final response object. This file turns all of that
into the transcript's one response shape and usage, and holds the few dialect-specific answers
(error event, nudge injection, terminal event) the proxy needs. Pure, no I/O, and deliberately
free of imports from labctl.meter.transcript, which imports it.

llama-server (the pinned llama.cpp) serves the same API: its stream carries no sequence numbers,
names function-call deltas by `item_id` only, and adds llama.cpp's `timings` to the data of the
last event of each chunk (always `response.completed` at the end) — all handled here.
"""

from __future__ import annotations

import json
import re
from typing import Any

from labctl.meter.reassembly import Collected, partial_usage

TERMINAL = re.compile(rb'(?m)^event: ?response\.(?:completed|failed|incomplete)\r?$'
                      rb'|"type"\s*:\s*"response\.(?:completed|failed|incomplete)"')
"""The events that end a Responses stream (it has no `[DONE]`); found in bytes, like the other
dialects' (labctl/meter/sserelay.py): JSON strings hold no raw newline or unescaped quote."""
_FINAL = {"response.completed", "response.failed", "response.incomplete"}


def normalize_usage(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """Responses usage in the transcript's four keys; `input_tokens` already includes cached ones
    (as OpenAI's prompt_tokens does), so nothing is added."""
    if not usage:
        return None
    prompt = int(usage.get("input_tokens") or 0)
    completion = int(usage.get("output_tokens") or 0)
    cached = int((usage.get("input_tokens_details") or {}).get("cached_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "cached_tokens": cached,
            "total_tokens": prompt + completion, "raw": usage}


def finish_reason(response: dict[str, Any], has_calls: bool) -> str | None:
    """The Responses `status` in chat-completions terms, so reports count stops alike: a completed
    answer with function calls is `tool_calls`, without is `stop`; an answer cut at
    max_output_tokens is `length`; anything else keeps its status (`failed`, `cancelled`)."""
    status = response.get("status")
    if status == "completed":
        return "tool_calls" if has_calls else "stop"
    if status == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        return "length" if reason == "max_output_tokens" else (reason or "incomplete")
    return status if isinstance(status, str) else None


class ResponsesReassembler(Collected):
    """The Responses twin of labctl.meter.transcript.Reassembler: same attributes, same `response()`
    shape ({content, reasoning, tool_calls: [{id, name, arguments}], finish_reason, model}).

    Function calls are keyed by their item id (`fc_…`), the one thing both OpenAI and llama-server
    put on every argument delta; a call's `id` in the transcript is its `call_id`, the id the
    agent answers with (`function_call_output.call_id`)."""

    dialect = "responses"

    # -- whole bodies
    def body(self, obj: dict[str, Any]) -> None:
        self._final(obj)
        self.done = True
        self.timings = obj.get("timings") or self.timings
        for item in obj.get("output") or []:
            if not isinstance(item, dict):
                continue
            kind = item.get("type")
            if kind == "message":
                self.text += [p.get("text") or "" for p in item.get("content") or []
                              if isinstance(p, dict) and p.get("type") == "output_text"]
            elif kind == "reasoning":
                self.reasoning += _reasoning_texts(item)
            elif kind == "function_call":
                self._call(item, whole=True)
        self.finish_reason = finish_reason(obj, bool(self.calls))

    # -- streams
    def event(self, name: str | None, obj: dict[str, Any]) -> None:
        """One parsed SSE event."""
        self.events += 1
        kind = obj.get("type") or name
        if isinstance(obj.get("timings"), dict):
            self.timings = obj["timings"]
        if kind == "response.output_text.delta":
            self.text.append(obj.get("delta") or "")
        elif kind in ("response.reasoning_text.delta", "response.reasoning_summary_text.delta"):
            self.reasoning.append(obj.get("delta") or "")
        elif kind == "response.output_item.added":
            item = obj.get("item") or {}
            if item.get("type") == "function_call":
                self._call(item, whole=False)
        elif kind == "response.function_call_arguments.delta":
            call = self.calls.get(str(obj.get("item_id")))
            if call is not None:
                call["arguments"] += obj.get("delta") or ""
                self.arg_deltas += bool(obj.get("delta"))
        elif kind == "response.output_item.done":
            item = obj.get("item") or {}
            if item.get("type") == "function_call":
                self._call(item, whole=True)  # the whole arguments: what the deltas should have built
        elif kind in _FINAL:
            response = obj.get("response") or {}
            self._final(response)
            self.finish_reason = finish_reason(response, bool(self.calls))
            self.done = True
            if kind == "response.failed":
                self.error = response.get("error") or {"type": kind}
        elif kind == "error":
            self.error = obj.get("error") or obj
        elif kind in ("response.created", "response.in_progress"):
            self._final(obj.get("response") or {}, closing=False)

    def _final(self, response: dict[str, Any], closing: bool = True) -> None:
        m = response.get("model")
        if isinstance(m, str) and m and m != self.alias:
            self.upstream_models.add(m)
        self.raw_usage = response.get("usage") or self.raw_usage
        self.final_usage = self.final_usage or (closing and bool(response.get("usage")))

    def _call(self, item: dict[str, Any], whole: bool) -> None:
        key = str(item.get("id") or item.get("call_id") or len(self.calls))
        call = self.calls.setdefault(key, {"id": None, "name": None, "arguments": ""})
        call["id"] = item.get("call_id") or call["id"]
        call["name"] = item.get("name") or call["name"]
        args = item.get("arguments")
        if isinstance(args, str) and (whole or not call["arguments"]):
            call["arguments"] = args

    def response(self) -> dict[str, Any]:
        return {"content": "".join(self.text) if self.text else None,
                "reasoning": "".join(self.reasoning) if self.reasoning else None,
                "tool_calls": list(self.calls.values()),
                "finish_reason": self.finish_reason, "model": self.alias}

    def usage(self) -> dict[str, Any] | None:
        return normalize_usage(self.raw_usage)

    def partial_usage(self) -> dict[str, Any]:
        """What the stream carried, when its closing usage never came (labctl/meter/reassembly.py)."""
        return partial_usage(self.usage(), self.seen_deltas())


def _reasoning_texts(item: dict[str, Any]) -> list[str]:
    parts = [*(item.get("content") or []), *(item.get("summary") or [])]
    return [p.get("text") or "" for p in parts if isinstance(p, dict) and p.get("text")]


def error_event(message: str, kind: str = "api_error") -> bytes:
    """The event that ends a broken Responses stream: `event: error`, as OpenAI sends it (codex
    shows its message and stops retrying on it)."""
    data = {"type": "error", "code": "upstream_error", "message": message, "param": None,
            "error": {"type": kind, "message": message}}
    return f"event: error\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def inject_user_text(body: dict[str, Any], text: str) -> None:
    """A nudge as one more user item of `input` (a plain-string input becomes its first item);
    the Responses API takes consecutive user items, so nothing is merged."""
    given = body.get("input")
    items: list[Any]
    if isinstance(given, str):
        items = [{"role": "user", "content": given}]
    elif isinstance(given, list):
        items = given
    else:
        items = []
    items.append({"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})
    body["input"] = items


def request_turns(request: dict[str, Any]) -> list[Any] | None:
    """A recorded request's conversation as chat-style turns, whatever its wire: `messages` as they
    are; Responses `input` items mapped (a message keeps its role and content, a function_call is
    an assistant turn, a function_call_output a `tool` turn holding the command's output), so
    metrics and pathology read codex's runs like any other. None when there is no conversation."""
    msgs = request.get("messages")
    if isinstance(msgs, list):
        return msgs
    given = request.get("input")
    if isinstance(given, str):
        return [{"role": "user", "content": given}]
    if not isinstance(given, list):
        return None
    turns: list[Any] = []
    for item in given:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "function_call":
            turns.append({"role": "assistant", "content": None, "tool_calls": [item]})
        elif kind == "function_call_output":
            turns.append({"role": "tool", "content": item.get("output")})
        elif "role" in item:
            turns.append({"role": item["role"], "content": item.get("content")})
    return turns
