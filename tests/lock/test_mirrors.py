"""The image mirror map: keys spelled the way people write images, local mirrors, and errors that say
how to fix an image that cannot be pulled or pinned (no registry is reachable in these tests: the
registry endpoints are closed loopback ports)."""

from __future__ import annotations

from pathlib import Path

import pytest

from labctl.images.model import ImageError, ImageSpec
from labctl.images.specs import _Pinner
from labctl.lock.lockfile import ImageLock, Lock, SourceLock, TaskLock
from labctl.lock.mirrors import describe, fix_line, mirror_target, normal_key
from labctl.lock.reference import RegistryError, parse_reference
from labctl.lock.registry import apply_mirrors, resolve_image

CLOSED = "http://127.0.0.1:9"
"""A loopback port nothing listens on: "cannot reach" at once, never the internet."""
LOCAL_ID = "sha256:" + "1" * 64


@pytest.mark.parametrize("key", ["ubuntu:24.04", "library/ubuntu:24.04", "docker.io/library/ubuntu:24.04",
                                 "index.docker.io/library/ubuntu:24.04", " ubuntu:24.04 "])
def test_every_spelling_of_an_image_is_one_key(key: str) -> None:
    assert normal_key(key) == "docker.io/library/ubuntu:24.04"
    for written in ("ubuntu:24.04", "docker.io/library/ubuntu:24.04", "library/ubuntu:24.04"):
        assert mirror_target(written, {key: "debian:bookworm-slim"}) == "debian:bookworm-slim"
    assert mirror_target("ubuntu:22.04", {key: "debian:bookworm-slim"}) is None
    assert mirror_target("ubuntu", {key: "debian:bookworm-slim"}) is None  # `latest`, another tag


def test_prefixes_repositories_and_other_registries() -> None:
    assert normal_key("nvidia/") == "docker.io/nvidia/"
    assert normal_key("docker.io/") == "docker.io/"
    assert normal_key("ghcr.io/org/") == "ghcr.io/org/"
    assert normal_key("ubuntu") == "docker.io/library/ubuntu"  # no tag: every tag of the repository
    assert normal_key("ghcr.io/org/tool:1.2") == "ghcr.io/org/tool:1.2"
    mirrors = {"ubuntu": "mirror.lan/hub/ubuntu", "ghcr.io/org/tool:1.2": "tool-local:dev",
               "nvidia/": "gpu.lan/nv/", "docker.io/": "mirror.lan:5000/hub/"}
    assert mirror_target("ubuntu:22.04", mirrors) == "mirror.lan/hub/ubuntu:22.04"
    assert mirror_target("ghcr.io/org/tool:1.2", mirrors) == "tool-local:dev"
    assert mirror_target("ghcr.io/org/tool:1.3", mirrors) is None
    assert mirror_target("nvidia/cuda:13", mirrors) == "gpu.lan/nv/cuda:13"
    assert mirror_target("debian:12", mirrors) == "mirror.lan:5000/hub/library/debian:12"  # longest wins
    assert mirror_target("ubuntu2:1", {"ubuntu": "x"}) is None  # a key ends at a name boundary
    # Older labs' prefixes as written keep working.
    assert str(apply_mirrors(parse_reference("nvidia/cuda:13"), {"docker.io/nvidia": "gpu.lan/nvidia"})) \
        == "gpu.lan/nvidia/cuda:13"


def test_a_later_key_of_the_same_image_wins_and_ids_replace_whole_images() -> None:
    lab = {"ubuntu:24.04": "debian:bookworm-slim"}
    profile = {"docker.io/library/ubuntu:24.04": "site.lan/ubuntu:24.04"}
    assert mirror_target("ubuntu:24.04", {**lab, **profile}) == "site.lan/ubuntu:24.04"
    assert mirror_target("ubuntu:24.04", {"ubuntu:24.04": LOCAL_ID}) == LOCAL_ID
    with pytest.raises(RegistryError, match="image id .* can only replace a whole image"):
        mirror_target("ubuntu:24.04", {"ubuntu": LOCAL_ID})
    with pytest.raises(RegistryError, match="image_mirrors key 'Not An Image' is not an image"):
        mirror_target("ubuntu:24.04", {"Not An Image": "x"})


def test_fix_line_is_pasteable_yaml() -> None:
    import yaml

    line = fix_line("ubuntu:24.04", "debian:bookworm-slim")
    assert line == 'build: {image_mirrors: {"ubuntu:24.04": "debian:bookworm-slim"}}'
    assert yaml.safe_load(line) == {"build": {"image_mirrors": {"ubuntu:24.04": "debian:bookworm-slim"}}}
    assert describe({}) == "{} (no mirrors)"


def test_cannot_reach_the_registry_names_image_map_and_fix() -> None:
    hub = {"docker.io": CLOSED}
    with pytest.raises(RegistryError) as info:
        resolve_image("ubuntu:24.04", endpoints=hub, local_fallback=False, timeout=5)
    said = str(info.value)
    assert said.startswith("cannot pin image ubuntu:24.04: cannot reach http://127.0.0.1:9")
    assert "mirror map (lab build.image_mirrors + profile image_mirrors): {} (no mirrors)" in said
    assert 'add to the lab: build: {image_mirrors: {"ubuntu:24.04": "<an image' in said
    # Through a mirror: the mirror is asked (never the original) and named, with the map.
    mirrors = {"ubuntu:24.04": "127.0.0.1:9/hub/ubuntu:24.04"}
    with pytest.raises(RegistryError) as info:
        resolve_image("ubuntu:24.04", mirrors=mirrors, endpoints=hub, local_fallback=False, timeout=5)
    said = str(info.value)
    assert "cannot pin image ubuntu:24.04 through its mirror 127.0.0.1:9/hub/ubuntu:24.04: cannot reach " \
           "http://127.0.0.1:9" in said
    assert '{"ubuntu:24.04": "127.0.0.1:9/hub/ubuntu:24.04"}' in said and "build: {image_mirrors:" in said


def _lock(images: dict[str, ImageLock]) -> Lock:
    return Lock(lab="m", spec_sha256="0" * 64, llama_cpp=SourceLock(path="x", tree_sha256="0" * 64),
                images=images, task=TaskLock(path="t", tree_sha256="0" * 64))


def test_builds_name_the_locked_mirror_and_refuse_a_changed_map(tmp_path: Path) -> None:
    mirrors = {"ubuntu:24.04": "debian:bookworm-slim"}
    spec = ImageSpec(name="task-x", repository="labctl/task-x", dockerfile=tmp_path, context=tmp_path)
    local = ImageLock(digest=LOCAL_ID, source="local", mirror="debian:bookworm-slim")
    pin = _Pinner(_lock({"ubuntu:24.04": local}), mirrors)
    assert pin("ubuntu:24.04", spec) == "debian:bookworm-slim"
    assert spec.local_bases == {"debian:bookworm-slim": LOCAL_ID}
    assert 'build: {image_mirrors: {"ubuntu:24.04":' in spec.pull_help["debian:bookworm-slim"]
    with pytest.raises(ImageError, match="locked through the mirror debian:bookworm-slim, but the mirror map "
                                         "now says nothing .*run `labctl lock`"):
        _Pinner(_lock({"ubuntu:24.04": local}), {})("ubuntu:24.04", spec)
    remote = ImageLock(digest="sha256:" + "2" * 64, source="registry", mirror="mirror.lan/hub/ubuntu:24.04")
    pin = _Pinner(_lock({"ubuntu:24.04": remote}), {"docker.io/library/": "mirror.lan/hub/"})
    assert pin("ubuntu:24.04", spec) == f"mirror.lan/hub/ubuntu@sha256:{'2' * 64}"


@pytest.mark.docker
def test_a_build_that_cannot_pull_its_base_names_image_map_and_fix(tmp_path: Path, docker_engine,
                                                                   labctl_labels) -> None:
    """A real build whose pinned base sits on a registry that does not answer (a closed loopback
    port): the failure names the image as written, the mirror, the map and the line to paste."""
    from labctl.engine.container import Engine
    from labctl.images.build import build_all

    mirrors = {"docker.io/": "127.0.0.1:9/"}
    pinned = ImageLock(digest="sha256:" + "3" * 64, source="registry",
                       mirror="127.0.0.1:9/library/ubuntu:24.04")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    spec = ImageSpec(name="task-pull", repository="labctl-test/task-pull", dockerfile=tmp_path / "Dockerfile",
                     context=ctx, labels=labctl_labels)
    base = _Pinner(_lock({"ubuntu:24.04": pinned}), mirrors)("ubuntu:24.04", spec)
    (tmp_path / "Dockerfile").write_text(f"FROM {base}\nRUN true\n")
    [result] = build_all(Engine(), [spec], log_dir=tmp_path / "logs")
    assert result.status == "failed"
    said = result.error or ""
    assert "a base image could not be pulled" in said, said
    assert "image ubuntu:24.04 through the mirror 127.0.0.1:9/library/ubuntu:24.04" in said
    assert '{"docker.io/": "127.0.0.1:9/"}' in said
    assert 'build: {image_mirrors: {"ubuntu:24.04": "debian:bookworm-slim"}}' in said
