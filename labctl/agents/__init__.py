"""Agent runtime adapters, by name. A new runtime (aider, opencode, claude-code, codex, qwen-code) is
one module here with an `ADAPTER` object satisfying `labctl.agents.base.AgentAdapter`, plus its name
in `_MODULES` (and in the spec's `AgentRuntime.runtime` literal)."""

from __future__ import annotations

from importlib import import_module

from labctl.agents.base import (
    AgentAdapter,
    AgentCommand,
    AgentConfigError,
    Invocation,
    Package,
    check_no_secrets,
)

_MODULES = {
    "aider": "labctl.agents.aider",
    "mini-swe-agent": "labctl.agents.mini_swe_agent",
    "claude-code": "labctl.agents.claude_code",
    "codex": "labctl.agents.codex",
    "opencode": "labctl.agents.opencode",
    "qwen-code": "labctl.agents.qwen_code",
    "oracle": "labctl.agents.oracle",
    "nop": "labctl.agents.nop",
}

__all__ = ["AgentAdapter", "AgentCommand", "AgentConfigError", "Invocation", "Package", "adapter",
           "check_no_secrets", "known_runtimes"]


def known_runtimes() -> list[str]:
    return sorted(_MODULES)


def adapter(name: str) -> AgentAdapter:
    """The adapter for a runtime or contestant kind; KeyError names the known ones."""
    if name not in _MODULES:
        raise KeyError(f"unknown agent runtime {name!r}; known: {', '.join(known_runtimes())}")
    found: AgentAdapter = import_module(_MODULES[name]).ADAPTER
    return found
