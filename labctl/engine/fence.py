"""Keep a run's internal networks off the host: netfilter rules matched to each network's bridge.

Why rules and not only `docker network create --internal`: an internal network has no route out,
but the host is itself on every bridge (the bridge's gateway address), so every listener on the
host bound to 0.0.0.0 or `::` — reached through that gateway, docker0's 172.17.0.1, or any other
address of the host — answers a container. Docker's own isolation chains only filter FORWARD
(traffic routed through the host), never INPUT (traffic to the host).

A fenced network's bridge `br-<id[:12]>` gets, in iptables and in ip6tables (IPv6: docker turns IPv6
off inside containers of a network created without `--ipv6`, and these rules hold if it is on):

    INPUT    -i br-X           -j DROP    nothing from the network to the host: any address, any port
    FORWARD  -i br-X ! -o br-X -j DROP    nothing routed off the bridge (--internal's rule, both families)

A routed bridge (a run's way out: its egress gateway's with `egress: allowlist`, the agent's own
with `egress: open`) keeps the INPUT rule and, instead of the FORWARD one, drops what is routed to
link-local addresses (`-d 169.254.0.0/16`, `fe80::/10` in ip6tables): its containers reach the
outside, never the host, and never a cloud machine's metadata service (169.254.169.254, which hands
out the instance's credentials).

Containers on the same bridge still talk to each other (bridged, not routed), and each container's
DNS (docker's resolver at 127.0.0.11) lives in its own network namespace, so neither is affected.
The host cannot open connections into a fenced network either (the replies are dropped): labctl
never does, its health probes run inside the containers (`docker exec`).
Every rule carries `-m comment --comment labctl:<round>:<run>`: a run's cleanup, the start of a
resumed attempt and `labctl down` find and delete rules by that comment, also after a `kill -9`. Only
rules with a labctl comment are ever deleted; no chain is ever flushed or created.

Who applies them: root (CI) runs the host's `iptables`/`ip6tables`. Anyone else (a user in the
docker group) cannot, but can ask the engine for a short-lived helper container of the labctl image
(which carries Debian's iptables) with `--network host --cap-add NET_ADMIN`; a failure of either is a
EngineError that stops the run: a run is never started unfenced. The same script runs in both places
and uses the iptables backend (nft or legacy) the engine's own DOCKER-USER chain lives in.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass

from labctl.engine.container import Engine, EngineError
from labctl.engine.spec import ContainerSpec
from labctl.engine.timings import timed

PREFIX = "labctl"
HELPER_LABEL = "org.labctl.image"
"""The label of labctl's own image (images.L_IMAGE); `labctl down` finds a helper image by it."""
_SAFE = re.compile(r"^[A-Za-z0-9._-]+$")
_BRIDGE = re.compile(r"^[A-Za-z0-9._-]{1,15}$")
_BACKEND = """\
ipt=iptables; ip6t=ip6tables
if command -v iptables-legacy >/dev/null 2>&1 && iptables-legacy -w -n -L DOCKER-USER >/dev/null 2>&1 \\
   && ! iptables-nft -w -n -L DOCKER-USER >/dev/null 2>&1; then
  ipt=iptables-legacy; ip6t=ip6tables-legacy
fi
tables=$ipt
if [ -e /proc/net/if_inet6 ]; then tables="$ipt $ip6t"; fi
"""
"""Picks the backend docker uses (its DOCKER-USER chain); IPv6 rules wherever the kernel has IPv6."""
_DELETE = ("if ! {cmd} -w -D {spec} 2>/dev/null && {cmd} -w -C {spec} 2>/dev/null; then\n"
           "  echo {why} >&2; exit 1\nfi")
"""Delete one rule; one already gone is fine (a run's own cleanup and `labctl down` may race between
listing and deleting), one that stays is an error."""


def comment(round_id: str | None, run_id: str | None = None) -> str:
    """`labctl:<round>:<run>`; `labctl:<round>:` (every run of a round) when `run_id` is None;
    `labctl:` (every round) when `round_id` is None too. A tag ending in `:` matches as a prefix."""
    if round_id is None:
        return f"{PREFIX}:"
    for part in (round_id, run_id or "x"):
        if not _SAFE.match(part):
            raise ValueError(f"not a safe round/run id for a firewall comment: {part!r}")
    return f"{PREFIX}:{round_id}:{run_id or ''}"


def rule_specs(bridge: str, tag: str, *, routed: bool = False) -> list[list[str]]:
    """The rules fencing one bridge (arguments after `-I`/`-D`), as documented above; a `routed`
    bridge (a way out) gets the INPUT rule only."""
    if not _BRIDGE.match(bridge):
        raise EngineError(f"not a bridge interface name: {bridge!r}")
    mark = ["-m", "comment", "--comment", tag, "-j", "DROP"]
    rules = [["INPUT", "-i", bridge, *mark]]
    return rules if routed else [*rules, ["FORWARD", "-i", bridge, "!", "-o", bridge, *mark]]


LINK_LOCAL = {"ipt": "169.254.0.0/16", "ip6t": "fe80::/10"}
"""Per iptables family (the `_BACKEND` variables): the link-local range a routed bridge never reaches."""


def link_local_specs(bridge: str, tag: str) -> dict[str, list[str]]:
    """The FORWARD rule of a routed bridge, per family: nothing routed to a link-local address."""
    if not _BRIDGE.match(bridge):
        raise EngineError(f"not a bridge interface name: {bridge!r}")
    return {family: ["FORWARD", "-i", bridge, "-d", net, "-m", "comment", "--comment", tag, "-j", "DROP"]
            for family, net in LINK_LOCAL.items()}


def matching_rules(listing: str, tag: str) -> list[list[str]]:
    """Rules of an `iptables -S` listing whose comment is `tag` (or starts with it, when `tag` ends
    with `:`), as `-D` argument lists."""
    out: list[list[str]] = []
    for line in listing.splitlines():
        if not line.startswith("-A ") or PREFIX not in line:
            continue
        words = shlex.split(line)
        if "--comment" not in words:
            continue
        got = words[words.index("--comment") + 1]
        if got == tag or (tag.endswith(":") and got.startswith(tag)):
            out.append(words[1:])
    return out


@dataclass
class Netfilter:
    """Runs a shell script that calls iptables: directly as root, else in a helper container."""

    docker: Engine
    helper_image: str | None = None
    labels: dict[str, str] | None = None
    _direct: bool | None = None

    def direct(self) -> bool:
        """Root with a working iptables here; root inside a container without NET_ADMIN is not."""
        if self._direct is None:
            self._direct = os.geteuid() == 0 and shutil.which("iptables") is not None and subprocess.run(
                ["iptables", "-w", "-n", "-L", "INPUT"], capture_output=True, timeout=30).returncode == 0
        return self._direct

    def __call__(self, script: str, what: str) -> str:
        script = "set -eu\n" + _BACKEND + script
        if self.direct():
            done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60,
                                  stdin=subprocess.DEVNULL)
        else:
            image = self.helper_image or self._find_helper()
            helper = ContainerSpec(image, ("-c", script), entrypoint="sh", network="host", user="0",
                                   labels=dict(self.labels or {}), cap_add=("NET_ADMIN", "NET_RAW"),
                                   remove=True)
            done = self.docker(*helper.argv("run"), check=False, timeout=120)
        if done.returncode != 0:
            how = ("the host's iptables" if self.direct() else
                   f"a helper container (--network host --cap-add NET_ADMIN) of {self.helper_image}")
            raise EngineError(f"cannot {what} through {how}: {(done.stderr or done.stdout).strip()[-300:]} — "
                           "labctl needs root or a Docker engine that may run a NET_ADMIN container, "
                           "to keep the run's networks off the host")
        return done.stdout

    def _find_helper(self) -> str:
        found = self.docker("images", "--filter", f"label={HELPER_LABEL}=labctl", "--format",
                            "{{.Repository}}:{{.Tag}}", check=False).stdout.split()
        if not found:
            raise EngineError("no labctl image to run iptables in (not root): run `labctl build`")
        self.helper_image = found[0]
        return found[0]


class Fence:
    """The fence of one run's internal networks: `add` one network, `clear` all of the run's rules."""

    def __init__(self, netfilter: Netfilter, round_id: str | None, run_id: str | None = None) -> None:
        self.nf, self.tag = netfilter, comment(round_id, run_id)

    def bridge(self, network_id: str) -> str:
        """The network's bridge interface: its `com.docker.network.bridge.name`, else `br-<id[:12]>`."""
        opt = self.nf.docker("network", "inspect", "--format",
                             '{{index .Options "com.docker.network.bridge.name"}}', network_id).stdout.strip()
        return opt if opt and opt != "<no value>" else f"br-{network_id[:12]}"

    @timed("fence add")
    def add(self, network_id: str, *, routed: bool = False, created: bool = False) -> str:
        """Fence the network (before any container joins it); returns its bridge name. `routed`: a
        way out (nothing to the host, everything else forwarded). `created`: labctl made it without a
        bridge name option, so docker named its bridge `br-<id[:12]>` (no inspect needed)."""
        created = created and self.nf.docker.name == "docker"
        bridge = f"br-{network_id[:12]}" if created else self.bridge(network_id)
        lines = [f"for t in $tables; do $t -w -I {spec[0]} 1 {shlex.join(spec[1:])}; done"
                 for spec in rule_specs(bridge, self.tag, routed=routed)]
        if routed:
            v4, v6 = (link_local_specs(bridge, self.tag)[f] for f in ("ipt", "ip6t"))
            lines += [f"$ipt -w -I FORWARD 1 {shlex.join(v4[1:])}",
                      f'if [ "$tables" != "$ipt" ]; then $ip6t -w -I FORWARD 1 {shlex.join(v6[1:])}; fi']
        self.nf("\n".join(lines) + "\n", f"fence the run's network {bridge}")
        return bridge

    def listing(self) -> str:
        """`iptables -S` of INPUT and FORWARD, then the same of ip6tables, with `## <table>` headers."""
        script = 'for t in $tables; do for c in INPUT FORWARD; do echo "## $t"; $t -w -S $c; done; done\n'
        return self.nf(script, "list firewall rules")

    def rules(self) -> list[str]:
        """This fence's rules as `iptables -S` prints them (for tests and `labctl down`'s report)."""
        return [line for line in self.listing().splitlines() if matching_rules(line, self.tag)]

    @timed("fence clear")
    def clear(self) -> list[str]:
        """Delete every rule carrying this fence's comment (ours, or left by a killed labctl); returns
        them as `<command> -A …`."""
        found: list[str] = []
        lines: list[str] = []
        command = ""
        for line in self.listing().splitlines():
            if line.startswith("## "):
                command = line[3:].strip()
                continue
            for spec in matching_rules(line, self.tag):
                found.append(f"{command} {line}")
                lines.append(_DELETE.format(cmd=shlex.quote(command), spec=shlex.join(spec),
                                            why=shlex.quote(f"a rule stays after {command} -D: {line}")))
        if lines:
            self.nf("\n".join(lines) + "\n", "remove the run's firewall rules")
        return found
