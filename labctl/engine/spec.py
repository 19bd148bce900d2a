"""A container as data: `ContainerSpec` (image, name, networks, mounts, user, workdir, environment,
limits, labels, entrypoint and command) and the one place it becomes a `docker run`/`create` line.

Why data and not flags: every container labctl starts (model server, meter, gateway, agent, verifier,
iptables helper, probe) was a hand-assembled argv; as a spec, a reader sees what a container gets
(and a test pins it) without parsing flags, and the engine's CLI syntax lives in `argv` alone.
Flags come out in one fixed order; docker reads them in any order, so only the values matter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class Mount:
    """A bind mount: host `source` at `target` in the container."""

    source: str | Path
    target: str
    read_only: bool = False

    def flags(self) -> list[str]:
        return ["-v", f"{self.source}:{self.target}" + (":ro" if self.read_only else "")]


@dataclass(frozen=True)
class Limits:
    """Resource limits: CPUs (a fraction allowed), memory (docker's syntax: `512m`), processes."""

    cpus: float | None = None
    memory: str | None = None
    pids: int | None = None

    def flags(self) -> list[str]:
        out: list[str] = []
        if self.cpus:
            out += ["--cpus", f"{self.cpus:g}"]
        if self.memory:
            out += ["--memory", self.memory]
        if self.pids:
            out += ["--pids-limit", str(self.pids)]
        return out


@dataclass(frozen=True)
class Access:
    """How a container reaches the world: its first network and what it needs there (a proxy's
    variables, a configuration file). `none`: no network at all."""

    network: str = "none"
    env: Mapping[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()


@dataclass(frozen=True)
class ContainerSpec:
    """One container. `network` is the network it starts on; `docker create` takes one network with
    its aliases, the others are connected before `start` (`Engine.create`)."""

    image: str
    command: Sequence[str] = ()
    name: str | None = None
    entrypoint: str | None = None
    hostname: str | None = None
    network: str | None = None
    aliases: tuple[str, ...] = ()
    """`--network-alias` on `network`."""
    more_networks: tuple[str, ...] = ()
    """Connected after `create`, before `start` (on two networks from its first instruction)."""
    user: str | None = None
    workdir: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    """`-e K=V`, in this order."""
    pass_env: tuple[str, ...] = ()
    """`-e NAME` without a value: the engine copies it from this process's environment, so a secret
    is in no command line."""
    mounts: tuple[Mount, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    limits: Limits = Limits()
    cap_add: tuple[str, ...] = ()
    extra_hosts: Mapping[str, str] = field(default_factory=dict)
    devices: tuple[str, ...] = ()
    """The engine's own device flags (GPUs: `--gpus …` or `--device …`), as the engine gives them."""
    remove: bool = False
    """`--rm` (run only)."""
    detach: bool = False
    """`-d` (run only)."""

    def with_access(self, access: Access) -> ContainerSpec:
        """This container on `access`'s network, with its variables and files added (first: the
        container's own variables win, as a later `-e` does)."""
        return replace(self, network=access.network, env={**access.env, **self.env},
                       mounts=(*access.mounts, *self.mounts))

    def argv(self, verb: Literal["run", "create"] = "create") -> list[str]:
        """The engine CLI's arguments after the client command: `create …` or `run …`."""
        out: list[str] = [verb]
        if verb == "run":
            out += ["--rm"] if self.remove else []
            out += ["-d"] if self.detach else []
        elif self.remove or self.detach:
            raise ValueError("--rm and -d are `run` options")
        if self.name:
            out += ["--name", self.name]
        if self.hostname:
            out += ["--hostname", self.hostname]
        if self.network:
            out += ["--network", self.network]
        for alias in self.aliases:
            out += ["--network-alias", alias]
        for host, ip in self.extra_hosts.items():
            out += ["--add-host", f"{host}:{ip}"]
        if self.user is not None:
            out += ["--user", self.user]
        for k, v in self.labels.items():
            out += ["--label", f"{k}={v}"]
        for k, v in self.env.items():
            out += ["-e", f"{k}={v}"]
        for name in self.pass_env:
            out += ["-e", name]
        out += self.limits.flags()
        out += list(self.devices)
        for cap in self.cap_add:
            out += ["--cap-add", cap]
        for m in self.mounts:
            out += m.flags()
        if self.workdir:
            out += ["-w", self.workdir]
        if self.entrypoint is not None:
            out += ["--entrypoint", self.entrypoint]
        return [*out, self.image, *self.command]
