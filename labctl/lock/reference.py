"""Image references as Docker qualifies them (`ubuntu:24.04` → `docker.io/library/ubuntu:24.04`), and
the error an image that cannot be named or pinned raises.

Why its own module: both the registry client (`labctl.lock.registry`, which pins digests through the
mirror map) and the mirror map itself (`labctl.lock.mirrors`, whose keys are spelled like images)
need the one spelling; with it here the mirror map sits below the registry client instead of each
importing the other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from labctl.errors import LabctlError

DOCKER_HUB = "docker.io"
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")


class RegistryError(LabctlError, RuntimeError):
    """An image that cannot be pinned: unreachable registry, unknown tag, or access denied."""


@dataclass(frozen=True)
class ImageRef:
    """A fully qualified image reference: `docker.io/library/debian:bookworm-slim`."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        tail = (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")
        return f"{self.registry}/{self.repository}{tail}"


def parse_reference(reference: str) -> ImageRef:
    """Qualify a reference the way Docker does: no registry means Docker Hub, a one-part Hub name
    means `library/`, no tag means `latest`. A digest, when given, is what the reference means."""
    rest, _, digest = reference.strip().partition("@")
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, remainder
    else:
        registry, path = DOCKER_HUB, rest
    if registry == "index.docker.io":
        registry = DOCKER_HUB
    name, colon, tag = path.rpartition(":") if ":" in path.rsplit("/", 1)[-1] else (path, "", "")
    if registry == DOCKER_HUB and "/" not in name:
        name = f"library/{name}"
    if not _NAME.match(name) or (colon and not _TAG.match(tag)) or (digest and not DIGEST.match(digest)):
        raise RegistryError(f"not a valid image reference: {reference!r}")
    return ImageRef(registry, name, tag or (None if digest else "latest"), digest or None)


__all__ = ["DIGEST", "DOCKER_HUB", "ImageRef", "RegistryError", "parse_reference"]
