"""Bring every model of a lock into the store, proven by sha256, each byte downloaded at most once.

Why this shape: downloads go through the real `hf_hub_download` (pinned to the locked commit; it
honours HF_ENDPOINT / HF_TOKEN, follows the CDN redirect, and resumes with Range requests when a
connection drops mid-file) into a Hugging Face cache that lives *inside* the store (`partial/hf`),
so the finished blob is renamed into `blobs/`, never copied: one copy on disk. The store admits it
only after hashing it against the lock; a mismatch is quarantined and fails naming contestant and
file. A blob already in the store is never fetched again, so a second `fetch` downloads 0 bytes.
Generated models are regenerated into the store; local files are only re-hashed (never copied).
"""

from __future__ import annotations

import shutil
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from huggingface_hub import hf_hub_download
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from labctl.hub import HubError, describe_error, generate_into, params_from_lock
from labctl.lockfile import FileLock, Lock, ModelLock
from labctl.store import HashMismatch, Store, sha256_file
from labctl.units import format_size

__all__ = ["FetchError", "FetchReport", "FetchedFile", "fetch", "model_files"]

Status = Literal["present", "downloaded", "generated", "local"]


@dataclass
class FetchedFile:
    contestant: str
    name: str
    sha256: str
    size: int
    status: Status
    """present: already in the store; downloaded; generated; local: a local file, re-hashed."""
    downloaded: int = 0
    """Bytes received from the network for this file (0 unless status is `downloaded`)."""
    path: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path) if self.path else None}


@dataclass
class FetchReport:
    store: Path
    files: list[FetchedFile]
    errors: list[HubError]

    @property
    def bytes_downloaded(self) -> int:
        return sum(f.downloaded for f in self.files)

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "store": str(self.store), "bytes_downloaded": self.bytes_downloaded,
                "files": [f.as_dict() for f in self.files],
                "errors": [{"contestant": e.contestant, "file": e.file, "error": e.message}
                           for e in self.errors]}


class FetchError(Exception):
    """Some files could not be fetched or verified; one line per failure, the report attached."""

    def __init__(self, report: FetchReport) -> None:
        self.report, self.errors = report, report.errors
        super().__init__("\n".join(str(e) for e in report.errors))


class _Meter:
    """Counts bytes received for one file and drives its progress bar (a tqdm stand-in for the hub)."""

    def __init__(self, progress: Progress | None, label: str, total: int) -> None:
        self.progress, self.downloaded = progress, 0
        self.task = progress.add_task(label, total=total) if progress is not None else None
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            if n > 0:
                self.downloaded += n
            if self.progress is not None and self.task is not None:
                self.progress.advance(self.task, n)

    def tqdm_class(self) -> type:
        meter = self

        class _Bar:  # what huggingface_hub's http_get calls on its progress bar
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                pass

            def update(self, n: float | None = 1) -> None:
                meter.add(int(n or 0))

            def __enter__(self) -> _Bar:
                return self

            def __exit__(self, *exc: object) -> None:
                return None

            def close(self) -> None:
                pass

        return _Bar


def _free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _fetch_hf(cid: str, model: ModelLock, f: FileLock, store: Store,
              progress: Progress | None) -> FetchedFile:
    assert model.repo is not None and model.commit is not None
    link = Store.hf_link(model.repo, model.commit, f.name)
    if store.has(f.sha256, f.size):
        store.link(link, store.blob_path(f.sha256))
        return FetchedFile(cid, f.name, f.sha256, f.size, "present", path=store.blob_path(f.sha256))
    staging = store.staging_dir()
    free = _free_bytes(staging)
    if free is not None and free < f.size:
        raise HubError(cid, f.name, f"disk full in {store.root}: needs {format_size(f.size)}, "
                                    f"{format_size(free)} free")
    meter = _Meter(progress, f"{cid}: {f.name}", f.size)
    try:
        pointer = Path(hf_hub_download(model.repo, f.name, revision=model.commit, cache_dir=staging / "hf",
                                       tqdm_class=meter.tqdm_class()))
    except Exception as e:
        raise HubError(cid, f.name, describe_error(e, repo=model.repo, revision=model.commit,
                                                   store=store.root)) from e
    src = pointer.resolve()
    try:
        blob = store.admit(src, f.sha256, f.size, label=f"{cid}: {f.name}")
    except HashMismatch as e:
        raise HubError(cid, f.name, f"downloaded bytes do not match the lock ({e.reason}); "
                                    f"quarantined as {e.quarantined}") from e
    except OSError as e:  # never leave an unverified file behind
        src.unlink(missing_ok=True)
        raise HubError(cid, f.name, describe_error(e, store=store.root)) from e
    finally:
        if pointer.is_symlink():  # the hub cache's snapshot link: its blob now lives in blobs/
            pointer.unlink(missing_ok=True)
    store.link(link, blob)
    return FetchedFile(cid, f.name, f.sha256, f.size, "downloaded", meter.downloaded, blob)


def _fetch_generated(cid: str, model: ModelLock, f: FileLock, store: Store) -> FetchedFile:
    link = f"generated/{f.name}"
    if store.has(f.sha256, f.size):
        store.link(link, store.blob_path(f.sha256))
        return FetchedFile(cid, f.name, f.sha256, f.size, "present", path=store.blob_path(f.sha256))
    blob, _, _ = generate_into(store, params_from_lock(model, cid), expect=f, contestant=cid)
    return FetchedFile(cid, f.name, f.sha256, f.size, "generated", path=blob)


def _local_path(model: ModelLock, f: FileLock, base_dir: Path) -> Path:
    first = Path(model.path or f.name)
    first = first if first.is_absolute() else base_dir / first
    return first.with_name(f.name)


def _verify_local(cid: str, model: ModelLock, f: FileLock, store: Store, base_dir: Path) -> FetchedFile:
    p = _local_path(model, f, base_dir)
    if not p.is_file():
        raise HubError(cid, f.name, f"no such file: {p}")
    size = p.stat().st_size
    if size != f.size:
        raise HubError(cid, f.name, f"local file changed since the lock: {size} bytes, locked {f.size}")
    sha = sha256_file(p)
    if sha != f.sha256:
        raise HubError(cid, f.name, f"local file changed since the lock: sha256 {sha[:12]}… != "
                                    f"locked {f.sha256[:12]}…; re-run `labctl lock`")
    store.link(f"local/{f.sha256[:12]}/{f.name}", p)
    return FetchedFile(cid, f.name, f.sha256, f.size, "local", path=p)


def fetch(lock: Lock, store: Store, *, jobs: int = 3, progress: bool = True, base_dir: Path | None = None,
          console: Console | None = None) -> FetchReport:
    """Fetch / generate / verify every locked model file; raises `FetchError` if any failed.

    Files with the same sha256 are fetched once. `base_dir` resolves local model paths (the lab's
    directory; default the current one). Progress bars go to `console` (default stderr).
    """
    base_dir = base_dir or Path.cwd()
    # fetch checks free space itself and fails with a clear error; the client's warning is noise
    warnings.filterwarnings("ignore", message="Not enough free disk space", category=UserWarning)
    tasks: list[tuple[str, Callable[[Progress | None], FetchedFile]]] = []
    aliases: dict[str, list[tuple[str, ModelLock, FileLock]]] = {}
    for cid, model in sorted(lock.models.items()):
        for f in model.files:
            if model.source == "path":
                tasks.append((cid, lambda _p, c=cid, m=model, f=f: _verify_local(c, m, f, store, base_dir)))
                continue
            if f.sha256 in aliases:  # another contestant already brings these bytes
                aliases[f.sha256].append((cid, model, f))
                continue
            aliases[f.sha256] = []
            if model.source == "hf":
                tasks.append((cid, lambda p, c=cid, m=model, f=f: _fetch_hf(c, m, f, store, p)))
            else:
                tasks.append((cid, lambda _p, c=cid, m=model, f=f: _fetch_generated(c, m, f, store)))

    results: list[FetchedFile] = []
    errors: list[HubError] = []
    bars = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=console or Console(stderr=True), disable=not progress,
                    transient=False)
    with bars, ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="fetch") as pool:
        futures = [(cid, pool.submit(run, bars if progress else None)) for cid, run in tasks]
        for cid, fut in futures:
            try:
                results.append(fut.result())
            except HubError as e:
                errors.append(e)
            except Exception as e:  # a bug or an unexpected client error: still one line, still named
                errors.append(HubError(cid, "?", describe_error(e, store=store.root)))

    done = {r.sha256: r for r in results}
    for sha, others in aliases.items():
        for cid, model, f in others:
            if sha not in done:
                continue  # the primary failed and is reported already
            if model.source == "hf" and model.repo and model.commit:
                store.link(Store.hf_link(model.repo, model.commit, f.name), store.blob_path(sha))
            results.append(FetchedFile(cid, f.name, sha, f.size, "present", path=done[sha].path))
    results.sort(key=lambda r: (r.contestant, r.name))
    report = FetchReport(store.root, results, errors)
    if errors:
        raise FetchError(report)
    return report


def model_files(model: ModelLock, store: Store, *, contestant: str = "",
                base_dir: Path | None = None) -> list[Path]:
    """The files to serve for a locked model (blobs, or the local files); fails when not fetched."""
    base_dir = base_dir or Path.cwd()
    paths = []
    for f in model.files:
        p = _local_path(model, f, base_dir) if model.source == "path" else store.blob_path(f.sha256)
        if not p.is_file():
            raise HubError(contestant, f.name, f"not in the store ({p}): run `labctl fetch`")
        paths.append(p)
    return paths
