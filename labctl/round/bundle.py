"""The bundle format: one deterministic tar of files and symlinks with an index of their hashes.

Why a format of our own on plain tar: a shared lab or round must be *one* file whose sha256 is
worth publishing, so the same inputs must give the same bytes on any machine. `pack` writes entries
in sorted order with mtime 0, owner 0:0 and no user or group names, modes normalised to 0644 / 0755
(only the owner's execute bit is content, as in `labctl.treehash`), and no compression (gzip would
add a timestamp). The index `labctl-bundle.json` comes first and lists every other entry with its
kind, sha256 and size; `unpack` writes a bundle only when it is safe (no absolute path, no `..`, no
link out of the bundle, no device or hard link, no entry twice, nothing below a symlink) and
`index_problems` says where content and index disagree.

The index is not a signature: whoever edits a file can edit the index too. It proves the file was
not damaged in transit; the round's manifest, seal commitment and lock are what a tamperer cannot
rewrite consistently (`labctl verify`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from labctl.errors import LabctlError
from labctl.treehash import file_sha256, files_below

INDEX = "labctl-bundle.json"
FORMAT: Final = "labctl-bundle/1"
Kind = Literal["f", "x", "l"]
"""f: file; x: owner-executable file; l: symlink (sha256 and size are of its target text)."""


class BundleError(LabctlError):
    """A bundle cannot be written or is refused; one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class IndexEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Kind
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class Index(BaseModel):
    """`labctl-bundle.json`: what the bundle is and every entry's hash."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    format: Literal["labctl-bundle/1"] = FORMAT
    kind: Literal["lab", "round"]
    lab: str
    """Path of the lab file inside the bundle (a round bundle: below `lab/`)."""
    round: str | None = None
    """The round id (round bundles): the round directory is `round/<id>/`."""
    files: dict[str, IndexEntry]
    """Every entry but the index itself: posix path → kind, sha256, size."""

    @field_validator("lab")
    @classmethod
    def _lab_inside(cls, v: str) -> str:
        if (why := check_name(v)) is not None:  # a bundle names no file outside itself
            raise ValueError(f"lab path {v!r}: {why}")
        return v

    @field_validator("round")
    @classmethod
    def _round_is_a_name(cls, v: str | None) -> str | None:
        if v is not None and (v in (".", "..") or not re.fullmatch(r"[A-Za-z0-9._-]+", v)):
            raise ValueError(f"round id {v!r} is not a plain name")
        return v

    def text(self) -> bytes:
        data = self.model_dump(mode="json", exclude_none=True)
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


@dataclass(frozen=True)
class Source:
    """One entry to pack: a file (or symlink) on disk, or bytes given directly."""

    path: Path | None = None
    data: bytes | None = None


def entry_of(path: Path) -> IndexEntry:
    """Kind, sha256 and size of a file or symlink on disk (a symlink is never followed)."""
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        target = os.fsencode(os.readlink(path))
        return IndexEntry(kind="l", sha256=hashlib.sha256(target).hexdigest(), size=len(target))
    if not stat.S_ISREG(st.st_mode):
        raise BundleError([f"{path}: not a file or symlink"])
    return IndexEntry(kind="x" if st.st_mode & stat.S_IXUSR else "f", sha256=file_sha256(path),
                      size=st.st_size)


def check_name(name: str) -> str | None:
    """Why `name` cannot be an entry of a bundle, or None when it is a plain relative path."""
    p = PurePosixPath(name)
    if not name or name.startswith("/") or p.is_absolute():
        return "absolute path"
    if "\\" in name or "\0" in name:
        return "backslash or NUL in the name"
    if any(part in ("..", ".", "") for part in name.split("/")):
        return "'..', '.' or an empty part in the path"
    return None


def link_escapes(name: str, target: str) -> bool:
    """Whether symlink `name` → `target` points outside the bundle (absolute, or `..` past its root)."""
    if target.startswith("/") or not target:
        return True
    depth = len(PurePosixPath(name).parts) - 1
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def hash_sources(sources: dict[str, Source]) -> dict[str, IndexEntry]:
    """The index entries of `sources` (hashing every file); refuses names and links a bundle
    cannot hold."""
    problems = [f"{name}: {why}" for name in sources if (why := check_name(name))]
    if INDEX in sources:
        problems.append(f"{INDEX}: reserved for the index")
    files: dict[str, IndexEntry] = {}
    for name, src in sorted(sources.items()):
        if src.data is not None:
            digest = hashlib.sha256(src.data).hexdigest()
            files[name] = IndexEntry(kind="f", sha256=digest, size=len(src.data))
            continue
        assert src.path is not None
        files[name] = entry_of(src.path)
        if files[name].kind == "l" and link_escapes(name, os.readlink(src.path)):
            problems.append(f"{src.path}: symlink to {os.readlink(src.path)} points outside the bundle")
    if problems:
        raise BundleError(problems)
    return files


def pack(out: Path, index: Index, sources: dict[str, Source]) -> str:
    """Write the bundle: the index, then every source in path order; returns the tar's sha256.
    A file-system failure is a BundleError ("cannot write the bundle: …").

    `index.files` must be `hash_sources(sources)` (a file that changed since is caught when the
    bundle is unpacked: its bytes no longer match the index).
    """
    if set(index.files) != set(sources):
        raise BundleError(["the index does not list exactly the entries to pack"])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with open(tmp, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _add(tar, INDEX, "f", data=index.text())
            for name, src in sorted(sources.items()):
                e = index.files[name]
                if src.data is not None:
                    _add(tar, name, "f", data=src.data)
                elif e.kind == "l":
                    assert src.path is not None
                    _add(tar, name, "l", target=os.readlink(src.path))
                else:
                    assert src.path is not None
                    with open(src.path, "rb") as f:
                        _add(tar, name, e.kind, stream=f, size=e.size)
        tmp.replace(out)
    except OSError as e:  # a full disk, a read-only target, a source gone since it was hashed
        raise BundleError([f"cannot write the bundle: {e}"]) from e
    finally:
        tmp.unlink(missing_ok=True)
    return file_sha256(out)


def _add(tar: tarfile.TarFile, name: str, kind: Kind, *, data: bytes | None = None,
         stream: Any = None, size: int = 0, target: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    if kind == "l":
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
        tar.addfile(info)
        return
    info.mode = 0o755 if kind == "x" else 0o644
    if data is not None:
        stream, size = io.BytesIO(data), len(data)
    info.size = size
    tar.addfile(info, stream)


def unpack(bundle: Path, dest: Path) -> Index:
    """Write the bundle's entries under `dest` (created; must not exist) and return its index.

    Refuses (BundleError, nothing left behind) an unsafe entry or a bundle without a valid index;
    does not compare content with the index: `index_problems` does.
    """
    if dest.exists():
        raise BundleError([f"{dest} exists: unpack into a new directory"])
    try:
        tar = tarfile.open(bundle, mode="r:")  # noqa: SIM115 (closed by the `with` below)
    except (OSError, tarfile.TarError) as e:
        raise BundleError([f"{bundle}: not a tar bundle ({e})"]) from None
    with tar:
        try:
            members = tar.getmembers()
        except tarfile.TarError as e:
            raise BundleError([f"{bundle}: damaged tar ({e})"]) from None
        problems = _unsafe(members)
        if problems:
            raise BundleError([f"{bundle}: {p}" for p in problems])
        dest.mkdir(parents=True)
        try:
            for m in members:
                _write(tar, m, dest)
            return read_index(dest, bundle)
        except OSError as e:
            shutil.rmtree(dest, ignore_errors=True)
            raise BundleError([f"{bundle}: cannot unpack: {e}"]) from None
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise


def _unsafe(members: list[tarfile.TarInfo]) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    links: set[str] = set()
    for m in members:
        name = m.name
        if (why := check_name(name)) is not None:
            problems.append(f"{name}: refused: {why}")
            continue
        if name in seen:
            problems.append(f"{name}: refused: appears twice")
        seen.add(name)
        if any(str(parent) in links for parent in PurePosixPath(name).parents):
            problems.append(f"{name}: refused: lies below a symlink of the bundle")
        if m.issym():
            links.add(name)
            if link_escapes(name, m.linkname):
                problems.append(f"{name}: refused: symlink to {m.linkname} points outside the bundle")
        elif not (m.isreg() or m.isdir()):
            problems.append(f"{name}: refused: not a file, directory or symlink")
    if not members or members[0].name != INDEX:
        problems.append(f"no {INDEX} first: not a labctl bundle")
    return problems


def _write(tar: tarfile.TarFile, m: tarfile.TarInfo, dest: Path) -> None:
    path = dest.joinpath(*m.name.split("/"))
    if m.isdir():
        path.mkdir(parents=True, exist_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if m.issym():
        os.symlink(m.linkname, path)
        return
    src = tar.extractfile(m)
    assert src is not None
    with src, open(path, "xb") as f:  # x: never through a file or link already there
        while chunk := src.read(1 << 20):
            f.write(chunk)
    os.chmod(path, 0o755 if m.mode & stat.S_IXUSR else 0o644)


def read_index(root: Path, bundle: Path | str = "") -> Index:
    """The index of an unpacked bundle; BundleError when it is missing or not an index."""
    try:
        return Index.model_validate_json((root / INDEX).read_bytes())
    except ValidationError as e:
        why = "; ".join(f"{'.'.join(map(str, x['loc'])) or 'index'}: {x['msg']}" for x in e.errors())
        raise BundleError([f"{bundle or root}: {INDEX} is not a bundle index: {why}"]) from None
    except OSError as e:
        raise BundleError([f"{bundle or root}: {INDEX} is not a bundle index: {e}"]) from None


def scan(root: Path) -> dict[str, IndexEntry]:
    """Every file and symlink below `root` (the index itself excluded), never following a link."""
    found = {rel: entry_of(path) for rel, path in files_below(root) if rel != INDEX}
    return dict(sorted(found.items()))


def index_problems(root: Path, index: Index) -> list[tuple[str, str]]:
    """(path, what) for every entry whose content differs from the index, is missing or unlisted."""
    actual = scan(root)
    out: list[tuple[str, str]] = []
    for rel, want in index.files.items():
        got = actual.get(rel)
        if got is None:
            out.append((rel, "missing (listed in the bundle index)"))
        elif got != want:
            what = (f"kind {got.kind}, the index says {want.kind}" if got.kind != want.kind else
                    f"sha256 {got.sha256[:12]}… ({got.size} B), the index says {want.sha256[:12]}… "
                    f"({want.size} B)")
            out.append((rel, f"differs from the bundle index: {what}"))
    out += [(rel, "not in the bundle index") for rel in actual if rel not in index.files]
    return out


__all__ = ["INDEX", "BundleError", "Index", "IndexEntry", "Source", "check_name", "entry_of", "hash_sources",
           "index_problems", "link_escapes", "pack", "read_index", "scan", "unpack"]
