"""The oracle: runs the task's reference solution (`solution/solve.sh`, Harbor's layout).

It must reach Complete, or the task (or the harness) is broken. The solution is copied into the
container at run time, never baked into the image: the image is the one the agents use too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from labctl.agents.base import AgentCommand, Invocation, Package
from labctl.agents.endings import last_error_line

SOLUTION = "/solution/solve.sh"


class Oracle:
    name = "oracle"
    needs_model = False
    limits_steps = True  # no model calls to limit

    def packages(self, version: str | None) -> list[Package]:
        return []

    def install_script(self, files: Sequence[str]) -> str:
        # solve.sh is a bash script; Debian/Ubuntu images have bash, Alpine ones may not.
        return ("command -v bash >/dev/null 2>&1 || { command -v apk >/dev/null 2>&1 "
                "&& apk add --no-cache bash; }\n")

    def check_command(self) -> list[str]:
        return ["bash", "-c", "true"]

    def command(self, inv: Invocation) -> AgentCommand:
        return AgentCommand(argv=["bash", SOLUTION], workdir=inv.workdir)

    def ending(self, agent_log: str, artifacts: Path, exit_code: int | None) -> str | None:
        return last_error_line(agent_log) if exit_code else None


ADAPTER = Oracle()
