"""The Docker engine, the base images and the labelled cleanup that every Docker test relies on."""

from __future__ import annotations

import subprocess

import pytest
from python_on_whales import DockerClient

from tests.conftest import (
    BASE_IMAGE,
    BASE_IMAGE_ALIAS,
    ENSURE_ENV,
    LABEL_KEY,
    ROOT,
    labelled,
    remove_labelled,
)


def _labelled_objects(client: DockerClient, labels: dict[str, str]) -> dict[str, list[str]]:
    filters = [("label", f"{key}={value}") for key, value in labels.items()]
    return {
        "containers": [c.id for c in client.container.list(all=True, filters=filters)],
        "networks": [n.id for n in client.network.list(filters=filters)],
        "volumes": [v.name for v in client.volume.list(filters=filters)],
    }


def _create_labelled(client: DockerClient, labels: dict[str, str]) -> None:
    suffix = labels[LABEL_KEY][:12]
    client.container.create(BASE_IMAGE, ["true"], labels=labels, name=f"labctl-test-{suffix}")
    client.network.create(f"labctl-test-{suffix}", labels=labels)
    client.volume.create(f"labctl-test-{suffix}", labels=labels)


@pytest.mark.docker
def test_engine_answers(docker_engine: DockerClient) -> None:
    version = docker_engine.version()
    assert version.server is not None and version.server.version
    assert docker_engine.info().os_type == "linux"


@pytest.mark.docker
def test_base_image_runs_bookworm(docker_engine: DockerClient, labctl_labels: dict[str, str]) -> None:
    os_release = docker_engine.run(BASE_IMAGE, ["cat", "/etc/os-release"], remove=True, labels=labctl_labels)
    assert "VERSION_CODENAME=bookworm" in os_release
    debian_version = docker_engine.run(BASE_IMAGE, ["cat", "/etc/debian_version"], remove=True)
    assert debian_version.strip().startswith("12.")
    assert docker_engine.image.inspect(BASE_IMAGE_ALIAS).id == docker_engine.image.inspect(BASE_IMAGE).id


@pytest.mark.docker
def test_remove_labelled_removes_only_its_labels(docker_engine: DockerClient, labctl_labels) -> None:
    with labelled(docker_engine) as bystander:
        _create_labelled(docker_engine, labctl_labels)
        _create_labelled(docker_engine, bystander)
        created = _labelled_objects(docker_engine, labctl_labels)
        assert all(len(ids) == 1 for ids in created.values()), created

        removed = remove_labelled(docker_engine, labctl_labels)

        assert {kind: len(names) for kind, names in removed.items()} == {
            "containers": 1,
            "networks": 1,
            "volumes": 1,
            "images": 0,
        }
        assert _labelled_objects(docker_engine, labctl_labels) == {
            "containers": [],
            "networks": [],
            "volumes": [],
        }
        survivors = _labelled_objects(docker_engine, bystander)
        assert all(len(ids) == 1 for ids in survivors.values()), survivors
    # leaving the context is what the labctl_labels fixture does on teardown
    assert _labelled_objects(docker_engine, bystander) == {"containers": [], "networks": [], "volumes": []}


@pytest.mark.docker
def test_labelled_cleans_up_when_the_test_body_fails(docker_engine: DockerClient) -> None:
    with pytest.raises(RuntimeError, match="boom"), labelled(docker_engine) as labels:
        docker_engine.container.run(BASE_IMAGE, ["sleep", "300"], detach=True, labels=labels)
        raise RuntimeError("boom")
    assert _labelled_objects(docker_engine, labels)["containers"] == []


def test_remove_labelled_refuses_empty_labels() -> None:
    with pytest.raises(ValueError, match="empty label set"):
        remove_labelled(None, {})  # type: ignore[arg-type]


def test_ensure_env_rejects_unknown_subcommand() -> None:
    done = subprocess.run(["bash", str(ENSURE_ENV), "bogus"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2
    assert "ensure-env: unknown subcommand 'bogus'" in done.stderr


@pytest.mark.docker
def test_ensure_env_is_idempotent(docker_engine: DockerClient) -> None:
    """A second run finds everything in place and does nothing (its speed: benchmarks/ensure_env_noop.py)."""
    done = subprocess.run(["bash", str(ENSURE_ENV), "all"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines and all(line.startswith("ensure-env: ") for line in lines), done.stderr
    assert not any(word in done.stderr for word in ("starting", "debootstrap", "import", "pull", "apt-get"))

