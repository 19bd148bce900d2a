"""A Harbor task written elsewhere (`FROM ubuntu:24.04`, which no registry serves here) runs unchanged
when the lab maps its base to a local image: `labctl lock` pins the local image's id and records both
names, `labctl round` builds from the mirror and the controls come out right (oracle Complete, nop
Failed). Without the map, lock says which image, the map and the exact line to add. No registry is
ever contacted: Engine Hub's endpoint is a closed loopback port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from python_on_whales import DockerClient

from tests.run.test_runner import labelled_now, runner_env  # noqa: F401  (module fixture: envelopes, scratch, CA)

ROOT = Path(__file__).resolve().parents[2]
TASK = ROOT / "tests" / "harbor_tasks" / "mirrored"
pytestmark = pytest.mark.docker

LAB = """\
version: 1
lab: {{name: mirrored}}
engine:
  llama_cpp: {{path: llama.cpp}}   # a tiny local tree: locked by hash, never built (no local model)
  cpu_image: debian:bookworm-slim
profile: cpu
{build}task: {{path: {task}}}
budgets: {{wall_time: 2m}}
contestants:
  - {{id: oracle, kind: oracle}}
  - {{id: nop, kind: nop}}
"""


def labctl(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LABCTL_DOCKERHUB_URL": "http://127.0.0.1:9"}
    return subprocess.run([sys.executable, "-m", "labctl", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=1500)


def write_lab(tmp: Path, key: str | None) -> Path:
    (tmp / "llama.cpp").mkdir(exist_ok=True)
    (tmp / "llama.cpp" / "CMakeLists.txt").write_text("project(llama)\n")
    build = f'build:\n  image_mirrors: {{"{key}": "debian:bookworm-slim"}}\n' if key else ""
    lab = tmp / "lab.yaml"
    lab.write_text(LAB.format(build=build, task=TASK))
    return lab


@pytest.mark.parametrize("key", ["ubuntu:24.04", "docker.io/library/ubuntu:24.04"])
def test_a_mirror_to_a_local_image_is_locked_with_both_names(tmp_path: Path, key: str,
                                                             docker_engine: DockerClient) -> None:
    assert not docker_engine.image.exists("ubuntu:24.04"), "this test needs ubuntu:24.04 to be absent"
    lab = write_lab(tmp_path, key)
    done = labctl("lock", lab, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    image = json.loads(lab.with_suffix(".lock").read_text())["images"]["ubuntu:24.04"]
    assert image == {"digest": docker_engine.image.inspect("debian:bookworm-slim").id, "source": "local",
                     "mirror": "debian:bookworm-slim"}
    offline = labctl("lock", lab, "--offline", "--json", cwd=tmp_path)
    assert offline.returncode == 0 and "images.ubuntu:24.04" in json.loads(offline.stdout)["verified"]


def test_lock_without_a_mirror_says_which_line_to_add(tmp_path: Path, docker_engine: DockerClient) -> None:
    lab = write_lab(tmp_path, None)
    done = labctl("lock", lab, cwd=tmp_path)
    assert done.returncode == 1
    said = " ".join(done.stderr.split())  # the console wraps long lines
    assert "images.ubuntu:24.04: cannot pin image ubuntu:24.04: cannot reach http://127.0.0.1:9" in said
    assert "mirror map (lab build.image_mirrors + profile image_mirrors): {} (no mirrors)" in said
    assert 'add to the lab: build: {image_mirrors: {"ubuntu:24.04": "debian:bookworm-slim"}}' in said


def test_controls_of_a_mirrored_harbor_task_through_labctl_round(tmp_path: Path) -> None:
    lab = write_lab(tmp_path, "ubuntu:24.04")
    locked = labctl("lock", lab, cwd=tmp_path)
    assert locked.returncode == 0, locked.stderr
    done = labctl("round", lab, "--rounds-dir", tmp_path / "rounds", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(done.stdout)
    rows = {r["contestant"]: r for r in data["runs"]}
    assert rows["oracle"]["outcome"] == "Complete", rows
    assert rows["nop"]["outcome"] == "Failed", rows
    assert labelled_now(data["round"]) == {"containers": [], "networks": [], "volumes": []}


def test_task_check_of_an_unpinnable_task_says_which_line_to_add(tmp_path: Path,
                                                                 docker_engine: DockerClient) -> None:
    """`labctl task check` locks the task it checks: an unpinnable base is the same one-line error as
    `labctl lock`'s (no traceback), and the check exits 1."""
    (tmp_path / "llama.cpp").mkdir()
    (tmp_path / "llama.cpp" / "CMakeLists.txt").write_text("project(llama)\n")
    lab = tmp_path / "lab.yaml"
    lab.write_text(LAB.format(build="", task=ROOT / "tasks" / "smoke-hello"))
    assert labctl("lock", lab, cwd=tmp_path).returncode == 0
    done = labctl("task", "check", TASK, "--lab", lab, cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    said = " ".join(done.stderr.split())
    assert said.startswith("error: cannot pin image ubuntu:24.04: cannot reach http://127.0.0.1:9"), said
    assert 'add to the lab: build: {image_mirrors: {"ubuntu:24.04": "debian:bookworm-slim"}}' in said
