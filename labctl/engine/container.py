"""The container engine, one type: builds, image lookups, containers from specs, exec, labelled
cleanup, and the GPU options — for docker, and podman as its variant.

`Engine` uses python-on-whales for lookups and removal, and the engine's own CLI for the rest: a
build's output goes straight to a per-image log file, and a run needs `create` + `network connect` +
`start` (a container on two networks from its first instruction), `exec` with a deadline and its
output streamed to a file, and `cp` — each one CLI line that a reader can paste to debug. Builds use
BuildKit through `docker buildx build` when the buildx plugin answers, else the classic builder
(`DOCKER_BUILDKIT=0 docker build`): the Dockerfiles under images/ avoid BuildKit-only syntax so both
produce the same image. `PodmanEngine` is the same object with podman's CLI, `--format docker` (OCI
images drop HEALTHCHECK) and CDI GPU devices. `detect_engine()` picks one, so `LABCTL_ENGINE=podman`
holds for runs as for builds. A container is data (`labctl.engine.spec.ContainerSpec`); its command
line is made there, in one place.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException, NoSuchImage

from labctl.engine.buildlog import failing_step
from labctl.engine.names import label_filters, label_flags
from labctl.engine.spec import ContainerSpec
from labctl.engine.timings import span, timed
from labctl.errors import LabctlError
from labctl.spec.profiles import Profile

Builder = Literal["buildkit", "classic", "podman"]


_RETRY = ('end=$(( $(date +%s) + $1 )); shift; until "$@" >/dev/null 2>&1; do '
          '[ "$(date +%s)" -ge "$end" ] && exit 1; sleep 0.1; done')
"""`sh -c _RETRY wait SECONDS PROBE…`: PROBE until it succeeds, for at most SECONDS (POSIX sh)."""


class EngineError(LabctlError, RuntimeError):
    """The engine is missing, or a command it ran failed."""


class BuildFailed(EngineError):
    """`docker build` exited non-zero; the reason is in the log file."""

    def __init__(self, message: str, log: Path) -> None:
        super().__init__(message)
        self.log = log


@dataclass(frozen=True)
class BuildRequest:
    """One image build: what the engine CLI needs, nothing labctl-specific."""

    context: Path
    dockerfile: Path
    tag: str
    build_args: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None


@dataclass(frozen=True)
class ImageInfo:
    id: str
    tags: list[str]
    labels: dict[str, str]
    size: int


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class ImageConfig:
    """What `docker run` takes from an image's config when the run does not say."""

    user: str
    """USER ("" when the image sets none)."""
    workdir: str
    """WORKDIR ("/" when the image sets none, as `docker run` does)."""


class Engine:
    """Docker: python-on-whales for lookups, the CLI for builds and containers (raising EngineError
    with the failed command's last line); builds with buildx when present, else the classic builder.

    `cli` fixes the client command without asking python-on-whales (a machine with no engine)."""

    name = "docker"

    def __init__(self, client: DockerClient | None = None, *, cli: Sequence[str] | None = None) -> None:
        self._client = client
        self._cli = list(cli) if cli else None
        self._builder: Builder | None = None

    @property
    def client(self) -> DockerClient:
        if self._client is None:
            self._client = DockerClient()
        return self._client

    @property
    def cli(self) -> list[str]:
        """The client command python-on-whales uses (e.g. `["docker"]`, with --host/--context)."""
        if self._cli is None:  # resolved once: python-on-whales looks the binary up on every call
            self._cli = [str(part) for part in self.client.client_config.docker_cmd]
        return list(self._cli)

    # --- the CLI ---------------------------------------------------------------------------------

    def __call__(self, *args: str, check: bool = True, timeout: float | None = 120,
                 stdout: IO[Any] | int | None = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
        """`docker ARGS…`, its output captured; raises EngineError on a non-zero exit (`check`)."""
        try:
            done = subprocess.run([*self.cli, *args], stdout=stdout, stderr=subprocess.PIPE, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise EngineError(f"docker {args[0]} timed out after {timeout:.0f}s") from None
        if check and done.returncode != 0:
            raise EngineError(f"docker {' '.join(args[:2])}: {done.stderr.strip().splitlines()[-1:] or ''}")
        return done

    def ok(self, *args: str, timeout: float | None = 30) -> bool:
        try:
            return self(*args, check=False, timeout=timeout).returncode == 0
        except EngineError:
            return False

    # --- containers ------------------------------------------------------------------------------

    def create(self, spec: ContainerSpec) -> str:
        """`docker create` the spec's container and connect its other networks; returns its id."""
        with span("container create"):
            made = self(*spec.argv("create")).stdout.strip()
            for net in spec.more_networks:
                self("network", "connect", net, spec.name or made)
        return made

    def start(self, name: str) -> None:
        with span("container start"):
            self("start", name)

    def create_network(self, name: str, labels: Mapping[str, str], *, internal: bool = False) -> str:
        """`docker network create` (`internal`: no route out); returns the network's id."""
        return self("network", "create", *(["--internal"] if internal else []), *label_flags(labels),
                    name).stdout.strip()

    def run_argv(self, spec: ContainerSpec) -> list[str]:
        """The whole `docker run` command line of a spec (for a caller that streams its output)."""
        return [*self.cli, *spec.argv("run")]

    def wait_ready(self, container: str, probe: Sequence[str], timeout_s: float, slice_s: float = 10.0
                   ) -> bool:
        """Until `probe` succeeds inside the running container: True then; False once the container
        has stopped or `timeout_s` has passed. One `docker exec` per `slice_s` that retries inside
        (0.1 s apart), not one exec and one sleep per try: on a busy host each exec costs more than
        most services take to start."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            n = str(max(1, math.ceil(min(slice_s, left))))
            if self.ok("exec", container, "sh", "-c", _RETRY, "wait", n, *probe, timeout=float(n) + 30):
                return True
            if not self.running(container):
                return False
        return False

    def running(self, name: str) -> bool:
        done = self("container", "inspect", "--format", "{{.State.Running}}", name, check=False)
        return done.stdout.strip() == "true"

    def exec_argv(self, container: str, argv: Sequence[str], *, user: str | None = None,
                  workdir: str | None = None, env: Mapping[str, str] | None = None) -> list[str]:
        """The whole `docker exec` command line (environment sorted), for a caller that streams it."""
        flags = ["-u", user] if user is not None else []
        flags += ["-w", workdir] if workdir is not None else []
        for k, v in sorted((env or {}).items()):
            flags += ["-e", f"{k}={v}"]
        return [*self.cli, "exec", *flags, container, *argv]

    # --- images ----------------------------------------------------------------------------------

    def image_present(self, tag: str) -> bool:
        with span("image check"):
            return self.ok("image", "inspect", tag)

    def image_config(self, tag: str) -> ImageConfig:
        """The image's USER and WORKDIR, from one `image inspect`; cached per engine: the run path
        asks for the same task image several times per run and tags name their content."""
        return self._image_config(tag)

    @functools.cache  # noqa: B019 - one engine per process, a handful of images: nothing leaks
    def _image_config(self, tag: str) -> ImageConfig:
        with span("image inspect"):
            done = self("image", "inspect", "--format", "{{json .Config}}", tag)
        cfg = json.loads(done.stdout or "{}") or {}
        return ImageConfig(user=str(cfg.get("User") or ""), workdir=str(cfg.get("WorkingDir") or "") or "/")

    def image_user(self, tag: str) -> str:
        return self.image_config(tag).user

    def image_workdir(self, tag: str) -> str:
        """The image's WORKDIR ("/" when it sets none, as `docker run` does)."""
        return self.image_config(tag).workdir

    # --- labelled objects ------------------------------------------------------------------------

    def labelled(self, labels: Mapping[str, str | None]) -> dict[str, list[str]]:
        """Names of containers, networks and volumes carrying all `labels` (None: any value)."""
        flt = label_filters(labels)
        lists = {"containers": ("ps", "-a", "--format", "{{.Names}}"),
                 "networks": ("network", "ls", "--format", "{{.Name}}"),
                 "volumes": ("volume", "ls", "--format", "{{.Name}}")}
        # Side by side: three independent listings, each mostly the CLI's own start-up.
        with ThreadPoolExecutor(len(lists)) as pool:
            done = {kind: pool.submit(self, *argv, *flt) for kind, argv in lists.items()}
            return {kind: f.result().stdout.split() for kind, f in done.items()}

    def labelled_images(self, labels: Mapping[str, str | None]) -> list[str]:
        """Ids of images carrying all `labels`: only a run's committed agent filesystem (`docker
        commit` keeps the container's labels), never a built image (those carry no round label)."""
        return sorted(set(self("image", "ls", "-q", "--no-trunc", *label_filters(labels)).stdout.split()))

    @timed("remove labelled")
    def remove_labelled(self, labels: Mapping[str, str | None]) -> dict[str, list[str]]:
        """Remove everything carrying `labels`, containers first (they hold networks and volumes).

        The one cleanup path for a run, an interrupted round and `labctl down`: by label, so a
        crashed labctl leaves nothing a later call cannot find.
        """
        if not labels:
            raise ValueError("refusing to remove by an empty label set")
        found = self.labelled(labels)
        if found["containers"]:
            self("rm", "-f", "-v", *found["containers"], check=False, timeout=120)
        if found["networks"]:  # one call: the CLI goes on past a network it cannot remove
            self("network", "rm", *found["networks"], check=False)
        if found["volumes"]:
            self("volume", "rm", "-f", *found["volumes"], check=False)
        if images := self.labelled_images(labels):
            self("image", "rm", "-f", *images, check=False, timeout=120)
            found["images"] = images
        return found

    # --- builds ----------------------------------------------------------------------------------

    def builder(self) -> Builder:
        if self._builder is None:
            self._builder = "buildkit" if self._quiet_ok([*self.cli, "buildx", "version"]) else "classic"
        return self._builder

    @staticmethod
    def _quiet_ok(cmd: list[str]) -> bool:
        try:
            return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30,
                                  stdin=subprocess.DEVNULL).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def build_command(self, request: BuildRequest) -> tuple[list[str], dict[str, str]]:
        """argv and extra environment of the build (exposed for tests and `--dry-run`-style output)."""
        if self.builder() == "buildkit":
            # --load: a docker-container builder keeps images in its own store otherwise;
            # provenance off: a plain image, not an index with an attestation manifest.
            cmd = [*self.cli, "buildx", "build", "--load", "--progress=plain", "--provenance=false"]
            env = {}
        else:
            # --force-rm: the classic builder otherwise leaves a failed step's container behind.
            cmd = [*self.cli, "build", "--force-rm"]
            env = {"DOCKER_BUILDKIT": "0"}
        return cmd + _common_build_flags(request), env

    def build(self, request: BuildRequest, log: IO[str]) -> str:
        cmd, env = self.build_command(request)
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        try:
            done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env={**os.environ, **env})
        except OSError as e:
            raise EngineError(f"cannot run {cmd[0]}: {e}") from None
        if done.returncode != 0:
            log.flush()
            raise BuildFailed(f"{self.name} build exited {done.returncode}{failing_step(Path(log.name))}",
                              Path(log.name))
        info = self.image(request.tag)
        if info is None:
            raise BuildFailed(f"build succeeded but {request.tag} is missing", Path(log.name))
        return info.id

    def image(self, ref: str) -> ImageInfo | None:
        try:
            found = self.client.image.inspect(ref)
        except NoSuchImage:
            return None
        except DockerException as e:
            if "No such image" in str(e) or "image not known" in str(e):
                return None
            raise
        labels = dict((found.config.labels if found.config else None) or {})
        return ImageInfo(id=str(found.id), tags=list(found.repo_tags or []), labels=labels,
                         size=int(found.size or 0))

    def remove_image(self, ref: str, *, force: bool = False) -> None:
        with contextlib.suppress(NoSuchImage):
            self.client.image.remove(ref, force=force)

    def images_with_label(self, key: str, value: str | None = None, *, dangling: bool | None = None
                          ) -> list[str]:
        cmd = [*self.cli, "image", "ls", "-q", "--no-trunc", "--filter",
               f"label={key}" + ("" if value is None else f"={value}")]
        if dangling is not None:
            cmd += ["--filter", f"dangling={'true' if dangling else 'false'}"]
        done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise EngineError(f"{' '.join(cmd)}: {done.stderr.strip()}")
        return list(dict.fromkeys(done.stdout.split()))

    def run(self, image: str, argv: Sequence[str], *, entrypoint: str | None = None,
            user: str | None = None, labels: Mapping[str, str] | None = None,
            network: str | None = "none", timeout: float = 300) -> CommandResult:
        """A one-off `run --rm`, capturing stdout and stderr (no network by default)."""
        cmd = self.run_argv(ContainerSpec(image, tuple(argv), entrypoint=entrypoint, user=user,
                                          labels=dict(labels or {}), network=network or None, remove=True))
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise EngineError(f"{image} {' '.join(argv)} timed out after {timeout:.0f}s") from None
        return CommandResult(done.returncode, done.stdout, done.stderr)

    def gpu_run_args(self, profile: Profile) -> list[str]:
        """The engine's own `run` options that give a container the profile's GPUs ([] for a CPU one)."""
        return ["--gpus", "all"] if profile.is_gpu else []

    def gpu_run_kwargs(self, profile: Profile) -> dict[str, Any]:
        """The same as python-on-whales `run()` keyword arguments."""
        return {"gpus": "all"} if profile.is_gpu else {}


class PodmanEngine(Engine):
    """Podman through the same python-on-whales client (`client_call=["podman"]`). Untested here."""

    name = "podman"

    def __init__(self, client: DockerClient | None = None) -> None:
        super().__init__(client or DockerClient(client_call=["podman"]))

    def builder(self) -> Builder:
        return "podman"

    def build_command(self, request: BuildRequest) -> tuple[list[str], dict[str, str]]:
        # Docker format keeps HEALTHCHECK (the OCI image config has no field for it).
        return [*self.cli, "build", "--format", "docker", *_common_build_flags(request)], {}

    def gpu_run_args(self, profile: Profile) -> list[str]:
        return ["--device", "nvidia.com/gpu=all"] if profile.is_gpu else []

    def gpu_run_kwargs(self, profile: Profile) -> dict[str, Any]:
        return {"devices": ["nvidia.com/gpu=all"]} if profile.is_gpu else {}


def _common_build_flags(request: BuildRequest) -> list[str]:
    flags = ["--file", str(request.dockerfile), "--tag", request.tag]
    for k, v in request.build_args.items():
        flags += ["--build-arg", f"{k}={v}"]
    flags += label_flags(request.labels)
    if request.target:
        flags += ["--target", request.target]
    return [*flags, str(request.context)]


def detect_engine(name: str | None = None) -> Engine:
    """The engine to use: `name`, else $LABCTL_ENGINE, else docker (podman when only podman exists)."""
    wanted = name or os.environ.get("LABCTL_ENGINE") or ""
    if wanted == "podman" or (not wanted and not shutil.which("docker") and shutil.which("podman")):
        return PodmanEngine()
    if wanted not in ("", "docker"):
        raise EngineError(f"unknown container engine {wanted!r} (docker or podman)")
    return Engine()
