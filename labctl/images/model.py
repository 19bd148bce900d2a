"""What an image is to labctl: an `ImageSpec` named by the hash of everything that determines it,
the settings a build runs with, and the labels every labctl image carries."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from labctl.errors import LabctlError
from labctl.lock.sdist import cache_root
from labctl.treehash import tree_sha256

FORMAT = "labctl-image-v1"
"""Leads every hashed input document; bump it when the meaning of an input changes."""
TAG_LEN = 20
NAMESPACE_ENV = "LABCTL_IMAGE_NAMESPACE"
CA_BUNDLE_ENV = "LABCTL_CA_BUNDLE"
PIP_INDEX_ENV = "LABCTL_PIP_INDEX_URL"
NPM_REGISTRY_ENV = "LABCTL_NPM_REGISTRY"
BUNDLED_IMAGES = Path(__file__).resolve().parent / "dockerfiles"
"""labctl's own images/ (the repository's; a lab may bring its own images/ next to it)."""

L_IMAGE = "org.labctl.image"
L_INPUT = "org.labctl.input-hash"
L_LAB = "org.labctl.lab"
L_LOCK = "org.labctl.lock-sha256"
L_LLAMA_VERSION = "org.labctl.llama-server.version"
L_STAGE = "org.labctl.stage"
"""On intermediate stages the classic builder leaves behind: `context` (never a cache hit, removed
right after its build) or `compile` (llama.cpp's compiled tree: layer cache, see prune_build_stages)."""
L_BUILD_ID = "org.labctl.build-id"
"""A nonce per build on those stages, so a build cleans up only its own leftovers even while another
labctl builds the same image."""

Log = Callable[[str], None]


class ImageError(LabctlError, ValueError):
    """A lab and lock that cannot be turned into images (something unlocked, or drift)."""


@dataclass(frozen=True)
class BuildSettings:
    """How to build, as opposed to what: none of this enters an input hash."""

    namespace: str = "labctl"
    """Repository prefix of the tags (tests use their own, so they never touch a user's images)."""
    mirrors: dict[str, str] = field(default_factory=dict)
    """Image mirror map (prefix → replacement), applied to registry-pinned bases."""
    ca_bundle: Path | None = None
    """PEM bundle trusted by pip/npm during agent and labctl image builds."""
    pip_index_url: str | None = None
    npm_registry: str | None = None
    extra_labels: dict[str, str] = field(default_factory=dict)
    """More labels on every image and probe container (tests: the cleanup label)."""
    cache: Path = field(default_factory=cache_root)


@dataclass(frozen=True)
class VersionProbe:
    """Build `target` first, run `argv` in it, pass the output as build arg `build_arg` to the final
    stage (which turns it into a label) and record it under `label`."""

    target: str
    argv: list[str]
    build_arg: str
    label: str


@dataclass
class ImageSpec:
    """One image to build: its Dockerfile, context, args and labels, and what pins it."""

    name: str
    repository: str
    dockerfile: Path
    context: Path
    build_args: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    """Labels that describe content (hashed)."""
    inputs: dict[str, str] = field(default_factory=dict)
    """Pins that are not visible in the files: locked digests, commits, distribution hashes."""
    context_id: str | None = None
    """Stands for the context when its identity is known without reading it (sdist sha, commit)."""
    target: str | None = None
    depends_on: list[str] = field(default_factory=list)
    unhashed_args: dict[str, str] = field(default_factory=dict)
    """Build args outside the hash: transport (package index: how bytes arrive, not which) and
    references to dependency images, whose input hashes are in `inputs` instead of their tags (the
    tag carries the namespace, which names images but does not determine them)."""
    meta_labels: dict[str, str] = field(default_factory=dict)
    """Bookkeeping labels (lab, lock hash, test labels): not hashed."""
    local_bases: dict[str, str] = field(default_factory=dict)
    """Local-only base images (lock `source: local`) → their locked image id, checked before a build."""
    pull_help: dict[str, str] = field(default_factory=dict)
    """Each base, by the name the build uses → how a build that cannot get it is fixed (the image as
    written, the mirror, the mirror map, the lab.yaml line): added to a failure to pull or find it."""
    prepare: Callable[[Log], dict[str, str]] | None = None
    """Fetch/verify what the context needs (network, cache); returns derived build args (not hashed:
    they follow from the hashed source, e.g. the commit named in an sdist's changelog)."""
    probe: VersionProbe | None = None
    build_dir: Path | None = None
    """Set by `prepare` when the build must read a private copy of `context` (with transport files);
    removed after the build. Not an input: `context` is what the hash covers."""
    _hash: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.labels = {L_IMAGE: self.name, "org.opencontainers.image.title": self.name, **self.labels}

    def context_hash(self) -> str:
        if self.context_id is not None:
            return self.context_id
        return tree_sha256(self.context)

    def input_hash(self) -> str:
        """sha256 of a canonical JSON of every input. Memoized: a spec is complete when lab_images
        returns it (a dependent's inputs already hold this hash), so do not mutate it afterwards."""
        if self._hash is None:
            doc = {
                "format": FORMAT, "name": self.name, "target": self.target,
                "dockerfile_sha256": hashlib.sha256(self.dockerfile.read_bytes()).hexdigest(),
                "build_args": self.build_args, "labels": self.labels, "inputs": self.inputs,
                "context": self.context_hash(),
            }
            blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
            self._hash = hashlib.sha256(blob).hexdigest()
        return self._hash

    @property
    def tag(self) -> str:
        return f"{self.repository}:{self.input_hash()[:TAG_LEN]}"
