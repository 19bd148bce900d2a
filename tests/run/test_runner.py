"""The runner against a real Docker engine: a whole smoke round end to end, isolation (egress, keys,
blindness) and the faults a round must survive (missing lock, blob or image; a server that never
gets healthy; an agent that never exits; Ctrl-C).

Images are built once per session under labctl's default namespace (the classic builder's layer
cache makes a rebuild cheap; the llama-server compile is the slow part and is shared with
`make demo`). labs/smoke.lock is written offline from recorded registry facts when missing or stale,
and other labs get their lock derived from it (only what differs — spec hash, task tree, models — is
changed), so no test contacts a registry.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from python_on_whales import DockerClient

from labctl.engine.container import Engine, detect_engine
from labctl.gguf.store import Store
from labctl.images.build import build_all
from labctl.images.specs import lab_images, settings_for
from labctl.lock.lockfile import Lock, lock_path, read_lock, write_lock
from labctl.lock.resolve import require_lock, spec_sha256
from labctl.round.layout import read_result
from labctl.round.seal import seal_round
from labctl.run.runner import RunSession, open_round, run_round
from labctl.run.session import PORT
from labctl.spec.load import LoadedLab, load_lab
from labctl.treehash import tree_sha256

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "labs" / "smoke.yaml"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
pytestmark = pytest.mark.docker


@pytest.fixture(scope="module", autouse=True)
def runner_env(tmp_path_factory: pytest.TempPathFactory, docker_engine: DockerClient) -> Iterator[None]:
    """Private envelopes and scratch; the host CA bundle for image builds behind a TLS proxy."""
    tmp = tmp_path_factory.mktemp("runner-env")
    saved = dict(os.environ)
    os.environ["LABCTL_ENVELOPES"] = str(tmp / "envelopes")
    os.environ["LABCTL_WORK_DIR"] = str(tmp / "work")
    if HOST_CA.is_file():
        os.environ.setdefault("LABCTL_CA_BUNDLE", str(HOST_CA))
    ensure_smoke_lock(docker_engine)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def ensure_smoke_lock(docker: DockerClient) -> None:
    """labs/smoke.lock as `labctl lock` writes it, made offline: the registry facts (the sdist's and
    the wheel's sha256) are the recorded ones test_images uses; the rest is derived here."""
    from labctl.lock.resolve import LockError

    loaded = load_lab(SMOKE)
    try:
        if require_lock(loaded).agent.wheels:  # type: ignore[union-attr]
            return
    except LockError:
        pass  # missing or stale (or older than whole-tree agent pins): write a current one
    write_lock(lock_path(SMOKE), smoke_lock(loaded, docker.image.inspect("debian:bookworm-slim").id))


def smoke_lock(loaded: LoadedLab, base: str) -> Lock:
    """The smoke lab's lock, made offline (see `ensure_smoke_lock`), not written anywhere."""
    from labctl.lock.hub import lock_model
    from labctl.spec.lab import LocalContestant
    from tests.images.test_images import make_lock

    models = {c.id: lock_model(c, base_dir=loaded.base_dir, store=Store())
              for c in loaded.lab.contestants if isinstance(c, LocalContestant)}
    return make_lock(loaded, base=base).model_copy(update={"models": models})


def build(lab: Path) -> None:
    loaded = load_lab(lab)
    specs = lab_images(loaded, require_lock(loaded), settings=settings_for(loaded))
    results = build_all(detect_engine(), specs, log_dir=lab.parent / ".logs")
    assert all(r.status != "failed" for r in results), [r.as_dict() for r in results]


def derived_lab(tmp: Path, contestants: str, *, wall: str = "3m", solve: str | None = None,
                task: Path | None = None) -> Path:
    """A lab like smoke.yaml with other contestants (and optionally another `task`, or the smoke
    task with `solve` as its solution), locked offline from labs/smoke.lock."""
    task = task or ROOT / "tasks" / "smoke-hello"
    if solve is not None:
        task = tmp / "task"
        shutil.copytree(ROOT / "tasks" / "smoke-hello", task)
        (task / "solution" / "solve.sh").write_text(solve)
    text = SMOKE.read_text().replace("path: ../tasks/smoke-hello", f"path: {task}")
    text = re.sub(r"^  wall_time: .*$", f"  wall_time: {wall}", text, flags=re.M)
    text = text[: text.index("contestants:")] + "contestants:\n" + contestants
    lab = tmp / "lab.yaml"
    lab.write_text(text)
    loaded = load_lab(lab)
    base = read_lock(lock_path(SMOKE))
    ids = {c.id for c in loaded.lab.contestants}
    lock = base.model_copy(update={
        "spec_sha256": spec_sha256(loaded),
        "models": {k: v for k, v in base.models.items() if k in ids},
        "task": base.task.model_copy(update={"path": str(task), "tree_sha256": tree_sha256(task)})})
    write_lock(lock_path(lab), lock)
    return lab


def labctl(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "labctl", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=900)


def labelled_now(round_id: str) -> dict[str, list[str]]:
    return detect_engine().labelled({"labctl.round": round_id})


def seal(lab: Path, tmp: Path) -> Path:
    loaded = load_lab(lab)
    return seal_round(loaded, require_lock(loaded), tmp / "rounds").round_dir


# --- end to end ----------------------------------------------------------------------------------


def test_smoke_round_end_to_end(tmp_path: Path) -> None:
    """`round` on the smoke lab: oracle Complete, nop Failed, the tiny model's usage real; the round
    verifies, lists every file, names nobody on any docker object, and leaves nothing behind."""
    build(SMOKE)
    proc = subprocess.Popen([sys.executable, "-m", "labctl", "round", str(SMOKE), "--rounds-dir",
                             str(tmp_path / "rounds"), "--json"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen: set[str] = set()
    docker = detect_engine()
    while proc.poll() is None:  # watch every object of any round while it runs: blindness
        got = docker("ps", "-a", "--filter", "label=labctl.round", "--format",
                     "{{.Names}} {{.Label \"labctl.round\"}} {{.Label \"labctl.run\"}} {{.Networks}}",
                     check=False).stdout
        got += docker("network", "ls", "--filter", "label=labctl.round", "--format", "{{.Name}}",
                      check=False).stdout
        seen.update(got.split())
        time.sleep(0.5)
    stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stderr
    data = json.loads(stdout)
    rows = {r["contestant"]: r for r in data["runs"]}
    assert rows["oracle"]["outcome"] == "Complete" and rows["oracle"]["commits"] == 1
    assert rows["nop"]["outcome"] == "Failed" and rows["nop"]["commits"] == 0
    tiny = rows["tiny-llama"]
    assert tiny["status"] == "done" and tiny["outcome"] in ("Failed", "Total failure")
    assert tiny["total_tokens"] > 0
    rd = Path(data["round_dir"])
    run = rd / "runs" / tiny["run"]
    records = [json.loads(x) for x in (run / "transcript.jsonl").read_text().splitlines()]
    usage = [r["usage"] for r in records if r.get("kind") == "exchange" and r.get("usage")]
    assert usage and usage[0]["prompt_tokens"] > 0
    assert any(r.get("timings") for r in records)  # llama.cpp's own timings: a real server answered
    # tokens reconciled with the run's own llama-server: its counters hold every token the meter saw
    m = json.loads((run / "metrics.json").read_text())
    srv, meter = m["server_tokens"], m["meter_tokens"]
    assert m["tokens_source"] == "server" and m["tokens_partial"] is False, m
    assert m["total_tokens"] == srv["prompt_processed"] + srv["prompt_cached"] + srv["predicted"], m
    # Every answer whole and each with its usage: meter and server agree exactly. The random model
    # can make llama-server refuse its own output (HTTP 500, "does not match the expected … format"):
    # the server counted that request's tokens, no usage reached the meter, so the meter sees less.
    unmetered = [r for r in records if r.get("kind") == "exchange" and not r.get("usage")]
    if m["partial_calls"] == 0 and not unmetered:
        assert (meter["prompt_tokens"], meter["completion_tokens"]) == \
            (srv["prompt_processed"] + srv["prompt_cached"], srv["predicted"]), m
    else:
        assert meter["prompt_tokens"] <= srv["prompt_processed"] + srv["prompt_cached"], m
        assert meter["completion_tokens"] <= srv["predicted"], m
    assert all(u["completion_tokens"] <= 64 for u in usage)  # the lab's max_output, whatever was asked
    assert "general.name" not in (run / "server.log").read_text()
    sealed_images = json.loads((rd / "sealed.json").read_text())["images"]  # what the runs used
    assert {"llama-server", "labctl", "agent-oracle", "agent-nop"} <= set(sealed_images)
    assert all(docker.image_present(tag) for tag in sealed_images.values())
    manifest = json.loads((rd / "manifest.json").read_text())["files"]
    for r in data["runs"]:
        for f in ("result.json", "metrics.json", "agent.log", "workspace.bundle", "verifier/reward.json"):
            assert f"runs/{r['run']}/{f}" in manifest
    assert f"runs/{tiny['run']}/transcript.jsonl" in manifest
    check = subprocess.run([sys.executable, "-m", "labctl", "verify", str(rd)], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert seen and not any(c in " ".join(seen) for c in ("tiny-llama", "oracle", "nop")), seen
    assert labelled_now(data["round"]) == {"containers": [], "networks": [], "volumes": []}


# --- isolation -----------------------------------------------------------------------------------


def test_agent_network_is_internal_and_keyless(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               labctl_labels: dict[str, str]) -> None:
    """A cloud contestant's topology: the agent resolves only `meter`, reaches nothing outside, and
    holds the API key nowhere (the meter does). Every probe that must fail has a positive control:
    the agent does reach the meter's port, and the listener it must not reach (a container of the
    test's, on a bridge of its own) does answer the host."""
    lab = derived_lab(tmp_path, "  - id: cloudy\n    kind: cloud\n    provider: openai\n    model: gpt-x\n"
                                "    api_key_env: LABCTL_TEST_KEY\n    base_url: http://192.0.2.1:9\n")
    build(lab)
    monkeypatch.setenv("LABCTL_TEST_KEY", "sk-test-123")
    rd = seal(lab, tmp_path)
    ctx = open_round(rd, lab)
    session = RunSession(ctx, ctx.sealed.order[0])
    try:
        session.setup()
        agent = session.names["agent"]
        d = detect_engine()
        assert d.ok("exec", agent, "getent", "hosts", "meter")
        assert not d.ok("exec", agent, "getent", "hosts", "server")
        reach = ["timeout", "10", "bash", "-c", "echo > /dev/tcp/$0/$1"]
        assert d.ok("exec", agent, *reach, "meter", str(PORT), timeout=30)  # control: its way out
        with listener_container(d, ctx.images["labctl"], labctl_labels) as (ip, port):
            with socket.create_connection((ip, port), timeout=10):
                pass  # control: the listener answers (the host reaches it)
            assert not d.ok("exec", agent, *reach, ip, str(port), timeout=30)
        env = d("inspect", "--format", "{{json .Config.Env}}", agent).stdout
        assert "sk-test-123" not in env and "LABCTL_TEST_KEY" not in env
        grep = d("exec", "-u", "0", agent, "grep", "-rl", "--devices=skip", "--exclude-dir=proc",
                 "--exclude-dir=sys", "--exclude-dir=dev", "sk-test-123", "/", check=False, timeout=120)
        # grep: 1 is "no match"; 2 is an error, which must not pass as a clean search
        assert (grep.returncode, grep.stdout) == (1, ""), (grep.returncode, grep.stdout, grep.stderr[-2000:])
        meter_env = d("inspect", "--format", "{{json .Config.Env}}", session.names["meter"]).stdout
        assert "LABCTL_TEST_KEY=sk-test-123" in meter_env  # the key went where it belongs
        # smoke-hello's task.toml: cpus = 1, memory_mb = 1024
        limits = d("inspect", "--format", "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}}", agent).stdout
        assert limits.split() == [str(10**9), str(1024 * 2**20)]
        for name in session.names.values():
            assert "cloudy" not in name
    finally:
        session.cleanup()
    assert labelled_now(ctx.sealed.round) == {"containers": [], "networks": [], "volumes": []}


@contextlib.contextmanager
def listener_container(d: Engine, image: str, labels: dict[str, str]) -> Iterator[tuple[str, int]]:
    """(ip, port) of an HTTP listener in a container of the test's on the engine's default bridge:
    a real address outside the run's networks, which the run must not reach."""
    args = [f"--label={k}={v}" for k, v in labels.items()]
    name = d("run", "-d", "--rm", *args, "--entrypoint", "python3", image, "-m", "http.server", "8000",
             "--bind", "0.0.0.0").stdout.strip()
    try:
        ip = d("inspect", "--format", "{{.NetworkSettings.IPAddress}}", name).stdout.strip()
        deadline = time.monotonic() + 60
        while not d.ok("exec", name, "python3", "-c",
                       "import socket; socket.create_connection(('127.0.0.1', 8000), 2)"):
            assert time.monotonic() < deadline, d("logs", name, check=False).stderr
            time.sleep(0.2)
        yield ip, 8000
    finally:
        d("rm", "-f", name, check=False)


# --- faults --------------------------------------------------------------------------------------

SLEEPER = "#!/usr/bin/env bash\nsleep 100000\n"
WALL_S = 20  # the sleeper's wall-time budget


def test_image_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sealed round whose images are gone names `labctl build`. (A lab without a lock is no longer an
    error for `labctl round`: it locks on its first run; tests/cli/test_round_lock.py has that and the
    drift that does stop it.)"""
    lab = derived_lab(tmp_path, "  - id: oracle\n    kind: oracle\n")
    rd = seal(lab, tmp_path)
    monkeypatch.setenv("LABCTL_IMAGE_NAMESPACE", "labctl-test-absent")
    done = labctl("run", rd, "--lab", lab, cwd=tmp_path)
    assert done.returncode == 1 and "labctl build" in done.stderr, done.stderr


def test_blob_missing_and_corrupt_model(tmp_path: Path) -> None:
    """An empty store says `labctl fetch`; a corrupt GGUF errors the run with the server's reason."""
    lab = derived_lab(tmp_path,
                      "  - id: tiny-llama\n    kind: local\n    model:\n      generate: {seed: 7}\n")
    build(lab)
    loaded = load_lab(lab)
    f = require_lock(loaded).models["tiny-llama"].files[0]
    empty, bad = Store(tmp_path / "empty"), Store(tmp_path / "bad")
    blob = bad.blob_path(f.sha256)
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(b"GGUF" + b"\0" * 64)
    for store, expect in ((empty, "labctl fetch"), (bad, "llama-server failed to start (bad_model")):
        rd = seal(lab, tmp_path / store.root.name)
        ctx = open_round(rd, lab, store=store)
        [summary] = run_round(ctx)
        assert summary.status == "errored" and expect in (summary.reason or ""), summary.reason
        assert labelled_now(ctx.sealed.round) == {"containers": [], "networks": [], "volumes": []}


def test_wall_time_kill_and_ctrl_c_resume(tmp_path: Path) -> None:
    """An agent that never exits is stopped by its wall-time budget, not before the deadline; Ctrl-C
    mid-run removes every labelled object and leaves the run unfinished; running again completes it."""
    lab = derived_lab(tmp_path, "  - id: oracle\n    kind: oracle\n", wall=f"{WALL_S}s", solve=SLEEPER)
    build(lab)
    rd = seal(lab, tmp_path)
    rid = read_json_order(rd)
    proc = subprocess.Popen([sys.executable, "-m", "labctl", "run", str(rd), "--lab", str(lab)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    round_id = rd.name
    # Ctrl-C once the agent's container runs and the run is on record as running: mid-run, known
    # from the engine and the round's files, not from a sleep.
    docker = detect_engine()
    deadline = time.monotonic() + 120
    while not (docker("ps", "-q", "--filter", f"label=labctl.round={round_id}", "--filter", "status=running",
                      "--filter", "name=agent", check=False).stdout.strip()
               and (rd / "runs" / rid / "result.json").exists() and read_result(rd, rid).status == "running"):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert labelled_now(round_id) == {"containers": [], "networks": [], "volumes": []}
    assert read_result(rd, rid).status == "running"

    done = labctl("run", rd, "--lab", lab, cwd=tmp_path)
    # The sleeping oracle never solves the task: the round's controls failed, and `run` says so.
    assert done.returncode == 1 and "CONTROLS FAILED" in done.stderr, done.stderr
    res = read_result(rd, rid)
    assert res.status == "killed" and res.attempts == 2 and "wall_time" in (res.reason or "")
    metrics = json.loads((rd / "runs" / rid / "metrics.json").read_text())
    # The sleeper never exits: only the budget ends it. A behaviour, not a timing: the budget is
    # enforced no earlier than the lab says (load only makes a run later).
    assert metrics["stopped_by"] == "wall_time" and metrics["wall_time_s"] >= WALL_S, metrics
    assert metrics["ended"]["by"] == "wall_time" and metrics["ended"]["cut_answers"] is None, metrics
    assert labelled_now(round_id) == {"containers": [], "networks": [], "volumes": []}


def read_json_order(rd: Path) -> str:
    return json.loads((rd / "sealed.json").read_text())["order"][0]

