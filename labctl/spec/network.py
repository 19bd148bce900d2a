"""The lab's network policy: what a run's task container (the agent and the verifier) may reach
besides the meter.

* `none` — nothing: the run's internal agent network only (the meter, nothing else).
* `allowlist` (the default) — HTTP and HTTPS (CONNECT) to the hosts of `REGISTRY_PRESET` plus the
  lab's `allow`, only through the run's egress gateway (`labctl.run.egress`), which logs every request.
* `open` — Harbor's own default: a routed bridge straight out (still fenced from the host).

The policy is the lab's alone: a profile or a contestant cannot name `network` (an error at its
line), so no contestant can be given more of the outside than another. A task's
`[environment] allow_internet = false` narrows it to `none` for that task; nothing widens it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from labctl.spec.base import Spec

Egress = Literal["none", "allowlist", "open"]

REGISTRY_PRESET: tuple[str, ...] = (
    "deb.debian.org",
    "security.debian.org",
    "archive.ubuntu.com",
    "security.ubuntu.com",
    "ports.ubuntu.com",
    "pypi.org",
    "files.pythonhosted.org",
    "registry.npmjs.org",
    "crates.io",
    "static.crates.io",
    "index.crates.io",
    "proxy.golang.org",
    "sum.golang.org",
    "repo.maven.apache.org",
    "rubygems.org",
    "cran.r-project.org",
)
"""The package registries every `allowlist` lab reaches (the one list; README shows it): the Debian
and Ubuntu archives, PyPI, npm, crates.io, the Go module proxy, Maven Central, RubyGems, CRAN."""

HOST_PATTERN = r"^(\*\.)?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
Host = Annotated[str, Field(pattern=HOST_PATTERN)]
"""A host name (`pypi.org`: that host only) or `*.example.com` (every subdomain and example.com)."""

LAB_ONLY = {"network": "the network policy is the lab's alone (top-level `network:`): "
                       "a profile or a contestant may not widen it"}
"""Keys that belong to the lab only: the error a profile or a contestant naming one gets."""


class Network(Spec):
    """What a run's task container (agent and verifier) may reach besides the meter. The model
    server never has a way out; a model is reached only through the meter."""

    egress: Egress = "allowlist"
    """`none`: nothing; `allowlist`: the package registries (README's list) and `allow`, through the
    run's egress gateway, every request logged to the run's egress.jsonl; `open`: a routed bridge
    straight out, as Harbor runs tasks (the host stays fenced off in every mode)."""
    allow: list[Host] = []
    """More hosts for `allowlist`, beside the registry preset: `example.com` (that host) or
    `*.example.com` (it and every subdomain)."""

    def hosts(self) -> list[str]:
        """The allowlist in force: the preset, then the lab's own (empty unless `allowlist`)."""
        if self.egress != "allowlist":
            return []
        return list(dict.fromkeys([*REGISTRY_PRESET, *self.allow]))

    def for_task(self, allow_internet: bool) -> Network:
        """The policy for one task: `allow_internet = false` in its task.toml means `none`."""
        return self if allow_internet else Network(egress="none")
