"""Pinned PyPI files on the host: an sdist that vendors llama.cpp, or an agent runtime's distribution.

Both are downloaded with pip (so the user's pip configuration — index, proxy, CA bundle — applies),
checked against the sha256 in `lab.lock` *before* anything is unpacked or copied into a build, and
cached by that sha256: a second build reuses them and never touches the network.

Cache layout under ``${XDG_CACHE_HOME:-~/.cache}/labctl/``::

    src/sdist-<sha256>/<subdir>/        the extracted subdir (e.g. vendor/llama.cpp)
    src/sdist-<sha256>/CHANGELOG.md     the sdist's changelog (names the vendored llama.cpp commit)
    src/sdist-<sha256>/.done-<slug>     written last: the subdir is complete
    dist/<sha256>/<filename>            a verified distribution file (wheel, sdist or npm tarball)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import httpx

from labctl.errors import LabctlError
from labctl.treehash import file_sha256, tree_sha256

Log = Callable[[str], None]
PIP_TIMEOUT_S = 1800.0


class SourceError(LabctlError, RuntimeError):
    """A pinned file that cannot be fetched or unpacked."""


class SourceHashMismatch(SourceError):
    """Downloaded or cached bytes differ from what lab.lock pins: nothing was built from them."""


def cache_root() -> Path:
    """labctl's cache directory (sources, distributions, build contexts, build logs)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "labctl"


def _nolog(_: str) -> None:
    pass


def pip_download(requirement: str, dest: Path, *, binary: bool | None, log: Log = _nolog) -> Path:
    """Run `pip download --no-deps` for one pinned requirement into `dest`; return the file it wrote.

    binary=False forces the sdist (`--no-binary :all:`), True a wheel, None lets pip choose.
    """
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.iterdir())
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--quiet", "--dest", str(dest)]
    if binary is False:
        cmd += ["--no-binary", ":all:"]
    elif binary is True:
        cmd += ["--only-binary", ":all:"]
    cmd.append(requirement)
    log(f"pip download {requirement}")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise SourceError(f"pip download {requirement} timed out after {PIP_TIMEOUT_S:.0f}s") from None
    if done.returncode != 0:
        tail = [ln for ln in done.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]
        raise SourceError(f"pip download {requirement} failed: {(tail or ['(no output)'])[-1]}")
    new = sorted(set(dest.iterdir()) - before)
    if len(new) != 1:
        raise SourceError(f"pip download {requirement} wrote {len(new)} files, expected one")
    return new[0]


def verify_sha256(path: Path, expected: str, what: str) -> None:
    """Raise SourceHashMismatch unless the file's sha256 is `expected`."""
    actual = file_sha256(path)
    if actual != expected:
        raise SourceHashMismatch(f"{what}: {path.name} has sha256 {actual}, but lab.lock pins {expected} "
                           "(a re-uploaded file, a wrong lock, or a corrupt download); nothing was built")


def _slug(subdir: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", subdir.strip("/")) or "_root"


def sdist_dir(sha256: str, cache: Path | None = None) -> Path:
    """Where the extracted parts of the sdist with this sha256 live."""
    return (cache or cache_root()) / "src" / f"sdist-{sha256}"


def fetch_sdist(requirement: str, sha256: str, subdir: str, *, filename: str | None = None,
                tree_sha256_expected: str | None = None, cache: Path | None = None,
                log: Log = _nolog) -> Path:
    """The verified `subdir` of a PyPI sdist, extracted into the cache; returns its path.

    `requirement` is `name==version`. The download's sha256 must equal `sha256` before any byte is
    unpacked; with `tree_sha256_expected`, the extracted tree's hash (labctl.treehash) must match too,
    on every call, so a cache edited by hand is caught as well.
    """
    root = sdist_dir(sha256, cache)
    tree = root / subdir
    done = root / f".done-{_slug(subdir)}"
    if not done.is_file():
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".dl.", dir=root) as tmp:
            got = pip_download(requirement, Path(tmp), binary=False, log=log)
            if filename is not None and got.name != filename:
                raise SourceError(f"pip download {requirement} gave {got.name}, lab.lock names {filename}")
            verify_sha256(got, sha256, requirement)
            log(f"extracting {subdir} from {got.name}")
            _extract_subdir(got, subdir, root, Path(tmp))
        done.write_text(f"{requirement}\n{sha256}\n{subdir}\n", encoding="utf-8")
    if not tree.is_dir():
        raise SourceError(f"{tree} is missing although {done.name} says it is complete; delete {root}")
    if tree_sha256_expected is not None:
        actual = tree_sha256(tree)
        if actual != tree_sha256_expected:
            raise SourceHashMismatch(f"{requirement}: tree hash of {subdir} is {actual}, lab.lock pins "
                               f"{tree_sha256_expected}; delete {root} to re-extract, or re-lock")
    return tree


def _extract_subdir(archive: Path, subdir: str, root: Path, scratch: Path) -> None:
    """Extract `<top>/<subdir>/…` (and `<top>/CHANGELOG.md`) safely, then move them under `root`."""
    want = PurePosixPath(subdir.strip("/"))
    out = scratch / "x"
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        tops = {PurePosixPath(m.name).parts[0] for m in members if m.name.strip("/")}
        if len(tops) != 1:
            raise SourceError(f"{archive.name}: expected one top-level directory, found {len(tops)}")
        top = PurePosixPath(tops.pop())
        inside = [m for m in members if _under(PurePosixPath(m.name), top / want)]
        if not inside:
            raise SourceError(f"{archive.name} has no {subdir}/")
        # filter="data" refuses absolute paths, `..`, devices and links that leave the tree.
        picked = inside + [m for m in members if PurePosixPath(m.name) == top / "CHANGELOG.md"]
        tar.extractall(out, members=picked, filter="data")
    src = out / top / want
    # The sdist keeps the submodule's `.git` pointer file (gitdir: ../../.git/modules/…): it points
    # nowhere here and would make cmake's git probes misbehave. Tree hashes skip `.git` anyway.
    git_pointer = src / ".git"
    if git_pointer.is_file():
        git_pointer.unlink()
    dest = root / want
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():  # else another labctl extracted the same verified bytes meanwhile (and
        src.rename(dest)   # may be building from them): keep theirs, never swap a tree in use
    changelog = out / top / "CHANGELOG.md"
    if changelog.is_file():
        changelog.replace(root / "CHANGELOG.md")


def _under(path: PurePosixPath, prefix: PurePosixPath) -> bool:
    return path == prefix or prefix in path.parents


def changelog_commit(changelog: Path, version: str) -> str | None:
    """The llama.cpp commit an llama-cpp-python sdist vendors, from its CHANGELOG entry for `version`
    (`feat: update llama.cpp to ggml-org/llama.cpp@0c1e57098`); None when it does not say. Without
    it llama.cpp's build info would read "unknown" (the sdist carries no git history)."""
    if not changelog.is_file():
        return None
    inside = False
    for line in changelog.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("## ["):
            if inside:
                return None
            inside = line.startswith(f"## [{version}]")
        elif inside and (m := re.search(r"llama\.cpp@([0-9a-f]{7,40})", line)):
            return m.group(1)
    return None


def download(url: str, dest: Path, http: httpx.Client | None = None) -> None:
    """GET `url` into `dest` (a `.part` file the caller verifies and renames); SourceError names the
    URL. The one downloader of pinned files (npm tarballs, wheels): the hash check is the caller's."""
    try:
        stream = (http.stream("GET", url) if http is not None
                  else httpx.stream("GET", url, timeout=300, follow_redirects=True))
        with stream as resp, dest.open("wb") as fh:
            if resp.status_code != 200:
                raise SourceError(f"downloading {url}: HTTP {resp.status_code}")
            for chunk in resp.iter_bytes(1 << 20):
                fh.write(chunk)
    except httpx.TransportError as e:
        raise SourceError(f"downloading {url}: {e}") from None
