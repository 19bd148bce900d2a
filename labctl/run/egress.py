"""A run's way out, as the lab's network policy says (`labctl.spec.network`): nothing, an egress
gateway with a host allowlist, or a routed bridge. The same for the agent's container and the
verifier's: `Egress` is what session.py (the agent) and grade.py (a fresh verifier container) call.

    none       task container on the run's internal agent network only (the meter)
    allowlist  + a gateway container (squid, image `egress-gateway`) on the agent network (alias
               `egress-gateway`) and on the run's outside bridge; the task's processes get
               http_proxy/https_proxy/HTTP_PROXY/HTTPS_PROXY = http://egress-gateway:3128 and
               no_proxy/NO_PROXY = meter,localhost,127.0.0.1,::1 in the container's environment
               (every `docker exec` inherits it), and apt gets the proxy in
               /etc/apt/apt.conf.d/80labctl-egress (sudo drops the environment; apt reads its config),
               a read-only bind mount: nothing is written into the task's filesystem
    open       the task container also joins the outside bridge itself (Harbor's default)

The outside bridge is a normal (routed) bridge of the run, fenced with the INPUT rule only
(`labctl.engine.fence`): nothing on it reaches the host. `LABCTL_EGRESS_NETWORK` names an existing
network to use instead (a lab LAN with its own mirror; the tests' stand-in internet): the run then
fences that network's bridge for its own lifetime and never removes the network. The model server
and the meter never join it. The gateway holds no key and logs every request; `collect` turns its
access log into the run's egress.jsonl (`labctl.round.layout.EgressRecord`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from labctl.engine.container import Engine
from labctl.engine.fence import Fence
from labctl.engine.names import object_name, run_labels
from labctl.engine.spec import Access, ContainerSpec, Limits, Mount
from labctl.engine.timings import span
from labctl.errors import LabctlError
from labctl.images.specs import GATEWAY_IMAGE
from labctl.round.layout import EGRESS_FILE, EgressRecord
from labctl.run.parts import RunError
from labctl.spec.lab import Lab
from labctl.spec.network import Network
from labctl.spec.task import Task

EGRESS_NETWORK_ENV = "LABCTL_EGRESS_NETWORK"
GATEWAY_ALIAS = "egress-gateway"
GATEWAY_PORT = 3128
PROXY_URL = f"http://{GATEWAY_ALIAS}:{GATEWAY_PORT}"
NO_PROXY = "meter,localhost,127.0.0.1,::1"
APT_CONF = "/etc/apt/apt.conf.d/80labctl-egress"
GATEWAY_START_S = 60
GATEWAY_CPUS, GATEWAY_MEMORY = "1", "256m"
LOG_FORMAT = "%ts.%03tu %rm %>rd %>rP %>Hs %<st %>st %Ss %ru"
"""squid's access log line (labctl's `labctl` logformat): time, method, host, port, status, bytes to
the client, bytes from the client, squid's result code, URL (last: the only field that could hold
odd characters)."""


def policy_for(lab: Lab, task: Task) -> Network:
    """The run's policy: the lab's, or `none` where the task says `allow_internet = false`."""
    allow = getattr(task.environment, "allow_internet", True)  # Harbor's default: true
    return lab.network.for_task(allow is not False)


def proxy_env() -> dict[str, str]:
    """The variables the task's processes get under `allowlist` (both spellings: curl reads only
    lowercase http_proxy, others only uppercase)."""
    return {"http_proxy": PROXY_URL, "https_proxy": PROXY_URL, "HTTP_PROXY": PROXY_URL,
            "HTTPS_PROXY": PROXY_URL, "no_proxy": NO_PROXY, "NO_PROXY": NO_PROXY}


def squid_domains(hosts: list[str]) -> list[str]:
    """Host patterns as squid's dstdomain entries (`*.x.org` → `.x.org`), without one a wildcard
    already covers (squid warns about those)."""
    wild = {h[1:] for h in hosts if h.startswith("*.")}
    out = []
    for h in dict.fromkeys(hosts):
        if h.startswith("*."):
            out.append(h[1:])
        elif not any(h == w[1:] or h.endswith(w) for w in wild):
            out.append(h)
    return out


def squid_conf(hosts: list[str], clients: list[str]) -> str:
    """The gateway's whole configuration: clients from the run's agent network only; HTTP to ports
    80, 443 and above 1024 and CONNECT to 443, of allowed hosts only; never loopback or link-local
    (cloud metadata) addresses; no cache; one log line per request."""
    domains = " ".join(squid_domains(hosts)) or "egress.invalid"
    return "\n".join([
        f"http_port {GATEWAY_PORT}",
        f"acl lc_clients src {' '.join(clients) or '0.0.0.0/32'}",
        f"acl lc_allowed dstdomain -n {domains}",  # -n: an IP address is never looked up
        "acl lc_http_ports port 80 443 1025-65535",
        "acl lc_tls_ports port 443",
        "acl lc_connect method CONNECT",
        "acl lc_loopback dst 127.0.0.0/8 0.0.0.0/32 ::1/128",
        "acl lc_linklocal dst 169.254.0.0/16 fe80::/10",
        "http_access deny !lc_clients",
        "http_access deny manager",
        "http_access deny !lc_http_ports",
        "http_access deny lc_connect !lc_tls_ports",
        "http_access deny !lc_allowed",
        "http_access deny lc_loopback",
        "http_access deny lc_linklocal",
        "http_access allow all",
        "cache deny all",
        "cache_mem 8 MB",
        "max_filedescriptors 4096",
        "pid_filename none",
        "coredump_dir /tmp",
        f"visible_hostname {GATEWAY_ALIAS}",
        "via off",
        "forwarded_for delete",
        "httpd_suppress_version_string on",
        "shutdown_lifetime 1 seconds",
        f"logformat labctl {LOG_FORMAT}",
        "access_log stdio:/egress/access.log labctl",
        "cache_log /egress/cache.log",
        "",
    ])


def egress_records(log: str) -> list[EgressRecord]:
    """squid's access log (LOG_FORMAT) as egress.jsonl records; a line that does not parse is kept
    as a denied request of method `?`, so nothing the gateway saw is dropped."""
    out = []
    for line in log.splitlines():
        parts = line.split(" ", 8)
        if len(parts) < 9:
            continue
        ts, method, host, port, status, sent, received, result, url = parts
        try:
            when = datetime.fromtimestamp(float(ts), UTC)
        except ValueError:
            when = datetime.fromtimestamp(0, UTC)
        out.append(EgressRecord(
            time=when, method=method, host="" if host == "-" else host, url=url,
            port=int(port) if port.isdigit() else None, status=_number(status), bytes=_number(sent),
            request_bytes=_number(received), allowed=not result.startswith("TCP_DENIED"), result=result))
    return out


def _number(field: str) -> int:
    return int(field) if field.isdigit() else 0  # squid writes `-` for what it does not know


class Egress:
    """The way out of one run: `setup` after the agent network exists, `task_access` for a task
    container's spec, `start_task` to start it, `collect` before cleanup."""

    def __init__(self, docker: Engine, policy: Network, round_id: str, run_id: str, fence: Fence, *,
                 images: dict[str, str], scratch: Path) -> None:
        self.docker, self.policy, self.fence = docker, policy, fence
        self.image = images.get(GATEWAY_IMAGE)
        self.labels = run_labels(round_id, run_id)
        self.name: Callable[[str], str] = lambda role: object_name(round_id, run_id, role)
        self.scratch = scratch / "egress"
        self.outside: str | None = None
        """The routed network of the way out (allowlist: the gateway's; open: the task's)."""
        self.agent_net: str | None = None

    @property
    def mode(self) -> str:
        return self.policy.egress

    def setup(self, agent_net: str, lifetime: str) -> None:
        """The outside network (fenced from the host) and, for `allowlist`, the running gateway."""
        self.agent_net = agent_net
        if self.mode == "none":
            return
        given = os.environ.get(EGRESS_NETWORK_ENV)
        if given:
            self.outside = given
            net_id = self.docker("network", "inspect", "--format", "{{.Id}}", given).stdout.strip()
        else:
            self.outside = self.name("net-outside")
            net_id = self.docker.create_network(self.outside, {**self.labels, "labctl.role": "net-outside"})
        self.fence.add(net_id, routed=True, created=not given)  # before any container of the run joins it
        if self.mode == "allowlist":
            self._start_gateway(agent_net, lifetime)

    def _start_gateway(self, agent_net: str, lifetime: str) -> None:
        if not self.image:
            raise RunError("the lab's network policy is allowlist but no egress-gateway image was "
                               "built: run `labctl build`")
        subnets = self.docker("network", "inspect", "--format", "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
                              agent_net).stdout.split()
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.scratch.mkdir(parents=True)
        self.scratch.chmod(0o777)  # squid drops to its `proxy` user to write its logs
        (self.scratch / "squid.conf").write_text(squid_conf(self.policy.hosts(), subnets))
        (self.scratch / "apt.conf").write_text(f'Acquire::http::Proxy "{PROXY_URL}";\n'
                                               f'Acquire::https::Proxy "{PROXY_URL}";\n')
        name = self.name("gateway")
        assert self.outside is not None
        self.docker.create(ContainerSpec(
            self.image, (lifetime, "squid", "-N", "-f", "/egress/squid.conf"), name=name,
            entrypoint="timeout", hostname=GATEWAY_ALIAS, network=agent_net, aliases=(GATEWAY_ALIAS,),
            more_networks=(self.outside,), labels={**self.labels, "labctl.role": "gateway"},
            limits=Limits(cpus=min(float(GATEWAY_CPUS), float(os.cpu_count() or 1)), memory=GATEWAY_MEMORY),
            mounts=(Mount(self.scratch, "/egress"),)))
        self.docker.start(name)
        probe = f"exec 3<>/dev/tcp/127.0.0.1/{GATEWAY_PORT}"
        with span("gateway wait"):
            if not self.docker.wait_ready(name, ["bash", "-c", probe], GATEWAY_START_S):
                log = self.scratch / "cache.log"
                why = log.read_text(errors="replace") if log.is_file() else ""
                why = (why or self.docker("logs", name, check=False).stderr)[-300:]
                raise RunError(f"the egress gateway did not start: {why.strip()}")

    def task_access(self) -> Access:
        """A task container's way out from the agent network: under `allowlist`, the proxy variables
        and apt's proxy configuration (read-only)."""
        assert self.agent_net is not None, "setup first"
        if self.mode != "allowlist":
            return Access(self.agent_net)
        apt = Mount(self.scratch / "apt.conf", APT_CONF, read_only=True)
        return Access(self.agent_net, proxy_env(), (apt,))

    def start_task(self, container: str) -> None:
        """Start a created task container, on the outside network too where the policy is `open`."""
        if self.mode == "open" and self.outside:
            self.docker("network", "connect", self.outside, container)
        self.docker.start(container)

    def verifier_access(self) -> Access:
        """A fresh verifier container's way out: the same as the agent's (it needs no meter: `open`
        puts it on the outside network alone); no network at all under `none`."""
        if self.mode == "allowlist" and self.agent_net:
            return self.task_access()
        if self.mode == "open" and self.outside:
            return Access(self.outside)
        return Access()

    def collect(self, run_dir: Path, say: Callable[[str], None] = lambda s: None) -> Path | None:
        """Stop the gateway (flushing its log) and write the run's egress.jsonl; None without one.
        Never raises: it runs in a run's cleanup, which must go on."""
        if self.mode != "allowlist" or not self.scratch.is_dir():
            return None
        try:
            self.docker("stop", "-t", "5", self.name("gateway"), check=False)
            log = self.scratch / "access.log"
            records = egress_records(log.read_text(errors="replace") if log.is_file() else "")
            out = run_dir / EGRESS_FILE
            out.write_text("".join(json.dumps(r.model_dump(mode="json")) + "\n" for r in records))
        except (OSError, ValueError, LabctlError) as e:
            say(f"the egress log could not be collected: {e}")
            return None
        return out
