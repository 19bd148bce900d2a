"""Load a lab file: parse with positions, validate the shape, then check what the shape cannot
(duplicate ids, paths that must exist, profile names), all reported as file:line:col."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labctl.located import Document, Issue, SpecError, dotted, load_yaml, validate
from labctl.profiles import Profile, all_profiles
from labctl.spec import Lab, LocalContestant

DEFAULT_LAB = Path("lab.yaml")


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
    def task_dir(self) -> Path:
        return self.resolve(self.lab.task.path)


def load_lab(path: Path | str = DEFAULT_LAB, *, profile: str | None = None,
             base_dir: Path | None = None) -> LoadedLab:
    """Parse and check a lab; `profile` (from `--profile`) replaces the lab's own; `base_dir` (a round's
    copy of a lab) is where its relative paths start instead of the file's directory."""
    path = Path(path)
    doc = load_yaml(path)
    lab: Lab = validate(Lab, doc)
    base = base_dir.resolve() if base_dir else path.resolve().parent
    issues = _check(lab, doc, base)
    found, source, profile_issues = _profile(lab, doc, base, profile)
    issues += profile_issues
    if issues:
        raise SpecError(issues)
    assert found is not None
    return LoadedLab(lab, doc, found, source, base_dir.resolve() if base_dir else None)


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
    issues += _check_task(doc, base / lab.task.path if not lab.task.path.is_absolute() else lab.task.path)
    llama = lab.engine.llama_cpp
    if llama.path is not None:
        p = llama.path if llama.path.is_absolute() else base / llama.path
        if not p.is_dir():
            issues.append(doc.issue(("engine", "llama_cpp", "path"), f"no such directory: {p}"))
    return issues


def task_table(task_dir: Path, *keys: str) -> dict[str, Any]:
    """A table of the task's task.toml (`task_table(t, "labctl", "repository")`); {} when absent or
    not a table. The one place task.toml is read, so every reader sees it the same way."""
    table: Any = tomllib.loads((task_dir / "task.toml").read_text(encoding="utf-8"))
    for key in keys:
        table = table.get(key) if isinstance(table, dict) else None
    return table if isinstance(table, dict) else {}


def _check_task(doc: Document, task: Path) -> list[Issue]:
    """A Harbor task directory: task.toml that parses, and instruction.md."""
    loc = ("task", "path")
    if not task.is_dir():
        return [doc.issue(loc, f"task directory does not exist: {task}")]
    toml = task / "task.toml"
    if not toml.is_file():
        return [doc.issue(loc, f"not a Harbor task: {toml} is missing")]
    try:
        task_table(task)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        return [doc.issue(loc, f"{toml} does not parse: {e}")]
    if not (task / "instruction.md").is_file():
        return [doc.issue(loc, f"not a Harbor task: {task / 'instruction.md'} is missing")]
    return [doc.issue(loc, p) for p in _task_table_problems(task)]


def _task_table_problems(task: Path) -> list[str]:
    """What a run would trip over later, said now: labctl's tables and the resource limits."""
    from pydantic import ValidationError

    from labctl.runparts import RunError, repository_setup, resource_flags, task_repository
    from labctl.seal import outcome_rules

    toml = task / "task.toml"
    problems: list[str] = []
    for check in (resource_flags, repository_setup, outcome_rules):
        try:
            check(task)
        except RunError as e:  # its message already names task.toml
            problems.append(str(e))
        except ValidationError as e:
            problems += [f"{toml}: [labctl.outcome] {'.'.join(map(str, err['loc']))}: {err['msg']}"
                         for err in e.errors()]
    repo = task_repository(task)
    if repo is not None and not repo.is_dir():
        problems.append(f"{toml}: [labctl.repository] path: no such directory: {repo}")
    return problems


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
