"""Pathology flags: signs in a run's transcript that an agent went wrong in a recognisable way.

Pure functions over the meter's transcript records (`transcript.jsonl`: one `{"kind": "exchange",
"request", "response", "status", "error", …}` per model request, plus intervention records). The
grader adds `pathology(records)` to metrics.json under "pathology" and the names of the flags that
fire under "flags".

A "step" is one answered exchange (a response). Its actions are its tool calls (OpenAI/Anthropic-style
`tool_calls`: name + canonical arguments) or, for text agents such as mini-swe-agent in text mode,
the fenced ```bash blocks of its content. A command's result is read from the next request: the
messages after its last assistant message carry the observation: mini-swe-agent 2.4.x (tool calls,
config mini.yaml) sends a tool message `{"returncode": N, "output": …}`; its older text templates
sent `<returncode>N</returncode>`. Both are read; nonzero is a failure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from labctl.meter.wire_responses import request_turns

STREAK_THRESHOLD = 3
"""A streak of this many identical consecutive steps is a flag."""

FENCED_BASH = re.compile(r"```(?:bash|sh|shell)?[ \t]*\n(.*?)```", re.S)
RETURNCODE = re.compile(r"<returncode>\s*(-?\d+)\s*</returncode>|[\"']?returncode[\"']?\s*[:=]\s*(-?\d+)")
LLAMA_OVERFLOW = "exceeds the available context size"

Record = dict[str, Any]


def exchanges(records: Iterable[Record]) -> list[Record]:
    return [r for r in records if isinstance(r, dict) and r.get("kind", "exchange") == "exchange"
            and ("request" in r or "response" in r)]


def answered(records: Iterable[Record]) -> list[Record]:
    """Exchanges with a response (failed requests are no step: a retry follows them)."""
    return [r for r in exchanges(records) if isinstance(r.get("response"), dict)]


def _canonical_args(arguments: Any) -> str:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return arguments.strip()
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _text(content: Any) -> str:
    """Message content as text: a string, or the text parts of a list of content blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, dict):
                for key in ("text", "content"):
                    if isinstance(block.get(key), str | list):
                        parts.append(_text(block[key]))
                        break
        return "\n".join(parts)
    return ""


def actions(response: Record) -> list[str]:
    """The step's actions as comparable keys: `name(canonical args)` per tool call, else every fenced
    bash block of the content (stripped)."""
    calls = response.get("tool_calls") or []
    keys = []
    for c in calls if isinstance(calls, list) else []:
        if not isinstance(c, dict):
            continue
        fn = c.get("function") if isinstance(c.get("function"), dict) else c
        args = fn.get("arguments", fn.get("input"))
        keys.append(f"{fn.get('name')}({_canonical_args(args)})")
    if keys:
        return keys
    return [b.strip() for b in FENCED_BASH.findall(_text(response.get("content")))]


def _longest_run(keys: Sequence[str | None]) -> int:
    """Longest run of equal, non-None consecutive keys."""
    best = cur = 0
    prev: str | None = None
    for k in keys:
        cur = cur + 1 if k is not None and k == prev else (1 if k is not None else 0)
        prev = k
        best = max(best, cur)
    return best


def identical_tool_call_streak(records: Iterable[Record]) -> int:
    return _longest_run(["\n".join(a) if (a := actions(r["response"])) else None for r in answered(records)])


def repeated_text_streak(records: Iterable[Record]) -> int:
    keys = []
    for r in answered(records):
        text = _text(r["response"].get("content")).strip()
        keys.append(text or None)
    return _longest_run(keys)


def observation_codes(request: Record | None) -> list[int]:
    """Return codes in the messages after the request's last assistant message (the observations of
    the previous step's commands), in order."""
    msgs = request_turns(request) if isinstance(request, dict) else None
    if not isinstance(msgs, list):
        return []
    last = max((i for i, m in enumerate(msgs) if isinstance(m, dict) and m.get("role") == "assistant"),
               default=None)
    if last is None:
        return []
    codes: list[int] = []
    for m in msgs[last + 1:]:
        if not (isinstance(m, dict) and m.get("role") in ("user", "tool")):
            continue
        # the first match only: the observation leads with it, the command's output may follow
        if found := RETURNCODE.search(_text(m.get("content"))):
            codes.append(int(found.group(1) or found.group(2)))
    return codes


def steps_with_results(records: Iterable[Record]) -> Iterator[tuple[list[str], list[int]]]:
    """Each answered step's actions with the return codes its observation reported (read from the
    next request; empty when unknown, e.g. the last step)."""
    steps = answered(records)
    for i, r in enumerate(steps):
        nxt = steps[i + 1].get("request") if i + 1 < len(steps) else None
        yield actions(r["response"]), observation_codes(nxt)


def failing_command_streak(records: Iterable[Record]) -> int:
    """Longest run of consecutive steps issuing the same command(s) where each one failed (a nonzero
    return code in the next request's observation). A step whose result is unknown ends a run."""
    keys: list[str | None] = []
    for acts, codes in steps_with_results(records):
        failed = bool(acts) and bool(codes) and any(c != 0 for c in codes)
        keys.append("\n".join(acts) if failed else None)
    return _longest_run(keys)


def command_results(records: Iterable[Record], pattern: str) -> list[int | None]:
    """Return codes, in order, of the agent's actions that match `pattern` (a regex searched in the
    action's text: a tool call's arguments, or a bash block), None where the result is unknown. For
    a build command: how many builds the agent ran, and which attempt first passed."""
    wanted = re.compile(pattern)
    return [codes[j] if j < len(codes) else None
            for acts, codes in steps_with_results(records)
            for j, act in enumerate(acts) if wanted.search(act)]


def text_actions(records: Iterable[Record]) -> int:
    """Actions of a text agent (aider, mini-swe-agent in text mode): the fenced blocks of answers to
    requests that declared no tools — the harness runs (or applies) those; an agent that declared
    tools acts only by calling them, so a fenced block in its text is just text."""
    return sum(len(FENCED_BASH.findall(_text(r["response"].get("content"))))
               for r in answered(records)
               if isinstance(r.get("request"), dict) and not r["request"].get("tools"))


def zero_tool_calls(records: Iterable[Record]) -> bool:
    return not any(actions(r["response"]) for r in answered(records))


def _error_text(rec: Record) -> str:
    err = rec.get("error")
    if err is None:
        return ""
    return (err if isinstance(err, str) else json.dumps(err, ensure_ascii=False)).lower()


def is_context_overflow(rec: Record) -> bool:
    """The upstream refused the request for its length: llama.cpp's own message (any status), or an
    HTTP 400 whose error speaks of the context being exceeded / too long."""
    text = _error_text(rec)
    if not text:
        return False
    if LLAMA_OVERFLOW in text or "context_length_exceeded" in text:
        return True
    status = rec.get("status")
    if isinstance(rec.get("error"), dict) and rec["error"].get("upstream_status") is not None:
        status = rec["error"]["upstream_status"]
    return status == 400 and "context" in text and any(w in text for w in ("exceed", "too long", "maximum"))


def context_overflow_rejections(records: Iterable[Record]) -> int:
    return sum(1 for r in exchanges(records) if is_context_overflow(r))


def pathology(records: Sequence[Record]) -> dict[str, Any]:
    """The "pathology" block of metrics.json."""
    recs = list(records)
    return {
        "longest_identical_tool_call_streak": identical_tool_call_streak(recs),
        "repeated_assistant_text_streak": repeated_text_streak(recs),
        "longest_failing_command_streak": failing_command_streak(recs),
        "zero_tool_calls": zero_tool_calls(recs),
        "context_overflow_rejections": context_overflow_rejections(recs),
    }


def flags(p: dict[str, Any], threshold: int = STREAK_THRESHOLD) -> list[str]:
    """Human-readable names of the pathologies that fire."""
    out = []
    if p.get("longest_identical_tool_call_streak", 0) >= threshold:
        out.append(f"repeated identical tool call (x{p['longest_identical_tool_call_streak']})")
    if p.get("repeated_assistant_text_streak", 0) >= threshold:
        out.append(f"degenerate loop: identical assistant text (x{p['repeated_assistant_text_streak']})")
    if p.get("longest_failing_command_streak", 0) >= threshold:
        out.append(f"same command failing repeatedly (x{p['longest_failing_command_streak']})")
    if p.get("zero_tool_calls"):
        out.append("zero tool calls")
    if p.get("context_overflow_rejections", 0) >= 1:
        out.append(f"context overflow rejections ({p['context_overflow_rejections']})")
    return out
