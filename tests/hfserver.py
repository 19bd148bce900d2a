"""A loopback Hugging Face Hub for tests: the real `huggingface_hub` client talks to it via HF_ENDPOINT.

Why not mock the client: labctl's promises (pinned commits, sha256 from the LFS oid, resume, no
second download) depend on what the real client does with real headers. This server speaks the
subset of the Hub's HTTP API that the client uses, in the Hub's shapes (checked against
huggingface_hub's file_download.py / hf_api.py / utils/_http.py):

* `HEAD|GET /{repo}/resolve/{rev}/{file}`: `X-Repo-Commit`, `X-Linked-Etag` (quoted sha256),
  `X-Linked-Size`, `ETag`, `Content-Length`, `Accept-Ranges: bytes`; Range → 206 + Content-Range.
  With `cdn_redirect`, LFS files answer 302 to `http://localhost:PORT/_cdn/<sha256>` (another origin,
  like the Hub's CDN: the client takes metadata from the 302 and drops the token).
* `GET /api/models/{repo}[/revision/{rev}]` (`?blobs=true` adds size, blobId and lfs to siblings)
  and `GET /api/models/{repo}/tree/{rev}[/{path}]` (`?recursive=true`).
* Errors: 404 with `X-Error-Code: RepoNotFound | RevisionNotFound | EntryNotFound`; private repos
  (a token) answer 401 without the right `Authorization: Bearer`; `refuse(repo, 403)` forces a status.

Fault knobs per file (`server.fault(repo, file, ...)`): `truncate_to` (short body, honest length),
`cut_after` (promise the whole body, drop the connection after N bytes, once), `corrupt` (other bytes
of the same size), `drop_at` (stop at this byte of the file and drop the connection, on every request
until cleared: a connection lost for longer than the client retries), `stall_at` (send up to this
byte, then hold the connection until `release()`, then drop it: a download to kill mid-file).
`bytes_served` counts body bytes sent, to prove a second fetch downloads nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from labctl.plan.llamaserver import free_port  # noqa: F401  (re-exported for the tests)

_XOR = bytes(b ^ 0x5A for b in range(256))
_LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {size}\n"


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class HubFile:
    path: str
    sha256: str
    size: int
    data: bytes | None = None
    disk: Path | None = None
    lfs: bool = True

    def read(self, start: int, end: int) -> bytes:
        if self.data is not None:
            return self.data[start:end]
        assert self.disk is not None
        with open(self.disk, "rb") as f:
            f.seek(start)
            return f.read(end - start)

    @property
    def pointer(self) -> bytes:
        return _LFS_POINTER.format(sha=self.sha256, size=self.size).encode()

    @property
    def blob_id(self) -> str:
        return git_blob_oid(self.pointer) if self.lfs else git_blob_oid(self.read(0, self.size))


@dataclass
class Faults:
    truncate_to: int | None = None
    cut_after: int | None = None
    corrupt: bool = False
    cuts_left: int = 0
    drop_at: int | None = None
    stall_at: int | None = None


@dataclass
class _Repo:
    commits: dict[str, dict[str, HubFile]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    token: str | None = None


class HubServer:
    """Repos registered in memory (or pointing at files on disk), served on 127.0.0.1:<ephemeral>."""

    def __init__(self, *, cdn_redirect: bool = False) -> None:
        self.repos: dict[str, _Repo] = {}
        self.faults: dict[tuple[str, str], Faults] = {}
        self.refused: dict[str, int] = {}
        self.cdn_redirect = cdn_redirect
        self.bytes_served = 0
        self.served: Counter[str] = Counter()
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._lock = threading.Lock()
        self.released = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None

    # -------------------------------------------------------------- registry

    def add_repo(self, repo: str, files: Mapping[str, bytes | Path], *, revision: str = "main",
                 token: str | None = None, lfs: bool = True) -> str:
        """Add (or replace) `revision` of `repo` with these files; returns the new commit sha."""
        entries: dict[str, HubFile] = {}
        for name, content in files.items():
            if isinstance(content, Path):
                with open(content, "rb") as f:
                    sha = hashlib.file_digest(f, "sha256").hexdigest()
                entries[name] = HubFile(name, sha, content.stat().st_size, disk=content, lfs=lfs)
            else:
                sha = hashlib.sha256(content).hexdigest()
                entries[name] = HubFile(name, sha, len(content), data=content, lfs=lfs)
        r = self.repos.setdefault(repo, _Repo())
        r.token = token if token is not None else r.token
        listing = json.dumps(sorted((n, e.sha256) for n, e in entries.items()))
        commit = hashlib.sha1(f"{repo}\n{revision}\n{len(r.commits)}\n{listing}".encode()).hexdigest()
        r.commits[commit] = entries
        r.refs[revision] = commit
        return commit

    def fault(self, repo: str, name: str, *, truncate_to: int | None = None, cut_after: int | None = None,
              corrupt: bool = False, drop_at: int | None = None, stall_at: int | None = None) -> None:
        self.faults[(repo, name)] = Faults(truncate_to, cut_after, corrupt, 1 if cut_after is not None else 0,
                                           drop_at, stall_at)
        self.released.clear()

    def release(self) -> None:
        """Let every stalled response go on (to drop its connection)."""
        self.released.set()

    def refuse(self, repo: str, status: int = 403) -> None:
        self.refused[repo] = status

    def reset_counters(self) -> None:
        with self._lock:
            self.bytes_served = 0
            self.served.clear()
            self.requests.clear()

    # --------------------------------------------------------------- serving

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> HubServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="hfserver", daemon=True).start()
        return self

    def stop(self) -> None:
        self.release()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def _count(self, name: str, n: int) -> None:
        with self._lock:
            self.bytes_served += n
            self.served[name] += n


def _model_json(repo: str, commit: str, files: dict[str, HubFile], blobs: bool) -> dict:
    siblings = []
    for f in sorted(files.values(), key=lambda f: f.path):
        s: dict = {"rfilename": f.path}
        if blobs:
            s |= {"blobId": f.blob_id, "size": f.size}
            if f.lfs:
                s["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": len(f.pointer)}
        siblings.append(s)
    return {"_id": hashlib.md5(repo.encode()).hexdigest()[:24], "id": repo, "modelId": repo,
            "author": repo.split("/")[0], "sha": commit, "lastModified": "2025-07-01T12:00:00.000Z",
            "createdAt": "2025-07-01T12:00:00.000Z", "private": False, "disabled": False, "gated": False,
            "downloads": 0, "likes": 0, "tags": ["gguf"], "library_name": "gguf", "siblings": siblings,
            "usedStorage": sum(f.size for f in files.values())}


def _tree_json(files: dict[str, HubFile], under: str, recursive: bool) -> list[dict]:
    prefix = under.strip("/") + "/" if under.strip("/") else ""
    out: dict[str, dict] = {}
    for f in sorted(files.values(), key=lambda f: f.path):
        if not f.path.startswith(prefix):
            continue
        rest = f.path[len(prefix):].split("/")
        for depth in range(1, len(rest) if recursive else min(2, len(rest))):
            d = prefix + "/".join(rest[:depth])
            out.setdefault(d, {"type": "directory", "oid": git_blob_oid(d.encode()), "size": 0, "path": d})
        if recursive or len(rest) == 1:
            lfs = {"lfs": {"oid": f.sha256, "size": f.size, "pointerSize": len(f.pointer)}} if f.lfs else {}
            out[f.path] = {"type": "file", "oid": f.blob_id, "size": f.size, "path": f.path, **lfs}
    return list(out.values())


def _make_handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def do_HEAD(self) -> None:
            self._dispatch(body=False)

        def do_GET(self) -> None:
            self._dispatch(body=True)

        # ------------------------------------------------------------ helpers

        def _head(self, status: int, headers: dict[str, str]) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()

        def _send(self, status: int, headers: dict[str, str], payload: bytes = b"") -> None:
            self._head(status, {**headers, "Content-Length": str(len(payload))})
            if self.command != "HEAD" and payload:
                self.wfile.write(payload)

        def _error(self, status: int, code: str | None, message: str, extra: dict | None = None) -> None:
            h = {"Content-Type": "application/json", "X-Error-Message": message, **(extra or {})}
            if code:
                h["X-Error-Code"] = code
            self._send(status, h, json.dumps({"error": message}).encode())

        def _json(self, data: object) -> None:
            self._send(200, {"Content-Type": "application/json"}, json.dumps(data).encode())

        def _locate(self, repo: str, rev: str) -> tuple[_Repo, str] | None:
            """(repo, commit) when this request may see them; otherwise the error is already sent."""
            r = hub.repos.get(repo)
            auth = self.headers.get("Authorization")
            if repo in hub.refused:
                self._error(hub.refused[repo], None, "Access to this resource is refused by the test hub")
            elif r is not None and r.token is not None and auth is None:
                self._error(401, "RepoNotFound", "Repository not found")
            elif r is not None and r.token is not None and auth != f"Bearer {r.token}":
                self._error(401, None, "Invalid credentials in Authorization header")
            elif r is None:
                self._error(404, "RepoNotFound", "Repository not found")
            elif (commit := r.refs.get(rev, rev if rev in r.commits else None)) is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            else:
                return r, commit
            return None

        # ----------------------------------------------------------- routing

        def _dispatch(self, body: bool) -> None:
            url = urlsplit(self.path)
            parts = [unquote(p) for p in url.path.split("/")[1:]]
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            with hub._lock:
                hub.requests.append((self.command, self.path, dict(self.headers.items())))
            try:
                if parts[:1] == ["_cdn"] and len(parts) == 2:
                    return self._cdn(parts[1], body)
                if parts[:2] == ["api", "models"] and len(parts) >= 4 and body:
                    return self._api(parts[2] + "/" + parts[3], parts[4:], query)
                if len(parts) >= 5 and parts[2] == "resolve":
                    return self._resolve(parts[0] + "/" + parts[1], parts[3], "/".join(parts[4:]), body)
                self._error(404, None, f"no route for {url.path}")
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _api(self, repo: str, rest: list[str], query: dict[str, str]) -> None:
            if rest and not (rest[0] in ("revision", "tree") and len(rest) >= 2):
                return self._error(404, None, "no such API route")
            found = self._locate(repo, rest[1] if rest else "main")
            if found is None:
                return
            commit = found[1]
            files = found[0].commits[commit]
            if rest[:1] == ["tree"]:
                return self._json(_tree_json(files, "/".join(rest[2:]), query.get("recursive") == "true"))
            self._json(_model_json(repo, commit, files, query.get("blobs") in ("true", "True", "1")))

        def _resolve(self, repo: str, rev: str, name: str, body: bool) -> None:
            found = self._locate(repo, rev)
            if found is None:
                return
            r, commit = found
            f = r.commits[commit].get(name)
            if f is None:
                return self._error(404, "EntryNotFound", f"{name} does not exist on {rev}",
                                   {"X-Repo-Commit": commit})
            meta = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes",
                    "Content-Disposition": f'inline; filename="{name.rsplit("/", 1)[-1]}"'}
            if f.lfs:
                etag = f'"{f.sha256}"'
                meta |= {"X-Linked-Etag": etag, "X-Linked-Size": str(f.size), "ETag": etag}
            else:
                meta["ETag"] = f'"{f.blob_id}"'
            if hub.cdn_redirect and f.lfs:  # another origin, like the Hub's CDN
                cdn = f"http://localhost:{self.server.server_address[1]}/_cdn/{f.sha256}"
                return self._send(302, {**meta, "Location": cdn})
            self._content(repo, f, meta, body)

        def _cdn(self, sha: str, body: bool) -> None:
            hits = [(repo, f) for repo, r in hub.repos.items() for files in r.commits.values()
                    for f in files.values() if f.sha256 == sha]
            if not hits:
                return self._error(404, None, "no such object")
            self._content(*hits[0], {"Accept-Ranges": "bytes", "ETag": f'"{sha}"'}, body)

        def _content(self, repo: str, f: HubFile, headers: dict[str, str], body: bool) -> None:
            faults = hub.faults.get((repo, f.path), Faults())
            start, end, status = 0, f.size, 200
            rng = self.headers.get("Range")
            if rng:
                spec = rng.removeprefix("bytes=").split(",")[0].strip()
                a, _, b = spec.partition("-")
                start, end = (max(f.size - int(b), 0), f.size) if a == "" else (
                    int(a), min(int(b) + 1, f.size) if b else f.size)
                if start >= f.size:
                    return self._error(416, None, "Range Not Satisfiable",
                                       {"Content-Range": f"bytes */{f.size}"})
                status = 206
            send_end = end if faults.truncate_to is None else max(start, min(end, faults.truncate_to))
            cut = None
            if body and faults.cuts_left > 0 and faults.cut_after is not None:
                faults.cuts_left -= 1
                cut = faults.cut_after
            headers = {"Content-Type": "application/octet-stream", **headers,
                       "Content-Length": str(send_end - start)}
            if status == 206:
                headers["Content-Range"] = f"bytes {start}-{max(send_end, start + 1) - 1}/{f.size}"
            self._head(status, headers)
            if not body:
                return
            pos, sent = start, 0
            stop = min((s for s in (faults.drop_at, faults.stall_at) if s is not None), default=None)
            while pos < send_end:
                if stop is not None and pos >= stop:
                    if faults.stall_at is not None:
                        self.wfile.flush()
                        hub.released.wait(60)
                    return self._drop()
                n = min(1 << 20, send_end - pos)
                if stop is not None:
                    n = min(n, stop - pos)
                if cut is not None:
                    n = min(n, cut - sent)
                chunk = f.read(pos, pos + n)
                if faults.corrupt:
                    chunk = chunk.translate(_XOR)
                self.wfile.write(chunk)
                hub._count(f.path, len(chunk))
                pos, sent = pos + n, sent + n
                if cut is not None and sent >= cut:
                    return self._drop()

        def _drop(self) -> None:
            """End the response mid-body: the client sees the connection closed early."""
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    return Handler


# ------------------------------------------------------------------ the client side

_ENV = {"HF_ENDPOINT": None, "HF_HOME": None, "HF_HUB_CACHE": None, "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_OFFLINE": None, "HF_TOKEN": None, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


@contextlib.contextmanager
def client_pointed_at(url: str, home: Path) -> Iterator[None]:
    """Point the real huggingface_hub client at `url`, with its home (cache, token) under `home`.

    Sets the environment *and* the module constants huggingface_hub computed at import time.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import close_session

    env = dict(_ENV, HF_ENDPOINT=url, HF_HOME=str(home), HF_HUB_CACHE=str(home / "hub"))
    template = url + "/{repo_id}/resolve/{revision}/{filename}"
    consts = {"ENDPOINT": url, "HUGGINGFACE_CO_URL_TEMPLATE": template,
              "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"), "HF_HUB_OFFLINE": False,
              "HF_HUB_DISABLE_TELEMETRY": True, "HF_TOKEN_PATH": str(home / "token"),
              "HF_STORED_TOKENS_PATH": str(home / "stored_tokens")}
    saved_env = {k: os.environ.get(k) for k in env}
    saved_consts = {k: getattr(constants, k) for k in consts}

    def apply(env: dict[str, str | None], consts: dict[str, object]) -> None:
        for k, v in env.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        for k, c in consts.items():
            setattr(constants, k, c)
        close_session()  # no pooled connection to another endpoint survives

    apply(env, consts)
    try:
        yield
    finally:
        apply(saved_env, saved_consts)


@pytest.fixture
def hub_server(tmp_path: Path) -> Iterator[HubServer]:
    """A started loopback hub with the real client pointed at it (HF home under tmp_path)."""
    server = HubServer().start()
    try:
        with client_pointed_at(server.url, tmp_path / "hf-home"):
            yield server
    finally:
        server.stop()
