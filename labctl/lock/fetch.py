"""Bring every model of a lock into the store, proven by sha256, each byte downloaded at most once.

Why this shape: a Hub file is downloaded into the store's own partial file for its sha256
(`labctl.lock.download`: huggingface_hub's session, endpoint and token; Range requests), on the store's
file system, so the finished file is renamed into `blobs/`, never copied: one copy on disk. A
download cut by Ctrl-C, a killed process or a lost connection keeps what arrived, and the next
`labctl fetch` continues from there. The store admits a file only after hashing it against the
lock; a mismatch is quarantined and fails naming contestant and file. A blob already in the store
is never fetched again, so a second `fetch` downloads 0 bytes. Generated models are regenerated
into the store; local files are only re-hashed (never copied).
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from huggingface_hub import hf_hub_url
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from labctl.errors import LabctlError
from labctl.gguf.store import HashMismatch, Store, is_no_space, sha256_file
from labctl.lock.download import Cancelled, Incomplete, download
from labctl.lock.hub import HubError, describe_error, generate_into, params_from_lock
from labctl.lock.lockfile import FileLock, Lock, ModelLock
from labctl.spec.units import format_size

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


class FetchError(LabctlError):
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

    def resume(self, n: int) -> None:
        """Bytes a previous run already brought: on the bar, not counted as downloaded now."""
        if self.progress is not None and self.task is not None:
            self.progress.advance(self.task, n)


def _free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _fetch_hf(cid: str, model: ModelLock, f: FileLock, store: Store, progress: Progress | None,
              cancel: threading.Event | None = None) -> FetchedFile:
    assert model.repo is not None and model.commit is not None
    link = Store.hf_link(model.repo, model.commit, f.name)
    if store.has(f.sha256, f.size):
        store.link(link, store.blob_path(f.sha256))
        return FetchedFile(cid, f.name, f.sha256, f.size, "present", path=store.blob_path(f.sha256))
    with store.partial_lock(f.sha256):
        if store.has(f.sha256, f.size):  # another fetch brought it while this one waited
            store.link(link, store.blob_path(f.sha256))
            return FetchedFile(cid, f.name, f.sha256, f.size, "present", path=store.blob_path(f.sha256))
        part = store.partial_path(f.sha256)
        have = part.stat().st_size if part.is_file() else 0
        free = _free_bytes(part.parent)
        if free is not None and free < f.size - have:
            raise HubError(cid, f.name, f"disk full in {store.root}: needs {format_size(f.size - have)}, "
                                        f"{format_size(free)} free")
        meter = _Meter(progress, f"{cid}: {f.name}", f.size)
        meter.resume(min(have, f.size))
        url = hf_hub_url(model.repo, f.name, revision=model.commit)
        try:
            download(url, part, f.size, on_bytes=meter.add, cancel=cancel)
        except Cancelled:
            raise
        except Incomplete as e:
            raise HubError(cid, f.name, f"{e}; kept, the next `labctl fetch` resumes from there") from e
        except Exception as e:
            full = is_no_space(e)
            if full:  # nothing to resume on a full disk: give the space back
                part.unlink(missing_ok=True)
            why = describe_error(e, repo=model.repo, revision=model.commit, store=store.root)
            kept = part.stat().st_size if part.is_file() else 0
            if kept:
                why += f"; {kept} of {f.size} bytes kept, the next `labctl fetch` resumes from there"
            raise HubError(cid, f.name, why) from e
        try:
            blob = store.admit(part, f.sha256, f.size, label=f"{cid}: {f.name}")
        except HashMismatch as e:
            raise HubError(cid, f.name, f"downloaded bytes do not match the lock ({e.reason}); "
                                        f"quarantined as {e.quarantined}") from e
        except OSError as e:  # never leave an unverified file behind
            part.unlink(missing_ok=True)
            raise HubError(cid, f.name, describe_error(e, store=store.root)) from e
    store.link(link, blob)
    return FetchedFile(cid, f.name, f.sha256, f.size, "downloaded", meter.downloaded, blob)


def _no_progress(fetch: Callable[[], FetchedFile]) -> Callable[[Progress | None], FetchedFile]:
    """A fetch that draws no progress bar (a local check, a generated model), in the task list's shape."""
    return lambda _progress: fetch()


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
    cancel = threading.Event()  # set on Ctrl-C: every download stops at its next chunk, keeping its bytes
    tasks: list[tuple[str, Callable[[Progress | None], FetchedFile]]] = []
    aliases: dict[str, list[tuple[str, ModelLock, FileLock]]] = {}
    for cid, model in sorted(lock.models.items()):
        for f in model.files:
            if model.source == "path":
                tasks.append((cid, _no_progress(partial(_verify_local, cid, model, f, store, base_dir))))
                continue
            if f.sha256 in aliases:  # another contestant already brings these bytes
                aliases[f.sha256].append((cid, model, f))
                continue
            aliases[f.sha256] = []
            if model.source == "hf":
                tasks.append((cid, partial(_fetch_hf, cid, model, f, store, cancel=cancel)))
            else:
                tasks.append((cid, _no_progress(partial(_fetch_generated, cid, model, f, store))))

    results: list[FetchedFile] = []
    errors: list[HubError] = []
    bars = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=console or Console(stderr=True), disable=not progress,
                    transient=False)
    with bars, ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="fetch") as pool:
        futures = [(cid, pool.submit(run, bars if progress else None)) for cid, run in tasks]
        try:
            for cid, fut in futures:
                try:
                    results.append(fut.result())
                except HubError as e:
                    errors.append(e)
                except Exception as e:  # a bug or an unexpected client error: still one line, still named
                    errors.append(HubError(cid, "?", describe_error(e, store=store.root)))
        except KeyboardInterrupt:  # stop every download now (partial files kept), start no other
            cancel.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise

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
