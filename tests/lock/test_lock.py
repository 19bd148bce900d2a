"""`labctl lock` end to end against real servers on loopback: a git repository, the loopback Hub
(through the real huggingface_hub client), a PyPI JSON server and the Docker engine's images."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from labctl.gguf.tiny import TinyModelParams, write_tiny_gguf
from tests.helpers import run_cli
from tests.hfserver import HubServer, hub_server  # noqa: F401  (fixture)
from tests.pypi_standin import pypi_routes
from tests.registry import serve

PYPI_HANDLER, WHEEL, WHEEL_SHA = pypi_routes("mini-swe-agent", "2.4.6")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def llama_repo(src: Path) -> Path:
    """A one-commit git repository standing in for llama.cpp, tagged b9660."""
    src.mkdir()
    git(src, "init", "-q", "-b", "master")
    (src / "CMakeLists.txt").write_text("project(llama)\n")
    git(src, "add", ".")
    git(src, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "b1")
    git(src, "tag", "b9660")
    return src


@pytest.fixture
def pypi(monkeypatch: pytest.MonkeyPatch):
    with serve(PYPI_HANDLER) as server:
        monkeypatch.setenv("LABCTL_PYPI_URL", server.url)
        yield server


@pytest.fixture
def lab(tmp_path: Path, hub_server: HubServer, pypi, monkeypatch: pytest.MonkeyPatch) -> Path:  # noqa: F811
    """A lab pinning a git llama.cpp, a Hub model, a generated model and a Harbor task."""
    src = llama_repo(tmp_path / "llama.cpp")
    gguf = tmp_path / "hub" / "m.gguf"
    write_tiny_gguf(gguf, TinyModelParams(seed=1, n_head_kv=4))
    hub_server.add_repo("org/coder-GGUF", {"coder-Q8_0.gguf": gguf})
    task = tmp_path / "task"
    task.mkdir()
    (task / "task.toml").write_text('schema_version = "1.0"\n')
    (task / "instruction.md").write_text("Say hello.\n")
    monkeypatch.setenv("LABCTL_STORE", str(tmp_path / "store"))
    path = tmp_path / "lab.yaml"
    path.write_text(f"""version: 1
lab: {{name: locktest}}
engine: {{llama_cpp: {{git: "file://{src}", ref: b9660}}}}
agent: {{runtime: mini-swe-agent, version: 2.4.6}}
task: {{path: task}}
contestants:
  - id: coder
    kind: local
    model:
      repo: org/coder-GGUF
      file: coder-Q8_0.gguf
      declared: {{architecture: llama, block_count: 2, context_length: 4096, embedding_length: 64,
                 head_count: 4, head_count_kv: 4}}
  - {{id: tiny, kind: local, model: {{generate: {{seed: 7}}}}}}
  - {{id: oracle, kind: oracle}}
""")
    return path


def test_lock_is_stable_and_check_names_drift(lab: Path, hub_server: HubServer) -> None:  # noqa: F811
    code, out, err = run_cli("lock", lab, "--json")
    assert code == 0, err
    first = lab.with_suffix(".lock").read_bytes()
    lock = json.loads(first)
    src = lab.parent / "llama.cpp"
    assert lock["llama_cpp"]["commit"] == git(src, "rev-parse", "HEAD")
    coder = lock["models"]["coder"]
    assert len(coder["commit"]) == 40 and coder["files"][0]["name"] == "coder-Q8_0.gguf"
    assert coder["gguf"]["head_count_kv"] == 4 and coder["gguf"]["source"] == "header"
    assert lock["models"]["tiny"]["generator"]["params"]["seed"] == 7
    assert lock["agent"]["sha256"] == WHEEL_SHA and lock["agent"]["filename"] == WHEEL
    # the whole install set, for every Python an image may run it under (here: one wheel, no deps)
    assert {(w["filename"], w["sha256"]) for w in lock["agent"]["wheels"]} == {(WHEEL, WHEEL_SHA)}
    assert lock["agent"]["wheels"][0]["pythons"] == ["3.10", "3.11", "3.12", "3.13"]
    assert len(lock["task"]["tree_sha256"]) == 64

    assert run_cli("lock", lab)[0] == 0
    assert lab.with_suffix(".lock").read_bytes() == first, "relocking with nothing moved changed bytes"
    code, out, err = run_cli("lock", lab, "--check")
    assert code == 0 and "is current" in out

    # upstream moves: a new commit of the llama.cpp tag and a new file on the Hub's main
    (src / "ggml.c").write_text("/* new */\n")
    git(src, "add", ".")
    git(src, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "b2")
    git(src, "tag", "-f", "b9660")
    other = lab.parent / "hub" / "m2.gguf"
    write_tiny_gguf(other, TinyModelParams(seed=2, n_head_kv=4))
    hub_server.add_repo("org/coder-GGUF", {"coder-Q8_0.gguf": other})
    code, out, err = run_cli("lock", lab, "--check", "--json")
    assert code == 1
    drifted = json.loads(out)["drifted"]
    assert any(d.startswith("llama_cpp.commit:") for d in drifted)
    assert any(d.startswith("models.coder.commit:") for d in drifted)
    assert any(d.startswith("models.coder.files[0].sha256:") for d in drifted)
    assert not any(d.startswith("models.tiny") for d in drifted)
    assert lab.with_suffix(".lock").read_bytes() == first, "--check must not rewrite the lock"


def test_editing_the_tiny_seed_is_drift(lab: Path) -> None:
    assert run_cli("lock", lab)[0] == 0
    lab.write_text(lab.read_text().replace("seed: 7", "seed: 8"))
    code, _, err = run_cli("lock", lab, "--check")
    assert code == 1
    assert "drifted: models.tiny.files[0].sha256" in err and "drifted: spec_sha256" in err
    code, _, err = run_cli("fetch", lab)
    assert code == 1 and "changed since lab.lock was written" in err


def test_declared_metadata_is_checked_against_the_header(lab: Path) -> None:
    lab.write_text(lab.read_text().replace("head_count_kv: 4}", "head_count_kv: 8}"))
    code, _, err = run_cli("lock", lab)
    assert code == 1
    assert "models.coder: declared head_count_kv = 8, but the GGUF header says 4" in err
    assert not lab.with_suffix(".lock").exists()


def test_unknown_hub_file_fails_naming_contestant_and_file(lab: Path) -> None:
    lab.write_text(lab.read_text().replace("file: coder-Q8_0.gguf", "file: coder-Q4_0.gguf"))
    code, _, err = run_cli("lock", lab)
    lines = [line for line in err.splitlines() if line]
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith("error: models.coder: coder: coder-Q4_0.gguf: ")
    assert "coder-Q8_0.gguf" in lines[0]  # says what the repo does have


def test_offline_verifies_local_entries(lab: Path) -> None:
    assert run_cli("lock", lab)[0] == 0
    code, out, _ = run_cli("lock", lab, "--offline", "--json")
    result = json.loads(out)
    assert code == 0 and {"lab", "task", "models.tiny"} <= set(result["verified"])
    assert {"llama_cpp", "models.coder", "agent"} <= set(result["unchecked"])
    (lab.parent / "task" / "instruction.md").write_text("Say goodbye.\n")
    code, out, _ = run_cli("lock", lab, "--offline", "--json")
    assert code == 1 and json.loads(out)["drifted"] == ["task: task directory content changed"]


def test_a_lab_without_a_lock_refuses_to_fetch(lab: Path) -> None:
    code, _, err = run_cli("fetch", lab)
    assert code == 1 and "no lab.lock next to" in err and "run `labctl lock" in err
    code, _, err = run_cli("lock", lab, "--check")
    assert code == 1 and "run `labctl lock` first" in err


@pytest.mark.docker
def test_task_base_image_built_here_is_pinned_locally(lab: Path, docker_engine) -> None:
    env = lab.parent / "task" / "environment"
    env.mkdir()
    (env / "Dockerfile").write_text("FROM debian:bookworm-slim\nRUN true\n")
    assert run_cli("lock", lab)[0] == 0
    image = json.loads(lab.with_suffix(".lock").read_text())["images"]["debian:bookworm-slim"]
    assert image == {"digest": docker_engine.image.inspect("debian:bookworm-slim").id, "source": "local"}
    code, out, _ = run_cli("lock", lab, "--offline", "--json")
    assert code == 0 and "images.debian:bookworm-slim" in json.loads(out)["verified"]


def test_relock_keeps_what_build_recorded(lab: Path) -> None:
    assert run_cli("lock", lab)[0] == 0
    path = lab.with_suffix(".lock")
    data = json.loads(path.read_text())
    data["llama_cpp"]["version"] = "version: 1 (abc)"
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    assert run_cli("lock", lab, "--check")[0] == 0  # a build fact is not drift
    assert run_cli("lock", lab)[0] == 0
    assert json.loads(path.read_text())["llama_cpp"]["version"] == "version: 1 (abc)"
