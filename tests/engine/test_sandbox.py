"""A run's sandbox against the real kernel and a real Docker engine: real listeners on the host (one
on 0.0.0.0, one on `::`) must be unreachable from the agent, the meter, the model server, the egress
gateway (on its routed bridge) and the verifier, through docker0's gateway, the run networks' own
gateways and every other address of the host, IPv4 and IPv6; the agent still reaches the meter and
never the model server; the fence's
rules are gone after cleanup and after `labctl down` (a killed labctl), and a resumed run removes
what a killed attempt left. The fence is applied as root here (CI) and, in one test, through the
helper container a non-root user gets."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from labctl.engine.container import Engine, detect_engine
from labctl.engine.fence import Fence, Netfilter, matching_rules
from labctl.engine.names import label_flags
from labctl.images.build import build_all
from labctl.images.specs import lab_images, settings_for
from labctl.lock.lockfile import lock_path, read_lock, write_lock
from labctl.lock.resolve import require_lock
from labctl.round.layout import RunResult
from labctl.run.runner import RunSession, down, open_round
from labctl.run.session import PORT
from labctl.spec.load import load_lab
from labctl.treehash import tree_sha256
from tests.run.test_runner import build, derived_lab, labelled_now, runner_env, seal  # noqa: F401  (module fixture)

pytestmark = pytest.mark.docker
NOTHING = {"containers": [], "networks": [], "volumes": []}
PROBE = ('for t in "$@"; do ( timeout 3 bash -c "exec 3<>/dev/tcp/${t%/*}/${t##*/}" 2>/dev/null '
         '&& echo "open $t" ) & done; wait')
"""Connect to every `host/port` argument at once; prints `open host/port` for each that answers."""


class Listener:
    """A real TCP listener on the host that records every connection it accepts."""

    def __init__(self, family: socket.AddressFamily, host: str) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.peers: list[str] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            with contextlib.suppress(OSError):
                conn, peer = self.sock.accept()
                self.peers.append(str(peer[0]))
                conn.close()

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture(scope="module")
def listeners() -> Iterator[list[Listener]]:
    """0.0.0.0 and `::` (dual stack, as most servers bind), each on a free port."""
    both = [Listener(socket.AF_INET, "0.0.0.0"), Listener(socket.AF_INET6, "::")]
    try:
        yield both
    finally:
        for one in both:
            one.close()


def host_addresses() -> list[str]:
    """Every address of the host but loopback and link-local: docker0's 172.17.0.1, every bridge's
    gateway, the uplink's IPv4 and IPv6 addresses."""
    out = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        addr = ipaddress.ip_address(line.split()[3].split("/")[0])
        if not (addr.is_loopback or addr.is_link_local):
            found.append(str(addr))
    assert "172.17.0.1" in found  # docker0, the way out the issue found
    return found


def gateways(docker: Engine, network: str) -> list[str]:
    got = docker("network", "inspect", "--format", "{{range .IPAM.Config}}{{.Gateway}} {{end}}", network)
    return got.stdout.split()


def targets(addresses: list[str], listeners: list[Listener]) -> list[str]:
    return [f"{a}/{one.port}" for a in dict.fromkeys(addresses) for one in listeners]


def probe(docker: Engine, container: str, to: list[str]) -> set[str]:
    done = docker("exec", "-u", "0", container, "bash", "-c", PROBE, "probe", *to, timeout=60)
    return {line.split()[1] for line in done.stdout.splitlines() if line.startswith("open ")}


def round_rules(round_id: str) -> list[str]:
    return Fence(Netfilter(detect_engine()), round_id).rules()


def test_no_container_of_a_local_run_reaches_the_host(tmp_path: Path, listeners: list[Listener]) -> None:
    tiny = "  - id: tiny-llama\n    kind: local\n    model:\n      generate: {seed: 7}\n"
    lab = derived_lab(tmp_path, tiny)
    build(lab)
    rd = seal(lab, tmp_path)
    ctx = open_round(rd, lab)
    run_id = ctx.sealed.order[0]
    d = detect_engine()
    session = RunSession(ctx, run_id)
    # What a killed attempt of this run left behind: resuming it removes it first.
    session.fence.nf(f"$ipt -w -I INPUT 1 -i lcstale0 -m comment --comment {session.fence.tag} -j DROP\n",
                     "plant a stale rule")
    assert len(session.fence.rules()) == 1
    try:
        session.setup()
        names = session.names
        rules = session.fence.rules()
        assert not any("lcstale0" in r for r in rules)
        bridges = {r.split()[r.split().index("-i") + 1] for r in rules}
        # the agent's network, the model's and the egress gateway's routed bridge (the lab's default
        # policy, allowlist); never the stale one
        assert len(bridges) == 3
        # INPUT and FORWARD per internal bridge; on the routed one INPUT and FORWARD to link-local only
        per_family = 2 * 2 + 2
        assert len(rules) in (per_family, 2 * per_family)  # ip6tables too wherever the kernel has IPv6
        if Path("/proc/net/if_inet6").exists():
            assert len(rules) == 2 * per_family
        outside = session.egress.name("net-outside")
        everywhere = (host_addresses() + gateways(d, names["net-agent"]) + gateways(d, names["net-model"])
                      + gateways(d, outside))
        to = targets(everywhere, listeners)
        for container in (names["agent"], names["meter"], names["server"], session.egress.name("gateway")):
            assert probe(d, container, to) == set(), container
        assert listeners[0].peers == [] and listeners[1].peers == []
        # The one way that is open: agent → meter. The model server is on another network.
        assert probe(d, names["agent"], [f"meter/{PORT}"]) == {f"meter/{PORT}"}
        server_ip = d("inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                      names["server"]).stdout.split()
        assert server_ip and probe(d, names["agent"], [f"{ip}/{PORT}" for ip in server_ip]) == set()
        assert not d.ok("exec", names["agent"], "getent", "hosts", "server")
        limits = d("inspect", "--format", "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}}", names["meter"])
        assert limits.stdout.split() == [str(min(10**9, (os.cpu_count() or 1) * 10**9)), str(512 * 2**20)]
        # A killed labctl: `labctl down` finds the round's objects and rules by label and comment.
        removed = down(d, ctx.sealed.round)
        assert len(removed["firewall rules"]) == len(rules) and removed["containers"]
        assert round_rules(ctx.sealed.round) == []
    finally:
        session.cleanup()
    assert round_rules(ctx.sealed.round) == []
    assert labelled_now(ctx.sealed.round) == NOTHING


def test_the_verifier_reaches_nothing(tmp_path: Path, listeners: list[Listener]) -> None:
    """The task's own tests/test.sh probes the host from the verifier's container and says so."""
    lab = derived_lab(tmp_path, "  - id: nop\n    kind: nop\n", solve="#!/usr/bin/env bash\ntrue\n")
    task = tmp_path / "task"
    to = targets(host_addresses(), listeners)
    (task / "tests" / "test.sh").write_text(
        "#!/usr/bin/env bash\nmkdir -p /logs/verifier\nopen=0\n"
        f"for t in {' '.join(to)}; do\n"
        '  if timeout 3 bash -c "exec 3<>/dev/tcp/${t%/*}/${t##*/}" 2>/dev/null; then\n'
        '    echo "open $t"; open=$((open + 1)); fi\ndone\n'
        f'echo "{{\\"reward\\": $(( open == 0 )), \\"checks\\": {{\\"probed\\": {len(to)}, '
        '\\"open\\": $open}}" > /logs/verifier/reward.json\n')
    lock = read_lock(lock_path(lab))
    write_lock(lock_path(lab), lock.model_copy(update={
        "task": lock.task.model_copy(update={"tree_sha256": tree_sha256(task)})}))
    build(lab)
    rd = seal(lab, tmp_path)
    ctx = open_round(rd, lab)
    session = RunSession(ctx, ctx.sealed.order[0])
    try:
        session.setup()
        session.run_agent()
        session.collect()
        result = session.grade(RunResult(run_id=session.run_id, status="running", attempts=1))
    finally:
        session.cleanup()
    stdout = (session.dir / "verifier" / "stdout.txt").read_text()
    reward = json.loads((session.dir / "verifier" / "reward.json").read_text())
    assert reward["checks"] == {"probed": len(to), "open": 0}, stdout
    assert reward["reward"] == 1 and result.status == "done"
    assert listeners[0].peers == [] and listeners[1].peers == []
    assert labelled_now(ctx.sealed.round) == NOTHING and round_rules(ctx.sealed.round) == []


def test_ipv6_is_fenced_too_and_a_non_root_user_gets_the_helper(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listeners: list[Listener]) -> None:
    """On a network with IPv6 (a daemon with IPv6 on), the host answers over IPv6 until the fence is
    up; the fence here goes through the helper container a user without root gets, and the rules
    it writes are the host's own (same iptables backend as docker's)."""
    smoke = load_lab(Path(__file__).resolve().parents[2] / "labs" / "smoke.yaml")
    spec = next(s for s in lab_images(smoke, require_lock(smoke), settings=settings_for(smoke))
                if s.name == "labctl")
    [built] = build_all(detect_engine(), [spec], log_dir=tmp_path / "logs")
    assert built.status != "failed", built.error
    helper = spec.tag
    d = detect_engine()
    rid, run_id = f"fence-{uuid.uuid4().hex[:8]}", "run-1"
    labels = {"labctl.round": rid, "labctl.run": run_id}
    subnet = f"fd42:{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}::/64"
    monkeypatch.setattr(Netfilter, "direct", lambda self: False)
    fence = Fence(Netfilter(d, helper, labels), rid, run_id)
    net = f"lc-{rid}-net"
    try:
        net_id = d("network", "create", "--internal", "--ipv6", "--subnet", subnet, *label_flags(labels),
                   net).stdout.strip()
        box = f"lc-{rid}-box"
        d("run", "-d", "--name", box, "--network", net, *label_flags(labels), "--entrypoint", "sleep",
          "debian:bookworm-slim", "300")
        v6_gateway = str(ipaddress.ip_network(subnet)[1])
        to = targets([v6_gateway, *gateways(d, net), *host_addresses()], listeners)
        before = probe(d, box, to)
        assert f"{v6_gateway}/{listeners[1].port}" in before  # the hole the fence closes
        listeners[0].peers.clear()
        listeners[1].peers.clear()
        bridge = fence.add(net_id)
        host_view = subprocess.run(["ip6tables", "-S", "INPUT"], capture_output=True, text=True).stdout
        assert f"-i {bridge} " in host_view and fence.tag in host_view
        assert probe(d, box, to) == set()
        assert listeners[0].peers == [] and listeners[1].peers == []
    finally:
        d.remove_labelled(labels)
        cleared = fence.clear()
    assert len(cleared) == 4 and fence.rules() == []
    assert d.labelled(labels) == NOTHING


def test_clearing_rules_another_cleanup_already_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    """`labctl down` lists a run's rules while the run's own cleanup deletes them: a rule gone between
    the listing and the delete is fine, and what is still there is deleted (CI's failure of stop 22)."""
    fence = Fence(Netfilter(detect_engine()), f"race-{uuid.uuid4().hex[:8]}", "run-1")
    plant = "".join(f"$ipt -w -I INPUT 1 -i {dev} -m comment --comment {fence.tag} -j DROP\n"
                    for dev in ("lcrace0", "lcrace1"))
    fence.nf(plant, "plant two rules")
    try:
        stale = fence.listing()
        assert len(matching_rules(stale, fence.tag)) == 2
        fence.nf(f"$ipt -w -D INPUT -i lcrace0 -m comment --comment {fence.tag} -j DROP\n", "race")
        monkeypatch.setattr(fence, "listing", lambda: stale)  # what `down` saw before the race
        assert len(fence.clear()) == 2
    finally:
        monkeypatch.undo()
        leftover = fence.rules()
        fence.clear()
    assert leftover == []
