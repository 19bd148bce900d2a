"""Reading a runtime's own word on how its session ended, from what the run collected: `agent.log`
(the command's stdout and stderr) and the runtime's log directory (`artifacts/agent/`, its
/logs/agent). Each adapter's `ending` uses these; `labctl.run.ending` puts its answer beside what
labctl itself knows (wall time, budgets, interventions, the meter's upstream errors, the transcript's
context refusals and cut answers).

What comes back is one short line in the runtime's own terms (`Submitted`, `error_max_turns`,
`exit 1: Error: …`), never a whole log: the report prints it as is. It is read from files the run
directory already holds, so it names nothing they do not (the agent only ever saw its run id).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MAX_DETAIL = 240
"""The longest line kept: a runtime's error can be a whole JSON body or a stack trace."""

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")
ERROR_LINE = re.compile(
    r"(?:^|[\s\[(:])(?:[A-Za-z_.]*(?:Error|Exception)\b|error\b|ERROR\b|fatal\b|FATAL\b|E[A-Z]{3,}\b|"
    r"[Ff]ailed\b|[Ee]xceeded\b|[Aa]borted\b|[Tt]raceback\b|[Uu]nhandled\b|[Rr]ate limit)")
"""A line that reports a failure: `SomeError: …`, `Error: …`, `error: …`, an errno name (`EACCES`),
`… failed`, `… exceeded`; the runtimes write them in these shapes."""
FRAME = re.compile(r"^\s*(?:at |File \"|│|╭|╰|\^|~|\d+ │)")
"""Stack-trace frames and rich's traceback box: context of an error, not the error."""


def clean(text: str) -> str:
    """One line: colour codes and box drawing gone, whitespace collapsed, cut at MAX_DETAIL."""
    line = " ".join(ANSI.sub("", text).replace("│", " ").split())
    return line if len(line) <= MAX_DETAIL else line[:MAX_DETAIL - 1] + "…"


def last_error_line(log: str) -> str | None:
    """The last line of `log` that reports an error (stack frames skipped); None when none does."""
    for raw in reversed(ANSI.sub("", log).splitlines()):
        if raw.strip() and not FRAME.match(raw) and ERROR_LINE.search(raw):
            return clean(raw)
    return None


def read_json(path: Path) -> Any:
    """A JSON file's value; None when it is missing or does not parse (a run killed mid-write)."""
    try:
        return json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError):
        return None


def json_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSONL event log, in order; lines that do not parse are skipped (the last
    one of a killed runtime is often cut)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            yield obj


def message_of(error: Any) -> str | None:
    """The message of an error object as runtimes write one: a string, `{message}`, `{error: …}`,
    `{data: {message}}`, `{name, …}`; a string that is a JSON error body (an upstream's answer passed
    on as is) is read for its message."""
    if isinstance(error, str):
        if error.lstrip().startswith("{"):
            try:
                return message_of(json.loads(error)) or error
            except ValueError:
                pass
        return error or None
    if not isinstance(error, dict):
        return None
    for key in ("message", "error", "data"):
        if (found := message_of(error.get(key))) is not None:
            name = error.get("name")
            return f"{name}: {found}" if isinstance(name, str) and name not in found else found
    name = error.get("name")
    return name if isinstance(name, str) else None


__all__ = ["MAX_DETAIL", "clean", "json_lines", "last_error_line", "message_of", "read_json"]
