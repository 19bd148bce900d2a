"""Agent runtimes pinned completely (issue #14 part 2), against the real registries and Docker.

Each runtime is locked for real (its package, then its whole tree: every wheel by sha256, or node,
npm and the package-lock by integrity), its image is built once per session from the host-filled
cache (`pip --no-index --require-hashes`, `npm ci --offline`), and the runtime must run in a
container with no network at all. A tampered hash in the lock stops the build on the host.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from python_on_whales import DockerClient

from labctl.agents import adapter
from labctl.agents.base import AGENTS_ROOT
from labctl.engine.container import Engine
from labctl.images.build import build_all, prune_build_stages
from labctl.images.model import ImageSpec
from labctl.images.specs import lab_images, settings_for
from labctl.lock.lockfile import Lock, PackageLock
from labctl.lock.npmtree import NODE_VERSION, fill_cache
from labctl.lock.packages import resolve_package
from labctl.lock.runtime import pin_tree
from labctl.lock.sdist import SourceHashMismatch
from labctl.lock.wheeltree import fetch_wheels, resolve_wheels
from labctl.spec.load import load_lab
from tests.conftest import BASE_IMAGE
from tests.images.test_images import HOST_CA, make_lock, smoke_lab

RUNTIMES = {"mini-swe-agent": "2.4.6", "aider": "0.86.2", "claude-code": "2.1.332", "codex": "0.171.0",
            "opencode": "1.18.33", "qwen-code": "0.24.4"}
"""Runtime → pinned version under test (one image each, built once per session)."""


def lock_runtime(runtime: str, version: str) -> PackageLock:
    """The real lock entry; PyPI trees for bookworm's Python only (the smoke task's), to keep it short."""
    resolved = resolve_package(runtime, version)
    pkg = resolved.lock.model_copy(update={"integrity": resolved.integrity})
    if pkg.registry == "pypi":
        return pkg.model_copy(update={"wheels": resolve_wheels(pkg.name, version, pythons=("3.11",))})
    return pin_tree(pkg)


@dataclass
class RuntimeImage:
    runtime: str
    lock: Lock
    spec: ImageSpec
    engine: Engine


class RuntimeImages:
    """Each runtime's image, built the first time a test asks for it (so `-k qwen-code` builds one
    image, not six: an npm runtime's is ~1 GB and slow to build on a small machine)."""

    def __init__(self, docker: DockerClient, tmp: pytest.TempPathFactory) -> None:
        self.docker, self.tmp, self.engine = docker, tmp, Engine(docker)
        self.built: dict[str, RuntimeImage] = {}
        self.build_ids: list[str] = []

    def __getitem__(self, runtime: str) -> RuntimeImage:
        if runtime not in self.built:
            self.built[runtime] = self._build(runtime, RUNTIMES[runtime])
        return self.built[runtime]

    def _build(self, runtime: str, version: str) -> RuntimeImage:
        tmp = self.tmp.mktemp(f"rt-{runtime}")
        lab = smoke_lab(tmp, name=f"rt-{runtime}", edit={
            "runtime: mini-swe-agent\n  version: 2.4.6": f"runtime: {runtime}\n  version: {version}"})
        loaded = load_lab(lab)
        lock = make_lock(loaded, base=self.docker.image.inspect(BASE_IMAGE).id)
        if runtime != "mini-swe-agent":  # mini-swe-agent: the tree recorded from PyPI (tests/pins),
            # as the smoke lab's lock has it, so the image is the one the smoke round uses
            lock = lock.model_copy(update={"agent": lock_runtime(runtime, version)})
        settings = settings_for(loaded, ca_bundle=HOST_CA if HOST_CA.is_file() else None)
        specs = {s.name: s for s in lab_images(loaded, lock, settings=settings)}
        wanted = [specs["task-smoke-hello"], specs[f"agent-{runtime}"]]
        results = build_all(self.engine, wanted, log_dir=tmp / "logs")
        self.build_ids += [r.build_id for r in results if getattr(r, "build_id", None)]
        failed = [r for r in results if r.status == "failed"]
        assert not failed, [(r.name, r.log) for r in failed]
        return RuntimeImage(runtime, lock, wanted[1], self.engine)


@pytest.fixture(scope="session")
def runtime_images(docker_engine: DockerClient, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[RuntimeImages]:
    """Each runtime's image as `labctl build` names it (the shared namespace, like test_runner's
    images): one build per runtime per session, reused by the round tests that need the same image."""
    images = RuntimeImages(docker_engine, tmp_path_factory)
    try:
        yield images
    finally:
        prune_build_stages(images.engine, images.build_ids)


@pytest.mark.docker
@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
def test_runtime_image_runs_with_no_network(runtime_images: RuntimeImages, runtime: str) -> None:
    """Baked, not fetched: the runtime answers its check command in a container without a network."""
    image = runtime_images[runtime]
    got = image.engine.run(image.spec.tag, adapter(runtime).check_command(), network="none")
    assert got.returncode == 0, got.stderr[-2000:]
    if runtime != "mini-swe-agent":
        assert RUNTIMES[runtime] in got.stdout  # `<tool> --version`: the pinned one, not another
    if adapter(runtime).registry == "npm":
        node = image.engine.run(image.spec.tag, ["/opt/labctl/node/bin/node", "--version"], network="none")
        assert node.stdout.strip() == f"v{NODE_VERSION}"


UNEXECUTABLE_ELF = r"""
for f in $(find "$1" -type f ! -name '*.so' ! -name '*.so.*' ! -name '*.node'); do
  [ -x "$f" ] && continue
  [ "$(head -c 4 "$f" | tail -c 3)" = ELF ] && echo "$f"
done
exit 0
"""
"""sh: the ELF programs under $1 that this user cannot execute (shared objects are loaded, not run)."""
BUNDLED = {"qwen-code": ("node_modules/@qwen-code/qwen-code/vendor/ripgrep/x64-linux/rg", "ripgrep ")}
"""Programs a runtime bundles and spawns itself, with the start of their `--version` line."""


@pytest.mark.docker
@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
def test_runtime_binaries_run_as_the_agent_user(runtime_images: RuntimeImages, runtime: str) -> None:
    """The runtime's command, every ELF program of its tree and the tools it bundles run as the agent
    image's non-root user (qwen-code's packed `vendor/ripgrep/x64-linux/rg` was 0644: `rg EACCES`)."""
    image = runtime_images[runtime]
    run, tag = image.engine.run, image.spec.tag
    assert run(tag, ["id", "-un"], network="none").stdout.strip() == "agent"  # the image's own user
    got = run(tag, adapter(runtime).check_command(), user="agent", network="none")
    assert got.returncode == 0, got.stderr[-2000:]
    tree = f"{AGENTS_ROOT}/{runtime}"
    denied = run(tag, ["sh", "-c", UNEXECUTABLE_ELF, "scan", tree], user="agent", network="none")
    assert denied.returncode == 0 and denied.stdout.split() == [], denied.stdout[-2000:] + denied.stderr
    if (bundled := BUNDLED.get(runtime)) is not None:
        path, banner = bundled
        tool = run(tag, [f"{tree}/{path}", "--version"], user="agent", network="none")
        assert tool.returncode == 0 and tool.stdout.startswith(banner), (tool.stdout, tool.stderr)


@pytest.mark.docker
@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
def test_runtime_image_rebuild_is_a_no_op(runtime_images: RuntimeImages, runtime: str,
                                          tmp_path: Path) -> None:
    """Built once, the same locked runtime is the same image: a second build does nothing (how fast
    that is: benchmarks/build_cached.py)."""
    image = runtime_images[runtime]
    [again] = build_all(image.engine, [image.spec], log_dir=tmp_path)
    assert again.status == "cached", (again.status, again.log)


@pytest.mark.docker
def test_lock_records_the_whole_tree(runtime_images: RuntimeImages) -> None:
    mini = runtime_images["mini-swe-agent"].lock.agent
    assert mini is not None and mini.wheels is not None
    names = {w.name for w in mini.wheels}
    assert {"mini-swe-agent", "litellm", "pydantic-core"} <= names and len(names) > 40
    assert all(len(w.sha256) == 64 for w in mini.wheels)
    assert set().union(*(w.pythons for w in mini.wheels)) == {"3.10", "3.11", "3.12", "3.13"}
    claude = runtime_images["claude-code"].lock.agent
    assert claude is not None and claude.npm_packages and claude.node and claude.npm
    linux = claude.npm_packages["node_modules/@anthropic-ai/claude-code-linux-x64"]
    assert linux["integrity"].startswith("sha512-") and linux["version"] == RUNTIMES["claude-code"]
    assert all(p.get("integrity") for path, p in claude.npm_packages.items() if path)


@pytest.mark.docker
def test_a_changed_hash_stops_the_build_on_the_host(runtime_images: RuntimeImages,
                                                    tmp_path: Path) -> None:
    """A wheel whose bytes do not match the lock, or an npm tarball whose integrity does not, is never
    put into an image: the host refuses it before any build."""
    mini = runtime_images["mini-swe-agent"].lock.agent
    assert mini is not None and mini.wheels
    wheel = mini.wheels[0].model_copy(update={"sha256": "0" * 64})
    with pytest.raises(SourceHashMismatch):
        fetch_wheels([wheel], cache=tmp_path)
    claude = runtime_images["claude-code"].lock.agent
    assert claude is not None and claude.npm_packages and claude.node and claude.npm
    packages = {k: dict(v) for k, v in claude.npm_packages.items()}
    entry = packages["node_modules/@anthropic-ai/claude-code"]
    entry["integrity"] = "sha512-" + "A" * 86 + "=="
    with pytest.raises(Exception, match="integrity|EINTEGRITY"):
        fill_cache(claude.name, claude.version, claude.node, claude.npm, packages)
