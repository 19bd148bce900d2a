"""The image mirror map (`build.image_mirrors` in the lab, `image_mirrors` in a profile): one spelling
for its keys and for image references, which mirror an image goes through, and the words that tell
a user how to fix an image that cannot be pulled or pinned.

Keys are written the way people write images: `ubuntu:24.04`, `library/ubuntu:24.04` and
`docker.io/library/ubuntu:24.04` are one key (Docker's own qualification, `labctl.lock.reference
.parse_reference`, applied to both sides); a key without a tag (`ubuntu`, `ghcr.io/org/tool`) maps
every tag of that repository, and a key ending in `/` (`docker.io/`, `nvidia/`, `ghcr.io/org/`) is a
prefix. The value replaces what the key matched: a whole image for a whole image
(`"ubuntu:24.04": "debian:bookworm-slim"`), a prefix for a prefix (`"docker.io/":
"registry.lan:5000/hub/"`). A value may name an image that exists only in the local engine (a tag,
or an image id `sha256:…`): `labctl lock` then pins its local image id.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from labctl.lock.reference import DOCKER_HUB, RegistryError, parse_reference

IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}$")
SUGGESTED_LOCAL = "debian:bookworm-slim"
"""The base of labctl's own images: wherever labctl builds, the engine has it, so it is the mirror
an error suggests when the user has not named one that works."""


def _explicit_tag(text: str) -> bool:
    last = text.split("@", 1)[0].rsplit("/", 1)[-1]
    return ":" in last


def normal_key(text: str) -> str:
    """The one spelling of a mirror key: `ubuntu:24.04` → `docker.io/library/ubuntu:24.04`,
    `ubuntu` → `docker.io/library/ubuntu` (every tag), `nvidia/` → `docker.io/nvidia/` (a prefix)."""
    t = text.strip()
    if t.endswith("/"):
        first, _, rest = t.partition("/")
        if first in (DOCKER_HUB, "index.docker.io"):
            return f"{DOCKER_HUB}/{rest}"
        if "." in first or ":" in first or first == "localhost":
            return t
        return f"{DOCKER_HUB}/{t}"
    ref = parse_reference(t)
    if _explicit_tag(t) or ref.digest:
        return str(ref)
    return f"{ref.registry}/{ref.repository}"


def normal_reference(reference: str) -> str:
    """An image reference as keys are matched against it: qualified, `latest` when untagged."""
    return str(parse_reference(reference))


def _matched(full: str, key: str) -> int:
    """Length of `full` that `key` matches (0: no match); a match must end at a name boundary."""
    if not full.startswith(key):
        return 0
    if key.endswith(("/", ":", "@")) or full[len(key):len(key) + 1] in ("", "/", ":", "@"):
        return len(key)
    return 0


def mirror_of(reference: str, mirrors: Mapping[str, str] | None) -> tuple[str, str] | None:
    """(the key that matched, as written; the image to use instead, as the build will name it) for
    the longest key matching `reference`, or None. A key matches in its normal spelling or as written
    (`docker.io/nvidia` is the `nvidia` namespace to older labs)."""
    if not mirrors:
        return None
    full = normal_reference(reference)
    best: tuple[int, str, int] | None = None  # (matched length, key, length of the key's form)
    for key in mirrors:
        try:
            forms = {normal_key(key), key.strip()}
        except RegistryError:
            raise RegistryError(f"image_mirrors key {key!r} is not an image name or prefix") from None
        for form in forms:
            n = _matched(full, form)
            if n and (best is None or n >= best[0]):  # equal: the later key (the profile's) wins
                best = (n, key, n)
    if best is None:
        return None
    n, key, _ = best
    value, rest = mirrors[key].strip(), full[n:]
    if IMAGE_ID.match(value) and rest:
        raise RegistryError(f"image_mirrors {key!r}: an image id ({value[:19]}…) can only replace a whole "
                            f"image (a key with a tag), not the prefix of {reference}")
    return key, value + rest


def mirror_target(reference: str, mirrors: Mapping[str, str] | None) -> str | None:
    """The image `reference` is built from instead, or None when no key matches."""
    found = mirror_of(reference, mirrors)
    return found[1] if found else None


def describe(mirrors: Mapping[str, str] | None) -> str:
    """The mirror map as an error shows it (flow-style YAML, which is also JSON)."""
    return json.dumps(dict(mirrors)) if mirrors else "{} (no mirrors)"


def fix_line(reference: str, mirror: str) -> str:
    """The lab.yaml line that maps `reference` to `mirror`, exactly as it can be pasted."""
    return f"build: {{image_mirrors: {{{json.dumps(reference)}: {json.dumps(mirror)}}}}}"


def suggestion(failed: str | None, local_exists: bool) -> str:
    """The mirror a fix line proposes: labctl's own base when the engine has it (and it is not the
    mirror that just failed), else a placeholder the user must fill in."""
    if local_exists and failed != SUGGESTED_LOCAL:
        return SUGGESTED_LOCAL
    return "<an image this engine has (docker images) or can pull>"


def how_to_fix(reference: str, mirrors: Mapping[str, str] | None, proposed: str) -> str:
    """The part of every "cannot pull / cannot pin" error that names the map and the fix."""
    return (f"mirror map (lab build.image_mirrors + profile image_mirrors): {describe(mirrors)}; "
            f"to build {reference} from another image, add to the lab: {fix_line(reference, proposed)}")


__all__ = ["IMAGE_ID", "describe", "fix_line", "how_to_fix", "mirror_of", "mirror_target", "normal_key",
           "normal_reference", "suggestion"]
