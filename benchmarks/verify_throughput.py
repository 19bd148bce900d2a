"""Benchmark: store hashing vs hashlib, and the bytes a second fetch downloads.

Why: `labctl fetch` and `labctl store verify` hash every byte of multi-gigabyte GGUFs, so the store's
hashing loop must keep up with plain `hashlib.file_digest` (goal: ratio >= 0.9, measured on the same
file in the same run, warm page cache, best of 3, interleaved); and a fetch of models already in
the store must download nothing (goal: 0 bytes), checked against the loopback hub of the tests.

    LABCTL_BENCH_SIZE=256MiB .venv/bin/python benchmarks/verify_throughput.py   (default 2GiB)

Exit status 1 when a goal is missed. The big file is deleted afterwards.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]  # labctl and the tests package (tests/hfserver.py)

from labctl.gguf.store import Store, sha256_file  # noqa: E402
from labctl.gguf.tiny import TinyModelParams, write_tiny_gguf  # noqa: E402
from labctl.lock.fetch import fetch  # noqa: E402
from labctl.lock.hub import lock_hf  # noqa: E402
from labctl.lock.lockfile import Lock, SourceLock, TaskLock  # noqa: E402
from labctl.spec.lab import ModelSource  # noqa: E402
from labctl.spec.units import format_size, parse_size  # noqa: E402

GOAL = 0.9
BLOCK = 64 << 20


def make_file(path: Path, size: int) -> None:
    block = os.urandom(min(BLOCK, size) or 1)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n


def plain(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def best_of(n: int, fns: dict[str, object], path: Path) -> dict[str, float]:
    best = {k: float("inf") for k in fns}
    digests: dict[str, set[str]] = {k: set() for k in fns}
    for _ in range(n):
        for name, fn in fns.items():  # interleaved, so drift on a busy machine hits both alike
            t = time.perf_counter()
            digests[name].add(fn(path))  # type: ignore[operator]
            best[name] = min(best[name], time.perf_counter() - t)
    assert len({d for s in digests.values() for d in s}) == 1, "the two hashers disagree"
    return best


def hashing(work: Path, size: int) -> bool:
    big = work / "big.bin"
    t = time.perf_counter()
    make_file(big, size)
    print(f"created {format_size(size)} test file in {time.perf_counter() - t:.1f} s")
    try:
        plain(big)  # warm the page cache
        best = best_of(3, {"store": sha256_file, "hashlib": plain}, big)
    finally:
        big.unlink(missing_ok=True)
    gib = size / (1 << 30)
    for name, secs in best.items():
        print(f"  {name:8s} {secs:6.2f} s  {gib / secs:5.2f} GiB/s")
    ratio = best["hashlib"] / best["store"]
    verdict = "OK" if ratio >= GOAL else "MISSED"
    print(f"store / hashlib throughput ratio: {ratio:.3f} (goal >= {GOAL}) {verdict}")
    return ratio >= GOAL


def second_fetch(work: Path) -> bool:
    from tests.hfserver import HubServer, client_pointed_at

    model = work / "tiny.gguf"
    write_tiny_gguf(model, TinyModelParams(seed=11, n_layer=4, n_embd=256, vocab_size=4096))
    server = HubServer().start()
    try:
        server.add_repo("bench/tiny-GGUF", {"tiny.gguf": model})
        with client_pointed_at(server.url, work / "hf-home"):
            ml = lock_hf("tiny", ModelSource(repo="bench/tiny-GGUF", file="tiny.gguf"))
            extra = {"spec_sha256": "0" * 64} if "spec_sha256" in Lock.model_fields else {}
            lock = Lock(lab="bench", llama_cpp=SourceLock(path="llama", tree_sha256="0" * 64),
                        task=TaskLock(path="task", tree_sha256="0" * 64), models={"tiny": ml}, **extra)
            store = Store(work / "store")
            server.reset_counters()
            first = fetch(lock, store, progress=False)
            served_first = server.bytes_served
            server.reset_counters()
            t = time.perf_counter()
            second = fetch(lock, store, progress=False)
            took = time.perf_counter() - t
    finally:
        server.stop()
    print(f"fetch 1: downloaded {first.bytes_downloaded} bytes (hub served {served_first}) of a "
          f"{format_size(model.stat().st_size)} model")
    print(f"fetch 2: downloaded {second.bytes_downloaded} bytes (hub served {server.bytes_served}, "
          f"{len(server.requests)} requests) in {took * 1000:.0f} ms (goal: 0 bytes) "
          f"{'OK' if second.bytes_downloaded == server.bytes_served == 0 else 'MISSED'}")
    return second.bytes_downloaded == 0 and server.bytes_served == 0


def main() -> int:
    size = parse_size(os.environ.get("LABCTL_BENCH_SIZE", "2GiB"))
    work = Path(tempfile.mkdtemp(prefix="labctl-bench-"))
    try:
        ok = hashing(work, size)
        ok = second_fetch(work) and ok
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
