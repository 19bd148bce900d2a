"""llama-server's own per-request figures, read from its log by the tests (never with labctl's code).

Why a parser here and not labctl's: the real-model round (tests/run/test_real_model.py) checks
labctl's token counts *against* the server's, so the server's side must be read independently.
What llama-server (the pinned llama.cpp, tools/server/server-context.cpp) prints per request, each
line prefixed `slot <func>: id <slot> | task <task> | `:

* `prompt eval time = <ms> ms / <N> tokens (...)` and `eval time = <ms> ms / <M> tokens (...)`
  (`print_timings`, only when the answer ended normally: a stop word, EOS, the length limit).
  N is the prompt tokens processed (not those reused from the slot's cache), M the tokens generated.
* `n_gen = <M>, tg = ...` every 3 s once 100 tokens were generated (`print_timings_tg`).
* `stop processing: n_tokens = <T>, truncated = <0|1>` when the slot is released, normally *or*
  because the client went away mid-answer (a cancel: no timings then). T is every token in the
  slot's sequence at that point: the whole prompt (cached part included) plus what was generated.

So a request's prompt + completion tokens, as usage counts them, is T + 1 (the last sampled token is
never pushed into the slot; observed: usage 48 + 256 = 304, `n_tokens = 303`) — for a cut stream too.
`processing task` marks a request the slot took (`ServedRequest.launched`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PREFIX = r"slot\s+\w+: id\s+(?P<slot>\d+) \| task (?P<task>-?\d+) \| "
_PROMPT = re.compile(_PREFIX + r"prompt eval time =\s*[\d.]+ ms /\s*(?P<n>\d+) tokens")
_EVAL = re.compile(_PREFIX + r"\s*eval time =\s*[\d.]+ ms /\s*(?P<n>\d+) (?:tokens|runs)")
_PROGRESS = re.compile(_PREFIX + r"n_gen =\s*(?P<n>\d+),")
_LAUNCH = re.compile(_PREFIX + r"processing task")
_STOP = re.compile(_PREFIX + r"stop processing: n_tokens =\s*(?P<n>\d+), truncated =\s*(?P<t>\d+)")


@dataclass
class ServedRequest:
    """One completion as llama-server counted it."""

    task: int
    launched: int = 0
    """1 once the log shows the slot took the task (`processing task`)."""
    n_tokens: int | None = None
    """The slot's tokens when it was released: prompt (cached part included) + generated."""
    prompt_processed: int | None = None
    """Prompt tokens evaluated (the timings line); None when the request was cut."""
    generated: int | None = None
    """Tokens generated (the timings line); None when the request was cut."""
    generated_at_least: int = 0
    """The last `n_gen = ` progress line: a lower bound for a cut request."""

    @property
    def cut(self) -> bool:
        """Released without timings after evaluating something: the client went away mid-answer (a
        request refused before any token was evaluated, e.g. for its size, releases with n_tokens = 0)."""
        return bool(self.n_tokens) and self.generated is None

    @property
    def released(self) -> bool:
        """The server counted the request to its end (normal or cut) before its log was collected."""
        return self.n_tokens is not None

    @property
    def usage_tokens(self) -> int:
        """Prompt + completion tokens as usage counts them: n_tokens + 1 (the last sampled token never
        enters the slot), 0 for a request refused before any token was evaluated (n_tokens = 0). For a
        request cut while its prompt was still being evaluated this is one more than the server did."""
        return (self.n_tokens or 0) + 1 if self.n_tokens else 0

    @property
    def generated_min(self) -> int:
        return self.generated if self.generated is not None else self.generated_at_least


def served_requests(log: str) -> list[ServedRequest]:
    """Every request the log shows, in the order llama-server took them (by task id)."""
    out: dict[int, ServedRequest] = {}
    for line in log.splitlines():
        for pattern, field in ((_PROMPT, "prompt_processed"), (_EVAL, "generated"),
                               (_PROGRESS, "generated_at_least"), (_STOP, "n_tokens"), (_LAUNCH, "launched")):
            if (m := pattern.search(line)) is None:
                continue
            req = out.setdefault(int(m["task"]), ServedRequest(int(m["task"])))
            setattr(req, field, 1 if field == "launched" else int(m["n"]))
            break
    return [out[k] for k in sorted(out)]


_SLOTS = re.compile(r"initializing, n_slots = (\d+), n_ctx_slot = (\d+)")


def served_context(log: str) -> int | None:
    """The context one slot really holds (`n_ctx_slot` at start, after any capping)."""
    found = _SLOTS.findall(log)
    return int(found[-1][1]) if found else None
