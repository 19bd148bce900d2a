"""A PyPI agent runtime's whole dependency tree, pinned wheel by wheel.

`labctl lock` asks pip (the host's, on a clean configuration) to resolve the runtime for each Python
version an agent image may run it under (`PYTHONS`: the task image's python3 when it is new enough,
else the distribution's) and for Linux on this machine's architecture, wheels only. Every wheel of
every resolution is recorded with its sha256 and the Python versions it serves. `labctl build`
downloads them on the host (each verified), and the image installs the running Python's set with
`pip install --no-index --no-deps --require-hashes`: no index, no resolver, no other bytes.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from labctl.lock.lockfile import WheelLock
from labctl.lock.packages import PYPI_ENV, PYPI_URL, PackageError
from labctl.lock.sdist import Log, cache_root, download, verify_sha256

PYTHONS = ("3.10", "3.11", "3.12", "3.13")
"""Python versions a lock resolves for: Ubuntu 22.04/24.04 and Debian bookworm/trixie's python3."""
GLIBC_MINORS = (17, 24, 26, 27, 28, 31, 34, 35, 36)
"""manylinux_2_x tags accepted (glibc ≥ 2.36: Debian bookworm). pip does not widen an explicit
`--platform`, so each is listed."""
REQUIREMENTS_DIR = "requirements"
"""In the agent build context: `<python version>.txt`, one hash-pinned line per wheel."""


def _arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def _pip_args(python: str, arch: str) -> list[str]:
    plats = [f"manylinux_2_{m}_{arch}" for m in GLIBC_MINORS] + [f"manylinux2014_{arch}", f"linux_{arch}"]
    nodot = python.replace(".", "")
    args = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp",
            "--abi", f"cp{nodot}", "--abi", "abi3", "--abi", "none"]
    for p in plats:
        args += ["--platform", p]
    return args


def _resolve_one(requirement: str, python: str, index: str, arch: str) -> list[dict[str, Any]] | None:
    with tempfile.TemporaryDirectory(prefix="labctl-wheels-") as tmp:
        report = Path(tmp) / "report.json"
        # A clean configuration: the user's pip.conf (constraints, extra indexes, find-links) must not
        # decide what a lab pins; the index is the one the lock names.
        env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
        keep = ("PIP_CONFIG_FILE", "PIP_CERT")
        env = {k: v for k, v in env.items() if not k.startswith("PIP_") or k in keep}
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--disable-pip-version-check", "--report", str(report), "--index-url", index,
               "--target", str(Path(tmp) / "target"), *_pip_args(python, arch), requirement]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            text = done.stderr or done.stdout
            if f"satisfies the requirement {requirement}" in text and "different python" in text.lower():
                return None  # the runtime itself does not support this Python: nothing to pin for it
            tail = " ".join(text.strip().splitlines()[-2:])
            raise PackageError(f"pip cannot resolve {requirement} for Python {python} as wheels: {tail}")
        install: list[dict[str, Any]] = json.loads(report.read_text(encoding="utf-8"))["install"]
        return install


def resolve_wheels(name: str, version: str, *, pythons: tuple[str, ...] = PYTHONS,
                   pypi_url: str | None = None) -> list[WheelLock]:
    """Every wheel `name==version` needs, for each of `pythons`, sorted by (name, filename)."""
    base = (pypi_url or os.environ.get(PYPI_ENV) or PYPI_URL).rstrip("/")
    index, arch = f"{base}/simple", _arch()
    with ThreadPoolExecutor(max_workers=len(pythons)) as pool:
        reports = dict(zip(pythons, pool.map(lambda py: _resolve_one(f"{name}=={version}", py, index, arch),
                                             pythons), strict=True))
    if all(items is None for items in reports.values()):
        raise PackageError(f"{name} {version} supports none of Python {', '.join(pythons)}")
    wheels: dict[str, dict[str, Any]] = {}
    for python, items in reports.items():
        if items is None:
            continue
        for item in items:
            info = item.get("download_info") or {}
            url = str(info.get("url", ""))
            sha = ((info.get("archive_info") or {}).get("hashes") or {}).get("sha256")
            if not url.endswith(".whl") or not sha:
                raise PackageError(f"pip resolved {url or item} without a wheel sha256")
            entry = wheels.setdefault(sha, {
                "name": item["metadata"]["name"].lower().replace("_", "-"),
                "version": item["metadata"]["version"],
                "filename": url.rsplit("/", 1)[-1].split("#")[0], "sha256": sha, "url": url.split("#")[0],
                "pythons": []})
            entry["pythons"].append(python)
    return sorted((WheelLock(**w) for w in wheels.values()), key=lambda w: (w.name, w.filename))


def requirements(wheels: list[WheelLock]) -> dict[str, str]:
    """`<python>.txt` → its hash-pinned requirements file (for `pip --require-hashes --no-deps`)."""
    out: dict[str, list[str]] = {}
    for w in wheels:
        for py in w.pythons:
            out.setdefault(py, []).append(f"{w.name}=={w.version} --hash=sha256:{w.sha256}\n")
    return {f"{py}.txt": "".join(sorted(lines)) for py, lines in sorted(out.items())}


def fetch_wheels(wheels: list[WheelLock], *, cache: Path | None = None,
                 log: Log = lambda s: None) -> dict[str, Path]:
    """Each wheel in the host cache (`dist/<sha256>/<filename>`), downloaded once and re-verified."""
    root = (cache or cache_root()) / "dist"
    out: dict[str, Path] = {}
    with httpx.Client(timeout=120, follow_redirects=True) as http:
        for w in wheels:
            path = root / w.sha256 / w.filename
            if path.is_file():
                verify_sha256(path, w.sha256, f"{w.filename} (cached)")
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                log(f"fetching {w.filename}")
                tmp = path.with_name(f".{w.filename}.part")
                download(w.url, tmp, http)
                verify_sha256(tmp, w.sha256, w.filename)
                tmp.replace(path)
            out[w.filename] = path
    return out
