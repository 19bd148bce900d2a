"""The content-addressed model store: every GGUF byte labctl serves sits here under its sha256.

Why a store of our own rather than the Hugging Face cache: the lock pins models by sha256, and a
blob may only be used once its bytes are proven to have that hash. So nothing enters `blobs/`
without being hashed first (`admit`), blobs are read-only, and a file that fails the check is moved
to `quarantine/` with a note instead of being deleted (the evidence stays for a bug report).

Layout under the root (default `$LABCTL_STORE`, else `~/.cache/labctl/models`):

    blobs/sha256-<hex>                      the bytes, read-only, named by their hash
    links/hf/<owner>/<repo>/<commit>/<file> symlinks to blobs, for humans (and llama-server -m)
    links/generated/<name>.gguf             generated tiny models
    links/local/<sha12>/<file>              pointers to local GGUFs (never copied)
    partial/sha256-<hex>.part               a download in progress, named by the sha256 it must have:
                                            kept when a fetch is cut, continued by the next one
    partial/                                also files about to be admitted (generated, copied)
    quarantine/                             files whose hash did not match, each with a .json note

Hugging Face repos go under `links/hf/` so a repo owned by a user called `local` or `generated`
cannot collide with the other link kinds.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labctl.errors import LabctlError

__all__ = ["BlobInfo", "HashMismatch", "Store", "StoreError", "VerifyResult", "default_store_root",
           "sha256_file"]

HASH_BUFFER = 1 << 20
"""readinto() buffer of the hashing loop; 256 KiB … 8 MiB all run at hashlib.file_digest's speed here."""
_BLOB_RE = re.compile(r"^sha256-([0-9a-f]{64})$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
"""errno values that mean "the disk (or quota, or file size limit) is full"."""


class StoreError(LabctlError):
    """A store operation failed; the message is one line."""


class HashMismatch(StoreError):
    """A file's bytes did not match the expected sha256 / size; it now sits in quarantine."""

    def __init__(self, label: str, reason: str, quarantined: Path) -> None:
        super().__init__(f"{label}: {reason}; quarantined as {quarantined}")
        self.reason, self.quarantined = reason, quarantined


@dataclass
class BlobInfo:
    sha256: str
    size: int
    path: Path
    links: list[str] = field(default_factory=list)
    """Link paths relative to `links/` that point at this blob."""


@dataclass
class VerifyResult:
    sha256: str
    size: int
    ok: bool
    actual: str | None = None
    """The hash the bytes really have, when it differs."""
    quarantined: Path | None = None


def default_store_root() -> Path:
    """`$LABCTL_STORE`; else `models/` in the working directory when there is one (a lab repository:
    every lab in it shares the store); else `~/.cache/labctl/models`."""
    env = os.environ.get("LABCTL_STORE")
    if env:
        return Path(env).expanduser()
    here = Path.cwd() / "models"
    return here if here.is_dir() else Path.home() / ".cache" / "labctl" / "models"


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """sha256 hex of a file, streamed through one reused buffer (unbuffered readinto, no copies)."""
    h = hashlib.sha256()
    buf = bytearray(HASH_BUFFER)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        with contextlib.suppress(AttributeError, OSError):
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while n := f.readinto(buf):
            h.update(view[:n])
            if progress is not None:
                progress(n)
    return h.hexdigest()


def is_no_space(e: BaseException) -> bool:
    """Whether an exception (or one it was raised from) means the disk is full."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in NO_SPACE:
            return True
        cur = cur.__cause__ or cur.__context__
    return False


class Store:
    """A model store rooted at `root` (created on first write)."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_store_root()
        self.blobs = self.root / "blobs"
        self.links = self.root / "links"
        self.partial = self.root / "partial"
        self.quarantine = self.root / "quarantine"

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # ------------------------------------------------------------------ lookups

    def blob_path(self, sha256: str) -> Path:
        if not _SHA_RE.match(sha256):
            raise StoreError(f"not a sha256 hex digest: {sha256!r}")
        return self.blobs / f"sha256-{sha256}"

    def has(self, sha256: str, size: int | None = None) -> bool:
        """True when the blob is present (it was hashed on admission) and has the expected size."""
        try:
            st = self.blob_path(sha256).stat()
        except FileNotFoundError:
            return False
        return st.st_size == size if size is not None else True

    def staging_dir(self) -> Path:
        """A directory on the store's filesystem for files about to be admitted (rename, not copy)."""
        self.partial.mkdir(parents=True, exist_ok=True)
        return self.partial

    def partial_path(self, sha256: str) -> Path:
        """The partial download of the blob `sha256`: only ever a prefix of those bytes, so any later
        run may continue it (`labctl.lock.download`); admitted (hashed) when complete."""
        return self.staging_dir() / f"{self.blob_path(sha256).name}.part"

    @contextlib.contextmanager
    def partial_lock(self, sha256: str) -> Iterator[None]:
        """Hold the partial file of `sha256` alone: two fetches of one store (two terminals, two
        labs sharing a model) take turns instead of appending to the same file. The lock file is
        removed once the blob is in, never before (a waiter then finds the blob)."""
        lock = self.partial_path(sha256).with_suffix(".lock")
        with open(lock, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                if self.has(sha256):
                    lock.unlink(missing_ok=True)
                fcntl.flock(f, fcntl.LOCK_UN)

    # ---------------------------------------------------------------- admission

    def admit(self, tmp_file: Path, sha256: str, size: int, *, label: str = "") -> Path:
        """Hash `tmp_file`; when it has `size` bytes and hash `sha256`, move it into blobs/ (read-only).

        On a mismatch the file is moved to quarantine/ with a note and `HashMismatch` is raised;
        nothing unverified ever lands in blobs/. `label` (e.g. `contestant: file`) goes into messages.
        """
        tmp_file = Path(tmp_file)
        dest = self.blob_path(sha256)
        what = label or tmp_file.name
        actual_size = tmp_file.stat().st_size
        actual = sha256_file(tmp_file) if actual_size == size else None
        if actual_size != size or actual != sha256:
            note = {"label": label, "expected_sha256": sha256, "expected_size": size,
                    "actual_sha256": actual, "actual_size": actual_size, "source": str(tmp_file),
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            q = self._quarantine(tmp_file, note)
            why = (f"size {actual_size} != expected {size}" if actual is None
                   else f"sha256 {actual} != expected {sha256}")  # whole: they may differ anywhere
            raise HashMismatch(what, why, q)
        self.blobs.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(tmp_file, 0o444)
        if dest.exists():  # already there (another fetch got it first): keep one copy
            tmp_file.unlink()
            return dest
        try:
            os.replace(tmp_file, dest)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            self._copy_in(tmp_file, dest)
            tmp_file.unlink()
        return dest

    def admit_copy(self, src: Path, sha256: str, size: int, *, label: str = "") -> Path:
        """Like `admit`, for a file that must stay where it is: copied to staging first."""
        tmp = self.staging_dir() / f".copy-{sha256[:16]}-{os.getpid()}"
        try:
            shutil.copyfile(src, tmp)
            return self.admit(tmp, sha256, size, label=label)
        finally:
            tmp.unlink(missing_ok=True)

    def _copy_in(self, src: Path, dest: Path) -> None:
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        try:
            shutil.copyfile(src, tmp)
            os.chmod(tmp, 0o444)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def _quarantine(self, path: Path, note: dict[str, Any]) -> Path:
        self.quarantine.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        label = str(note.get("label") or "")  # "contestant: file" names the file better than a temp name
        name = Path(label.rsplit(": ", 1)[-1]).name if ": " in label else path.name
        base = self.quarantine / f"{stamp}-{str(note.get('expected_sha256'))[:16]}-{name}"
        dest, n = base, 1
        while dest.exists():
            dest, n = base.with_name(f"{base.name}.{n}"), n + 1
        try:
            os.replace(path, dest)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            shutil.move(str(path), dest)
        dest.with_name(dest.name + ".json").write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")
        return dest

    # -------------------------------------------------------------------- links

    def link(self, rel: str, target: Path) -> Path:
        """Create (or replace) the symlink `links/<rel>` → `target` (relative when inside the store)."""
        if not rel or rel.startswith("/") or ".." in Path(rel).parts:
            raise StoreError(f"bad link path {rel!r}")
        dest = self.links / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        target = Path(target).absolute()
        inside = target.is_relative_to(self.root.absolute())
        pointer = os.path.relpath(target, dest.parent.absolute()) if inside else str(target)
        if dest.is_symlink() and os.readlink(dest) == pointer:
            return dest
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.lnk")
        tmp.unlink(missing_ok=True)
        os.symlink(pointer, tmp)
        os.replace(tmp, dest)
        return dest

    @staticmethod
    def hf_link(repo: str, commit: str, name: str) -> str:
        """Link path (under links/) of a Hugging Face file at a commit."""
        return f"hf/{repo}/{commit}/{name}"

    def _walk_links(self) -> Iterable[Path]:
        if self.links.is_dir():
            for dirpath, _dirs, files in os.walk(self.links):
                for f in files:
                    p = Path(dirpath) / f
                    if p.is_symlink():
                        yield p

    # -------------------------------------------------------------- inspection

    def ls(self) -> list[BlobInfo]:
        """Every blob with its size and the links pointing at it, sorted by hash."""
        blobs: dict[str, BlobInfo] = {}
        if self.blobs.is_dir():
            for p in self.blobs.iterdir():
                m = _BLOB_RE.match(p.name)
                if m and p.is_file():
                    blobs[m.group(1)] = BlobInfo(m.group(1), p.stat().st_size, p)
        for link in self._walk_links():
            m = _BLOB_RE.match(Path(os.readlink(link)).name)
            if m and m.group(1) in blobs:
                blobs[m.group(1)].links.append(link.relative_to(self.links).as_posix())
        for b in blobs.values():
            b.links.sort()
        return sorted(blobs.values(), key=lambda b: b.sha256)

    def verify(self, sha256: str | None = None, *, quarantine_bad: bool = True,
               progress: Callable[[int], None] | None = None) -> list[VerifyResult]:
        """Re-hash one blob or all; a blob whose bytes changed is moved to quarantine (by default)."""
        if sha256 is not None and not self.has(sha256):
            raise StoreError(f"no blob sha256-{sha256} in {self.blobs}")
        shas = [sha256] if sha256 is not None else [b.sha256 for b in self.ls()]
        results = []
        for sha in shas:
            path = self.blob_path(sha)
            size = path.stat().st_size
            actual = sha256_file(path, progress)
            if actual == sha:
                results.append(VerifyResult(sha, size, True))
                continue
            q = None
            if quarantine_bad:
                q = self._quarantine(path, {
                    "label": "verify", "expected_sha256": sha, "actual_sha256": actual, "actual_size": size,
                    "source": str(path), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            results.append(VerifyResult(sha, size, False, actual, q))
        return results

    # ---------------------------------------------------------------------- gc

    def gc(self, referenced: set[str], *, dry_run: bool = False) -> int:
        """Remove blobs whose sha256 is not in `referenced`, partial downloads of them, then dangling
        links; returns bytes freed. A partial download of a referenced blob stays: fetch resumes it."""
        freed = 0
        for b in self.ls():
            if b.sha256 in referenced:
                continue
            freed += b.size
            if not dry_run:
                b.path.unlink(missing_ok=True)
        for part in sorted(self.partial.glob("sha256-*.part")) if self.partial.is_dir() else []:
            if part.name.removeprefix("sha256-").removesuffix(".part") in referenced:
                continue
            freed += part.stat().st_size
            if not dry_run:
                part.unlink(missing_ok=True)
                part.with_suffix(".lock").unlink(missing_ok=True)
        if not dry_run:
            for link in list(self._walk_links()):
                if not link.exists():  # dangling: its blob was just removed, or a local file is gone
                    link.unlink(missing_ok=True)
            self._prune_empty(self.links)
        return freed

    def unreferenced(self, referenced: set[str]) -> list[BlobInfo]:
        """What `gc(referenced)` would remove."""
        return [b for b in self.ls() if b.sha256 not in referenced]

    @staticmethod
    def _prune_empty(top: Path) -> None:
        if not top.is_dir():
            return
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda t: -len(t[0])):
            if Path(dirpath) != top:
                with contextlib.suppress(OSError):
                    os.rmdir(dirpath)
