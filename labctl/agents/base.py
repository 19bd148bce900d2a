"""What an agent runtime is to labctl: packages baked into the image, and a command line to run.

An adapter is a small object (one file per runtime) that answers five questions:

* which pinned packages to install (`packages`) — fetched and sha256-verified on the host by
  `labctl build`, copied into the build context, installed at *build* time (never at run time: a
  run-time install is slow, flaky and unpinned, and Harbor users lost whole jobs to its timeouts);
* how to install them (`install_script`, POSIX sh run as root in the task image);
* how to prove the install works (`check_command`, e.g. `mini --help`);
* how to run it non-interactively (`command`), given only the instruction file, the model's base URL
  (the metering proxy), the model name, a step limit and a deadline;
* how its session ended, in its own words (`ending`), read from the logs the run collected.

The run-time environment an adapter returns must never hold an API key: agents reach models only
through the proxy, which holds the real keys. `AgentCommand` refuses secret-looking variables.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

from labctl.errors import LabctlError

Registry = Literal["pypi", "npm", "builtin"]
AGENTS_ROOT = "/opt/labctl/agents"
"""Where runtimes are installed in the image (one directory per runtime, outside the workspace)."""
BUILD_DIR = "/opt/labctl/build"
"""Where the build context is copied during the image build (removed at the end of the step)."""

_SECRET_NAME = re.compile(r"(^|_)(API_?KEY|KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?|AUTH)(_|$)", re.I)


class AgentConfigError(LabctlError, ValueError):
    """An adapter cannot produce a command from what it was given."""


@dataclass(frozen=True)
class Package:
    """A runtime package pinned by the lock (`lab.lock` → agent)."""

    registry: Registry
    name: str
    version: str


@dataclass(frozen=True)
class Invocation:
    """Everything the harness tells an agent about one run; paths are inside the container."""

    instruction_file: str
    """The task's instruction.md, copied into the container."""
    model_base_url: str | None = None
    """Root URL of the metering proxy (no `/v1`), e.g. `http://meter:8080`; None for oracle / nop."""
    model_name: str | None = None
    """The model name the proxy serves (the run id's alias, never the contestant's identity)."""
    api: Literal["openai", "anthropic"] = "openai"
    """Which API dialect the proxy speaks to this agent."""
    step_limit: int | None = None
    """Most model calls; None means the adapter's default."""
    deadline: datetime | None = None
    """When the run is stopped; agents are told it (Harbor's agents were not)."""
    workdir: str = "/workspace"
    log_dir: str = "/logs/agent"


@dataclass(frozen=True)
class AgentCommand:
    """argv and extra environment for `docker exec` in the task container."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/workspace"

    def __post_init__(self) -> None:
        check_no_secrets(self.env)


def check_no_secrets(env: Mapping[str, str]) -> None:
    """Refuse variables named like credentials: a key in the agent's environment is a leak."""
    bad = sorted(k for k in env if _SECRET_NAME.search(k))
    if bad:
        raise AgentConfigError(f"agent environment must not carry credentials: {', '.join(bad)}")


class AgentAdapter(Protocol):
    """One agent runtime. Implementations are stateless module-level objects."""

    name: str
    """Runtime name as written in a lab (`agent.runtime`) or a contestant kind (oracle, nop)."""
    needs_model: bool
    """False for oracle and nop: they never call a model."""
    limits_steps: bool
    """True when the runtime stops itself at `Invocation.step_limit` (its own turn limit); for one
    that cannot, the meter's request budget enforces the lab's `budgets.steps` instead."""

    def packages(self, version: str | None) -> list[Package]:
        """The pinned packages to install for this runtime version ([] when none)."""
        ...

    def install_script(self, files: Sequence[str]) -> str:
        """POSIX sh run as root at build time; `files` are the verified distributions, in order of
        `packages()`, as paths inside the build. May use `ensure-python.sh` from the context."""
        ...

    def check_command(self) -> list[str]:
        """A quick command that exits 0 when the runtime is installed and runnable."""
        ...

    def command(self, inv: Invocation) -> AgentCommand:
        """The non-interactive command line of one run."""
        ...

    def ending(self, agent_log: str, artifacts: Path, exit_code: int | None) -> str | None:
        """The runtime's own word on how its session ended, one short line read from what the run
        collected: `agent_log` (the command's stdout and stderr), `artifacts` (its /logs/agent as
        copied out; may not exist) and the command's exit status. E.g. mini-swe-agent's `Submitted`,
        qwen-code's `[API Error: 400 …]`; None when it said nothing (helpers: labctl.agents.endings)."""
        ...


def deadline_note(deadline: datetime | None) -> str:
    """A sentence appended to the instruction so the agent can pace itself."""
    if deadline is None:
        return ""
    return (f"\n\nDeadline: this session is stopped at {deadline.isoformat(timespec='seconds')}; "
            "commit and push your work before then.")


def wrapper_script(path: str, target: str, env: Mapping[str, str], path_prefix: str | None = None) -> str:
    """sh that writes an executable wrapper at `path`: it sets static, non-secret defaults (user may
    override them), puts `path_prefix` (e.g. the pinned node's bin) first on PATH, and execs `target`.
    The wrapper, not image ENV, carries them so one Dockerfile serves every runtime and
    `docker exec … <tool>` works for any user."""
    check_no_secrets(env)
    lines = ["#!/bin/sh"] + ([f'PATH="{path_prefix}:$PATH"; export PATH'] if path_prefix else [])
    lines += [f": \"${{{k}:={v}}}\"; export {k}" for k, v in sorted(env.items())]
    lines.append(f'exec {shlex.quote(target)} "$@"')
    body = "\n".join(lines) + "\n"
    return (f"cat > {shlex.quote(path)} <<'LABCTL_WRAPPER'\n{body}LABCTL_WRAPPER\n"
            f"chmod 0755 {shlex.quote(path)}\n")
