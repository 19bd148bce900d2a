"""Pin llama.cpp's source: a git ref to a commit, a local path to a tree hash; fetch a pinned commit.

Resolution asks the remote with `git ls-remote` (no clone: llama.cpp's history is large), so
`labctl lock` stays fast; the image builder later fetches exactly the pinned commit with
`fetch_source`, which checks what it got.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path, PurePosixPath
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

from labctl.errors import LabctlError
from labctl.treehash import Ignore, tree_sha256

COMMIT = re.compile(r"^[0-9a-f]{40}$")
HEX = re.compile(r"^[0-9a-fA-F]{4,40}$")
TIMEOUT_S = 120.0
FETCH_TIMEOUT_S = 1800.0
MARKER = "labctl-source"
"""File inside a checkout's .git naming the pinned commit: `fetch_source` only ever replaces a
directory that carries it, never a directory it did not make."""


class GitRefError(LabctlError, RuntimeError):
    """A ref that does not resolve, a remote that does not answer, or a fetch that went wrong."""


class PathSource(NamedTuple):
    """A local source tree as locked: its content hash, and its git state when it is a work tree."""

    tree_sha256: str
    commit: str | None
    """HEAD of the enclosing git work tree (None when the path is not in one)."""
    dirty: bool
    """The tree differs from `commit` (modified or untracked files under the path)."""


def _git(*args: str, cwd: Path | None = None, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    # Never prompt: a private or misspelt https URL must fail, not hang waiting for a password.
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GCM_INTERACTIVE": "never", "LC_ALL": "C"}
    try:
        return subprocess.run(["git", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        if shutil.which("git") is None:
            raise GitRefError("git is not installed (needed to pin llama.cpp's source)") from None
        raise GitRefError(f"no such directory: {cwd}") from None
    except subprocess.TimeoutExpired:
        raise GitRefError(f"`git {args[0]}` did not finish in {timeout:.0f}s") from None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def ls_remote(url: str, *patterns: str) -> dict[str, str]:
    """Ref name → object id as the remote advertises them (peeled tags appear as `name^{}`)."""
    done = _git("ls-remote", "--", url, *patterns)
    if done.returncode != 0:
        raise GitRefError(f"cannot list the refs of {url}: {_last_line(done.stderr)}")
    refs: dict[str, str] = {}
    for line in done.stdout.splitlines():
        oid, _, name = line.partition("\t")
        if name:
            refs[name] = oid
    return refs


def resolve_git(url: str, ref: str) -> str:
    """The 40-hex commit `ref` (tag, branch, `refs/...` or commit) names in the repository at `url`.

    Annotated tags resolve to the commit they point at (the peeled `^{}` entry), not to the tag
    object. A name that is both a tag and a branch is an error rather than a silent pick: a lock
    must not depend on which rule a reader assumes. A full commit id is checked against the
    repository when it is local (file:// or a path); a remote cannot be asked about an arbitrary
    commit without fetching, so there it is returned as given and `fetch_source` checks it.
    """
    ref = ref.strip()
    _check_url(url)
    if not ref or ref.startswith("-"):
        raise GitRefError(f"not a usable ref for {url}: {ref!r}")
    if COMMIT.fullmatch(ref.lower()):
        return _check_commit(url, ref.lower())
    # A pattern matches a ref name's tail, and the peeled entry's name ends in `^{}`: without the
    # second pattern an annotated tag would come back as its tag object only.
    refs = ls_remote(url, ref, ref + "^{}")
    exact = ref.startswith("refs/") or ref == "HEAD"
    candidates = [ref] if exact else [f"refs/tags/{ref}", f"refs/heads/{ref}"]
    present = [name for name in candidates if name in refs]
    if len(present) > 1:
        raise GitRefError(f"ref {ref!r} of {url} is both a tag and a branch; write "
                          f"refs/tags/{ref} or refs/heads/{ref}")
    if not present:
        hint = " (abbreviated commits cannot be resolved remotely: give all 40 hex digits)" \
            if HEX.fullmatch(ref) else ""
        raise GitRefError(f"ref {ref!r} does not exist in {url}{hint}")
    name = present[0]
    return refs.get(name + "^{}", refs[name])


def _check_url(url: str) -> None:
    if not url or url.startswith("-"):  # would be read as an option by git
        raise GitRefError(f"not a usable git URL: {url!r}")


def _local_repo(url: str) -> Path | None:
    if url.startswith("file://"):
        return Path(unquote(urlsplit(url).path))
    if "://" not in url and not re.match(r"^[\w.-]+@[\w.-]+:", url) and Path(url).exists():
        return Path(url)
    return None


def _check_commit(url: str, commit: str) -> str:
    repo = _local_repo(url)
    if repo is None:
        return commit
    if not repo.is_dir():
        raise GitRefError(f"cannot check commit {commit} in {url}: no such repository")
    done = _git("cat-file", "-e", f"{commit}^{{commit}}", cwd=repo)
    if done.returncode != 0:
        raise GitRefError(f"ref {commit!r} does not exist in {url} (no such commit)")
    return commit


def gitignored(path: Path) -> Ignore | None:
    """An `ignore` for tree_sha256 that skips what git ignores under `path` (None outside a work tree).

    A local llama.cpp checkout usually holds a `build/` directory: its bytes are neither source nor
    reproducible, so they must not move the lock. The image builder must leave out the same paths.
    """
    done = _git("ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory", cwd=path)
    if done.returncode != 0:
        return None
    files: set[PurePosixPath] = set()
    dirs: set[PurePosixPath] = set()
    for item in filter(None, done.stdout.split("\0")):
        (dirs if item.endswith("/") else files).add(PurePosixPath(item.rstrip("/")))

    def ignore(rel: PurePosixPath) -> bool:
        return rel in files or rel in dirs or any(parent in dirs for parent in rel.parents)

    return ignore


def lock_path_source(path: Path, *, respect_gitignore: bool = True) -> PathSource:
    """Tree hash of a local source directory, plus HEAD and dirtiness when it lies in a git work tree.

    The hash is the pin; the commit is for the reader ("built from abc123 plus local edits").
    """
    path = Path(path)
    if not path.is_dir():
        raise GitRefError(f"no such source directory: {path}")
    inside = _git("rev-parse", "--is-inside-work-tree", cwd=path)
    in_git = inside.returncode == 0 and inside.stdout.strip() == "true"
    ignore = gitignored(path) if in_git and respect_gitignore else None
    digest = tree_sha256(path, ignore=ignore)
    if not in_git:
        return PathSource(digest, None, False)
    head = _git("rev-parse", "--verify", "-q", "HEAD", cwd=path)
    commit = head.stdout.strip() if head.returncode == 0 else None  # a repo with no commits yet
    status = _git("status", "--porcelain", "--untracked-files=normal", "--", ".", cwd=path)
    dirty = status.returncode != 0 or bool(status.stdout.strip()) or commit is None
    return PathSource(digest, commit, dirty)


def _head(repo: Path) -> str | None:
    done = _git("rev-parse", "--verify", "-q", "HEAD", cwd=repo)
    return done.stdout.strip() if done.returncode == 0 else None


def _is_clean_checkout(dest: Path, commit: str) -> bool:
    marker = dest / ".git" / MARKER
    if not marker.is_file() or marker.read_text().strip() != commit or _head(dest) != commit:
        return False
    status = _git("status", "--porcelain", "--untracked-files=all", "--ignored", cwd=dest)
    return status.returncode == 0 and not status.stdout.strip()


def fetch_source(url: str, commit: str, dest: Path) -> Path:
    """A clean checkout of exactly `commit` of `url` at `dest`; reused when it is already one.

    Tries a shallow fetch of the single commit first (servers like GitHub allow it, and llama.cpp's
    full history is hundreds of MB), then a full fetch. Builds in a temporary sibling and renames it
    into place, so an interrupted fetch never leaves a half checkout that looks finished.
    """
    commit = commit.lower()
    _check_url(url)
    if not COMMIT.fullmatch(commit):
        raise GitRefError(f"not a full 40-hex commit: {commit!r}")
    dest = Path(dest)
    if dest.exists():
        if _is_clean_checkout(dest, commit):
            return dest
        if not (dest / ".git" / MARKER).is_file() and any(dest.iterdir()):
            raise GitRefError(f"{dest} exists and was not made by labctl; refusing to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        _checkout(url, commit, tmp)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _checkout(url: str, commit: str, repo: Path) -> None:
    def run(*args: str, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return _git(*args, cwd=repo, timeout=timeout)

    for args in (("init", "-q"), ("remote", "add", "origin", url)):
        done = run(*args)
        if done.returncode != 0:
            raise GitRefError(f"git {args[0]} failed in {repo}: {_last_line(done.stderr)}")
    shallow = run("fetch", "-q", "--depth", "1", "--no-tags", "origin", commit, timeout=FETCH_TIMEOUT_S)
    if shallow.returncode != 0:
        full = run("fetch", "-q", "--tags", "origin", "+refs/heads/*:refs/remotes/origin/*",
                   timeout=FETCH_TIMEOUT_S)
        if full.returncode != 0:
            raise GitRefError(f"cannot fetch {url}: {_last_line(full.stderr)}")
    done = run("-c", "advice.detachedHead=false", "checkout", "-q", "--detach", commit)
    if done.returncode != 0:
        raise GitRefError(f"commit {commit} is not in {url}: {_last_line(done.stderr)}")
    head = _head(repo)
    if head != commit:
        raise GitRefError(f"checkout of {url} gave {head}, not the pinned {commit}")
    (repo / ".git" / MARKER).write_text(commit + "\n")
