"""The pieces one run is made of, apart from the order the runner puts them in: where runs work
(`work_root`), the task's resource limits (`task_limits`), the workspace repository (a fixed-
identity base commit, its bare origin, the pushed commits and the git bundle kept), the redaction of
server logs, and `RunError`.

labctl's labels and neutral object names live in `labctl.engine.names`, the engine itself in
`labctl.engine.container`, with their blindness rule: names and labels come from the round id and
the run id only. The workspace's branch is `run_label(run_id)` (`labctl.round.seal`), never a
contestant id or model name.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from labctl.engine.spec import Limits
from labctl.errors import LabctlError
from labctl.spec.task import Task, read_task

BASE_DATE = "2000-01-01T00:00:00+00:00"
"""Author and committer date of a task's base commit: with fixed names it makes the hash portable."""
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "labctl", "GIT_AUTHOR_EMAIL": "labctl@labctl.invalid",
                "GIT_COMMITTER_NAME": "labctl", "GIT_COMMITTER_EMAIL": "labctl@labctl.invalid",
                "GIT_AUTHOR_DATE": BASE_DATE, "GIT_COMMITTER_DATE": BASE_DATE}
WORKSPACE = "/workspace"
ORIGIN = "/origin.git"
"""Where the run's bare origin is mounted in the agent and verifier containers (the remote URL)."""


class RunError(LabctlError, RuntimeError):
    """A run cannot go on; `reason` is the one line recorded in result.json."""


def work_root() -> Path:
    """Scratch space of running runs (workspace clones, meter files), outside the round directory so
    the manifest never lists half-written scratch: `$LABCTL_WORK_DIR` or ~/.cache/labctl/work."""
    env = os.environ.get("LABCTL_WORK_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "labctl"
    return (base if env else base / "work").resolve()


# --- the workspace repository --------------------------------------------------------------------


def _git(*args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    """Host git, isolated from the operator's own configuration (hooks, signing, templates) and
    accepting repositories owned by the container's user."""
    full = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0", **(env or {})}
    done = subprocess.run(["git", "-c", "safe.directory=*", "-c", "init.defaultBranch=main",
                           "-c", "commit.gpgsign=false", *args], cwd=cwd, env=full, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=120)
    if done.returncode != 0:
        raise RunError(f"git {args[0]}: {done.stderr.strip().splitlines()[-1:] or ''}")
    return done.stdout.strip()


def task_limits(task: Task) -> Limits:
    """The container limits from task.toml's `[environment]` (Harbor's `cpus`, and `memory_mb` or
    `memory = "2G"`), for the agent's and the verifier's containers: every contestant gets the same
    machine, whatever the host. `storage_mb` / `storage` is read but not applied: docker's
    `--storage-opt size=` works only on overlay2 over xfs mounted with pquota (or devicemapper, btrfs,
    zfs), and fails `docker create` elsewhere — on ext4 (this project's CI) too; Harbor's own docker
    environment does not apply it either."""
    cpus, memory = task.environment.cpus, task.environment.memory_mb
    return Limits(cpus=min(float(cpus), float(os.cpu_count() or 1)) if cpus else None,
                  memory=f"{int(memory)}m" if memory else None)


def resource_flags(task: Task) -> list[str]:
    """`task_limits` as `docker run` flags."""
    return task_limits(task).flags()


@dataclass
class Workspace:
    """A run's repositories on the host: the agent's clone and its bare origin."""

    clone: Path
    origin: Path
    branch: str
    base: str
    """The base commit's hash."""


def make_workspace(task_dir: Path, work: Path, branch: str, task: Task | None = None) -> Workspace:
    """Commit the task's repository directory (or nothing: an empty base commit) deterministically,
    push it as `branch` into a fresh bare origin, clone that. The clone's `origin` is `ORIGIN`, the
    path where the containers see the bare repository."""
    src = (task or read_task(task_dir)).repository_dir  # `task`: the run's RunPlan read it already
    seed, origin, clone = work / "seed", work / "origin.git", work / "workspace"
    for p in (seed, origin, clone):
        shutil.rmtree(p, ignore_errors=True)
    seed.mkdir(parents=True)
    if src is not None:
        if not src.is_dir():
            raise RunError(f"{task_dir / 'task.toml'}: [labctl.repository] path {src} is not a directory")
        shutil.copytree(src, seed, dirs_exist_ok=True, symlinks=True)
    _git("init", "-q", cwd=seed)
    _git("add", "-A", cwd=seed)
    _git("commit", "-q", "--allow-empty", "-m", "Base commit", cwd=seed, env=GIT_IDENTITY)
    base = _git("rev-parse", "HEAD", cwd=seed)
    _git("init", "-q", "--bare", str(origin))
    _git("push", "-q", str(origin), f"HEAD:refs/heads/{branch}", cwd=seed)
    _git("symbolic-ref", "HEAD", f"refs/heads/{branch}", cwd=origin)
    _git("clone", "-q", "--branch", branch, str(origin), str(clone))
    _git("remote", "set-url", "origin", ORIGIN, cwd=clone)
    shutil.rmtree(seed)
    return Workspace(clone=clone, origin=origin, branch=branch, base=base)


def pushed_commits(ws: Workspace) -> int:
    """Commits on the run's branch in origin beyond the base commit (what the agent pushed)."""
    try:
        return int(_git("rev-list", "--count", f"{ws.base}..refs/heads/{ws.branch}", cwd=ws.origin) or 0)
    except (RunError, ValueError):
        return 0


def bundle(ws: Workspace, dest: Path) -> bool:
    """`git bundle` of the run's branch as pushed (all of it, base commit included)."""
    try:
        _git("bundle", "create", str(dest.resolve()), f"refs/heads/{ws.branch}", cwd=ws.origin)
    except RunError:
        return False
    return True


# --- logs ----------------------------------------------------------------------------------------

_IDENTIFYING = re.compile(r"general\.(name|basename|finetune|organization|author|url|repo_url|source|"
                          r"base_model|license|tags|description|quantized_by|version|size_label)", re.I)


def redact_server_log(text: str) -> str:
    """llama-server prints the GGUF's general.* metadata while loading; those lines can name the
    model, so they are dropped before the log enters the round (the path is already neutral)."""
    return "".join(line for line in text.splitlines(keepends=True) if not _IDENTIFYING.search(line))


def argv_text(argv: Sequence[str]) -> str:
    return " ".join(argv)
