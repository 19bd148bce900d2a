"""A lab's tasks: one Harbor task, or a dataset of them (a directory, a list of paths or a glob)
narrowed by `select` (names, tags, a seeded sample).

A task is named by its directory's name; names must be unique within a lab, since run records,
report rows and `lab.lock`'s `tasks` are keyed by them. A dataset's combined tree hash (what
`lock.task.tree_sha256` and `sealed.json` carry) is the hash of every selected task's name and
tree hash, so any task changing changes it, and `lock.tasks.<name>` says which one did.
"""

from __future__ import annotations

import glob as globmod
import hashlib
import random
import re
from dataclasses import dataclass
from pathlib import Path

from labctl.spec.located import Loc
from labctl.spec.task import TaskError, read_task
from labctl.spec.taskref import TaskRef
from labctl.treehash import tree_sha256

TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
"""A task directory name labctl can key records, image names and report rows by."""


@dataclass(frozen=True)
class Found:
    """Tasks resolved from a lab's `task:` section, and what was wrong (location, message)."""

    tasks: dict[str, Path]
    """Task name → directory, sorted by name."""
    problems: list[tuple[Loc, str]]
    where: dict[str, Loc]
    """Task name → where lab.yaml names it (for located errors about one task)."""


def task_tags(task_dir: Path) -> list[str]:
    """`[metadata] tags` of a task's task.toml ([] when absent or unreadable)."""
    try:
        return read_task(task_dir).tags
    except TaskError:  # validation reports it; selection just does not match it
        return []


def find_tasks(ref: TaskRef, base: Path) -> Found:
    """The selected tasks of `ref` with directories relative to `base` (the lab's directory)."""
    def at(p: Path) -> Path:
        return p if p.is_absolute() else base / p

    problems: list[tuple[Loc, str]] = []
    candidates: list[tuple[Loc, Path]] = []
    if ref.path is not None:
        candidates = [(("task", "path"), at(ref.path))]
    elif ref.dataset is not None:
        root = at(ref.dataset)
        if not root.is_dir():
            return Found({}, [(("task", "dataset"), f"dataset directory does not exist: {root}")], {})
        candidates = [(("task", "dataset"), d) for d in sorted(root.iterdir())
                      if d.is_dir() and (d / "task.toml").is_file()]
        if not candidates:
            problem = f"no Harbor task (a directory with task.toml) in {root}"
            return Found({}, [(("task", "dataset"), problem)], {})
    elif ref.paths is not None:
        candidates = [(("task", "paths", i), at(p)) for i, p in enumerate(ref.paths)]
    else:
        assert ref.glob is not None
        pattern = ref.glob if Path(ref.glob).is_absolute() else str(base / ref.glob)
        hits = sorted(Path(h) for h in globmod.glob(pattern) if Path(h).is_dir())
        candidates = [(("task", "glob"), h) for h in hits if (h / "task.toml").is_file()]
        if not candidates:
            return Found({}, [(("task", "glob"), f"matches no Harbor task directory: {pattern}")], {})
    tasks: dict[str, Path] = {}
    where: dict[str, Loc] = {}
    for loc, d in candidates:
        name = d.resolve().name if d.name in ("", ".", "..") else d.name
        if not TASK_NAME.match(name):
            problems.append((loc, f"task directory name {name!r} is not usable as a task name "
                                  "(letters, digits, '.', '_', '-')"))
            continue
        if name in tasks:
            problems.append((loc, f"two tasks are named {name!r} ({tasks[name]} and {d}): task names "
                                  "(directory names) must be unique"))
            continue
        tasks[name], where[name] = d, loc
    chosen = _select(ref, tasks, problems)
    return Found({n: tasks[n] for n in sorted(chosen)}, problems, {n: where[n] for n in chosen})


def _select(ref: TaskRef, tasks: dict[str, Path], problems: list[tuple[Loc, str]]) -> list[str]:
    names = sorted(tasks)
    sel = ref.select
    if sel is None:
        return names
    if sel.names is not None:
        for i, n in enumerate(sel.names):
            if n not in tasks:
                problems.append((("task", "select", "names", i),
                                 f"no task named {n!r} in the dataset (has: {', '.join(names) or 'none'})"))
        names = [n for n in names if n in set(sel.names)]
    if sel.tags is not None:
        want = set(sel.tags)
        names = [n for n in names if want & set(task_tags(tasks[n]))]
        if not names:
            problems.append((("task", "select", "tags"), f"no task has any of the tags {sorted(want)}"))
    if sel.sample is not None:
        if sel.sample.n > len(names):
            problems.append((("task", "select", "sample", "n"),
                             f"cannot sample {sel.sample.n} of {len(names)} selected tasks"))
        else:
            names = sorted(random.Random(sel.sample.seed).sample(names, sel.sample.n))
    if not names and not problems:
        problems.append((("task", "select"), "selects no task"))
    return names


def combined_tree_sha256(trees: dict[str, str]) -> str:
    """One hash for a dataset: every task's name and tree hash, in name order."""
    h = hashlib.sha256(b"labctl-dataset-v1\n")
    for name in sorted(trees):
        h.update(f"{name}\0{trees[name]}\n".encode())
    return h.hexdigest()


def task_trees(tasks: dict[str, Path]) -> dict[str, str]:
    """Task name → tree sha256 of its directory."""
    return {name: tree_sha256(d) for name, d in tasks.items()}


def environment_key(task_dir: Path) -> str:
    """What a task's image is built from, as a hash: its environment/ tree and its `[environment]
    docker_image`. Tasks with equal keys share one task image (and the agent images on it)."""
    env = task_dir / "environment"
    try:
        image = read_task(task_dir).environment.docker_image
    except TaskError:
        image = None
    tree = tree_sha256(env) if env.is_dir() else "-"
    return hashlib.sha256(f"{tree}\0{image or ''}".encode()).hexdigest()


def image_groups(tasks: dict[str, Path]) -> dict[str, str]:
    """Task name → the name of the task whose image it uses: the first (by name) of the tasks with
    the same environment, so an image is built once per distinct environment."""
    first: dict[str, str] = {}
    out: dict[str, str] = {}
    for name in sorted(tasks):
        out[name] = first.setdefault(environment_key(tasks[name]), name)
    return out


def image_slug(name: str) -> str:
    """A task name as it may appear in an image repository name."""
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.") or "task"


def agent_image_name(runtime: str, group: str) -> str:
    """The image key of a runtime's agent image on a dataset task group's image."""
    return f"agent-{runtime}.{image_slug(group)}"


def dataset_label(ref: TaskRef) -> str:
    """How lab.lock's `task.path` names a dataset (one task: its path)."""
    if ref.path is not None:
        return str(ref.path)
    if ref.dataset is not None:
        return f"dataset:{ref.dataset}"
    if ref.glob is not None:
        return f"glob:{ref.glob}"
    assert ref.paths is not None
    return "paths:" + ",".join(str(p) for p in ref.paths)


__all__ = ["Found", "agent_image_name", "combined_tree_sha256", "dataset_label", "environment_key",
           "find_tasks", "image_groups", "image_slug", "task_tags", "task_trees"]
