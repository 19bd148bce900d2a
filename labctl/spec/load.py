"""Load a lab file: parse with positions, validate the shape, then check what the shape cannot
(duplicate ids, paths that must exist, profile names), all reported as file:line:col."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from labctl.errors import LabctlError
from labctl.spec.dataset import combined_tree_sha256, find_tasks, task_trees
from labctl.spec.lab import Lab, LocalContestant
from labctl.spec.located import Document, Issue, SpecError, dotted, load_yaml, validate
from labctl.spec.profiles import Profile, all_profiles
from labctl.spec.task import task_problems
from labctl.treehash import tree_sha256

DEFAULT_LAB = Path("lab.yaml")


class NotOneTaskError(LabctlError, ValueError):
    """A dataset lab asked for its one task (a command that runs one task, given a dataset lab)."""


@dataclass(frozen=True)
class LoadedLab:
    """A validated lab with its file, directory and resolved hardware profile."""

    lab: Lab
    doc: Document
    profile: Profile
    profile_source: str
    base: Path | None = None
    """Where the lab's relative paths start when not beside the file: a round's copy of lab.yaml is
    read with the directory of the lab it was sealed from."""
    tasks: dict[str, Path] = field(default_factory=dict)
    """Task name → directory: the one task, or a dataset's selected tasks (`labctl.spec.dataset`)."""
    only: str | None = None
    """Set on the view of one task of a dataset (`for_task`): `task_dir` is then that task."""

    @property
    def path(self) -> Path:
        return self.doc.path

    @property
    def base_dir(self) -> Path:
        return self.base or self.doc.path.resolve().parent

    def resolve(self, p: Path) -> Path:
        """A path from the lab file, relative to the lab file's directory."""
        return p if p.is_absolute() else self.base_dir / p

    @property
    def is_dataset(self) -> bool:
        return self.lab.task.is_dataset

    @property
    def task_dir(self) -> Path:
        """The lab's one task (or, on a `for_task` view, that task of the dataset)."""
        if self.only is not None:
            return self.tasks[self.only]
        if self.lab.task.path is None:
            raise NotOneTaskError(f"{self.path} runs a dataset of {len(self.tasks)} tasks, not one task")
        return self.resolve(self.lab.task.path)

    def tree_sha256(self) -> str:
        """The hash `lock.task.tree_sha256` pins: the one task's tree, or a dataset's combined hash."""
        if self.only is None and self.is_dataset:
            return combined_tree_sha256(task_trees(self.tasks))
        return tree_sha256(self.task_dir)

    def for_task(self, name: str) -> LoadedLab:
        """This lab seen as if `name` were its only task (a run of a dataset round)."""
        if name not in self.tasks:
            raise KeyError(f"no task {name!r} in {self.path}")
        return dataclasses.replace(self, only=name)


def load_lab(path: Path | str = DEFAULT_LAB, *, profile: str | None = None,
             base_dir: Path | None = None) -> LoadedLab:
    """Parse and check a lab; `profile` (from `--profile`) replaces the lab's own; `base_dir` (a round's
    copy of a lab) is where its relative paths start instead of the file's directory."""
    path = Path(path)
    doc = load_yaml(path)
    lab: Lab = validate(Lab, doc)
    base = base_dir.resolve() if base_dir else path.resolve().parent
    issues = _check(lab, doc, base)
    tasks = find_tasks(lab.task, base)
    issues += [doc.issue(loc, msg) for loc, msg in tasks.problems]
    for name, task in tasks.tasks.items():
        issues += _check_task(doc, task, tasks.where[name])
    found, source, profile_issues = _profile(lab, doc, base, profile)
    issues += profile_issues
    if issues:
        raise SpecError(issues)
    assert found is not None
    return LoadedLab(lab, doc, found, source, base_dir.resolve() if base_dir else None, tasks=tasks.tasks)


def _check(lab: Lab, doc: Document, base: Path) -> list[Issue]:
    issues: list[Issue] = []
    seen: dict[str, int] = {}
    for i, c in enumerate(lab.contestants):
        if c.id in seen:
            issues.append(doc.issue(("contestants", i, "id"),
                                    f"id {c.id!r} is already used by contestants[{seen[c.id]}]"))
        seen.setdefault(c.id, i)
        if isinstance(c, LocalContestant) and c.model.path is not None:
            p = c.model.path if c.model.path.is_absolute() else base / c.model.path
            if not p.is_file():
                issues.append(doc.issue(("contestants", i, "model", "path"), f"no such file: {p}"))
    runtimes: dict[str, tuple[str, tuple[str | int, ...]]] = {}
    if lab.agent is not None:
        runtimes[lab.agent.runtime] = (lab.agent.version, ("agent", "version"))
    for i, c in enumerate(lab.contestants):
        own = getattr(c, "agent", None)
        if c.kind in ("local", "cloud") and own is None and lab.agent is None:
            issues.append(doc.issue(("contestants", i), f"contestant {c.id!r} needs an agent runtime: "
                                                        "add an `agent:` section (the lab's or its own)"))
        if own is not None:
            version, where = runtimes.setdefault(own.runtime, (own.version, ("contestants", i, "agent")))
            if version != own.version:  # one image per runtime: two versions would share its name
                issues.append(doc.issue(("contestants", i, "agent", "version"),
                                        f"{own.runtime} {own.version} differs from {version} named at "
                                        f"{dotted(where)}: one version per runtime in a lab"))
    llama = lab.engine.llama_cpp
    if llama.path is not None:
        p = llama.path if llama.path.is_absolute() else base / llama.path
        if not p.is_dir():
            issues.append(doc.issue(("engine", "llama_cpp", "path"), f"no such directory: {p}"))
    return issues


def _check_task(doc: Document, task: Path, loc: tuple[str | int, ...] = ("task", "path")) -> list[Issue]:
    """A Harbor task directory: task.toml that parses with valid tables, and instruction.md. What a
    run would trip over later (resource limits, labctl's tables, the repository path) is said now."""
    if not task.is_dir():
        return [doc.issue(loc, f"task directory does not exist: {task}")]
    problems = task_problems(task)
    if not problems and not (task / "instruction.md").is_file():
        problems = [f"not a Harbor task: {task / 'instruction.md'} is missing"]
    return [doc.issue(loc, p) for p in problems]


def _profile(lab: Lab, doc: Document, base: Path, override: str | None
             ) -> tuple[Profile | None, str, list[Issue]]:
    if override is None and isinstance(lab.profile, Profile):
        return lab.profile, "inline", []
    name = override or lab.profile
    assert isinstance(name, str)
    try:
        known = all_profiles(base)
    except SpecError as e:
        return None, "", e.issues
    if name in known:
        return known[name].profile, known[name].source, []
    where = ("profile",)
    msg = f"unknown profile {name!r}; known: {', '.join(sorted(known))}"
    if override is not None:
        return None, "", [Issue("--profile", 0, 0, "", msg)]
    return None, "", [doc.issue(where, msg)]
