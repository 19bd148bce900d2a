"""nop: does nothing and exits 0. It must not pass; if it does, the task's checks are too weak."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from labctl.agents.base import AgentCommand, Invocation, Package
from labctl.agents.endings import last_error_line


class Nop:
    name = "nop"
    needs_model = False
    limits_steps = True  # no model calls to limit

    def packages(self, version: str | None) -> list[Package]:
        return []

    def install_script(self, files: Sequence[str]) -> str:
        return ""

    def check_command(self) -> list[str]:
        return ["true"]

    def command(self, inv: Invocation) -> AgentCommand:
        return AgentCommand(argv=["true"], workdir=inv.workdir)

    def ending(self, agent_log: str, artifacts: Path, exit_code: int | None) -> str | None:
        return last_error_line(agent_log) if exit_code else None


ADAPTER = Nop()
