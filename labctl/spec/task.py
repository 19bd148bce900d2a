"""task.toml: the one reader of a Harbor task's configuration, Harbor's tables and labctl's own.

Why one reader: validation (`labctl validate`), the lock, the image specs, the seal, the run and
the grader all need pieces of task.toml; read in eight places they disagreed on what an absent or
mistyped value means. Here every table is typed once, and every problem is reported the same way:
`<task>/task.toml: [table] key: what is wrong`. Unknown keys are kept and ignored — a task written
for Harbor (or a later Harbor) must load unchanged.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError

from labctl.errors import LabctlError

DEFAULT_VERIFIER_TIMEOUT_S = 600.0
"""Harbor's default when `[verifier] timeout_sec` is absent."""


class TaskError(LabctlError, ValueError):
    """task.toml does not parse or a table has a wrong value; one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class _Table(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Environment(_Table):
    """`[environment]`: how Harbor builds and sizes the task's container."""

    docker_image: str | None = None
    """A prebuilt image instead of environment/Dockerfile."""
    cpus: StrictInt | StrictFloat | None = Field(default=None, gt=0)
    """CPUs for the agent's and the verifier's containers (every contestant gets the same)."""
    memory_mb: StrictInt | StrictFloat | None = Field(default=None, gt=0)
    """Memory limit in MiB for the same containers."""


class Verifier(_Table):
    """`[verifier]`: how long tests/test.sh may take."""

    timeout_sec: StrictInt | StrictFloat = Field(default=DEFAULT_VERIFIER_TIMEOUT_S, gt=0)
    """Seconds; the verifier container's own deadline adds a grace period."""


class Agent(_Table):
    """`[agent]`: Harbor's agent time-out (labctl's budget comes from the lab)."""

    timeout_sec: StrictInt | StrictFloat | None = Field(default=None, gt=0)
    """Seconds Harbor would give the agent."""


class Repository(_Table):
    """`[labctl.repository]`: the task's base commit is a directory of the task, cloned per run."""

    path: str | None = None
    """Directory (relative to the task) committed as the base commit the agent clones."""
    setup: str | None = None
    """Shell command run in the fresh workspace as the agent's user, before the agent starts."""


class OutcomeRules(_Table):
    """`[labctl.outcome]`: named checks of reward.json → outcome class.

    Copied into sealed.json at seal time because the task directory is not part of the round;
    the lock's task tree hash (also in sealed.json) pins the task.toml they came from.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    complete: list[str] = Field(min_length=1)
    """Checks that must all pass for Complete."""
    partial: list[str] = []
    """Checks that must all pass for Partial (empty: no Partial from checks)."""


class ReportColumns(_Table):
    """`[labctl.report]`: which named checks are the report's Build and Screenshot columns, and the
    regex of the agent's build command whose attempts the Build column counts ("pass (attempt 2)")."""

    build_check: str | None = None
    screenshot_check: str | None = None
    build_command: str | None = None


class LabctlTables(_Table):
    """`[labctl.*]`: labctl's own tables; Harbor ignores them."""

    repository: Repository = Repository()
    outcome: OutcomeRules | None = None
    report: ReportColumns = ReportColumns()


class Task(_Table):
    """A task's task.toml, typed. `read_task(dir)` makes one; `dir` is where it was read."""

    dir: Path = Path(".")
    metadata: dict[str, Any] = {}
    """`[metadata]`: author, difficulty, category, tags (dataset selection reads `tags`)."""
    environment: Environment = Environment()
    verifier: Verifier = Verifier()
    agent: Agent = Agent()
    labctl: LabctlTables = LabctlTables()

    @property
    def toml(self) -> Path:
        return self.dir / "task.toml"

    @property
    def repository_dir(self) -> Path | None:
        """The directory committed as the base commit, when the task has one."""
        rel = self.labctl.repository.path
        return None if rel is None else self.dir / rel

    @property
    def tags(self) -> list[str]:
        tags = self.metadata.get("tags")
        return [str(t) for t in tags] if isinstance(tags, list) else []

    def report_columns(self) -> dict[str, str]:
        return {k: v for k, v in self.labctl.report.model_dump().items() if isinstance(v, str)}


_TABLES = [("labctl", "repository"), ("labctl", "outcome"), ("labctl", "report"), ("labctl",),
           ("environment",), ("verifier",), ("agent",), ("metadata",)]
_NUMBER_TAGS = {"int", "float"}
"""Pydantic's union-member tags in an error's location (`StrictInt | StrictFloat`), not keys."""


def _problems(toml: Path, errors: list[Any]) -> list[str]:
    out: list[str] = []
    for err in errors:
        loc = tuple(str(x) for x in err["loc"] if str(x) not in _NUMBER_TAGS)
        table = next((t for t in _TABLES if loc[:len(t)] == t), loc[:1])
        key = ".".join(loc[len(table):])
        if err["type"].startswith(("int", "float", "greater_than")):
            msg = f"{key} must be a positive number"
        elif err["type"] == "string_type":
            msg = f"{key} must be a string"
        else:
            msg = f"{key}: {err['msg']}"
        line = f"{toml}: [{'.'.join(table)}] {msg}"
        if line not in out:
            out.append(line)
    return out


def _load(toml: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(toml.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TaskError([f"not a Harbor task: {toml} is missing"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise TaskError([f"{toml} does not parse: {e}"]) from None


def read_task(task_dir: Path) -> Task:
    """Read and type `task_dir/task.toml`; TaskError names the file, the table and the key."""
    data = _load(task_dir / "task.toml")
    try:
        return Task.model_validate({**data, "dir": task_dir})
    except ValidationError as e:
        raise TaskError(_problems(task_dir / "task.toml", e.errors())) from None


def task_problems(task_dir: Path) -> list[str]:
    """Everything a run would trip over later, all at once (for `labctl validate`): the tables'
    problems and a repository path that is not a directory."""
    toml = task_dir / "task.toml"
    try:
        data = _load(toml)
    except TaskError as e:
        return e.problems
    problems: list[str] = []
    try:
        Task.model_validate({**data, "dir": task_dir})
    except ValidationError as e:
        problems = _problems(toml, e.errors())
    repository = data.get("labctl", {}).get("repository", {}) if isinstance(data.get("labctl"), dict) else {}
    rel = repository.get("path") if isinstance(repository, dict) else None
    if isinstance(rel, str) and not (task_dir / rel).is_dir():
        problems.append(f"{toml}: [labctl.repository] path: no such directory: {task_dir / rel}")
    return problems
