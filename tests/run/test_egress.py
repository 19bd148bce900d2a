"""A run's network policy against a real Docker engine, the "outside" served by the test's own
containers (tests/outside.py: an internal network, stand-ins under registry host names): never the
real internet.

* `allowlist`: the agent's container fetches from an allowed stand-in only through the egress
  gateway (real apt from a stand-in deb.debian.org, plain HTTP and CONNECT to a stand-in pypi.org),
  is denied a host not on the list (`not-allowed.example`, which never sees a request) and cannot go
  direct; both show in egress.jsonl, which `labctl verify` checks.
* `none`: nothing answers, not even the gateway's name.
* `open`: the stand-in answers directly, no proxy in between.
* every mode: the host's listeners stay unreachable (from the agent, and from the gateway, which
  sits on a routed bridge), and no API key is in the agent's or the gateway's container.

Every probe that must fail has a positive control: the same probe, against what is reachable in that
case, succeeds.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from labctl.engine.container import Engine, detect_engine
from labctl.round.layout import read_egress, write_manifest
from labctl.round.verify import verify_round
from labctl.run.egress import GATEWAY_ALIAS, GATEWAY_PORT
from labctl.run.runner import RunSession, open_round
from tests.engine import test_sandbox
from tests.engine.test_sandbox import PROBE, Listener, host_addresses, probe, targets
from tests.outside import Outside, debian_tree, make_deb, outside_world, pypi_tree
from tests.pypi_standin import tiny_wheel
from tests.run.test_runner import build, derived_lab, labelled_now, runner_env, seal  # noqa: F401  (module fixture)

listeners = test_sandbox.listeners  # the host's listeners on 0.0.0.0 and ::, the same module fixture
pytestmark = pytest.mark.docker
NOTHING = {"containers": [], "networks": [], "volumes": []}
KEY_ENV, KEY = "LABCTL_EGRESS_TEST_KEY", "sk-egress-test-0123456789"
PROXY = f"{GATEWAY_ALIAS}:{GATEWAY_PORT}"
FETCH = r"""
# fetch HOST PORT PATH [via PROXY] → prints the status line; plain HTTP over bash's /dev/tcp
host=$1 port=$2 path=$3 proxy=${4:-}
if [ -n "$proxy" ]; then exec 3<>"/dev/tcp/${proxy%:*}/${proxy#*:}" || exit 7
  printf 'GET http://%s:%s%s HTTP/1.0\r\nHost: %s\r\n\r\n' "$host" "$port" "$path" "$host" >&3
else exec 3<>"/dev/tcp/$host/$port" || exit 7
  printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$path" "$host" >&3
fi
timeout 10 head -1 <&3
"""
CONNECT = r"""
# connect PROXY HOST:PORT → prints the proxy's answer to CONNECT
exec 3<>"/dev/tcp/${1%:*}/${1#*:}" || exit 7
printf 'CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n' "$2" "$2" >&3
timeout 10 head -1 <&3
"""


def content(tmp: Path) -> tuple[Path, Path]:
    """(pypi root, debian root): one tiny wheel; one .deb installing /usr/bin/standin-hello."""
    pypi = pypi_tree(tmp / "pypi", {"standin-pkg": [tiny_wheel("standin-pkg", "1.0")]})
    hello = "#!/bin/sh\necho hello from the stand-in\n"
    deb = make_deb(tmp, "standin-hello", "1.0", {"/usr/bin/standin-hello": hello})
    root = tmp / "debian-root"
    debian_tree(root / "debian", [deb])
    return pypi, root


def session_for(tmp: Path, network: str) -> RunSession:
    lab = derived_lab(tmp, "  - id: nop\n    kind: nop\n")
    with lab.open("a") as f:
        f.write(f"network: {network}\n")
    build(lab)
    ctx = open_round(seal(lab, tmp), lab)
    return RunSession(ctx, ctx.sealed.order[0])


def sh(d: Engine, container: str, script: str, *args: str) -> str:
    done = d("exec", "-u", "0", container, "bash", "-c", script, "sh", *args, check=False, timeout=120)
    return (done.stdout + done.stderr).strip()


def no_key(d: Engine, *containers: str) -> None:
    for c in containers:
        env = d("exec", c, "env", check=False).stdout
        env += d("inspect", "--format", "{{json .Config.Env}}", c).stdout
        assert KEY not in env and KEY_ENV not in env, c


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Outside, object, object]]:
    """The outside with two stand-ins: the registries (pypi.org, deb.debian.org) and a host that is
    on no list (not-allowed.example); a key on the host that must never reach a task container."""
    monkeypatch.setenv(KEY_ENV, KEY)
    d = detect_engine()
    pypi, debian = content(tmp_path)
    site = tmp_path / "site"  # one tree: /simple, /packages (PyPI) and /debian (the archive)
    shutil.copytree(pypi, site)
    shutil.copytree(debian, site, dirs_exist_ok=True)
    (site / "index.html").write_text("stand-in\n")
    with outside_world(d, tmp_path / "outside") as out:
        registries = out.serve(site, ["pypi.org", "files.pythonhosted.org", "deb.debian.org"])
        other = out.serve(site, ["not-allowed.example"])
        yield out, registries, other


def test_allowlist_goes_through_the_gateway_and_is_recorded(
        tmp_path: Path, world: tuple[Outside, object, object], listeners: list[Listener]) -> None:
    out, registries, other = world
    d = detect_engine()
    session = session_for(tmp_path, "{egress: allowlist}")
    try:
        session.setup()
        agent, gateway = session.names["agent"], session.egress.name("gateway")
        # Real apt, configured by labctl's apt.conf alone (the environment is dropped by `env -i`).
        sources = "deb [trusted=yes] http://deb.debian.org/debian bookworm main\n"
        apt = sh(d, agent, f"printf '{sources}' > /tmp/standin.list && env -i PATH=$PATH apt-get "
                           "-o Dir::Etc::SourceList=/tmp/standin.list -o Dir::Etc::SourceParts=/dev/null "
                           "update -q && env -i PATH=$PATH apt-get -o Dir::Etc::SourceList=/tmp/standin.list "
                           "-o Dir::Etc::SourceParts=/dev/null install -y -q standin-hello && standin-hello")
        assert "hello from the stand-in" in apt.splitlines(), apt
        # The proxy variables: what pip, curl, uv and git read.
        env = sh(d, agent, "env")
        assert f"http_proxy=http://{PROXY}" in env and f"HTTPS_PROXY=http://{PROXY}" in env
        assert "no_proxy=meter," in env
        # Allowed host through the gateway: 200 (the positive control of the denial below).
        assert sh(d, agent, FETCH, "pypi.org", "80", "/simple/standin-pkg/", PROXY).startswith("HTTP/1.1 200")
        assert sh(d, agent, CONNECT, PROXY, "pypi.org:443").startswith("HTTP/1.1 200")
        # A host on no list: refused by the gateway, never reached.
        assert sh(d, agent, FETCH, "not-allowed.example", "80", "/", PROXY).startswith("HTTP/1.1 403")
        assert sh(d, agent, CONNECT, PROXY, "not-allowed.example:443").startswith("HTTP/1.1 403")
        assert other.requests() == []  # type: ignore[attr-defined]
        # No way around the gateway: the stand-in's address is answered from the gateway (control),
        # never from the agent.
        ip = d("inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
               registries.name).stdout.split()  # type: ignore[attr-defined]
        assert probe(d, gateway, [f"{ip[0]}/80"]) == {f"{ip[0]}/80"}
        assert probe(d, agent, [f"{ip[0]}/80", "pypi.org/80"]) == set()
        # The host stays out of reach of the agent and of the gateway on its routed bridge; through
        # the proxy an address is no host on the list.
        to = targets(host_addresses(), listeners)
        assert probe(d, agent, to + [PROXY.replace(":", "/")]) == {PROXY.replace(":", "/")}
        assert probe(d, gateway, to + [f"{ip[0]}/80"]) == {f"{ip[0]}/80"}
        host_ip = "172.17.0.1"  # docker0: on every host_addresses() list
        via = sh(d, agent, FETCH, host_ip, str(listeners[0].port), "/", PROXY)
        assert via.startswith("HTTP/1.1 403"), via
        assert listeners[0].peers == [] and listeners[1].peers == []
        no_key(d, agent, gateway)
        seen = {(r["method"], r["path"]) for r in registries.requests()}  # type: ignore[attr-defined]
        assert ("GET", "/debian/dists/bookworm/Release") in seen and ("GET", "/simple/standin-pkg/") in seen
    finally:
        session.cleanup()
    records = read_egress(session.dir / "egress.jsonl")
    got = {(r.method, r.host, r.allowed) for r in records}
    assert ("GET", "deb.debian.org", True) in got and ("GET", "pypi.org", True) in got
    assert ("CONNECT", "pypi.org", True) in got
    assert ("GET", "not-allowed.example", False) in got and ("CONNECT", "not-allowed.example", False) in got
    debs = [r for r in records if r.url.endswith(".deb")]
    assert len(debs) == 1 and debs[0].status == 200 and debs[0].bytes > 0
    assert labelled_now(session.ctx.sealed.round) == NOTHING
    # verify names an egress log that is not one (the manifest is rewritten so only this check speaks)
    write_manifest(session.ctx.round_dir)
    assert not [p for p in verify_round(session.ctx.round_dir).problems if "egress" in str(p)]
    with (session.dir / "egress.jsonl").open("a") as f:
        f.write('{"method": "GET"}\n')
    write_manifest(session.ctx.round_dir)
    assert [p for p in verify_round(session.ctx.round_dir).problems if "not an egress log" in str(p)]


def test_none_reaches_nothing(tmp_path: Path, world: tuple[Outside, object, object],
                              listeners: list[Listener]) -> None:
    out, registries, _ = world
    d = detect_engine()
    session = session_for(tmp_path, "{egress: none}")
    try:
        session.setup()
        agent = session.names["agent"]
        # Control: the same fetch answers on the outside network (from the other stand-in).
        assert sh(d, out.standins[1].name, FETCH, "pypi.org", "80", "/?control").startswith("HTTP/1.0 200")
        assert sh(d, agent, FETCH, "pypi.org", "80", "/") != "HTTP/1.0 200 OK"
        assert probe(d, agent, ["pypi.org/80", "deb.debian.org/80", PROXY.replace(":", "/")]) == set()
        assert not d.ok("exec", agent, "getent", "hosts", GATEWAY_ALIAS)
        assert probe(d, agent, targets(host_addresses(), listeners)) == set()
        assert listeners[0].peers == [] and listeners[1].peers == []
        assert "proxy" not in sh(d, agent, "env").lower()
        no_key(d, agent)
    finally:
        session.cleanup()
    assert not (session.dir / "egress.jsonl").exists()
    assert [r["path"] for r in registries.requests()] == ["/?control"]  # type: ignore[attr-defined]
    assert labelled_now(session.ctx.sealed.round) == NOTHING


def test_open_reaches_the_outside_directly_never_the_host(
        tmp_path: Path, world: tuple[Outside, object, object], listeners: list[Listener]) -> None:
    out, registries, other = world
    d = detect_engine()
    session = session_for(tmp_path, "{egress: open}")
    try:
        session.setup()
        agent = session.names["agent"]
        assert sh(d, agent, FETCH, "not-allowed.example", "80", "/").startswith("HTTP/1.0 200")
        assert sh(d, agent, FETCH, "pypi.org", "80", "/simple/").startswith("HTTP/1.0 200")
        # The host's listeners, probed together with the stand-in (the control that answers).
        to = targets(host_addresses(), listeners)
        assert probe(d, agent, [*to, "pypi.org/80"]) == {"pypi.org/80"}
        assert listeners[0].peers == [] and listeners[1].peers == []
        assert not d.ok("exec", agent, "getent", "hosts", GATEWAY_ALIAS)  # no gateway: nothing between
        assert "proxy" not in sh(d, agent, "env").lower()
        rules = session.fence.rules()
        outside_bridge = session.fence.bridge(d("network", "inspect", "--format", "{{.Id}}",
                                                out.network).stdout.strip())
        mine = [r for r in rules if f"-i {outside_bridge} " in r]
        # a routed bridge: nothing to the host, nothing routed to link-local (a cloud's metadata service)
        chains = sorted(r.split()[1] for r in mine)
        assert chains in (["FORWARD", "INPUT"], ["FORWARD", "FORWARD", "INPUT", "INPUT"]), mine
        assert all("-j DROP" in r for r in mine)
        forwarded = [r for r in mine if r.startswith("-A FORWARD")]
        assert all("-d 169.254.0.0/16" in r or "-d fe80::/10" in r for r in forwarded), forwarded
        no_key(d, agent)
    finally:
        session.cleanup()
    assert other.requests() and registries.requests()  # type: ignore[attr-defined]
    assert labelled_now(session.ctx.sealed.round) == NOTHING
    assert session.fence.rules() == []
    assert d.ok("network", "inspect", out.network)  # the given network is the operator's: kept


def test_open_without_a_given_network_gets_a_routed_bridge_of_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listeners: list[Listener]) -> None:
    """No LABCTL_EGRESS_NETWORK: the run makes its own routed bridge (not internal: a way out), fenced
    from the host; nothing here leaves the machine (only the host's addresses are probed)."""
    monkeypatch.delenv("LABCTL_EGRESS_NETWORK", raising=False)
    d = detect_engine()
    session = session_for(tmp_path, "{egress: open}")
    try:
        session.setup()
        agent, net = session.names["agent"], session.egress.name("net-outside")
        assert d("network", "inspect", "--format", "{{.Internal}}", net).stdout.strip() == "false"
        routes = sh(d, agent, "cat /proc/net/route")
        assert any(line.split()[1] == "00000000" for line in routes.splitlines()[1:])  # a default route
        assert probe(d, agent, targets(host_addresses(), listeners)) == set()
        assert listeners[0].peers == [] and listeners[1].peers == []
    finally:
        session.cleanup()
    assert labelled_now(session.ctx.sealed.round) == NOTHING and session.fence.rules() == []


__all__ = ["PROBE"]


VERIFIER_TEST = r"""#!/usr/bin/env bash
# The task's own tests, fetching at test time as Terminal-Bench 2's do (apt, a package index).
mkdir -p /logs/verifier
printf 'deb [trusted=yes] http://deb.debian.org/debian bookworm main\n' > /tmp/standin.list
apt=false; index=false
if apt-get -o Dir::Etc::SourceList=/tmp/standin.list -o Dir::Etc::SourceParts=/dev/null update -q \
   && apt-get -o Dir::Etc::SourceList=/tmp/standin.list -o Dir::Etc::SourceParts=/dev/null \
        install -y -q standin-hello && [ "$(standin-hello)" = "hello from the stand-in" ]; then apt=true; fi
if [ -n "${http_proxy:-}" ]; then p=${http_proxy#http://}; p=${p%/}; to="${p%:*}/${p#*:}"; path=http://pypi.org/simple/
else to=pypi.org/80; path=/simple/; fi
if exec 3<>"/dev/tcp/$to"; then
  printf 'GET %s HTTP/1.0\r\nHost: pypi.org\r\n\r\n' "$path" >&3
  timeout 10 head -1 <&3 | grep -q ' 200 ' && index=true
fi
ok=0; $apt && $index && ok=1
echo "{\"reward\": $ok, \"checks\": {\"apt\": $apt, \"index\": $index}}" > /logs/verifier/reward.json
"""


@pytest.mark.parametrize(("mode", "reached"), [("allowlist", True), ("none", False), ("open", True)])
def test_the_verifier_gets_the_same_way_out(tmp_path: Path, world: tuple[Outside, object, object],
                                            mode: str, reached: bool) -> None:
    """A fresh verifier container of the committed agent filesystem runs tests/test.sh with the
    run's policy: apt and the package index answer under allowlist (through the gateway, logged)
    and open (directly), nothing under none."""
    from labctl.lock.lockfile import lock_path, read_lock, write_lock
    from labctl.round.layout import RunResult
    from labctl.treehash import tree_sha256

    lab = derived_lab(tmp_path, "  - id: nop\n    kind: nop\n", solve="#!/usr/bin/env bash\ntrue\n")
    task = tmp_path / "task"
    (task / "tests" / "test.sh").write_text(VERIFIER_TEST)
    lock = read_lock(lock_path(lab))
    write_lock(lock_path(lab), lock.model_copy(update={
        "task": lock.task.model_copy(update={"tree_sha256": tree_sha256(task)})}))
    with lab.open("a") as f:
        f.write(f"network: {{egress: {mode}}}\n")
    build(lab)
    ctx = open_round(seal(lab, tmp_path), lab)
    session = RunSession(ctx, ctx.sealed.order[0])
    try:
        session.setup()
        session.run_agent()
        session.collect()
        session.grade(RunResult(run_id=session.run_id, status="running", attempts=1))
    finally:
        session.cleanup()
    reward = json.loads((session.dir / "verifier" / "reward.json").read_text())
    stdout = (session.dir / "verifier" / "stdout.txt").read_text()
    assert reward["checks"] == {"apt": reached, "index": reached}, stdout
    if mode == "allowlist":
        debs = [r for r in read_egress(session.dir / "egress.jsonl") if r.url.endswith(".deb")]
        assert len(debs) == 1 and debs[0].allowed and debs[0].bytes > 0
    assert labelled_now(ctx.sealed.round) == NOTHING


@pytest.mark.parametrize("mode", ["allowlist", "none", "open"])
def test_no_key_in_the_task_container_or_the_gateway(tmp_path: Path, world: tuple[Outside, object, object],
                                                     monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """A cloud contestant's key is on the host: the meter holds it (the control), the agent's
    container (environment and whole filesystem) and the gateway never, in every mode. The upstream
    named is never contacted (no agent runs)."""
    monkeypatch.setenv(KEY_ENV, KEY)
    lab = derived_lab(tmp_path, "  - id: cloudy\n    kind: cloud\n    provider: openai\n    model: gpt-x\n"
                                f"    api_key_env: {KEY_ENV}\n    base_url: http://upstream.invalid:9\n")
    with lab.open("a") as f:
        f.write(f"network: {{egress: {mode}}}\n")
    build(lab)
    ctx = open_round(seal(lab, tmp_path), lab)
    session = RunSession(ctx, ctx.sealed.order[0])
    d = detect_engine()
    try:
        session.setup()
        agent = session.names["agent"]
        meter_env = d("inspect", "--format", "{{json .Config.Env}}", session.names["meter"]).stdout
        assert f"{KEY_ENV}={KEY}" in meter_env  # the key went where it belongs
        containers = [agent] + ([session.egress.name("gateway")] if mode == "allowlist" else [])
        no_key(d, *containers)
        for c in containers:
            grep = d("exec", "-u", "0", c, "grep", "-rl", "--devices=skip", "--exclude-dir=proc",
                     "--exclude-dir=sys", "--exclude-dir=dev", KEY, "/", check=False, timeout=180)
            # grep: 1 is "no match"; 2 is an error, which must not pass as a clean search
            assert (grep.returncode, grep.stdout) == (1, ""), (c, grep.returncode, grep.stderr[-500:])
    finally:
        session.cleanup()
    assert labelled_now(ctx.sealed.round) == NOTHING
