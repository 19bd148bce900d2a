"""Raw GGUF headers, kept content-addressed beside the model store so a lock can name them by sha256.

Why not in lab.lock: a header holds every tensor's name, type, shape and offset *and* the tokenizer
(a 150k-token vocabulary and its merges are megabytes), which would bury the lock's diffs. The lock
records each file's `header_sha256` and `header_size` instead; the bytes live here, are checked
against that hash on every read, and can be fetched again from the pinned file (the first
`header_size` bytes of it) on a machine that has the lock but not the cache. A shape twin
(`labctl.plan.twin`) is exactly these bytes followed by holes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

ENV_DIR = "LABCTL_HEADER_CACHE"


def cache_dir() -> Path:
    """`$LABCTL_HEADER_CACHE`, else `${XDG_CACHE_HOME:-~/.cache}/labctl/headers`."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "labctl" / "headers"


def header_path(sha256: str) -> Path:
    return cache_dir() / f"{sha256}.gguf-header"


def put(raw: bytes) -> str:
    """Keep `raw` (atomically, once) and return its sha256."""
    sha = hashlib.sha256(raw).hexdigest()
    dest = header_path(sha)
    if dest.is_file() and dest.stat().st_size == len(raw):
        return sha
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".hdr.", dir=dest.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(raw)
    os.replace(tmp, dest)
    return sha


def get(sha256: str) -> bytes | None:
    """The header with this sha256, or None when it is not cached (or the cached copy is damaged)."""
    p = header_path(sha256)
    try:
        raw = p.read_bytes()
    except OSError:
        return None
    return raw if hashlib.sha256(raw).hexdigest() == sha256 else None
