"""Large request bodies kept beside the transcript as content-addressed blobs.

Why: an agent resends its whole conversation on every call, and a long one (or a pasted image)
made one transcript line of 20 MB: slow to write on the meter's recorder thread, slow to read for
every report, and the same bytes again on each call. A body over the meter's threshold is written
once as `transcript.blobs/<sha256>` (its JSON text, redacted like the line would have been) and the
record holds a reference `{"$blob": "<sha256>", "bytes": N}` in its place. The blobs are files of
the run directory, so the round's manifest hashes them; `check` proves each referenced blob is
there and still hashes to its name, and `resolve` gives readers the body back.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

BLOB_KEY = "$blob"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def blob_dir(transcript: Path) -> Path:
    """`transcript.jsonl` → `transcript.blobs/` beside it."""
    return transcript.with_suffix(".blobs")


def store(directory: Path, data: bytes) -> dict[str, Any]:
    """Write `data` as `directory/<sha256>` (once: the same bytes are the same file) and return
    the reference a record holds instead."""
    digest = hashlib.sha256(data).hexdigest()
    path = directory / digest
    if not path.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{digest}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, path)  # whole or absent: a reader never sees half a blob
    return {BLOB_KEY: digest, "bytes": len(data)}


def ref_digest(value: Any) -> str | None:
    """The sha256 a reference names (None: not a reference, or a malformed one)."""
    digest = value.get(BLOB_KEY) if isinstance(value, dict) else None
    return digest if isinstance(digest, str) and _SHA256.fullmatch(digest) else None


def resolve(record: dict[str, Any], transcript: Path) -> dict[str, Any]:
    """`record` with a blob reference under `request` replaced by the body it stands for; a
    missing or unreadable blob leaves the reference (`labctl verify` reports it)."""
    digest = ref_digest(record.get("request"))
    if digest is None:
        return record
    try:
        body = json.loads((blob_dir(transcript) / digest).read_bytes())
    except (OSError, ValueError):
        return record
    return {**record, "request": body}


def check(transcript: Path) -> list[tuple[str, str]]:
    """(blob path relative to the transcript's directory, what is wrong) for every reference in
    the transcript whose blob is missing or does not hash to its name."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    try:
        lines = transcript.read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    for line in lines:
        if BLOB_KEY not in line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        digest = ref_digest(rec.get("request")) if isinstance(rec, dict) else None
        if digest is None or digest in seen:
            continue
        seen.add(digest)
        path = blob_dir(transcript) / digest
        rel = f"{path.parent.name}/{digest}"
        if not path.is_file():
            out.append((rel, f"missing (referenced by the transcript, seq {rec.get('seq')})"))
        elif (got := _file_sha256(path)) != digest:
            out.append((rel, f"changed: its sha256 is {got[:12]}…, not the name the transcript references"))
    return out


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
