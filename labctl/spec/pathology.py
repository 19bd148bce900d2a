"""`pathology:` in lab.yaml: the thresholds at which a behaviour measure of a run becomes a flag.

The measures are always recorded in metrics.json (labctl/run/pathology.py); a threshold only decides
which of them are named under "flags" (and in the report). The defaults are the ones documented in
the README ("Pathology flags"), chosen so that each of the published Round 7's failures fires and a
run that merely retries once does not.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from labctl.spec.base import Spec


class PathologyThresholds(Spec):
    """When a pathology measure is flagged; each is a count of repetitions (≥ this many fires)."""

    identical_tool_call: int = Field(default=3, ge=2)
    """The same action (tool call or executed block) in this many consecutive answers."""
    identical_text: int = Field(default=3, ge=2)
    """The same assistant text in this many consecutive answers."""
    failing_command: int = Field(default=3, ge=2)
    """The same command failing in this many consecutive answers."""
    repeated_line: int = Field(default=5, ge=2)
    """A line or sentence repeated this many times inside one answer (Gemma's 26)."""
    repeated_failure: int = Field(default=3, ge=2)
    """The same command failing with the same error this many times, other commands between them
    or not (Hermes' 13 identical rebuilds)."""
    text_tool_calls: int = Field(default=1, ge=1)
    """Answers with tool-call-shaped text (`[TOOL_CALLS]`, `<tool_call>`, a JSON name/arguments
    object) in their content while the request declared tools (Devstral)."""
    cwd_amnesia: int = Field(default=2, ge=1)
    """Commands that failed for a lost working directory and then passed with a `cd DIR &&` prefix."""


def longest_run(keys: Sequence[str | None]) -> list[int]:
    """0-based positions of the longest run of equal, non-None consecutive keys (the first, on a tie):
    the rule of the three streak measures (identical tool call, identical text, failing command). One
    function for the measure (labctl/run/pathology.py takes its length) and for the run page, which
    marks the steps where it fired (labctl/report/steps.py)."""
    best: list[int] = []
    cur: list[int] = []
    for i, k in enumerate(keys):
        cur = [*cur, i] if cur and k is not None and keys[cur[-1]] == k else ([i] if k is not None else [])
        if len(cur) > len(best):
            best = cur
    return best

