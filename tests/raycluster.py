"""A real Ray cluster on this machine for the `--ray` tests: a head and worker nodes, each a separate
`ray start --block` process in its own session (so one node can be killed whole, like a host that
dies), each with its own resources and its own labctl scratch and store (like separate hosts).

Loopback only: every node's IP is 127.0.0.1 (Ray's servers then bind 127.0.0.1), the dashboard is
off, usage stats are off, the object store is small and CPUs are explicit (the machine is shared).
Ray swaps a node address of 127.0.0.1 for the host's outward one unless told this is a one-machine
cluster; the head is told by RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, worker nodes (which that variable
would refuse) start through a wrapper that keeps the address as given.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

OBJECT_STORE_BYTES = 100_000_000
START_TIMEOUT_S = 120
KEEP_LOOPBACK = ("import sys, ray._private.services as s; s.resolve_ip_for_localhost = lambda h: h; "
                 "from ray.scripts.scripts import main; sys.argv = ['ray', *sys.argv[1:]]; main()")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    work: Path
    """The node's LABCTL_WORK_DIR: a run in flight there has a directory under it."""


@dataclass
class RayCluster:
    base: Path
    port: int = field(default_factory=free_port)
    nodes: dict[str, Node] = field(default_factory=dict)
    temp: Path | None = None
    """The head's Ray temp dir (sessions, sockets, logs), removed by `stop`."""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _env(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(RAY_USAGE_STATS_ENABLED="0", LABCTL_WORK_DIR=str(self.base / name / "work"),
                   LABCTL_STORE=str(self.base / name / "store"))
        return env

    def _start(self, name: str, argv: list[str], env: dict[str, str]) -> Node:
        log = self.base / f"{name}.log"
        node = Node(name, subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env,
                                           start_new_session=True), log, Path(env["LABCTL_WORK_DIR"]))
        self.nodes[name] = node
        deadline = time.monotonic() + START_TIMEOUT_S
        while "Ray runtime started" not in log.read_text(errors="replace"):
            if node.proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"ray node {name} did not start:\n{tail}")
            time.sleep(0.5)
        return node

    def _common(self, docker_slots: int) -> list[str]:
        return ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0",
                f"--resources={json.dumps({'labctl_docker': docker_slots})}",
                f"--object-store-memory={OBJECT_STORE_BYTES}", "--disable-usage-stats", "--block"]

    def start_head(self, docker_slots: int = 1) -> Node:
        # A short temp dir: Ray's unix sockets live under it and their paths are length-limited.
        tmp = tempfile.mkdtemp(prefix="lray", dir="/tmp")
        self.temp = Path(tmp)
        env = {**self._env("head"), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        ray = str(Path(sys.executable).parent / "ray")
        return self._start("head", [ray, "start", "--head", f"--port={self.port}",
                                    "--include-dashboard=false", f"--temp-dir={tmp}",
                                    *self._common(docker_slots)], env)

    def add_worker(self, name: str, docker_slots: int = 1) -> Node:
        return self._start(name, [sys.executable, "-c", KEEP_LOOPBACK, "start", f"--address={self.address}",
                                  *self._common(docker_slots)], self._env(name))

    def kill(self, name: str) -> None:
        """The node dies at once, as a host that loses power: SIGKILL to its whole session."""
        node = self.nodes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.proc.pid, signal.SIGKILL)
        node.proc.wait()

    def stop(self) -> None:
        for name in list(self.nodes)[::-1]:  # workers first, the head last
            self.kill(name)
        if self.temp is not None:
            shutil.rmtree(self.temp, ignore_errors=True)

    def listening(self) -> list[str]:
        """Every TCP address this cluster's processes listen on (`ip:port`, from /proc), for the
        loopback check: the sockets of every process in a node's session."""
        sessions = {node.proc.pid for node in self.nodes.values()}
        inodes: set[str] = set()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                stat = (proc / "stat").read_text()
                if int(stat[stat.rindex(")") + 2:].split()[3]) not in sessions:  # field 6: session id
                    continue
                for fd in (proc / "fd").iterdir():
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
            except (OSError, ValueError):
                continue
        found = []
        for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                    found.append(_address(cols[1], v6))
        return found


def _address(hexaddr: str, v6: bool) -> str:
    """/proc/net/tcp's `0100007F:1F90` → `127.0.0.1:8080` (v6: the IPv4-mapped form → its IPv4)."""
    host, port = hexaddr.split(":")
    raw = bytes.fromhex(host)
    if v6:  # four little-endian 32-bit words
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
        ip = ipaddress.IPv6Address(raw)
        text = str(ip.ipv4_mapped) if ip.ipv4_mapped else str(ip)
    else:
        text = str(ipaddress.IPv4Address(raw[::-1]))
    return f"{text}:{int(port, 16)}"
