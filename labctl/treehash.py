"""Content hashes of files and directory trees, for pinning local inputs in `lab.lock`.

A tree hash must say "same bytes, same hash" on any machine, so it covers only what a checkout
reproduces — like git: each file's relative path, whether it is executable, and its bytes; each
symlink's path and target text (never followed). It ignores mtimes, owners, groups, permission bits
other than the owner's execute bit, and empty directories (git cannot carry them, so a committed
task cloned elsewhere would otherwise hash differently from the author's working tree).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from labctl.errors import LabctlError

CHUNK = 1 << 20
DEFAULT_IGNORED = frozenset({".git", "__pycache__"})
"""Names skipped at any depth: VCS metadata and bytecode caches are never content. `node_modules`
is deliberately not here: a task that ships one depends on its bytes."""
FORMAT = b"labctl-tree-v1\n"
"""Leads the hashed stream, so a future change of the record format cannot collide with this one."""

Ignore = Callable[[PurePosixPath], bool]
"""Takes a path relative to the tree root; True skips it (a directory: with everything below)."""


class TreeHashError(LabctlError, ValueError):
    """The tree holds something a hash cannot stand for (a socket, a device, a FIFO)."""


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks so multi-GB GGUFs do not fill memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def tree_entries(root: Path, *, ignore: Ignore | None = None) -> list[tuple[bytes, str, str]]:
    """Every file and symlink under `root` as (relative path bytes, kind, sha256 hex), sorted by path.

    kind is `f` (regular file), `x` (owner-executable file) or `l` (symlink; the hash is of its
    target text). Exposed so a caller can show *what* changed between two tree hashes.
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"not a directory: {root}")
    found: list[tuple[bytes, str, str]] = []
    _walk(root, PurePosixPath(), ignore, found)
    found.sort(key=lambda e: e[0])
    return found


def files_below(root: Path) -> Iterator[tuple[str, Path]]:
    """(relative posix path, path) of every file and symlink below `root`, in a stable order, never
    following a link (a symlinked directory is one entry): what a round's manifest and a bundle's
    index both list."""
    for top, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names) + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            path = Path(top) / name
            yield path.relative_to(root).as_posix(), path


def tree_sha256(path: Path, *, ignore: Ignore | None = None) -> str:
    """Hex sha256 standing for the tree's content (see the module docstring for what counts).

    `ignore` skips more paths in addition to DEFAULT_IGNORED (`.git`, `__pycache__` at any depth).
    Each record is `kind sha256 path NUL`: kind and hash are fixed-width and a path cannot contain
    NUL, so distinct trees cannot produce the same stream.
    """
    h = hashlib.sha256(FORMAT)
    for rel, kind, digest in tree_entries(path, ignore=ignore):
        h.update(f"{kind} {digest} ".encode() + rel + b"\0")
    return h.hexdigest()


def _walk(directory: Path, rel: PurePosixPath, ignore: Ignore | None,
          found: list[tuple[bytes, str, str]]) -> None:
    with os.scandir(directory) as it:
        entries = sorted(it, key=lambda e: os.fsencode(e.name))
    for entry in entries:
        if entry.name in DEFAULT_IGNORED:
            continue
        child = rel / entry.name
        if ignore is not None and ignore(child):
            continue
        st = entry.stat(follow_symlinks=False)
        name = os.fsencode(child.as_posix())
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(os.fsencode(entry.path))
            found.append((name, "l", hashlib.sha256(target).hexdigest()))
        elif stat.S_ISDIR(st.st_mode):
            _walk(Path(entry.path), child, ignore, found)
        elif stat.S_ISREG(st.st_mode):
            kind = "x" if st.st_mode & stat.S_IXUSR else "f"
            found.append((name, kind, file_sha256(Path(entry.path))))
        else:
            raise TreeHashError(f"cannot hash {entry.path}: not a file, directory or symlink")
