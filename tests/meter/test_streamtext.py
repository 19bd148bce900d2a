"""Tests for reading a relayed stream's text deltas back by template (labctl/meter/streamtext.py): the
transcript must be exactly what parsing every event gives, whatever the text holds."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from labctl.meter.streamtext import feed_openai_events
from labctl.meter.transcript import Reassembler

TRICKY = ['"', "\\", "\\\\", '\\"', '","', '"content":"', "\n", "é", "\u2028", "✓", "}", "]},", " ", "x"]


def chunk(delta: dict[str, Any], finish: str | None = None, ascii: bool = False, **extra: Any) -> bytes:
    obj = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "up-model",
           "system_fingerprint": "fp", "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                    "finish_reason": finish}], **extra}
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=ascii).encode()


def by_event(lines: list[bytes]) -> Reassembler:
    asm = Reassembler("openai", "alias")
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            asm.event(None, obj)
    return asm


def state(asm: Reassembler) -> tuple[Any, ...]:
    return asm.response(), asm.usage(), asm.timings, asm.events, asm.upstream_models, asm.error


def call(arguments: str, name: str | None = None, **head: str) -> dict[str, Any]:
    function = {"name": name, "arguments": arguments} if name else {"arguments": arguments}
    return {"tool_calls": [{"index": 0, **head, "function": function}]}


def stream(rng: random.Random) -> list[bytes]:
    lines = [chunk({"role": "assistant", "content": None})]
    lines += [chunk({"reasoning_content": rng.choice(TRICKY)}) for _ in range(rng.randint(0, 20))]
    for _ in range(rng.randint(1, 60)):
        text = "".join(rng.choice(TRICKY) for _ in range(rng.randint(0, 4)))
        other_shape = {"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"content": text}}]}
        lines.append(chunk({"content": text}, ascii=rng.random() < 0.2) if rng.random() > 0.1 else
                     json.dumps(other_shape).encode())
    lines.append(chunk(call("", "ls", id="c1")))
    lines += [chunk(call(rng.choice(TRICKY))) for _ in range(5)]
    lines.append(chunk({}, "tool_calls"))
    lines.append(chunk({"content": "late"}, timings={"predicted_n": 3}))
    usage = {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}
    lines.append(json.dumps({"id": "chatcmpl-1", "choices": [], "usage": usage}).encode())
    return lines


@pytest.mark.parametrize("seed", range(40))
def test_template_reading_gives_what_parsing_every_event_gives(seed: int) -> None:
    lines = stream(random.Random(seed))
    asm = Reassembler("openai", "alias")
    feed_openai_events(lines, asm)
    assert state(asm) == state(by_event(lines))


def test_a_middle_that_is_not_one_string_is_parsed_in_full() -> None:
    """Same bytes around it as the template, but the middle is two strings, or an object's worth
    of keys: the shortcut must not take it (the whole event decides, as it would alone)."""
    template = chunk({"content": "a"})
    before, after = template.split(b'"a"')
    for middle in (b'"b","c"', b'"b","x":"c"', b'"b\\"', b"1", b'"b" '):
        lines = [template, before + middle + after, chunk({"content": "z"})]
        asm = Reassembler("openai", "alias")
        feed_openai_events(lines, asm)
        assert state(asm) == state(by_event(lines)), middle


def test_a_uniform_stream_is_parsed_in_full_only_where_it_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of the module: 500 text deltas cost one full parse for the template, not 500."""
    import labctl.meter.streamtext as streamtext

    full: list[bytes] = []
    one = streamtext._feed_one
    monkeypatch.setattr(streamtext, "_feed_one", lambda line, asm: full.append(line) or one(line, asm))
    lines = [chunk({"role": "assistant", "content": None})] + [chunk({"content": "tok "}) for _ in range(500)]
    lines.append(chunk({}, "stop"))
    asm = Reassembler("openai", "alias")
    feed_openai_events(lines, asm)
    assert state(asm) == state(by_event(lines)) and asm.response()["content"] == "tok " * 500
    assert len(full) == 3  # the role event, the template, the finish_reason event
