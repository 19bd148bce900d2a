"""labctl as a user installs it: a wheel, outside this checkout. Its Dockerfiles, profiles, init
template and host build script are package data, so `labctl init` + `validate` + `build` work from
a directory that has no images/ and no repository around it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labctl.lock.lockfile import ImageLock, Lock, PackageLock, SourceLock, TaskLock, lock_path, write_lock
from labctl.lock.resolve import spec_sha256
from labctl.spec.load import load_lab
from labctl.treehash import tree_sha256

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "debian:bookworm-slim"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """labctl's wheel, built from this checkout and installed (without dependencies: the test's venv
    has them) into a directory of its own."""
    tmp = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp / "dist"),
                           str(ROOT)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    wheel = next((tmp / "dist").glob("labctl-*.whl"))
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                           str(tmp / "site"), str(wheel)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / "site"


def labctl(site: Path, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LABCTL_IMAGES_DIR", "PYTHONPATH")}
    return subprocess.run([sys.executable, "-m", "labctl", *map(str, args)], cwd=cwd, text=True,
                          capture_output=True, env={**env, "PYTHONPATH": str(site)}, timeout=1800)


def test_the_wheel_carries_its_package_data(installed: Path, tmp_path: Path) -> None:
    code = ("import labctl, labctl.images.specs as s, labctl.plan.llamaserver as ls, "
            "labctl.spec.profiles as p;"
            " print(labctl.__file__, s.BUNDLED_IMAGES, ls.BUILD_SCRIPT, p.BUILTIN_DIR)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(installed)})
    assert done.returncode == 0, done.stderr
    module, images, script, profiles = map(Path, done.stdout.split())
    assert all(p.is_relative_to(installed) for p in (module, images, script, profiles)), done.stdout
    for name in ("agent", "labctl", "llama-server"):
        assert (images / name / "Dockerfile").is_file()
    assert script.is_file() and (profiles / "cpu.yaml").is_file()


@pytest.mark.docker
def test_init_validate_build_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    lab_dir = tmp_path / "my-lab"
    assert labctl(installed, "init", lab_dir, cwd=tmp_path).returncode == 0
    lab = lab_dir / "lab.yaml"
    done = labctl(installed, "validate", lab, cwd=lab_dir)
    assert done.returncode == 0, done.stderr
    # The controls only: their images are the task's, the oracle's, the nop's, labctl's own and the
    # egress gateway (the default network policy is `allowlist`), all from the installed Dockerfiles
    # (the local contestant's llama.cpp build is tested elsewhere).
    text = lab.read_text()
    start, end = text.index("  - id: tiny\n"), text.index("  - id: oracle")
    lab.write_text(text[:start] + text[end:])
    loaded = load_lab(lab)
    base = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", BASE_IMAGE],
                          capture_output=True, text=True, check=True).stdout.strip()
    write_lock(lock_path(lab), Lock(
        lab=loaded.lab.lab.name, spec_sha256=spec_sha256(loaded),
        llama_cpp=SourceLock(git="https://github.com/ggml-org/llama.cpp", ref="b9660", commit="0" * 40),
        images={BASE_IMAGE: ImageLock(digest=base, source="local")},
        agent=PackageLock(registry="pypi", name="mini-swe-agent", version="2.4.6",
                          filename="mini_swe_agent-2.4.6-py3-none-any.whl", sha256="e" * 64),
        task=TaskLock(path="tasks/hello", tree_sha256=tree_sha256(loaded.task_dir))))
    done = labctl(installed, "build", lab, "--json", cwd=lab_dir)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    images = {i["name"]: i["status"] for i in json.loads(done.stdout)["images"]}
    assert set(images) == {"task-hello", "agent-oracle", "agent-nop", "labctl", "egress-gateway"}, images
    assert set(images.values()) <= {"built", "cached"}, images
