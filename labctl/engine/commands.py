"""The container engine's command line for running things: labctl's labels, neutral names, and the
`docker` (or `podman`) CLI the run path, the fence and the tests call.

Why a plain CLI subprocess and not python-on-whales here: a run needs `create` + `network connect` +
`start` (a container on two networks from its first instruction), `exec` with a deadline and its
output streamed to a file, and `cp` — each one CLI line that a reader can paste to debug. The
client comes from `detect_engine()`, so `LABCTL_ENGINE=podman` holds for runs as for builds.

Blindness: every name and label made here comes from the round id and the run id only
(`labctl.round.seal.run_label`); a contestant id or model name must never be passed in.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from labctl.engine.container import ContainerEngine, EngineError, detect_engine
from labctl.spec.profiles import Profile

ROUND_LABEL = "labctl.round"
RUN_LABEL = "labctl.run"
ROLE_LABEL = "labctl.role"

def run_labels(round_id: str, run_id: str, role: str | None = None) -> dict[str, str]:
    labels = {ROUND_LABEL: round_id, RUN_LABEL: run_id}
    if role:
        labels[ROLE_LABEL] = role
    return labels


def object_name(round_id: str, run_id: str, role: str) -> str:
    """`lc-<round>-<run>-<role>`: unique per run, meaningful to an operator, naming nobody."""
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", f"lc-{round_id}-{run_id}-{role}")


@dataclass
class Docker:
    """The engine's CLI (`docker …` or `podman …`), raising EngineError with the command's last line."""

    cli: list[str]
    engine: ContainerEngine | None = field(default=None, repr=False)
    """The engine the CLI belongs to (GPU options differ between docker and podman)."""

    @classmethod
    def detect(cls) -> Docker:
        engine = detect_engine()
        return cls(list(engine.cli), engine)

    def __call__(self, *args: str, check: bool = True, timeout: float | None = 120,
                 stdout: IO[Any] | int | None = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
        try:
            done = subprocess.run([*self.cli, *args], stdout=stdout, stderr=subprocess.PIPE, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise EngineError(f"docker {args[0]} timed out after {timeout:.0f}s") from None
        if check and done.returncode != 0:
            raise EngineError(f"docker {' '.join(args[:2])}: {done.stderr.strip().splitlines()[-1:] or ''}")
        return done

    def gpu_run_args(self, profile: Profile) -> list[str]:
        """The engine's own `run` options that give a container the profile's GPUs."""
        return (self.engine or detect_engine()).gpu_run_args(profile)

    def ok(self, *args: str, timeout: float | None = 30) -> bool:
        try:
            return self(*args, check=False, timeout=timeout).returncode == 0
        except EngineError:
            return False

    def image_present(self, tag: str) -> bool:
        return self.ok("image", "inspect", tag)

    def image_user(self, tag: str) -> str:
        done = self("image", "inspect", "--format", "{{.Config.User}}", tag)
        return done.stdout.strip()

    def image_workdir(self, tag: str) -> str:
        """The image's WORKDIR ("/" when it sets none, as `docker run` does)."""
        done = self("image", "inspect", "--format", "{{.Config.WorkingDir}}", tag)
        return done.stdout.strip() or "/"

    def running(self, name: str) -> bool:
        done = self("container", "inspect", "--format", "{{.State.Running}}", name, check=False)
        return done.stdout.strip() == "true"

    def labelled(self, labels: Mapping[str, str | None]) -> dict[str, list[str]]:
        """Names of containers, networks and volumes carrying all `labels` (None: any value)."""
        flt: list[str] = []
        for k, v in labels.items():
            flt += ["--filter", f"label={k}" + ("" if v is None else f"={v}")]
        return {
            "containers": self("ps", "-a", "--format", "{{.Names}}", *flt).stdout.split(),
            "networks": self("network", "ls", "--format", "{{.Name}}", *flt).stdout.split(),
            "volumes": self("volume", "ls", "--format", "{{.Name}}", *flt).stdout.split(),
        }

    def labelled_images(self, labels: Mapping[str, str | None]) -> list[str]:
        """Ids of images carrying all `labels`: only a run's committed agent filesystem (`docker
        commit` keeps the container's labels), never a built image (those carry no round label)."""
        flt: list[str] = []
        for k, v in labels.items():
            flt += ["--filter", f"label={k}" + ("" if v is None else f"={v}")]
        return sorted(set(self("image", "ls", "-q", "--no-trunc", *flt).stdout.split()))

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
        for net in found["networks"]:
            self("network", "rm", net, check=False)
        if found["volumes"]:
            self("volume", "rm", "-f", *found["volumes"], check=False)
        if images := self.labelled_images(labels):
            self("image", "rm", "-f", *images, check=False, timeout=120)
            found["images"] = images
        return found


def exec_env_flags(env: Mapping[str, str]) -> list[str]:
    flags: list[str] = []
    for k, v in sorted(env.items()):
        flags += ["-e", f"{k}={v}"]
    return flags


def label_flags(labels: Mapping[str, str]) -> list[str]:
    flags: list[str] = []
    for k, v in labels.items():
        flags += ["--label", f"{k}={v}"]
    return flags


