"""One file from the Hub into a partial file that any later run continues with a Range request.

Why not `hf_hub_download`: huggingface_hub (2.x) writes each download to a process-unique
`<etag>.<uuid>.incomplete` file and deletes it when the download fails or is interrupted
(`file_download._download_to_tmp_and_move`; unique names since huggingface_hub PR #4228, so that a
broken file lock on a network file system cannot interleave two writers). It resumes only within
one call (`http_get` retries a dropped connection), so a Ctrl-C, a killed process or a connection
lost for longer than its retries threw every byte away, and the next `labctl fetch` began at 0.

Here the partial file is named by the sha256 the lock pins (`Store.partial_path`): it can only ever
be a prefix of those bytes, so whichever run comes next continues it from its size with
`Range: bytes=N-`, and the store admits the result only when the whole file hashes to the lock (a
wrong prefix is caught there and quarantined). The request goes through huggingface_hub's own
session and headers (HF_ENDPOINT, HF_TOKEN, its user agent); a redirect to the CDN on another origin
drops the token (httpx strips Authorization across origins). Bytes are written unbuffered as they
arrive, so a kill -9 loses at most the chunk in flight.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from huggingface_hub import constants
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

try:  # huggingface_hub >= 2 talks through httpx2, 1.x through httpx
    import httpx2 as _http
except ImportError:  # pragma: no cover
    import httpx as _http  # type: ignore[no-redef]

__all__ = ["RETRIES", "Cancelled", "Incomplete", "download"]

RETRIES = 5
"""Attempts in a row that bring no new byte before a call gives up (the partial file stays)."""
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
"""Answers worth asking again (a busy or restarting server), like a dropped connection."""


class Incomplete(Exception):
    """The server stopped sending before the end (it served fewer bytes than the file has)."""

    def __init__(self, got: int, size: int) -> None:
        self.got, self.size = got, size
        super().__init__(f"download incomplete: got {got} of {size} bytes")


class Cancelled(Exception):
    """The download was asked to stop (Ctrl-C); what arrived is kept for the next run."""


class _BadRange(Exception):
    """A 206 answer for another range than asked: the attempt is retried, nothing written."""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def download(url: str, part: Path, size: int, *, on_bytes: Callable[[int], None] | None = None,
             cancel: threading.Event | None = None, token: str | bool | None = None) -> int:
    """Bring `part` to `size` bytes of `url`, continuing from what it holds; returns the bytes this
    call received. Retries a dropped connection, a short answer or a busy server while bytes keep
    coming; raises the last error (or `Incomplete`) after RETRIES attempts without progress, and
    `Cancelled` as soon as `cancel` is set. `part` is never removed here: the caller decides
    (admit it, or keep it for the next run).
    """
    headers = build_hf_headers(token=token)
    headers["Accept-Encoding"] = "identity"  # Range offsets count the bytes as stored
    received, stalled = 0, 0
    while True:
        have = _size(part)
        if have > size:  # not a prefix of the locked bytes: start over
            part.unlink()
            have = 0
        if have == size:
            return received
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        error: Exception | None = None
        try:
            received += _attempt(url, part, have, headers, on_bytes, cancel)
        except (_http.TransportError, _BadRange) as e:
            error = e
        except HfHubHTTPError as e:
            if e.response is None or e.response.status_code not in RETRY_STATUS:
                raise
            error = e
        now = _size(part)
        if now == size:
            return received
        stalled = 0 if now > have else stalled + 1
        if stalled >= RETRIES:
            raise error if error is not None else Incomplete(now, size)
        if stalled:
            pause = min(0.25 * 2 ** (stalled - 1), 4.0)
            if cancel is not None and cancel.wait(pause):
                raise Cancelled()
            if cancel is None:
                time.sleep(pause)


def _attempt(url: str, part: Path, have: int, headers: dict[str, str],
             on_bytes: Callable[[int], None] | None, cancel: threading.Event | None) -> int:
    """One GET from `have` on; appends what arrives to `part` and returns how many bytes that was."""
    h = dict(headers, Range=f"bytes={have}-") if have else dict(headers)
    with get_session().stream("GET", url, headers=h, follow_redirects=True,
                              timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT) as r:
        if r.status_code >= 400:
            r.read()
            hf_raise_for_status(r)
        start = 0  # 200: the whole file (a server that ignores Range), so the partial is rewritten
        if r.status_code == 206:
            given = r.headers.get("Content-Range", "")
            if not given.startswith(f"bytes {have}-"):
                raise _BadRange(f"asked for bytes {have}-, the server answered {given!r}")
            start = have
        got = 0
        with open(part, "r+b" if start else "wb", buffering=0) as f:
            f.seek(start)
            f.truncate()
            for chunk in r.iter_bytes():
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
                f.write(chunk)
                got += len(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
        return got
