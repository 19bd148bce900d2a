"""Container specs as data: the one place a spec becomes a `docker create`/`run` line, pinned flag by
flag (no engine needed), and the engine's own command lines built from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from labctl.engine.container import Engine
from labctl.engine.spec import Access, ContainerSpec, Limits, Mount


def test_a_full_spec_has_one_command_line() -> None:
    spec = ContainerSpec(
        "agent:1", ("210",), name="lc-r-run-01-agent", entrypoint="sleep", hostname="run-01",
        network="net-agent", aliases=("agent",), more_networks=("net-outside",), user="1000",
        workdir="/app", env={"B": "2", "A": "1"}, pass_env=("KEY",),
        mounts=(Mount(Path("/host/ws"), "/workspace"), Mount("/host/i.md", "/labctl/i.md", read_only=True)),
        labels={"labctl.round": "r", "labctl.role": "agent"},
        limits=Limits(cpus=1.5, memory="1024m", pids=256),
        cap_add=("NET_ADMIN",), extra_hosts={"gw": "10.0.0.1"}, devices=("--gpus", "all"))
    assert spec.argv("create") == [
        "create", "--name", "lc-r-run-01-agent", "--hostname", "run-01", "--network", "net-agent",
        "--network-alias", "agent", "--add-host", "gw:10.0.0.1", "--user", "1000",
        "--label", "labctl.round=r", "--label", "labctl.role=agent", "-e", "B=2", "-e", "A=1", "-e", "KEY",
        "--cpus", "1.5", "--memory", "1024m", "--pids-limit", "256", "--gpus", "all",
        "--cap-add", "NET_ADMIN",
        "-v", "/host/ws:/workspace", "-v", "/host/i.md:/labctl/i.md:ro", "-w", "/app",
        "--entrypoint", "sleep", "agent:1", "210"]


def test_run_options_and_the_minimal_spec() -> None:
    assert ContainerSpec("img").argv("create") == ["create", "img"]
    assert ContainerSpec("img", ("true",), network="none", remove=True, detach=True).argv("run") == [
        "run", "--rm", "-d", "--network", "none", "img", "true"]
    with pytest.raises(ValueError, match="run"):
        ContainerSpec("img", remove=True).argv("create")


def test_access_puts_the_container_on_its_way_out() -> None:
    spec = ContainerSpec("img", env={"http_proxy": "mine"}, mounts=(Mount("/a", "/a"),))
    apt = Mount("/apt", "/etc/apt/x", read_only=True)
    access = Access("net-agent", {"http_proxy": "gw", "NO_PROXY": "meter"}, (apt,))
    got = spec.with_access(access)
    assert got.network == "net-agent"
    assert dict(got.env) == {"http_proxy": "mine", "NO_PROXY": "meter"}  # the container's own wins
    assert [m.target for m in got.mounts] == ["/etc/apt/x", "/a"]
    assert ContainerSpec("img").with_access(Access()).argv("run") == ["run", "--network", "none", "img"]


def test_the_engine_runs_specs_with_its_own_client() -> None:
    engine = Engine(cli=["docker", "--context", "x"])
    assert engine.run_argv(ContainerSpec("img", ("true",), remove=True)) == [
        "docker", "--context", "x", "run", "--rm", "img", "true"]
    assert engine.exec_argv("box", ["sh", "-c", "id"], user="0", workdir="/w", env={"Z": "1", "A": "2"}) == [
        "docker", "--context", "x", "exec", "-u", "0", "-w", "/w", "-e", "A=2", "-e", "Z=1",
        "box", "sh", "-c", "id"]


def test_image_config_is_asked_once_per_tag(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    calls: list[list[str]] = []

    def fake(self: Engine, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        calls.append(list(args))
        return subprocess.CompletedProcess(list(args), 0, '{"User": "app", "WorkingDir": ""}', "")

    monkeypatch.setattr(Engine, "__call__", fake)
    engine = Engine(cli=["docker"])
    got = (engine.image_user("t:1"), engine.image_workdir("t:1"), engine.image_user("t:1"))
    assert got == ("app", "/", "app")
    assert calls == [["image", "inspect", "--format", "{{json .Config}}", "t:1"]]


def test_wait_ready_retries_inside_one_exec(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The probe loop runs in the container's own sh (here: this host's): one exec for a service
    that comes up within the slice, False at once when the container has stopped."""
    import subprocess

    execs: list[list[str]] = []
    alive = [True]

    def local(self: Engine, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        if args[0] == "exec":
            execs.append(list(args))
            return subprocess.run(list(args[2:]), capture_output=True, text=True)
        return subprocess.CompletedProcess(list(args), 0, "true" if alive[0] else "false", "")

    monkeypatch.setattr(Engine, "__call__", local)
    engine = Engine(cli=["docker"])
    flag = tmp_path / "up"
    subprocess.Popen(["sh", "-c", f"sleep 0.5; touch {flag}"])
    assert engine.wait_ready("box", ["test", "-e", str(flag)], timeout_s=20)
    assert len(execs) == 1
    alive[0] = False
    assert not engine.wait_ready("box", ["false"], timeout_s=20, slice_s=1)
    assert len(execs) == 2
