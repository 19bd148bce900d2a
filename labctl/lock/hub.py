"""Resolve a contestant's model source to a `ModelLock`: a commit, each file's sha256 and size, its header.

Why it works the way it does: a lock must pin bytes without downloading tens of gigabytes, so a
Hugging Face source is resolved with one `model_info(..., files_metadata=True)` call (the revision's
commit and every file's LFS sha256 and size) and the GGUF header is read from the first bytes of
each shard with HTTP Range requests. Everything goes through the real `huggingface_hub` client
(its endpoint, token, session and error types), so `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE` and a
mirror behave exactly as they do for `hf_hub_download`. Every failure becomes one `HubError` line
naming the contestant and the file.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

from huggingface_hub import HfApi, constants, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from labctl.errors import LabctlError
from labctl.gguf import headers as ggufheaders
from labctl.gguf.read import GGUFError, Header, meta_from_headers, read_local, read_prefix
from labctl.gguf.store import HashMismatch, Store, is_no_space, sha256_file
from labctl.gguf.tiny import (
    GENERATOR_ID,
    TinyModelParams,
    canonical_params_json,
    tiny_model_name,
    write_tiny_gguf,
)
from labctl.lock.lockfile import FileLock, ModelLock
from labctl.spec.lab import LocalContestant, ModelSource

try:  # huggingface_hub >= 2 talks through httpx2, 1.x through httpx
    import httpx2 as _http
except ImportError:  # pragma: no cover
    import httpx as _http  # type: ignore[no-redef]

__all__ = ["HubError", "describe_error", "generate_into", "lock_generated", "lock_hf", "lock_local",
           "lock_model", "range_fetcher", "shard_names"]

SHARD_RE = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
SMALL_NON_LFS = 64 << 20
"""A file kept in git (not LFS) has no published sha256; up to this size it is hashed by reading it."""


class HubError(LabctlError):
    """A model could not be resolved, fetched or verified; `str()` is one line naming contestant and file."""

    def __init__(self, contestant: str, file: str, message: str) -> None:
        self.contestant, self.file, self.message = contestant, file, " ".join(message.split())
        super().__init__(f"{contestant or '?'}: {file}: {self.message}")


def shard_names(file: str) -> list[str]:
    """`X-00001-of-00003.gguf` → all three shard names; a single file → `[file]`."""
    m = SHARD_RE.match(file)
    if m is None:
        return [file]
    count = int(m["count"])
    return [f"{m['stem']}-{i:05d}-of-{m['count']}.gguf" for i in range(1, count + 1)]


def _first_line(text: str | None) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[0] if lines else ""


def describe_error(e: BaseException, *, repo: str | None = None, revision: str | None = None,
                   store: Path | None = None) -> str:
    """One line explaining a huggingface_hub / network / disk exception (follows `raise … from`)."""
    endpoint = constants.ENDPOINT
    chain: list[BaseException] = []
    cur: BaseException | None = e
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for x in chain:
        if isinstance(x, GatedRepoError):
            return f"{repo} is gated: accept its terms on the Hub, then set HF_TOKEN"
        if isinstance(x, RepositoryNotFoundError):
            why = "HF_TOKEN has no access to it" if build_hf_headers().get("authorization") else \
                "a private repo needs HF_TOKEN"
            return f"repository {repo} not found on {endpoint} ({why})"
        if isinstance(x, RevisionNotFoundError):
            return f"revision {revision!r} does not exist in {repo}"
        if isinstance(x, RemoteEntryNotFoundError):
            return f"file not found in {repo} at revision {revision!r}"
        if isinstance(x, OfflineModeIsEnabled):
            return "HF_HUB_OFFLINE is set: unset it to reach the Hub"
        if isinstance(x, HfHubHTTPError) and getattr(x, "response", None) is not None:
            status = x.response.status_code
            said = _first_line(x.server_message or x.response.headers.get("X-Error-Message"))
            said = f": {said}" if said else ""
            if status == 401:
                return f"unauthorized (401) by {endpoint}{said}; set HF_TOKEN to a token with read access"
            if status == 403:
                return f"refused (403) by {endpoint}{said}; check that HF_TOKEN may read {repo}"
            return f"HTTP {status} from {endpoint}{said}"
        if is_no_space(x):
            where = f" in {store}" if store else ""
            return f"disk full{where}: {x.strerror or x}" if isinstance(x, OSError) else f"disk full{where}"
        if isinstance(x, _http.TimeoutException):
            return f"network failure: timed out talking to {endpoint}"
        if isinstance(x, (_http.RemoteProtocolError, _http.ReadError)):
            why = _first_line(str(x)) or type(x).__name__
            return f"network failure: the connection to {endpoint} was lost ({why})"
        if isinstance(x, _http.TransportError):
            return f"network failure: cannot reach {endpoint} ({_first_line(str(x)) or type(x).__name__})"
        if isinstance(x, OSError) and "Consistency check failed" in str(x):
            got = re.search(r"should be of size (\d+) but has size (\d+)", str(x))
            return (f"download incomplete: got {got[2]} of {got[1]} bytes" if got
                    else f"download incomplete: {_first_line(str(x))}")
    return f"{type(e).__name__}: {_first_line(str(e))}"


# ------------------------------------------------------------------ Hugging Face


def range_fetcher(url: str, *, token: str | bool | None = None) -> Callable[[int, int], bytes]:
    """`fetch(start, end)` → bytes [start, end) of `url`, through huggingface_hub's session and headers."""
    headers = build_hf_headers(token=token)
    headers["Accept-Encoding"] = "identity"

    def fetch(start: int, end: int) -> bytes:
        h = dict(headers, Range=f"bytes={start}-{end - 1}")
        with get_session().stream("GET", url, headers=h, follow_redirects=True,
                                  timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT) as r:
            if r.status_code >= 400:
                r.read()
                hf_raise_for_status(r)
            if r.status_code == 206:
                got = re.match(r"bytes (\d+)-", r.headers.get("Content-Range", ""))
                if got is None or int(got[1]) != start:
                    raise GGUFError(f"server answered range {r.headers.get('Content-Range')!r} for {start}-")
                return r.read()
            buf = bytearray()  # 200: the server ignored Range; read only as far as needed
            for chunk in r.iter_bytes():
                buf += chunk
                if len(buf) >= end:
                    break
            return bytes(buf[start:end])

    return fetch


def _remote_header(repo: str, name: str, commit: str, size: int, token: str | bool | None) -> Header:
    return read_prefix(range_fetcher(hf_hub_url(repo, name, revision=commit), token=token), total_size=size)


def _with_header(f: FileLock, header: Header) -> FileLock:
    """The file's lock entry naming its raw header, which goes to the header cache."""
    if header.raw is None:
        return f
    return f.model_copy(update={"header_sha256": ggufheaders.put(header.raw), "header_size": len(header.raw)})


def local_header(path: Path) -> Header:
    """A local file's header parsed from its first bytes (so its raw bytes are kept, as for a remote one)."""
    with open(path, "rb") as fh:
        def fetch(start: int, end: int) -> bytes:
            fh.seek(start)
            return fh.read(end - start)
        return read_prefix(fetch, total_size=path.stat().st_size)


def lock_hf(contestant: str, source: ModelSource, *, read_header: bool = True,
            token: str | bool | None = None) -> ModelLock:
    """Pin a Hugging Face source: commit, every shard's LFS sha256 and size, and the GGUF header."""
    repo, file, revision = source.repo, source.file, source.revision
    if repo is None or file is None:
        raise HubError(contestant, file or "?", "not a Hugging Face source (repo + file)")
    m = SHARD_RE.match(file)
    if m is not None and int(m["no"]) != 1:
        raise HubError(contestant, file, f"name the first shard ({shard_names(file)[0]})")
    try:
        info = HfApi().model_info(repo, revision=revision, files_metadata=True, token=token)
    except Exception as e:
        raise HubError(contestant, file, describe_error(e, repo=repo, revision=revision)) from e
    commit = info.sha
    if not commit or not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise HubError(contestant, file, f"the Hub gave no commit for revision {revision!r} of {repo}")
    siblings = {s.rfilename: s for s in info.siblings or []}
    files: list[FileLock] = []
    for name in shard_names(file):
        s = siblings.get(name)
        if s is None:
            ggufs = sorted(n for n in siblings if n.endswith(".gguf"))
            hint = f"; it has {', '.join(ggufs[:6])}{' …' if len(ggufs) > 6 else ''}" if ggufs else ""
            what = "shard" if name != file else "file"
            raise HubError(contestant, name, f"{what} not found in {repo} at {revision!r}{hint}")
        if s.lfs is not None:
            files.append(FileLock(name=name, sha256=s.lfs.sha256, size=s.lfs.size))
        elif s.size is not None and s.size <= SMALL_NON_LFS:
            try:
                data = range_fetcher(hf_hub_url(repo, name, revision=commit), token=token)(0, s.size)
            except Exception as e:
                raise HubError(contestant, name, describe_error(e, repo=repo, revision=revision)) from e
            files.append(FileLock(name=name, sha256=hashlib.sha256(data).hexdigest(), size=len(data)))
        else:
            raise HubError(contestant, name, "not stored with Git LFS, so the Hub publishes no sha256 for it")
    meta = None
    if read_header:
        headers = []
        for i, f in enumerate(files):
            try:
                headers.append(_remote_header(repo, f.name, commit, f.size, token))
                files[i] = _with_header(f, headers[-1])
            except GGUFError as e:
                raise HubError(contestant, f.name, f"bad GGUF header: {e}") from e
            except Exception as e:
                raise HubError(contestant, f.name, describe_error(e, repo=repo, revision=revision)) from e
        try:
            meta = meta_from_headers(headers, name_hint=file)
        except GGUFError as e:
            raise HubError(contestant, file, f"bad GGUF header: {e}") from e
    return ModelLock(source="hf", repo=repo, revision=revision, commit=commit, files=files, gguf=meta)


# ------------------------------------------------------------------ local files


def _local_shards(path: Path) -> list[Path]:
    return [path.with_name(n) for n in shard_names(path.name)]


def lock_local(path: Path, *, contestant: str = "", as_written: str | None = None) -> ModelLock:
    """Pin a local GGUF (all shards when `path` is the first of a split) by hashing it."""
    path = Path(path)
    m = SHARD_RE.match(path.name)
    if m is not None and int(m["no"]) != 1:
        raise HubError(contestant, path.name, f"name the first shard ({shard_names(path.name)[0]})")
    paths = _local_shards(path)
    files = []
    for p in paths:
        if not p.is_file():
            raise HubError(contestant, p.name, f"no such file: {p}")
        f = FileLock(name=p.name, sha256=sha256_file(p), size=p.stat().st_size)
        try:
            f = _with_header(f, local_header(p))
        except GGUFError as e:
            raise HubError(contestant, p.name, f"bad GGUF header: {e}") from e
        files.append(f)
    try:
        meta = read_local(paths)
    except GGUFError as e:
        raise HubError(contestant, path.name, f"bad GGUF header: {e}") from e
    return ModelLock(source="path", path=as_written if as_written is not None else str(path), files=files,
                     gguf=meta)


# --------------------------------------------------------------- generated models


def generated_name(params: TinyModelParams) -> str:
    return f"{tiny_model_name(params)}.gguf"


def generate_into(store: Store, params: TinyModelParams, *, expect: FileLock | None = None,
                  contestant: str = "") -> tuple[Path, str, int]:
    """Generate the tiny model into the store (verified, linked as `generated/<name>.gguf`).

    With `expect` (from a lock) the bytes must match it, else the file is quarantined and HubError raised.
    Returns (blob path, sha256, size).
    """
    name = generated_name(params)
    tmp = store.staging_dir() / f".gen-{name}"
    try:
        sha = write_tiny_gguf(tmp, params)
        size = tmp.stat().st_size
        want_sha, want_size = (expect.sha256, expect.size) if expect else (sha, size)
        try:
            blob = store.admit(tmp, want_sha, want_size, label=f"{contestant or 'generate'}: {name}")
        except HashMismatch as e:  # this labctl's generator no longer makes the locked bytes
            raise HubError(contestant, name, f"generated bytes differ from the lock ({e.reason}, quarantined "
                           f"as {e.quarantined}); re-run `labctl lock`") from e
    except OSError as e:
        raise HubError(contestant, name, describe_error(e, store=store.root)) from e
    finally:
        tmp.unlink(missing_ok=True)
    store.link(f"generated/{name}", blob)
    return blob, want_sha, want_size


def params_from_lock(model: ModelLock, contestant: str = "") -> TinyModelParams:
    """The generator parameters recorded in a lock (refusing another generator's byte layout)."""
    doc = model.generator or {}
    if doc.get("generator") != GENERATOR_ID:
        raise HubError(contestant, model.files[0].name, f"locked with generator {doc.get('generator')!r}, "
                       f"this labctl writes {GENERATOR_ID!r}; re-run `labctl lock`")
    return TinyModelParams.model_validate(doc.get("params", {}))


def lock_generated(params: TinyModelParams, store: Store, *, contestant: str = "") -> ModelLock:
    """Generate the model into the store and pin its canonical parameters and sha256."""
    blob, sha, size = generate_into(store, params, contestant=contestant)
    files = [FileLock(name=generated_name(params), sha256=sha, size=size)]
    return ModelLock(source="generate", generator=json.loads(canonical_params_json(params)), files=files,
                     gguf=read_local([blob]))


def lock_model(contestant: LocalContestant, *, base_dir: Path, store: Store,
               read_header: bool = True) -> ModelLock:
    """The lock entry of a local contestant, whatever its source."""
    src = contestant.model
    if src.repo is not None:
        return lock_hf(contestant.id, src, read_header=read_header)
    if src.path is not None:
        p = src.path if src.path.is_absolute() else base_dir / src.path
        return lock_local(p, contestant=contestant.id, as_written=str(src.path))
    assert src.generate is not None
    return lock_generated(src.generate, store, contestant=contestant.id)
