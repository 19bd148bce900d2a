"""What every pinned runtime adapter shares: its package at the lab's exact version, an offline install
from the locked tree, a version check, and a model to talk to. An adapter names these in its class
line and writes only its own `command` (the runtime's flags, config and wire)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from labctl.agents.base import AgentConfigError, Invocation, Package, Registry
from labctl.agents.endings import last_error_line
from labctl.agents.install import npm_install, wheels_install


class PinnedRuntime:
    """Base of the npm and PyPI runtimes (mini-swe-agent, aider, claude-code, codex, opencode,
    qwen-code). `class X(PinnedRuntime, name=..., registry=..., package=..., binary=...)`."""

    name: ClassVar[str]
    registry: ClassVar[Registry]
    package: ClassVar[str]
    binary: ClassVar[str]
    """The command the install puts on PATH (a wrapper with the pinned interpreter first)."""
    check_flag: ClassVar[str]
    env: ClassVar[Mapping[str, str] | None]
    """Static environment baked into the wrapper (telemetry and update checks off, …)."""
    run_scripts: ClassVar[bool]
    """npm: run the package's own install script (it links a platform binary), offline."""
    limits_steps: ClassVar[bool]
    """The runtime has a turn limit of its own, set from `Invocation.step_limit`."""
    needs_model = True

    def __init_subclass__(cls, *, name: str, registry: Registry, package: str, binary: str,
                          check_flag: str = "--version", env: Mapping[str, str] | None = None,
                          run_scripts: bool = False, limits_steps: bool = False, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls.name, cls.registry, cls.package, cls.binary = name, registry, package, binary
        cls.check_flag, cls.env, cls.run_scripts = check_flag, env, run_scripts
        cls.limits_steps = limits_steps

    def packages(self, version: str | None) -> list[Package]:
        if not version:
            raise AgentConfigError(f"{self.name} needs a pinned version (agent.version)")
        return [Package(self.registry, self.package, version)]

    def install_script(self, files: Sequence[str]) -> str:
        if self.registry == "pypi":
            return wheels_install(self.name, {self.binary: self.binary}, self.env)
        return npm_install(self.name, files, [self.binary], env=self.env,
                           run_scripts_of=[self.package] if self.run_scripts else ())

    def check_command(self) -> list[str]:
        return [self.binary, self.check_flag]

    def ending(self, agent_log: str, artifacts: Path, exit_code: int | None) -> str | None:
        """Default: a runtime that failed said why in its last error line; one that exited 0 said
        nothing beyond its answer (its warnings on the way are not how it ended)."""
        return last_error_line(agent_log) if exit_code else None

    def model(self, inv: Invocation) -> tuple[str, str]:
        """The meter's base URL and the model's name; a runtime cannot run without them (None
        means no model, which only oracle / nop run with: a runtime given None is refused here, once)."""
        if not inv.model_base_url or not inv.model_name:
            raise AgentConfigError(f"{self.name} needs the model's base URL and name")
        return inv.model_base_url, inv.model_name
