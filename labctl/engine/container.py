"""Container engines: build images, look them up, run one-off commands, and the GPU run options.

`ContainerEngine` is what the rest of labctl uses; `DockerEngine` implements it with
python-on-whales (lookups, removal) plus the engine's own CLI for builds, whose output goes
straight to a per-image log file. Builds use BuildKit through `docker buildx build` when the buildx
plugin answers, else the classic builder (`DOCKER_BUILDKIT=0 docker build`): the Dockerfiles under
images/ avoid BuildKit-only syntax so both produce the same image. `PodmanEngine` is the same
object with podman's CLI, `--format docker` (OCI images drop HEALTHCHECK) and CDI GPU devices.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, Protocol

from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException, NoSuchImage

from labctl.errors import LabctlError
from labctl.spec.profiles import Profile

Builder = Literal["buildkit", "classic", "podman"]


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


class ContainerEngine(Protocol):
    """The operations labctl needs from Docker or Podman."""

    name: str

    @property
    def cli(self) -> list[str]:
        """The client command line (`["docker"]`, `["podman"]`, with --host/--context)."""
        ...

    def builder(self) -> Builder:
        """Which builder `build` will use."""
        ...

    def build(self, request: BuildRequest, log: IO[str]) -> str:
        """Build and tag the image, writing the engine's output to `log`; returns the image id."""
        ...

    def image(self, ref: str) -> ImageInfo | None:
        """The image a reference (tag or id) names, or None when the engine has none."""
        ...

    def remove_image(self, ref: str, *, force: bool = False) -> None:
        ...

    def images_with_label(self, key: str, value: str | None = None, *, dangling: bool | None = None
                          ) -> list[str]:
        """Ids of images carrying a label (any value when `value` is None)."""
        ...

    def run(self, image: str, argv: Sequence[str], *, entrypoint: str | None = None,
            user: str | None = None, labels: Mapping[str, str] | None = None,
            network: str | None = "none", timeout: float = 300) -> CommandResult:
        """A one-off `run --rm`, capturing stdout and stderr (no network by default)."""
        ...

    def gpu_run_args(self, profile: Profile) -> list[str]:
        """CLI flags that give a container the profile's GPUs ([] for a CPU profile)."""
        ...

    def gpu_run_kwargs(self, profile: Profile) -> dict[str, Any]:
        """The same as python-on-whales `run()` keyword arguments."""
        ...


class DockerEngine:
    """Docker via python-on-whales; builds with buildx when present, the classic builder otherwise."""

    name = "docker"

    def __init__(self, client: DockerClient | None = None) -> None:
        self.client = client or DockerClient()
        self._builder: Builder | None = None

    @property
    def cli(self) -> list[str]:
        """The client command python-on-whales uses (e.g. `["docker"]`, with --host/--context)."""
        return [str(part) for part in self.client.client_config.docker_cmd]

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
        cmd = [*self.cli, "run", "--rm"]
        if network:
            cmd += ["--network", network]
        if entrypoint is not None:
            cmd += ["--entrypoint", entrypoint]
        if user is not None:
            cmd += ["--user", user]
        for k, v in (labels or {}).items():
            cmd += ["--label", f"{k}={v}"]
        cmd += [image, *argv]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise EngineError(f"{image} {' '.join(argv)} timed out after {timeout:.0f}s") from None
        return CommandResult(done.returncode, done.stdout, done.stderr)

    def gpu_run_args(self, profile: Profile) -> list[str]:
        return ["--gpus", "all"] if profile.is_gpu else []

    def gpu_run_kwargs(self, profile: Profile) -> dict[str, Any]:
        return {"gpus": "all"} if profile.is_gpu else {}


class PodmanEngine(DockerEngine):
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


PULL_FAILED = "a base image could not be pulled"
"""How a build failure says a pull failed (the image build adds which image and the fix)."""
_STEP = re.compile(r"^(Step \d+/\d+ : .*|#\d+ \[[^\]]+\] .*)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CLASSIC_EXIT = re.compile(r"^The command '.*' returned a non-zero code: (\d+)$", re.S)
_PULL = re.compile(r"pull access denied|manifest unknown|not found: manifest|no such host|"
                   r"dial tcp|repository does not exist|failed to resolve source metadata", re.I)


def failing_step(log_path: Path) -> str:
    """`: at Step 3/5 : RUN make (…last error line…)` from a build log, so a failure says where;
    a base image that could not be pulled gets the mirror map as the way out."""
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    lines = [_ANSI.sub("", ln) for ln in lines]
    steps = [i for i, ln in enumerate(lines) if _STEP.match(ln)]
    where = f": at {lines[steps[-1]][:160]}" if steps else ""
    # The cause is the failing step's own last output line. The classic builder ends with "The
    # command '<the whole RUN line again>' returned a non-zero code: N": keep only its exit code.
    output = [ln.strip() for ln in lines[steps[-1] + 1 if steps else 0:]
              if ln.strip() and not ln.startswith(("#", "$", " ---> ", "Removing intermediate container"))]
    code = _CLASSIC_EXIT.match(output[-1]) if output else None
    if code:
        output.pop()
    parts = [output[-1][:200]] if output else []
    if code:
        parts.append(f"returned a non-zero code: {code.group(1)}")
    last = f" ({'; '.join(parts)})" if parts else ""
    if any(_PULL.search(ln) for ln in lines):
        last += (f"; {PULL_FAILED}: map it to a reachable one with build.image_mirrors "
                 "in the lab or image_mirrors in the profile")
    return where + last


def _common_build_flags(request: BuildRequest) -> list[str]:
    flags = ["--file", str(request.dockerfile), "--tag", request.tag]
    for k, v in request.build_args.items():
        flags += ["--build-arg", f"{k}={v}"]
    for k, v in request.labels.items():
        flags += ["--label", f"{k}={v}"]
    if request.target:
        flags += ["--target", request.target]
    return [*flags, str(request.context)]


def detect_engine(name: str | None = None) -> ContainerEngine:
    """The engine to use: `name`, else $LABCTL_ENGINE, else docker (podman when only podman exists)."""
    wanted = name or os.environ.get("LABCTL_ENGINE") or ""
    if wanted == "podman" or (not wanted and not shutil.which("docker") and shutil.which("podman")):
        return PodmanEngine()
    if wanted not in ("", "docker"):
        raise EngineError(f"unknown container engine {wanted!r} (docker or podman)")
    return DockerEngine()
