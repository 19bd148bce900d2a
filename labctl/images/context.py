"""Build inputs for labctl's images that are plain files: staged contexts, pinned Dockerfiles and
labctl's own dependency pins. Kept apart from labctl.images.specs so each stays readable; nothing here
talks to a container engine.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path, PurePosixPath

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from labctl.treehash import tree_sha256

TRANSPORT_FILES = frozenset({"ca.crt", "dist"})
"""Top-level names in a staged context that do not enter its hash: the CA bundle is transport (it
changes how bytes arrive, not which), and dist/ holds files already pinned by sha256 in the inputs."""


def transport_ignore(rel: PurePosixPath) -> bool:
    return len(rel.parts) >= 1 and rel.parts[0] in TRANSPORT_FILES


def stage_context(cache: Path, name: str, files: Mapping[str, bytes | Path]) -> tuple[Path, str]:
    """Write a build context into the cache, content-addressed: `contexts/<name>-<hash16>`.

    `files` maps relative paths to bytes, a file, or a directory (copied without __pycache__).
    Returns (directory, tree hash without transport files). The same content always lands in the
    same directory, so repeated builds do not pile up copies and concurrent ones do not collide.
    """
    root = cache / "contexts"
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    # Listing .dockerignore in itself makes the daemon drop it from the context: the classic builder's
    # CLI appends a random name to it on every build, which would defeat the cache of `COPY .`.
    files = {".dockerignore": b".dockerignore\n", **files}
    try:
        for rel, content in sorted(files.items()):
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                dest.write_bytes(content)
            elif content.is_dir():
                shutil.copytree(content, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copyfile(content, dest)
        digest = tree_sha256(tmp, ignore=transport_ignore)
        final = root / f"{name}-{digest[:16]}"
        if not final.exists():
            try:
                tmp.rename(final)
            except OSError:  # another labctl staged the same content meanwhile: same bytes, keep it
                if not final.is_dir():
                    raise
        return final, digest
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def build_context(staged: Path, ca_bundle: Path | None, dists: Mapping[str, Path] | None = None) -> Path:
    """A private copy of a staged context for one build, plus the transport files: the CA bundle as
    `ca.crt` (an empty file when none, so the Dockerfile's COPY always works) and the verified
    distributions under `dist/`. Staged contexts are shared by every labctl on the machine, so a
    build never writes into one; the caller removes the copy after the build."""
    tmp = Path(tempfile.mkdtemp(prefix=f".build-{staged.name}.", dir=staged.parent))
    try:
        shutil.copytree(staged, tmp, dirs_exist_ok=True, copy_function=_link_or_copy)
        (tmp / "ca.crt").write_bytes(ca_bundle.read_bytes() if ca_bundle is not None else b"")
        if dists:
            (tmp / "dist").mkdir(exist_ok=True)
            for filename, path in dists.items():
                if path.is_dir():  # an npm cache: a tree of content-addressed files
                    shutil.copytree(path, tmp / "dist" / filename, copy_function=_link_or_copy)
                else:
                    _link_or_copy(str(path), str(tmp / "dist" / filename))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _link_or_copy(src: str, dst: str) -> None:
    """Hard link (instant, no extra space) when on the same filesystem, else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def dependency_pins(root: str = "labctl") -> list[str]:
    """`name==version` for every distribution in `root`'s dependency closure, as installed here.

    The labctl image installs exactly these (markers are evaluated for this interpreter; the image's
    Debian Python is 3.11 like the project's), so the image matches the labctl that built it.
    """
    pins: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    while todo:
        name, extras = todo.pop()
        if (canonicalize_name(name), extras) in seen:
            continue
        seen.add((canonicalize_name(name), extras))
        for spec in metadata.distribution(name).requires or []:
            req = Requirement(spec)
            if req.marker is not None and not any(req.marker.evaluate({"extra": e})
                                                  for e in (extras or {""})):
                continue
            try:
                dist = metadata.distribution(req.name)
            except metadata.PackageNotFoundError:
                raise RuntimeError(f"{name} needs {req.name}, which is not installed here") from None
            pins[canonicalize_name(req.name)] = dist.version
            todo.append((req.name, frozenset(req.extras)))
    return [f"{n}=={v}" for n, v in sorted(pins.items())]


_VAR = re.compile(r"\$(?:\{(\w+)(?::-([^}]*))?\}|(\w+))")


def _substitute(value: str, args: Mapping[str, str]) -> str:
    return _VAR.sub(lambda m: args.get(m.group(1) or m.group(3), m.group(2) or ""), value)


def pin_dockerfile(text: str, pins: Mapping[str, str]) -> str:
    """Rewrite a task Dockerfile's external images to their pinned references.

    `pins` maps an image as written (after global ARG defaults are substituted, the key used in
    lab.lock) to what the build must use (`registry/repo@sha256:…`, through the mirror map). FROM
    lines and `COPY/ADD --from=<image>` are rewritten; everything else is kept byte for byte.
    """
    args: dict[str, str] = {}
    seen_from = False
    out: list[str] = []
    for line in text.splitlines(keepends=True):
        body = line.strip()
        word = body.split(None, 1)[0].upper() if body and not body.startswith("#") else ""
        if word == "ARG" and not seen_from:
            for token in body.split()[1:]:
                key, _, default = token.partition("=")
                args[key] = default.strip("\"'")
        elif word == "FROM":
            seen_from = True
            tokens = body.split()
            idx = next((i for i, t in enumerate(tokens[1:], 1) if not t.startswith("--")), None)
            if idx is not None and _substitute(tokens[idx], args) in pins:
                tokens[idx] = pins[_substitute(tokens[idx], args)]
                line = line[: len(line) - len(line.lstrip())] + " ".join(tokens) + "\n"
        elif word in ("COPY", "ADD") and "--from=" in body:
            tokens = body.split()
            for i, token in enumerate(tokens):
                image = _substitute(token.removeprefix("--from="), args)
                if token.startswith("--from=") and image in pins:
                    tokens[i] = f"--from={pins[image]}"
            line = line[: len(line) - len(line.lstrip())] + " ".join(tokens) + "\n"
        out.append(line)
    return "".join(out)
