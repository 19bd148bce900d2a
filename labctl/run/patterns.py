"""The seed round's failure patterns, measured on a run's steps, each anchored at the step numbers
where it shows (1-based answered exchanges, as labctl/run/pathology.py numbers them):

* repetition inside one answer — Gemma printed "I'll also make sure src/lib/tags.ts is correct" 26
  consecutive times; SmolLM2 "The script file is `hello.txt`. This is the script." over and over;
* the same command failing with the same error — Hermes' 13 identical failing rebuilds;
* tool-call-shaped text in the content while the request declared tools — Devstral wrote its calls
  as text (`[TOOL_CALLS]…`), zero structured calls;
* a build that passed and nothing committed afterwards — Qwen 3.6;
* working-directory amnesia — a command fails for a directory that is not there and passes again
  with a `cd DIR &&` prefix (Qwen3-Coder lost ~8 calls to it).

Each measure is recorded whatever its size; `flags` names those at or over the lab's thresholds.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from labctl.meter import actions as act
from labctl.meter.actions import Action, FailureTally, Result
from labctl.spec.pathology import PathologyThresholds

Record = dict[str, Any]


@dataclass
class Step:
    """One answered exchange with what it executed and what came of it."""

    n: int
    """1-based step number."""
    request: Record | None
    response: Record
    actions: list[Action]
    results: list[Result | None]
    """Aligned with `actions`: each one's observation in the next request, None when unknown."""


def steps(answered: list[Record]) -> list[Step]:
    out = []
    for i, r in enumerate(answered):
        acts = act.actions(r.get("request"), r["response"])
        nxt = answered[i + 1].get("request") if i + 1 < len(answered) else None
        obs = act.observations(nxt)
        out.append(Step(i + 1, r.get("request"), r["response"], acts,
                        [obs[j] if j < len(obs) else None for j in range(len(acts))]))
    return out


# --- repetition inside one answer -----------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORDY = re.compile(r"[^\W\d_].*\s.*[^\W\d_]")


def _segments(answer: str) -> tuple[list[str], list[str]]:
    """An answer's prose lines and sentences (code blocks left out: code repeats lines by nature);
    only segments of at least two words."""
    prose = act.FENCE.sub("\n", answer)
    lines = [ln.strip() for ln in prose.splitlines()]
    lines = [ln for ln in lines if len(ln) >= 8 and _WORDY.search(ln)]
    sentences = [s.strip() for ln in lines for s in _SENTENCE_END.split(ln)]
    return lines, [s for s in sentences if len(s) >= 8 and _WORDY.search(s)]


def most_repeated(answer: str) -> tuple[int, str | None]:
    """The line or sentence repeated most often in one answer, and how often (a whole line wins a
    tie: it is the longer repeated unit)."""
    lines, sentences = _segments(answer)
    best: tuple[int, str | None] = (0, None)
    for unit in (lines, sentences):
        if unit:
            text, n = Counter(unit).most_common(1)[0]
            if n > best[0]:
                best = (n, text)
    return best


def repeated_line(st: list[Step], threshold: int) -> dict[str, Any]:
    """The most repeated line of any one answer (`count`, `text`, the `step` it is in) and every step
    whose answer repeats a line at least `threshold` times (`steps`)."""
    out: dict[str, Any] = {"count": 0, "text": None, "step": None, "steps": []}
    for s in st:
        body = "\n".join(act.text(s.response.get(k)) for k in ("content", "reasoning"))
        n, text = most_repeated(body)
        if n > out["count"]:
            out.update(count=n, text=text, step=s.n)
        if n >= threshold:
            out["steps"].append(s.n)
    return out


# --- the same failure again and again -------------------------------------------------------------


def repeated_failure(st: list[Step]) -> dict[str, Any] | None:
    """The command that failed most often with one and the same error (`labctl.meter.actions.
    FailureTally`, the meter's `repeated_failure` counts alike): count, command, the error's last
    line and the steps of those failures. None when no command failed."""
    tally = FailureTally()
    running: dict[str, list[int]] = {}
    best: dict[str, Any] | None = None
    for s in st:
        for a, r in zip(s.actions, s.results, strict=True):
            if r is None:
                continue
            n = tally.add(a, r)
            if n == 0:
                running.pop(a.key, None)
                continue
            running[a.key] = [*running.get(a.key, []), s.n] if n > 1 else [s.n]
            if best is None or n > best["count"]:
                best = {"count": n, "command": a.command or a.key, "error": act.error_excerpt(r),
                        "steps": list(running[a.key])}
    return best


# --- tool calls written as text -------------------------------------------------------------------

TEXT_CALL = re.compile(
    r"\[TOOL_CALLS\]|</?tool_call>|<\|tool_call\|>|<\|python_tag\|>|<function=[\w.-]+>"
    r"|\{\s*\"(?:name|function)\"\s*:\s*\"[\w.-]+\"\s*,\s*\"(?:arguments|parameters|input)\"\s*:"
    r"|\{\s*\"(?:arguments|parameters)\"\s*:\s*\{[^{}]*\}\s*,\s*\"name\"\s*:")
"""How templates and models spell a tool call in text: Mistral/Devstral's `[TOOL_CALLS]`, Hermes and
Qwen's `<tool_call>`, Llama's `<|python_tag|>` and `<function=…>`, a bare JSON name/arguments object."""


def text_tool_calls(st: list[Step]) -> dict[str, Any]:
    """Answers to requests that declared tools whose content spells a call as text: how many, their
    steps and the first such text."""
    out: dict[str, Any] = {"count": 0, "steps": [], "sample": None}
    for s in st:
        if not act.declares_tools(s.request):
            continue
        content = act.text(s.response.get("content"))
        if found := TEXT_CALL.search(content):
            out["count"] += 1
            out["steps"].append(s.n)
            if out["sample"] is None:
                out["sample"] = content[found.start(): found.start() + 120]
    return out


# --- a build that passed, never committed ---------------------------------------------------------

GIT_COMMIT = re.compile(r"\bgit\b(?:\s+-\S+(?:\s+\S+)?)*\s+commit\b")


def build_without_commit(st: list[Step], build_command: str | None,
                         commits_pushed: int | None) -> dict[str, Any] | None:
    """The first step whose run of the task's build command passed, and the commits after it. The
    agent's own `git commit` commands are read from the transcript; a runtime that commits by itself
    (aider) runs none, so where the transcript holds no commit at all a repository task's pushed
    commits count instead. None when no build of the agent's passed (or the task names no build)."""
    if not build_command:
        return None
    build = re.compile(build_command)
    built = next((s.n for s in st for a, r in zip(s.actions, s.results, strict=True)
                  if build.search(a.command or a.key) and r is not None and r.code == 0), None)
    if built is None:
        return None
    commits = [(s.n, r) for s in st for a, r in zip(s.actions, s.results, strict=True)
               if a.command and GIT_COMMIT.search(a.command)]
    after = [n for n, r in commits if n >= built and (r is None or not r.failed)]
    # the agent's own commits decide; a runtime that commits by itself leaves only the pushed ones
    uncommitted = not after if commits else not commits_pushed
    return {"build_step": built, "commit_steps": after, "commits_pushed": commits_pushed,
            "uncommitted": uncommitted}


# --- working-directory amnesia --------------------------------------------------------------------

LOST_DIR = re.compile(r"no such file or directory|not found|cannot access|can't cd|enoent"
                      r"|does not exist|not a git repository|could not read package\.json", re.I)
CD_PREFIX = re.compile(r"^\s*cd\s+(\S+)\s*(?:&&|;)\s*(.+)$", re.S)
AMNESIA_WINDOW = 3
"""How many steps after the failure the `cd`-prefixed retry may come."""


def _bare(command: str) -> str:
    """A command without a leading `cd DIR &&`, spacing normalised."""
    m = CD_PREFIX.match(command)
    return " ".join((m.group(2) if m else command).split())


def cwd_amnesia(st: list[Step]) -> dict[str, Any]:
    """Commands that failed for a file or directory that was not there and passed within a few steps
    as `cd DIR && <the same command>`: how many, and the [failed, passed] step pairs."""
    out: dict[str, Any] = {"count": 0, "steps": [], "dir": None}
    for i, s in enumerate(st):
        for a, r in zip(s.actions, s.results, strict=True):
            if not (a.command and r is not None and r.failed and LOST_DIR.search(r.text)):
                continue
            want = _bare(a.command)
            fix = next(((later.n, m.group(1)) for later in st[i + 1: i + 1 + AMNESIA_WINDOW]
                        for b, q in zip(later.actions, later.results, strict=True)
                        if b.command and (m := CD_PREFIX.match(b.command)) and _bare(b.command) == want
                        and q is not None and q.code == 0), None)
            if fix is not None:
                out["count"] += 1
                out["steps"].append([s.n, fix[0]])
                out["dir"] = fix[1]
    return out


# --- flags ---------------------------------------------------------------------------------------


def _at(steps_: list[Any], most: int = 6) -> str:
    flat = [str(x) if not isinstance(x, list) else "→".join(map(str, x)) for x in steps_]
    shown = ", ".join(flat[:most]) + (", …" if len(flat) > most else "")
    return f"step{'s' if len(flat) > 1 else ''} {shown}"


def _quote(text: str | None, most: int = 80) -> str:
    t = " ".join((text or "").split())
    return repr(t if len(t) <= most else t[: most - 1] + "…")


def flags(p: dict[str, Any], t: PathologyThresholds) -> list[str]:
    """The seed patterns that fire, in words, with their steps."""
    out = []
    rl = p.get("repeated_line")
    if isinstance(rl, dict) and rl.get("count", 0) >= t.repeated_line:
        out.append(f"repeated line in one answer (x{rl['count']} at step {rl['step']}: {_quote(rl['text'])})")
    rf = p.get("repeated_failure")
    if isinstance(rf, dict) and rf.get("count", 0) >= t.repeated_failure:
        out.append(f"same command failing with the same error (x{rf['count']}, {_at(rf['steps'])}: "
                   f"{_quote(rf['command'], 60)} → {_quote(rf['error'], 60)})")
    tc = p.get("text_tool_calls")
    if isinstance(tc, dict) and tc.get("count", 0) >= t.text_tool_calls:
        out.append(f"tool calls written as text ({tc['count']} answers, {_at(tc['steps'])})")
    bc = p.get("build_without_commit")
    if isinstance(bc, dict) and bc.get("uncommitted"):
        out.append(f"build passed (step {bc['build_step']}) but nothing committed afterwards")
    ca = p.get("cwd_amnesia")
    if isinstance(ca, dict) and ca.get("count", 0) >= t.cwd_amnesia:
        out.append(f"working-directory amnesia (x{ca['count']}, {_at(ca['steps'])})")
    return out
