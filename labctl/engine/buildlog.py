"""Where a failed image build went wrong, read from its log: the failing step, its last output line,
and the mirror map as the way out when a base image could not be pulled."""

from __future__ import annotations

import re
from pathlib import Path

PULL_FAILED = "a base image could not be pulled"
"""How a build failure says a pull failed (the image build adds which image and the fix)."""
_STEP = re.compile(r"^(Step \d+/\d+ : .*|#\d+ \[[^\]]+\] .*)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CLASSIC_EXIT = re.compile(r"^The command '.*' returned a non-zero code: (\d+)$", re.S)
_PULL = re.compile(r"pull access denied|manifest unknown|not found: manifest|no such host|"
                   r"dial tcp|repository does not exist|failed to resolve source metadata", re.I)


def failing_step(log_path: Path) -> str:
    """`: at Step 3/5 : RUN make (…last error line…)` from a build log, so a failure says where;
    a base image that could not be pulled gets the mirror map as the way out."""
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    lines = [_ANSI.sub("", ln) for ln in lines]
    steps = [i for i, ln in enumerate(lines) if _STEP.match(ln)]
    where = f": at {lines[steps[-1]][:160]}" if steps else ""
    # The cause is the failing step's own last output line. The classic builder ends with "The
    # command '<the whole RUN line again>' returned a non-zero code: N": keep only its exit code.
    output = [ln.strip() for ln in lines[steps[-1] + 1 if steps else 0:]
              if ln.strip() and not ln.startswith(("#", "$", " ---> ", "Removing intermediate container"))]
    code = _CLASSIC_EXIT.match(output[-1]) if output else None
    if code:
        output.pop()
    parts = [output[-1][:200]] if output else []
    if code:
        parts.append(f"returned a non-zero code: {code.group(1)}")
    last = f" ({'; '.join(parts)})" if parts else ""
    if any(_PULL.search(ln) for ln in lines):
        last += (f"; {PULL_FAILED}: map it to a reachable one with build.image_mirrors "
                 "in the lab or image_mirrors in the profile")
    return where + last
