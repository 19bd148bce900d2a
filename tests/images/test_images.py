"""Images: input-hash tags, pinned sources, agent adapters, and (Docker) the smoke lab's real images.

The Docker tests build every image of labs/smoke.yaml ONCE per session (`built_smoke`: the CPU
llama-server compile is ~5 min on 2 cores) under a throw-away namespace and lab name, and remove
them all at the end, build-stage leftovers included.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException

from labctl.agents import Invocation, adapter, check_no_secrets
from labctl.agents.base import AgentConfigError, wrapper_script
from labctl.engine.container import BuildRequest, CommandResult, Engine, ImageInfo, PodmanEngine
from labctl.gguf.tiny import TinyModelParams, write_tiny_gguf
from labctl.images.build import build_all, prune_build_stages, version_text
from labctl.images.context import pin_dockerfile
from labctl.images.model import (
    L_INPUT,
    L_LAB,
    L_LLAMA_VERSION,
    L_LOCK,
    NAMESPACE_ENV,
    TAG_LEN,
    BuildSettings,
    ImageError,
    ImageSpec,
)
from labctl.images.specs import lab_images
from labctl.lock.lockfile import (
    ImageLock,
    Lock,
    PackageLock,
    SourceLock,
    TaskLock,
    WheelLock,
    lock_path,
    read_lock,
    write_lock,
)
from labctl.lock.resolve import spec_sha256
from labctl.lock.sdist import SourceHashMismatch, fetch_sdist
from labctl.spec.load import LoadedLab, load_lab
from labctl.spec.profiles import find_profile
from labctl.treehash import tree_sha256
from tests.conftest import BASE_IMAGE, ROOT, remove_labelled
from tests.helpers import run_cli as cli

SDIST_SHA = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"  # llama-cpp-python 0.3.36
AGENT_SHA = "a35463c553ac825c7773b03cfa69cd44958e3af20155dcc5711fdf9e4c67cd54"  # mini-swe-agent 2.4.6 wheel
LOCAL_ID = "sha256:" + "1" * 64
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


# ----------------------------------------------------------------------------------- helpers


def smoke_lab(tmp: Path, name: str = "smoke", edit: dict[str, str] | None = None) -> Path:
    """labs/smoke.yaml (renamed, optionally edited) in `tmp/labs`, next to a copy of its task."""
    if not (tmp / "tasks" / "smoke-hello").exists():
        shutil.copytree(ROOT / "tasks" / "smoke-hello", tmp / "tasks" / "smoke-hello")
    text = (ROOT / "labs" / "smoke.yaml").read_text().replace("name: smoke\n", f"name: {name}\n")
    for old, new in (edit or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    (tmp / "labs").mkdir(exist_ok=True)
    path = tmp / "labs" / "smoke.yaml"
    path.write_text(text)
    return path


def recorded_wheels(version: str) -> list[WheelLock] | None:
    """mini-swe-agent's whole wheel tree as `labctl lock` recorded it from PyPI (tests/pins/): the
    registry facts an offline lock of the smoke lab needs, like AGENT_SHA."""
    path = Path(__file__).resolve().parents[1] / "pins" / f"mini-swe-agent-{version}.json"
    return [WheelLock(**w) for w in json.loads(path.read_text())] if path.is_file() else None


def make_lock(loaded: LoadedLab, *, base: str = LOCAL_ID, sdist: str = "llama-cpp-python==0.3.36",
              sdist_file: str = "llama_cpp_python-0.3.36.tar.gz", sdist_sha: str = SDIST_SHA,
              subdir: str = "vendor/llama.cpp", images: dict[str, ImageLock] | None = None,
              wheels: list[WheelLock] | None = None) -> Lock:
    agent = loaded.lab.agent
    assert agent is not None
    wheel = f"mini_swe_agent-{agent.version}-py3-none-any.whl"
    wheels = wheels or recorded_wheels(agent.version) or [
        WheelLock(name="mini-swe-agent", version=agent.version, filename=wheel, sha256=AGENT_SHA,
                  url=f"https://files.example/{wheel}", pythons=["3.11"])]
    return Lock(
        lab=loaded.lab.lab.name, spec_sha256=spec_sha256(loaded),
        llama_cpp=SourceLock(sdist=sdist, sdist_file=sdist_file, sdist_sha256=sdist_sha, subdir=subdir),
        images={"debian:bookworm-slim": ImageLock(digest=base, source="local"), **(images or {})},
        agent=PackageLock(registry="pypi", name="mini-swe-agent", version=agent.version,
                          filename=wheel, sha256=AGENT_SHA, wheels=wheels),
        task=TaskLock(path="../tasks/smoke-hello", tree_sha256=tree_sha256(loaded.task_dir)),
    )


def hashes(loaded: LoadedLab, lock: Lock, settings: BuildSettings, profile: str | None = None
           ) -> dict[str, str]:
    prof = find_profile(profile) if profile else None
    return {s.name: s.input_hash() for s in lab_images(loaded, lock, prof, settings)}


class FakeEngine:
    """Records builds; knows only the images it is told about."""

    name = "fake"

    def __init__(self, images: dict[str, ImageInfo] | None = None) -> None:
        self.images = dict(images or {})
        self.builds: list[BuildRequest] = []

    def builder(self) -> str:
        return "classic"

    def build(self, request: BuildRequest, log: Any) -> str:
        self.builds.append(request)
        info = ImageInfo("sha256:" + "f" * 64, [request.tag], dict(request.labels), 1)
        self.images[request.tag] = info
        return info.id

    def image(self, ref: str) -> ImageInfo | None:
        return self.images.get(ref)

    def remove_image(self, ref: str, *, force: bool = False) -> None:
        self.images.pop(ref, None)

    def images_with_label(self, key: str, value: str | None = None, *, dangling: bool | None = None
                          ) -> list[str]:
        return []

    def run(self, image: str, argv: list[str], **kw: Any) -> CommandResult:
        return CommandResult(0, "version: 1 (abc)\nbuilt with GNU for x86_64\n", "")

    def gpu_run_args(self, profile: Any) -> list[str]:
        return []

    def gpu_run_kwargs(self, profile: Any) -> dict[str, Any]:
        return {}


# ------------------------------------------------------------------------------ input hashes


def test_input_hash_tracks_each_input_and_nothing_else(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("a")
    df = tmp_path / "Dockerfile"
    df.write_text("FROM base\n")

    def h(**kw: Any) -> str:
        fields: dict[str, Any] = {"name": "img", "repository": "ns/img", "dockerfile": df, "context": ctx,
                                  "build_args": {"A": "1"}, "labels": {"l": "1"},
                                  "inputs": {"base": "sha256:aa", "agent.version": "2.4.6"}}
        return ImageSpec(**{**fields, **kw}).input_hash()

    h0 = h()
    assert h() == h0
    assert h(repository="elsewhere/img", meta_labels={L_LAB: "x", L_LOCK: "y"},
             unhashed_args={"PIP_INDEX_URL": "http://mirror"}) == h0
    assert h(build_args={"A": "2"}) != h0
    assert h(inputs={"base": "sha256:bb", "agent.version": "2.4.6"}) != h0
    assert h(inputs={"base": "sha256:aa", "agent.version": "2.4.7"}) != h0
    assert h(labels={"l": "2"}) != h0
    assert h(target="other") != h0
    df.write_text("FROM base\nRUN true\n")
    assert h() != h0
    df.write_text("FROM base\n")
    assert h() == h0
    (ctx / "b.txt").write_text("b")
    assert h() != h0
    (ctx / "b.txt").unlink()
    assert h() == h0
    assert h(context_id="sdist:x") != h(context_id="sdist:y")
    assert ImageSpec("img", "ns/img", df, ctx).tag.split(":")[1] == ImageSpec("img", "ns/img", df, ctx
                                                                              ).input_hash()[:TAG_LEN]


def test_lab_images_hashes_move_only_with_their_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                      ) -> None:
    # The labctl image pins this venv's packages; freeze them so a concurrent `pip install` cannot
    # move its hash in the middle of the test.
    monkeypatch.setattr("labctl.images.specs.dependency_pins", lambda root: ["pydantic==2.0"])
    loaded = load_lab(smoke_lab(tmp_path))
    lock = make_lock(loaded)
    base = BuildSettings(cache=tmp_path / "cache")
    h0 = hashes(loaded, lock, base)
    assert list(h0) == ["llama-server", "task-smoke-hello", "agent-mini-swe-agent", "agent-oracle",
                        "agent-nop", "labctl", "egress-gateway"]
    transport = BuildSettings(namespace="other", ca_bundle=HOST_CA, pip_index_url="http://pypi.lan/simple",
                              mirrors={"docker.io/": "mirror.lan/"}, extra_labels={"k": "v"},
                              cache=tmp_path / "cache")
    assert hashes(loaded, lock, transport) == h0
    renamed = load_lab(smoke_lab(tmp_path / "b", name="other-lab"))
    assert hashes(renamed, make_lock(renamed), base) == h0

    moved = hashes(loaded, make_lock(loaded, base="sha256:" + "2" * 64), base)
    assert all(moved[n] != h0[n] for n in h0)  # every image sits on the base (agents via the task)

    cpu_line = "cpu_image: debian:bookworm-slim"
    flags = load_lab(smoke_lab(tmp_path / "c", edit={cpu_line: cpu_line + "\n  cmake_flags: [-DX=1]"}))
    changed = hashes(flags, make_lock(flags), base)
    assert {n for n in h0 if changed[n] != h0[n]} == {"llama-server"}

    newer = load_lab(smoke_lab(tmp_path / "d", edit={"version: 2.4.6": "version: 2.4.7"}))
    changed = hashes(newer, make_lock(newer), base)
    assert {n for n in h0 if changed[n] != h0[n]} == {"agent-mini-swe-agent"}

    (loaded.task_dir / "environment" / "extra.txt").write_text("more context\n")
    with pytest.raises(ImageError, match="changed since lab.lock"):
        lab_images(loaded, lock, settings=base)
    changed = hashes(loaded, make_lock(loaded), base)
    assert {n for n in h0 if changed[n] != h0[n]} == {"task-smoke-hello", "agent-mini-swe-agent",
                                                      "agent-oracle", "agent-nop"}


def test_cuda_variant_pins_digests_through_mirrors_and_takes_the_arch(tmp_path: Path) -> None:
    cuda = ("cuda:\n    version: '13.1'\n    build_image: nvidia/cuda:13.1.0-devel-ubuntu24.04\n"
            "    runtime_image: nvidia/cuda:13.1.0-runtime-ubuntu24.04\n  cpu_image:")
    loaded = load_lab(smoke_lab(tmp_path, edit={"cpu_image:": cuda}), profile="rtx5090-32g")
    devel, runtime = "sha256:" + "d" * 64, "sha256:" + "e" * 64
    lock = make_lock(loaded, images={
        "nvidia/cuda:13.1.0-devel-ubuntu24.04": ImageLock(digest=devel, source="registry"),
        "nvidia/cuda:13.1.0-runtime-ubuntu24.04": ImageLock(digest=runtime, source="registry")})
    settings = BuildSettings(cache=tmp_path / "cache", mirrors={"docker.io/nvidia/": "mirror.lan:5000/nv/"})
    llama = lab_images(loaded, lock, settings=settings)[0]
    assert llama.build_args["VARIANT"] == "cuda"
    assert llama.build_args["CUDA_ARCHITECTURES"] == "120"
    assert llama.build_args["BUILD_IMAGE"] == f"mirror.lan:5000/nv/cuda@{devel}"
    assert llama.build_args["RUNTIME_IMAGE"] == f"mirror.lan:5000/nv/cuda@{runtime}"
    h100 = lab_images(loaded, lock, find_profile("h100-80g"), settings)[0]
    assert h100.build_args["CUDA_ARCHITECTURES"] == "90" and h100.input_hash() != llama.input_hash()
    cpu = lab_images(loaded, lock, find_profile("cpu"), settings)[0]
    assert cpu.build_args["VARIANT"] == "cpu"


def test_git_source_is_fetched_at_the_locked_commit(tmp_path: Path) -> None:
    repo = tmp_path / "llama.cpp"
    (repo / "tools").mkdir(parents=True)
    (repo / "CMakeLists.txt").write_text("project(fake)\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    loaded = load_lab(smoke_lab(tmp_path, edit={"sdist: llama-cpp-python==0.3.36":
                                                f"git: {repo.as_uri()}\n    ref: b1234"}))
    lock = make_lock(loaded).model_copy(update={"llama_cpp": SourceLock(git=repo.as_uri(), ref="b1234",
                                                                         commit=commit)})
    llama = lab_images(loaded, lock, settings=BuildSettings(cache=tmp_path / "cache"))[0]
    assert llama.context_id == f"git:{commit}"
    assert llama.build_args["LLAMA_BUILD_COMMIT"] == commit[:9]
    assert llama.build_args["LLAMA_BUILD_NUMBER"] == "1234"
    assert llama.prepare is not None and llama.prepare(print) == {}
    assert (llama.context / "CMakeLists.txt").read_text() == "project(fake)\n"


def test_unlocked_or_foreign_lock_is_refused(tmp_path: Path) -> None:
    loaded = load_lab(smoke_lab(tmp_path))
    settings = BuildSettings(cache=tmp_path / "cache")
    bare = make_lock(loaded).model_copy(update={"images": {}})
    with pytest.raises(ImageError, match="debian:bookworm-slim is not in lab.lock"):
        lab_images(loaded, bare, settings=settings)
    with pytest.raises(ImageError, match="lab.lock is for lab 'x'"):
        lab_images(loaded, make_lock(loaded).model_copy(update={"lab": "x"}), settings=settings)
    with pytest.raises(ImageError, match="does not pin pypi package mini-swe-agent"):
        lab_images(loaded, make_lock(loaded).model_copy(update={"agent": None}), settings=settings)


def test_pin_dockerfile_rewrites_external_images_only() -> None:
    text = ("ARG BASE=debian:bookworm-slim\nFROM ${BASE} AS build\nRUN echo FROM debian:bookworm-slim\n"
            "FROM --platform=linux/amd64 debian:bookworm-slim\nCOPY --from=build /a /a\n"
            "COPY --from=busybox:1 /bin/sh /sh\n")
    pinned = pin_dockerfile(text, {"debian:bookworm-slim": "docker.io/library/debian@sha256:ab",
                                   "busybox:1": "docker.io/library/busybox@sha256:cd"})
    assert pinned.splitlines() == [
        "ARG BASE=debian:bookworm-slim", "FROM docker.io/library/debian@sha256:ab AS build",
        "RUN echo FROM debian:bookworm-slim",
        "FROM --platform=linux/amd64 docker.io/library/debian@sha256:ab",
        "COPY --from=build /a /a", "COPY --from=docker.io/library/busybox@sha256:cd /bin/sh /sh"]


# ---------------------------------------------------------------------------- engine options


def test_build_commands_and_gpu_options(monkeypatch: pytest.MonkeyPatch) -> None:
    req = BuildRequest(Path("/ctx"), Path("/df"), "ns/x:1", {"A": "1"}, {"l": "v"}, "server")
    docker = Engine(DockerClient(client_call=["docker"]))
    docker._builder = "classic"
    cmd, env = docker.build_command(req)
    assert Path(cmd[0]).name == "docker" and cmd[1] == "build" and env == {"DOCKER_BUILDKIT": "0"}
    assert cmd[-1] == "/ctx" and "--target" in cmd and "A=1" in cmd and "l=v" in cmd
    docker._builder = "buildkit"
    cmd, env = docker.build_command(req)
    assert cmd[1:4] == ["buildx", "build", "--load"] and env == {}
    gpu, cpu = find_profile("rtx5090-32g"), find_profile("cpu")
    assert gpu is not None and cpu is not None
    assert docker.gpu_run_args(gpu) == ["--gpus", "all"] and docker.gpu_run_args(cpu) == []
    assert docker.gpu_run_kwargs(gpu) == {"gpus": "all"}
    monkeypatch.setattr(PodmanEngine, "cli", property(lambda self: ["podman"]))  # podman need not exist
    podman = PodmanEngine(DockerClient(client_call=["podman"]))
    assert podman.gpu_run_args(gpu) == ["--device", "nvidia.com/gpu=all"]
    assert "--format" in podman.build_command(req)[0]


# ----------------------------------------------------------------------------- agent adapters


def test_mini_swe_agent_command_is_non_interactive_and_keyless() -> None:
    deadline = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    cmd = adapter("mini-swe-agent").command(Invocation(
        instruction_file="/task/instruction.md", model_base_url="http://meter:8080/", model_name="run-10",
        step_limit=8, deadline=deadline))
    script, (model, base, steps, instruction, traj, note) = cmd.argv[2], cmd.argv[4:10]
    assert cmd.argv[:2] == ["sh", "-c"] and "mini -y --exit-immediately" in script
    assert (model, base, steps, instruction) == ("hosted_vllm/run-10", "http://meter:8080/v1", "8",
                                                 "/task/instruction.md")
    assert traj.startswith("/logs/agent/") and "2030-01-01T12:00:00+00:00" in note
    assert cmd.env["MSWEA_CONFIGURED"] == "true"
    check_no_secrets(cmd.env)
    assert not any("KEY" in k for k in cmd.env)
    with pytest.raises(AgentConfigError, match="OPENAI_API_KEY"):
        check_no_secrets({"OPENAI_API_KEY": "x", "MAX_TOKENS": "5"})
    check_no_secrets({"MAX_TOKENS": "5", "KEYBOARD": "us"})


def test_oracle_nop_and_unknown_runtimes() -> None:
    inv = Invocation(instruction_file="/i.md")
    assert adapter("oracle").command(inv).argv == ["bash", "/solution/solve.sh"]
    assert adapter("nop").command(inv).argv == ["true"]
    assert adapter("oracle").packages(None) == [] and not adapter("nop").needs_model
    known = "aider, claude-code, codex, mini-swe-agent, nop, opencode, oracle, qwen-code"
    with pytest.raises(KeyError, match=f"known: {known}"):
        adapter("goose")


def test_wrapper_script_sets_overridable_defaults(tmp_path: Path) -> None:
    path = tmp_path / "tool"
    subprocess.run(["sh", "-ec", wrapper_script(str(path), "/usr/bin/env", {"A_SETTING": "x y"})], check=True)
    out = subprocess.run([str(path)], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}).stdout
    assert "A_SETTING=x y" in out.splitlines()
    out = subprocess.run([str(path)], capture_output=True, text=True, env={"A_SETTING": "mine"}).stdout
    assert "A_SETTING=mine" in out.splitlines()
    with pytest.raises(AgentConfigError):
        wrapper_script(str(path), "/bin/true", {"HF_TOKEN": "x"})


# --------------------------------------------------------- pinned sdist from a loopback index


@dataclass
class FakeIndex:
    url: str
    sha256: str
    tree_sha256: str


def _fake_sdist(root: Path) -> Path:
    """A minimal sdist with an in-tree build backend (pip prepares metadata without any download)."""
    top = root / "build" / "fake_vendor-1.0"
    (top / "vendor" / "thing" / "sub").mkdir(parents=True)
    (top / "pyproject.toml").write_text('[build-system]\nrequires = []\nbuild-backend = "backend"\n'
                                        'backend-path = ["."]\n')
    (top / "backend.py").write_text(
        "import os\n"
        "def _meta(d):\n"
        "    os.makedirs(os.path.join(d, 'fake_vendor-1.0.dist-info'), exist_ok=True)\n"
        "    open(os.path.join(d, 'fake_vendor-1.0.dist-info', 'METADATA'), 'w').write(\n"
        "        'Metadata-Version: 2.1\\nName: fake-vendor\\nVersion: 1.0\\n')\n"
        "    return 'fake_vendor-1.0.dist-info'\n"
        "def get_requires_for_build_wheel(config_settings=None): return []\n"
        "def prepare_metadata_for_build_wheel(d, config_settings=None): return _meta(d)\n")
    (top / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: fake-vendor\nVersion: 1.0\n")
    (top / "CHANGELOG.md").write_text("# Changelog\n\n## [1.0]\n\n- feat: update llama.cpp to "
                                      "ggml-org/llama.cpp@abcdef123\n\n## [0.9]\n\n- llama.cpp@0000000\n")
    (top / "vendor" / "thing" / "a.txt").write_text("hello\n")
    (top / "vendor" / "thing" / "sub" / "b.txt").write_text("b\n")
    (top / "vendor" / "thing" / ".git").write_text("gitdir: ../../.git/modules/thing\n")
    out = root / "simple" / "fake-vendor"
    out.mkdir(parents=True)
    subprocess.run(["tar", "-czf", str(out / "fake_vendor-1.0.tar.gz"), "-C", str(root / "build"),
                    "fake_vendor-1.0"], check=True)
    (out / "index.html").write_text('<html><body><a href="fake_vendor-1.0.tar.gz">f</a></body></html>')
    return out / "fake_vendor-1.0.tar.gz"


@pytest.fixture
def fake_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeIndex]:
    """A loopback package index serving fake-vendor==1.0; pip and labctl's cache point at tmp."""
    sdist = _fake_sdist(tmp_path / "index")
    expected_tree = tree_sha256(tmp_path / "index" / "build" / "fake_vendor-1.0" / "vendor" / "thing")
    handler = partial(SimpleHTTPRequestHandler, directory=str(tmp_path / "index"))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/simple"
    monkeypatch.setenv("PIP_INDEX_URL", url)
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    import hashlib
    try:
        yield FakeIndex(url, hashlib.sha256(sdist.read_bytes()).hexdigest(), expected_tree)
    finally:
        server.shutdown()


def test_fetch_sdist_verifies_then_extracts_only_the_subdir(fake_index: FakeIndex, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    tree = fetch_sdist("fake-vendor==1.0", fake_index.sha256, "vendor/thing", cache=cache,
                       tree_sha256_expected=fake_index.tree_sha256)
    assert (tree / "sub" / "b.txt").read_text() == "b\n" and not (tree / ".git").exists()
    assert not (tree.parents[1] / "backend.py").exists()
    from labctl.lock.sdist import changelog_commit, sdist_dir

    assert changelog_commit(sdist_dir(fake_index.sha256, cache) / "CHANGELOG.md", "1.0") == "abcdef123"
    os.environ["PIP_INDEX_URL"] = "http://127.0.0.1:9/nowhere"  # cached: no network needed any more
    assert fetch_sdist("fake-vendor==1.0", fake_index.sha256, "vendor/thing", cache=cache) == tree
    with pytest.raises(SourceHashMismatch, match="tree hash"):
        fetch_sdist("fake-vendor==1.0", fake_index.sha256, "vendor/thing", cache=cache,
                    tree_sha256_expected="0" * 64)


def test_wrong_sdist_hash_extracts_nothing(fake_index: FakeIndex, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(SourceHashMismatch, match=f"lab.lock pins {'0' * 64}"):
        fetch_sdist("fake-vendor==1.0", "0" * 64, "vendor/thing", cache=cache)
    assert not list((cache / "src").glob("*/vendor"))


def test_build_with_a_wrong_sdist_hash_stops_before_any_build(fake_index: FakeIndex, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    lab = smoke_lab(tmp_path, edit={"sdist: llama-cpp-python==0.3.36":
                                    "sdist: fake-vendor==1.0\n    subdir: vendor/thing"})
    loaded = load_lab(lab)
    lock = make_lock(loaded, sdist="fake-vendor==1.0", sdist_file="fake_vendor-1.0.tar.gz",
                     sdist_sha="0" * 64, subdir="vendor/thing")
    write_lock(lock_path(lab), lock)
    engine = FakeEngine({BASE_IMAGE: ImageInfo(LOCAL_ID, [BASE_IMAGE], {}, 1)})
    monkeypatch.setattr("labctl.cli.build.detect_engine", lambda: engine)
    code, stdout, stderr = cli("build", lab, "--json")
    assert code == 1
    assert json.loads(stdout)["ok"] is False
    assert f"has sha256 {fake_index.sha256}, but lab.lock pins {'0' * 64}" in stderr
    assert engine.builds == []

    write_lock(lock_path(lab), lock.model_copy(update={"llama_cpp": lock.llama_cpp.model_copy(
        update={"sdist_sha256": fake_index.sha256})}))
    specs = lab_images(loaded, read_lock(lock_path(lab)), settings=BuildSettings(cache=tmp_path / "xdg"))
    results = build_all(engine, specs[:2], log_dir=tmp_path / "logs")  # llama-server + task: no PyPI
    assert [r.status for r in results] == ["built", "built"]
    assert results[0].version == "version: 1 (abc); built with GNU for x86_64"
    llama = engine.builds[1]
    assert llama.build_args["LLAMA_BUILD_COMMIT"] == "abcdef123"
    assert llama.build_args["LLAMA_SERVER_VERSION"] == results[0].version
    assert llama.labels[L_INPUT] == specs[0].input_hash()
    assert "LLAMA_SERVER_VERSION" not in specs[0].build_args  # derived, so never hashed


def test_build_refuses_a_lab_without_a_lock(tmp_path: Path) -> None:
    code, _, stderr = cli("build", smoke_lab(tmp_path))
    assert code == 1
    assert "no smoke.lock next to" in stderr and "labctl lock" in stderr


# ------------------------------------------------------------------------ Docker: real images


@dataclass
class Built:
    lab: Path
    namespace: str
    lock: Lock
    first: dict[str, Any]
    canary: str
    engine: Engine

    def image(self, name: str) -> dict[str, Any]:
        return next(i for i in self.first["images"] if i["name"] == name)


@pytest.fixture(scope="session")
def built_smoke(docker_engine: DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """Every image of the smoke lab, built once by `labctl build` (a fresh namespace and lab name)."""
    suffix = uuid.uuid4().hex[:8]
    tmp = tmp_path_factory.mktemp("smoke-images")
    lab = smoke_lab(tmp, name=f"smoke-test-{suffix}")
    loaded = load_lab(lab)
    lock = make_lock(loaded, base=docker_engine.image.inspect(BASE_IMAGE).id)
    write_lock(lock_path(lab), lock)
    namespace, canary = f"labctl-test-{suffix}", f"sk-canary-{uuid.uuid4().hex}"
    engine = Engine(docker_engine)
    args = ["build", str(lab), "--json"] + (["--ca-bundle", str(HOST_CA)] if HOST_CA.is_file() else [])
    result: Built | None = None
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(NAMESPACE_ENV, namespace)
            for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "HF_TOKEN"):
                mp.setenv(key, canary)  # must not reach any image
            code, stdout, stderr = cli(*args)
        result = Built(lab, namespace, lock, json.loads(stdout), canary, engine)
        failed = [i for i in result.first["images"] if i["status"] == "failed"]
        logs = "\n".join(f"--- {i['log']}\n{_tail(i['log'])}" for i in failed if i["log"])
        assert code == 0, stderr[-3000:] + logs
        yield result
    finally:
        specs = lab_images(loaded, lock, settings=BuildSettings(namespace=namespace))
        for spec in reversed(specs):  # dependents first: an image with children cannot be removed
            with contextlib.suppress(DockerException):
                engine.remove_image(spec.tag, force=True)
        built = [i.get("build_id") for i in (result.first["images"] if result else [])]
        prune_build_stages(engine, [b for b in built if b])
        remove_labelled(docker_engine, {L_LAB: loaded.lab.lab.name})


def _tail(path: str, lines: int = 40) -> str:
    p = Path(path)
    return "\n".join(p.read_text(errors="replace").splitlines()[-lines:]) if p.is_file() else "(no log)"


@pytest.mark.docker
def test_build_twice_second_run_is_all_cached(built_smoke: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    first = built_smoke.first
    # llama-server, the task, mini-swe-agent, oracle, nop, labctl and the egress gateway (allowlist)
    assert [i["status"] for i in first["images"]] == ["built"] * 7, first
    monkeypatch.setenv(NAMESPACE_ENV, built_smoke.namespace)
    code, stdout, _ = cli("build", built_smoke.lab, "--json")  # its speed: benchmarks/build_cached.py
    assert code == 0
    second = json.loads(stdout)["images"]
    assert [i["status"] for i in second] == ["cached"] * 7
    assert [i["image_id"] for i in second] == [i["image_id"] for i in first["images"]]
    code, stdout, _ = cli("images", built_smoke.lab, "--json")
    listed = json.loads(stdout)["images"]
    assert [(i["tag"], i["status"]) for i in listed] == [(i["tag"], "cached") for i in second]


@pytest.mark.docker
def test_images_carry_lab_lock_and_input_hash_labels(built_smoke: Built) -> None:
    for entry in built_smoke.first["images"]:
        info = built_smoke.engine.image(entry["tag"])
        assert info is not None and entry["tag"].startswith(f"{built_smoke.namespace}/")
        assert info.labels[L_INPUT] == entry["input_hash"] and entry["tag"].endswith(entry["input_hash"][:20])
        assert info.labels[L_LAB] == built_smoke.lock.lab
        assert info.labels[L_LOCK] == built_smoke.lock.sha256()
        assert info.labels["org.labctl.image"] == entry["name"]


@pytest.mark.docker
def test_llama_server_version_is_a_label_and_in_the_lock(built_smoke: Built) -> None:
    entry = built_smoke.image("llama-server")
    ran = built_smoke.engine.run(entry["tag"], ["--version"])
    assert ran.returncode == 0, ran.stderr
    version = version_text(ran.stdout + ran.stderr)
    assert version.startswith("version: ") and "commit 0c1e57098" in version
    info = built_smoke.engine.image(entry["tag"])
    assert info is not None and info.labels[L_LLAMA_VERSION] == version == entry["version"]
    assert read_lock(lock_path(built_smoke.lab)).llama_cpp.version == version.split("; ")[0]
    user = built_smoke.engine.run(entry["tag"], ["-u"], entrypoint="id")
    assert user.stdout.strip() not in ("", "0")


@pytest.mark.docker
def test_llama_server_serves_a_tiny_gguf_and_turns_healthy(
        built_smoke: Built, docker_engine: DockerClient, labctl_labels: dict[str, str], tmp_path: Path
) -> None:
    model = tmp_path / "tiny.gguf"
    write_tiny_gguf(model, TinyModelParams(seed=7))
    model.chmod(0o644)
    container = docker_engine.container.run(
        built_smoke.image("llama-server")["tag"], ["-m", "/models/tiny.gguf", "--port", "8080", "-c", "512"],
        detach=True, labels=labctl_labels, publish=[("127.0.0.1:", 8080)],
        volumes=[(str(model), "/models/tiny.gguf", "ro")])
    port = container.network_settings.ports["8080/tcp"][0]["HostPort"]
    deadline, body, health = time.monotonic() + 90, None, None
    while time.monotonic() < deadline:
        try:
            resp = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
            body = resp.json() if resp.status_code == 200 else None
        except httpx.HTTPError:
            pass
        health = docker_engine.container.inspect(container.id).state.health
        if body and health is not None and health.status == "healthy":
            break
        time.sleep(1)
    logs = docker_engine.container.logs(container)[-2000:]
    assert body == {"status": "ok"}, logs
    assert health is not None and health.status == "healthy", logs


@pytest.mark.docker
def test_agent_image_runs_mini_as_a_user_with_git_and_no_secrets(built_smoke: Built) -> None:
    tag, run = built_smoke.image("agent-mini-swe-agent")["tag"], built_smoke.engine.run
    assert run(tag, ["mini", "--help"]).returncode == 0
    uid = run(tag, ["id", "-u"]).stdout.strip()
    assert uid and uid != "0"
    assert run(tag, ["git", "config", "user.email"]).stdout.strip() == "agent@labctl.invalid"
    env = run(tag, ["env"]).stdout
    assert not [line for line in env.splitlines() if "KEY" in line.split("=")[0] or "TOKEN" in line]
    # As root, so every file is read; grep exits 1 for "no match", 2 for an error (which must fail).
    found = run(tag, ["grep", "-rl", "--devices=skip", "--exclude-dir=proc", "--exclude-dir=sys",
                      "--exclude-dir=dev", built_smoke.canary, "/"], user="0", timeout=600)
    assert (found.returncode, found.stdout) == (1, ""), (found.returncode, found.stdout, found.stderr[-2000:])
    history = subprocess.run(["docker", "history", "--no-trunc", tag], capture_output=True, text=True).stdout
    inspect = subprocess.run(["docker", "image", "inspect", tag], capture_output=True, text=True).stdout
    assert built_smoke.canary not in history + inspect
    assert "OPENAI_API_KEY" not in inspect


@pytest.mark.docker
def test_oracle_and_nop_images(built_smoke: Built) -> None:
    for name in ("agent-oracle", "agent-nop"):
        tag = built_smoke.image(name)["tag"]
        runtime = name.removeprefix("agent-")
        assert built_smoke.engine.run(tag, adapter(runtime).check_command()).returncode == 0
        assert built_smoke.engine.run(tag, ["id", "-u"]).stdout.strip() != "0"
        info = built_smoke.engine.image(tag)
        assert info is not None and info.labels["org.labctl.agent.runtime"] == runtime


@pytest.mark.docker
def test_labctl_image_runs_labctl(built_smoke: Built) -> None:
    ran = built_smoke.engine.run(built_smoke.image("labctl")["tag"], ["--version"])
    assert ran.returncode == 0 and ran.stdout.strip().startswith("labctl "), ran.stderr


# --- bad input: what a failed or impossible build says ------------------------------------------------


@pytest.mark.parametrize("cuda, profile, ok", [
    ("13.1", "rtx5090-32g", True), ("12.8", "rtx5090-32g", True), ("12.4", "rtx5090-32g", False),
    ("13.1", "a100-40g", True), ("11.7", "h100-80g", False),
])
def test_cuda_version_must_know_the_profiles_arch(cuda: str, profile: str, ok: bool) -> None:
    from labctl.images.specs import check_cuda_arch

    prof = find_profile(profile)
    assert prof is not None
    if ok:
        check_cuda_arch(cuda, prof)
    else:
        with pytest.raises(ImageError, match=rf"needs sm_{prof.cuda_arch}, which CUDA {cuda} cannot build"):
            check_cuda_arch(cuda, prof)


def test_cuda_13_refuses_pre_turing_arches() -> None:
    from labctl.images.specs import check_cuda_arch
    from labctl.spec.profiles import Profile

    volta = Profile(name="v100-32g", gpu="Tesla V100", vram_per_gpu=32 * 1024**3, cuda_arch=70,
                    host_ram=64 * 1024**3)
    with pytest.raises(ImageError, match="CUDA 13 dropped architectures below sm_75"):
        check_cuda_arch("13.1", volta)
    check_cuda_arch("12.4", volta)


def test_failing_step_names_the_step_and_suggests_mirrors(tmp_path: Path) -> None:
    from labctl.engine.buildlog import failing_step

    log = tmp_path / "b.log"
    log.write_text("$ docker build …\nStep 1/3 : FROM debian:bookworm-slim\n ---> 897d745f49bb\n"
                   "Step 2/3 : RUN make server\n ---> Running in 1f2e\nmake: *** No rule to make target\n"
                   "The command '/bin/sh -c make server' returned a non-zero code: 2\n")
    said = failing_step(log)
    assert said.startswith(": at Step 2/3 : RUN make server") and "returned a non-zero code: 2" in said
    assert "(make: *** No rule to make target; returned a non-zero code: 2)" in said
    assert "image_mirrors" not in said
    # The cause is the failing step's output (colour codes dropped), never an earlier step's.
    log.write_text("Step 1/3 : RUN echo preparing\npreparing\nStep 2/3 : RUN sh fetch.sh\n"
                   " ---> Running in 1\n\x1b[91mfetch: sha512 abc does not match the pinned def\n"
                   "\x1b[0mRemoving intermediate container 1\n"
                   "The command '/bin/sh -c sh fetch.sh' returned a non-zero code: 1\n")
    assert failing_step(log) == (": at Step 2/3 : RUN sh fetch.sh (fetch: sha512 abc does not match the "
                                 "pinned def; returned a non-zero code: 1)")
    log.write_text("Step 1/2 : RUN echo preparing\npreparing\nStep 2/2 : RUN exit 3\n"
                   "The command '/bin/sh -c exit 3' returned a non-zero code: 3\n")
    assert failing_step(log) == ": at Step 2/2 : RUN exit 3 (returned a non-zero code: 3)"
    log.write_text("Step 1/2 : FROM ubuntu:24.04\nError response from daemon: Get \"https://registry-1."
                   "docker.io/v2/\": dial tcp: lookup registry-1.docker.io: no such host\n")
    said = failing_step(log)
    assert "Step 1/2 : FROM ubuntu:24.04" in said and "build.image_mirrors" in said


@pytest.mark.docker
def test_a_failing_dockerfile_says_which_step_and_where_the_log_is(tmp_path: Path, docker_engine,
                                                                   labctl_labels) -> None:
    from labctl.engine.container import BuildFailed

    (tmp_path / "Dockerfile").write_text("FROM debian:bookworm-slim\nRUN echo preparing\nRUN exit 3\n")
    log = tmp_path / "build.log"
    with open(log, "w") as f, pytest.raises(BuildFailed) as info:
        Engine().build(BuildRequest(tmp_path, tmp_path / "Dockerfile", "labctl-test/fails:1",
                                          {}, labctl_labels), f)
    assert "RUN exit 3" in str(info.value) and info.value.log == log


def test_task_image_context_is_staged_with_the_ca_and_the_npm_mirror(tmp_path: Path) -> None:
    """The task's environment/ is built from a staged copy (the build never writes into the locked
    task), which gets the lab's CA bundle as `ca.crt`; an npm mirror reaches the Dockerfile as a build
    arg outside the hash, like the CA."""
    loaded = load_lab(smoke_lab(tmp_path))
    lock = make_lock(loaded)
    plain = BuildSettings(cache=tmp_path / "cache")
    mirrored = BuildSettings(cache=tmp_path / "cache", ca_bundle=HOST_CA, npm_registry="http://npm.lan/")
    task0 = next(s for s in lab_images(loaded, lock, settings=plain) if s.name.startswith("task-"))
    task = next(s for s in lab_images(loaded, lock, settings=mirrored) if s.name.startswith("task-"))
    assert task.input_hash() == task0.input_hash() and "NPM_CONFIG_REGISTRY" not in task0.unhashed_args
    assert task.unhashed_args["NPM_CONFIG_REGISTRY"] == "http://npm.lan/"
    assert task.context != loaded.task_dir / "environment" and (task.context / "Dockerfile").is_file()
    assert task.prepare is not None
    task.prepare(lambda msg: None)
    assert task.build_dir is not None
    try:
        assert (task.build_dir / "ca.crt").read_bytes() == HOST_CA.read_bytes()
        assert (task.build_dir / "Dockerfile").read_bytes() == (task.context / "Dockerfile").read_bytes()
    finally:
        shutil.rmtree(task.build_dir)
    assert not (loaded.task_dir / "environment" / "ca.crt").exists()
