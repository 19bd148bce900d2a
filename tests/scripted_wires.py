"""How the scripted model (tests/scripted_model.py) writes its answer on each wire: OpenAI chat
completions, Anthropic Messages and OpenAI Responses, each as one JSON body or as the SSE events
the real APIs send (names, shapes, usage where each puts it). Pure: an `Answer` in, bytes out.
Ids are derived from the request, so the same request gives the same bytes twice."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

MODEL = "scripted-model-1"
"""The name this server gives itself (the meter must hide it from the agent)."""


@dataclass
class Answer:
    text: str
    call: tuple[str, dict[str, Any]] | None
    prompt_tokens: int
    completion_tokens: int


def pieces(text: str, size: int = 4) -> list[str]:
    """'Tokens': fixed-size slices, so stream fragments cut words and JSON mid-way like real ones."""
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def _id(prefix: str, *parts: Any) -> str:
    """Ids derived from the content, so the same request gives the same bytes twice."""
    return prefix + hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _sse(data: Any, event: str | None = None) -> bytes:
    line = f"data: {json.dumps(data, separators=(',', ':'))}\n\n"
    return (f"event: {event}\n{line}" if event else line).encode()


def chat_completion(a: Answer, body: dict[str, Any]) -> tuple[dict[str, Any] | None, list[bytes]]:
    ident = _id("chatcmpl-", body.get("messages"))
    usage = {"prompt_tokens": a.prompt_tokens, "completion_tokens": a.completion_tokens,
             "total_tokens": a.prompt_tokens + a.completion_tokens}
    finish = "tool_calls" if a.call else "stop"
    calls = ([{"id": _id("call_", ident, a.call), "type": "function",
               "function": {"name": a.call[0], "arguments": json.dumps(a.call[1])}}] if a.call else [])
    if not body.get("stream"):
        msg: dict[str, Any] = {"role": "assistant", "content": a.text}
        if calls:
            msg["tool_calls"] = calls
        return {"id": ident, "object": "chat.completion", "created": 1700000000, "model": MODEL,
                "choices": [{"index": 0, "message": msg, "finish_reason": finish}], "usage": usage}, []

    def chunk(delta: dict[str, Any], reason: str | None = None) -> bytes:
        return _sse({"id": ident, "object": "chat.completion.chunk", "created": 1700000000, "model": MODEL,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]})

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": p}) for p in pieces(a.text)]
    for i, c in enumerate(calls):
        events.append(chunk({"tool_calls": [{"index": i, "id": c["id"], "type": "function",
                                             "function": {"name": c["function"]["name"], "arguments": ""}}]}))
        events += [chunk({"tool_calls": [{"index": i, "function": {"arguments": frag}}]})
                   for frag in pieces(c["function"]["arguments"], 7)]
    events.append(chunk({}, finish))
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append(_sse({"id": ident, "object": "chat.completion.chunk", "created": 1700000000,
                            "model": MODEL, "choices": [], "usage": usage}))
    events.append(b"data: [DONE]\n\n")
    return None, events


def anthropic_message(a: Answer, body: dict[str, Any]) -> tuple[dict[str, Any] | None, list[bytes]]:
    ident = _id("msg_", body.get("messages"))
    blocks: list[dict[str, Any]] = [{"type": "text", "text": a.text}]
    if a.call:
        blocks.append({"type": "tool_use", "id": _id("toolu_", ident, a.call), "name": a.call[0],
                       "input": a.call[1]})
    usage = {"input_tokens": a.prompt_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
             "output_tokens": a.completion_tokens}
    stop = "tool_use" if a.call else "end_turn"
    message = {"id": ident, "type": "message", "role": "assistant", "model": MODEL, "content": blocks,
               "stop_reason": stop, "stop_sequence": None, "usage": usage}
    if not body.get("stream"):
        return message, []
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events = [_sse({"type": "message_start", "message": start}, "message_start")]
    for i, b in enumerate(blocks):
        empty = {"type": "text", "text": ""} if b["type"] == "text" else {**b, "input": {}}
        events.append(_sse({"type": "content_block_start", "index": i, "content_block": empty},
                           "content_block_start"))
        if i == 0:
            events.append(_sse({"type": "ping"}, "ping"))
        deltas = ([{"type": "text_delta", "text": x} for x in pieces(b["text"])] if b["type"] == "text"
                  else [{"type": "input_json_delta", "partial_json": x}
                        for x in pieces(json.dumps(b["input"]), 7)])
        events += [_sse({"type": "content_block_delta", "index": i, "delta": d}, "content_block_delta")
                   for d in deltas]
        events.append(_sse({"type": "content_block_stop", "index": i}, "content_block_stop"))
    events.append(_sse({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                        "usage": {"output_tokens": a.completion_tokens}}, "message_delta"))
    events.append(_sse({"type": "message_stop"}, "message_stop"))
    return None, events


def responses_answer(a: Answer, body: dict[str, Any]) -> tuple[dict[str, Any] | None, list[bytes]]:
    ident = _id("resp_", body.get("input"))
    msg_id = _id("msg_", ident)
    text_part = {"type": "output_text", "text": a.text, "annotations": []}
    message = {"type": "message", "id": msg_id, "status": "completed", "role": "assistant",
               "content": [text_part]}
    output: list[dict[str, Any]] = [message]
    if a.call:
        fc_id = _id("fc_", ident, a.call)
        output.append({"type": "function_call", "id": fc_id, "call_id": _id("call_", fc_id),
                       "name": a.call[0], "arguments": json.dumps(a.call[1]), "status": "completed"})
    usage = {"input_tokens": a.prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
             "output_tokens": a.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
             "total_tokens": a.prompt_tokens + a.completion_tokens}
    response = {"id": ident, "object": "response", "created_at": 1700000000, "status": "completed",
                "model": MODEL, "output": output, "usage": usage, "error": None, "incomplete_details": None}
    if not body.get("stream"):
        return response, []
    seq = iter(range(1 << 30))

    def ev(kind: str, **data: Any) -> bytes:
        return _sse({"type": kind, "sequence_number": next(seq), **data}, kind)

    pending = {**response, "status": "in_progress", "output": [], "usage": None}
    events = [ev("response.created", response=pending), ev("response.in_progress", response=pending)]
    events.append(ev("response.output_item.added", output_index=0,
                     item={**message, "status": "in_progress", "content": []}))
    events.append(ev("response.content_part.added", item_id=msg_id, output_index=0, content_index=0,
                     part={**text_part, "text": ""}))
    events += [ev("response.output_text.delta", item_id=msg_id, output_index=0, content_index=0, delta=p)
               for p in pieces(a.text)]
    events.append(ev("response.output_text.done", item_id=msg_id, output_index=0, content_index=0,
                     text=a.text))
    events.append(ev("response.content_part.done", item_id=msg_id, output_index=0, content_index=0,
                     part=text_part))
    events.append(ev("response.output_item.done", output_index=0, item=message))
    if a.call:
        fc = output[1]
        events.append(ev("response.output_item.added", output_index=1,
                         item={**fc, "arguments": "", "status": "in_progress"}))
        events += [ev("response.function_call_arguments.delta", item_id=fc["id"], output_index=1, delta=frag)
                   for frag in pieces(fc["arguments"], 7)]
        events.append(ev("response.function_call_arguments.done", item_id=fc["id"], output_index=1,
                         arguments=fc["arguments"]))
        events.append(ev("response.output_item.done", output_index=1, item=fc))
    events.append(ev("response.completed", response=response))
    return None, events


WIRES = {"openai": chat_completion, "anthropic": anthropic_message, "responses": responses_answer}
