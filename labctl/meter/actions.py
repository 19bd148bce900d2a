"""What counts as an action the runtime executed, and what came of it: one definition for the meter's
loop detection and interventions (labctl/meter/policy.py), the run's `tool_calls` and its pathology
flags (labctl/run/grade.py, labctl/run/pathology.py).

An answer's actions depend on what its request declared. A request that declared tools is answered
by a runtime that acts only on structured tool calls (OpenAI `tool_calls`, Anthropic `tool_use`,
Responses `function_call`): a fenced block in the prose of such an answer is never executed, so it is
no action (mini-swe-agent 2.4.x with its mini.yaml, claude-code, codex, opencode, qwen-code). A
request that declared no tools comes from a text-protocol runtime (aider; mini-swe-agent's text
templates), whose harness runs the answer's fenced shell blocks (```bash, ```sh, ```shell or a bare
fence) and applies its SEARCH/REPLACE edit blocks: those are its actions.

A command's result is read from the next request: the turns after its last assistant turn carry the
observations (a `tool` message, an Anthropic `tool_result` block, a Responses `function_call_output`,
or a text runtime's user message with `<returncode>N</returncode>`). Pure functions, no I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from labctl.meter.wire_responses import request_turns

FENCE = re.compile(r"```([^\n`]*)\n(.*?)```", re.S)
SHELL_FENCES = frozenset({"", "bash", "sh", "shell", "console"})
"""Info strings of the fenced blocks a text runtime runs as commands."""
EDIT_BLOCK = "<<<<<<< SEARCH"
"""aider's diff edit format: a fenced block holding this marker is an edit aider applies."""
RETURNCODE = re.compile(r"<returncode>\s*(-?\d+)\s*</returncode>"
                        r"|[\"']?(?:returncode|exit_code)[\"']?\s*[:=]\s*(-?\d+)"
                        r"|^[ \t]*exit[ _]?(?:code|status):?[ \t]*(-?\d+)", re.I | re.M)
"""How observations state a command's status: mini-swe-agent's text templates (`<returncode>`) and
its tool messages (`{"returncode": N, …}`), codex (`Exit code: N`, `"exit_code": N`), qwen-code
(`Exit Code: N`), claude-code (`Exit code N`); the spelled-out forms only at the start of a line, so
a file's text that mentions an exit code is not taken for one. The first match is the command's."""
COMMAND_KEYS = ("command", "cmd", "commands", "script", "code", "input")
"""Argument names under which shell tools take their command (bash, shell, run_shell_command, …)."""

Rec = dict[str, Any]


@dataclass(frozen=True)
class Action:
    """One thing the runtime executed for an answer."""

    key: str
    """Comparable form: `name(canonical JSON arguments)` for a tool call, the stripped block for text."""
    command: str | None
    """The shell command it ran, where it is one (a shell tool's command argument, a fenced block)."""


@dataclass(frozen=True)
class Result:
    """One observation of an action, read from the request that followed it."""

    code: int | None
    """Return code; None when the observation does not say."""
    text: str
    """The observation as the model saw it (output, error)."""

    @property
    def failed(self) -> bool:
        return self.code is not None and self.code != 0


def declares_tools(request: Rec | None) -> bool:
    """The request offered the model tools (every wire spells it `tools`; OpenAI's legacy `functions`)."""
    return isinstance(request, dict) and bool(request.get("tools") or request.get("functions"))


def text(content: Any) -> str:
    """Message content as text: a string, or the text parts of a list of content blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, dict):
                for key in ("text", "content", "output"):
                    if isinstance(block.get(key), str | list):
                        parts.append(text(block[key]))
                        break
        return "\n".join(parts)
    return ""


def canonical_args(arguments: Any) -> str:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return arguments.strip()
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _command(arguments: Any) -> str | None:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    for k in COMMAND_KEYS:
        v = arguments.get(k)
        if isinstance(v, str):
            return v.strip()
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            # an argv (codex's shell: ["bash", "-lc", cmd]): the script is its last word
            return v[-1].strip() if len(v) >= 3 and v[1] in ("-c", "-lc") else " ".join(v)
    return None


def _call(c: Any) -> Action | None:
    """A structured call in any of the shapes recorded: the transcript's `{name, arguments}`, a chat
    request's `{function: {name, arguments}}`, an Anthropic `tool_use` block's `{name, input}`."""
    if not isinstance(c, dict):
        return None
    fn: dict[str, Any] = c["function"] if isinstance(c.get("function"), dict) else c
    args = fn.get("arguments", fn.get("input"))
    return Action(f"{fn.get('name')}({canonical_args(args)})", _command(args))


def tool_calls(message: Rec) -> list[Action]:
    """The structured calls of a response or an assistant turn."""
    calls = [*(message.get("tool_calls") or [])]
    content = message.get("content")
    if isinstance(content, list):  # an Anthropic assistant turn: its tool_use blocks
        calls += [b for b in content
                  if isinstance(b, dict) and b.get("type") in ("tool_use", "server_tool_use")]
    return [a for c in calls if (a := _call(c)) is not None]


def text_blocks(content: Any) -> list[Action]:
    """The fenced blocks a text runtime executes: shell blocks (run) and SEARCH/REPLACE blocks (applied)."""
    out = []
    for info, body in FENCE.findall(text(content)):
        lang = info.strip().lower()
        if lang in SHELL_FENCES:
            out.append(Action(body.strip(), body.strip()))
        elif EDIT_BLOCK in body:
            out.append(Action(body.strip(), None))
    return out


def actions(request: Rec | None, response: Rec) -> list[Action]:
    """What the runtime executed for `response`, the answer to `request`: its structured calls; and,
    only when the request declared no tools, the fenced blocks of its text."""
    calls = tool_calls(response)
    if calls or declares_tools(request):
        return calls
    return text_blocks(response.get("content"))


def signature(request: Rec | None, response: Rec) -> str | None:
    """One answer's actions as one comparable string; None when it executed nothing."""
    acts = actions(request, response)
    return "\n".join(a.key for a in acts) if acts else None


# --- results -------------------------------------------------------------------------------------


def _result(body: str, is_error: bool = False) -> Result:
    found = RETURNCODE.search(body)
    code = int(next(g for g in found.groups() if g is not None)) if found else (1 if is_error else None)
    try:  # mini-swe-agent's tool message: {"returncode": N, "output": "…"}: the output is the text
        obj = json.loads(body)
        if isinstance(obj, dict) and isinstance(obj.get("output"), str):
            body = obj["output"]
    except ValueError:
        pass
    return Result(code, body)


def last_step(request: Rec | None) -> tuple[Rec | None, list[Result]]:
    """The request's last assistant turn (the previous answer, as the runtime sent it back) and the
    observations that follow it, in order. A plain user turn without a return code (the task, a
    nudge) is no observation."""
    turns = request_turns(request) if isinstance(request, dict) else None
    if not isinstance(turns, list):
        return None, []
    # from the end: the meter reads this for every request of a long conversation
    last = next((i for i in range(len(turns) - 1, -1, -1)
                 if isinstance(turns[i], dict) and turns[i].get("role") == "assistant"), None)
    if last is None:
        return None, []
    results: list[Result] = []
    for m in turns[last + 1:]:
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        blocks = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"] \
            if isinstance(content, list) else []
        if blocks:
            results += [_result(text(b.get("content")), b.get("is_error") is True) for b in blocks]
        elif m.get("role") == "tool":
            results.append(_result(text(content)))
        elif m.get("role") == "user" and (r := _result(text(content))).code is not None:
            results.append(r)
    return turns[last], results


def observations(request: Rec | None) -> list[Result]:
    """The results of the previous answer's actions, as the request reports them."""
    return last_step(request)[1]


_DIGITS = re.compile(r"\d+")
ERROR_TAIL = 4000
"""Characters of an observation compared as its error: its end, where a build or a test says why."""


def error_key(result: Result) -> str:
    """The error as compared for "the same error": numbers (timings, line counts, pids) and spacing
    do not make two failures different."""
    return " ".join(_DIGITS.sub("#", result.text[-ERROR_TAIL:]).split())


def error_excerpt(result: Result, limit: int = 160) -> str:
    """A failure's last non-empty line, for a flag's text."""
    lines = [ln.strip() for ln in result.text.splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


class FailureTally:
    """How often the same command has failed with the same error. Other commands in between do not
    reset a command's count (Hermes rebuilt 13 times with edits between); the command succeeding, or
    failing differently, starts it again."""

    def __init__(self) -> None:
        self.counts: dict[str, tuple[str, int]] = {}

    def add(self, action: Action, result: Result) -> int:
        """Count one observed action; returns its count of identical failures (0 when it did not fail)."""
        if not result.failed:
            self.counts.pop(action.key, None)
            return 0
        err = error_key(result)
        prev = self.counts.get(action.key)
        n = prev[1] + 1 if prev is not None and prev[0] == err else 1
        self.counts[action.key] = (err, n)
        return n
