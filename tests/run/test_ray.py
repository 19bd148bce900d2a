"""`labctl run ROUND --ray ADDRESS` on a real two-node Ray cluster on this machine (`raycluster`):
runs land on both nodes and the round's results match the same round run locally; a node killed
mid-run → its run starts again on the other node and the round completes with every run graded once.

Both nodes share this machine's Docker engine (images are built once) but have their own labctl
scratch and store, as separate hosts would. Contestants are oracle and nop × 2 repeats (seconds per
run), so the cluster and the rounds stay lean.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labctl.gguf.store import Store
from labctl.round.layout import read_result, read_unsealed
from labctl.round.seal import unseal_round
from labctl.run.parts import RunError
from labctl.run.runner import open_round
from tests.raycluster import RayCluster
from tests.run.test_parallel import outcomes, repeated_lab, verify
from tests.run.test_runner import SMOKE, build, labctl, labelled_now, runner_env, seal

pytestmark = pytest.mark.docker
__all__ = ["runner_env"]  # the module fixture of test_runner: envelopes, scratch, the smoke lock
NOTHING = {"containers": [], "networks": [], "volumes": []}


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    c = RayCluster(tmp_path_factory.mktemp("ray"))
    try:
        c.start_head(docker_slots=1)
        c.add_worker("worker", docker_slots=1)
        yield c
    finally:
        c.stop()


@pytest.fixture
def cluster(ray_cluster: RayCluster) -> RayCluster:
    """The module's cluster with both nodes up, whatever ran before: test_node_lost_mid_run kills
    the worker, and a test after it (in any order) gets a new one instead of a one-node cluster."""
    if "worker" not in ray_cluster.nodes:
        ray_cluster.add_worker("worker", docker_slots=1)
    return ray_cluster


def files_by_contestant(rd: Path) -> list[tuple[str, list[str]]]:
    """Per run (by contestant, sorted): the names of its files in the manifest."""
    mapping = read_unsealed(rd).mapping
    listed = json.loads((rd / "manifest.json").read_text())["files"]
    return sorted((mapping[rid].contestant, sorted(k.split("/", 2)[2] for k in listed
                                                    if k.startswith(f"runs/{rid}/"))) for rid in mapping)


def test_cluster_is_loopback_only(cluster: RayCluster) -> None:
    addrs = cluster.listening()
    assert addrs and all(a.startswith("127.0.0.1:") for a in addrs), addrs


def test_ray_round_matches_local(cluster: RayCluster, tmp_path: Path) -> None:
    lab = repeated_lab(tmp_path, sleep=0)
    local, remote = seal(lab, tmp_path / "local"), seal(lab, tmp_path / "ray")
    here = labctl("run", local, "--lab", lab, "--parallel", "2", "--json", cwd=tmp_path)
    assert here.returncode == 0, here.stderr
    there = labctl("run", remote, "--lab", lab, "--ray", cluster.address, "--json", cwd=tmp_path)
    assert there.returncode == 0, there.stdout + there.stderr
    rows = json.loads(there.stdout)["runs"]
    hosts = {r["host"] for r in rows}
    assert len(hosts) == 2 and all("/ray-" in h for h in hosts), hosts  # both nodes ran runs
    assert not any(c in there.stdout + there.stderr for c in ("oracle", "nop"))  # blind before unseal
    for rd in (local, remote):
        unseal_round(rd)
        verify(rd)
    assert outcomes(remote) == outcomes(local)
    assert outcomes(remote) == [("nop", "done", "Failed")] * 2 + [("oracle", "done", "Complete")] * 2
    assert files_by_contestant(remote) == files_by_contestant(local)
    assert labelled_now(remote.name) == NOTHING


def test_node_lost_mid_run(cluster: RayCluster, tmp_path: Path) -> None:
    """Kill the worker node (its whole process session, SIGKILL) while a run is in flight there."""
    lab = repeated_lab(tmp_path, sleep=8)
    rd = seal(lab, tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "labctl", "run", str(rd), "--lab", str(lab),
                             "--ray", cluster.address, "--json"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    on_worker = cluster.nodes["worker"].work / rd.name
    deadline = time.monotonic() + 300
    while not (on_worker.is_dir() and any(p.is_dir() for p in on_worker.iterdir())):
        if proc.poll() is not None or time.monotonic() > deadline:
            out, errs = proc.communicate()
            pytest.fail(f"no run ever started on the worker node: rc={proc.returncode}\n{out}\n{errs}")
        time.sleep(0.2)
    lost = next(p.name for p in on_worker.iterdir() if p.is_dir())
    cluster.kill("worker")
    out, errs = proc.communicate(timeout=900)
    assert proc.returncode == 0, out + errs
    run_ids = json.loads((rd / "sealed.json").read_text())["run_ids"]
    results = {rid: read_result(rd, rid) for rid in run_ids}
    assert results[lost].attempts == 2 and "/ray-" in (results[lost].host or "")
    assert all(r.status == "done" and r.outcome for r in results.values()), results
    assert sum(r.attempts for r in results.values()) == len(results) + 1  # only the lost run again
    for rid in results:  # graded once: one verifier output, one result
        assert (rd / "runs" / rid / "verifier" / "reward.json").is_file()
    unseal_round(rd)
    assert outcomes(rd) == [("nop", "done", "Failed")] * 2 + [("oracle", "done", "Complete")] * 2
    verify(rd)
    assert labelled_now(rd.name) == NOTHING


def test_node_fetches_the_model_by_sha256(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a node does before the run (no Ray needed to call it): the model lands in the node's
    own store under the lock's sha256, the task is the one sealed, and a lock that is not the
    sealed one is refused."""
    from labctl.run.ray import node_context, round_payload

    build(SMOKE)
    rd = seal(SMOKE, tmp_path)
    ctx = open_round(rd, SMOKE)
    rid = next(r for r, c in ctx.mapping.items() if c == "tiny-llama")
    job = {**round_payload(ctx), "round": rd.name, "run": rid, "attempts": 1, "contestant": "tiny-llama"}
    monkeypatch.setenv("LABCTL_STORE", str(tmp_path / "node-store"))
    sha = ctx.lock.models["tiny-llama"].files[0].sha256
    assert not Store().blob_path(sha).exists()
    node = node_context(job, tmp_path / "node")
    assert Store().blob_path(sha).is_file() and node.mapping == {rid: "tiny-llama"}
    assert node.loaded.task_dir == tmp_path / "node" / "task"
    with pytest.raises(RunError, match="lab.lock"):
        node_context({**job, "lab.lock": job["lab.lock"] + b"\n"}, tmp_path / "tampered")
