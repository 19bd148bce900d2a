"""task.toml: the one reader of a Harbor task's configuration, Harbor's tables and labctl's own.

Why one reader: validation (`labctl validate`), the lock, the image specs, the seal, the run and
the grader all need pieces of task.toml; read in eight places they disagreed on what an absent or
mistyped value means. Here every table is typed once, and every problem is reported the same way:
`<task>/task.toml: [table] key: what is wrong`. Unknown keys are kept, never fatal — a task written
for Harbor (or a later Harbor) must load unchanged — and reported (`task_warnings`: lock, validate and
`task check` print them), with the keys of Harbor's schema labctl does not act on.

The schema is Harbor's as its source reads it today (src/harbor/models/task/config.py): `memory` /
`storage` as size strings ("2G", "512M", as Terminal-Bench 2 writes them; Harbor maps them onto
`memory_mb` / `storage_mb` with 1G = 1024M), `cpus`, `allow_internet` (default true), timeouts,
`docker_image` (a prebuilt image: labctl builds environment/Dockerfile when there is one and uses
`docker_image` only when there is none), and a top-level `version` read as `schema_version`.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

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


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG])\s*$", re.I)


def size_mb(text: str) -> int:
    """Harbor's size string in MiB: "2G" → 2048, "512M" → 512, "4096K" → 4 (its own arithmetic)."""
    m = _SIZE.match(text)
    if m is None:
        raise ValueError(f"{text!r} is not a size like '2G', '512M' or '1024K'")
    value, unit = float(m.group(1)), m.group(2).upper()
    return int(value * 1024) if unit == "G" else int(value) if unit == "M" else int(value / 1024)


class Environment(_Table):
    """`[environment]`: how Harbor builds and sizes the task's container."""

    docker_image: str | None = None
    """A prebuilt image; labctl uses it only when the task has no environment/Dockerfile."""
    cpus: StrictInt | StrictFloat | None = Field(default=None, gt=0)
    """CPUs for the agent's and the verifier's containers (every contestant gets the same)."""
    memory_mb: StrictInt | StrictFloat | None = Field(default=None, gt=0)
    """Memory limit in MiB for the same containers (`memory = "2G"` sets it too)."""
    storage_mb: StrictInt | StrictFloat | None = Field(default=None, gt=0)
    """Disk in MiB (`storage = "10G"` sets it too); recorded, applied where the engine can
    (`labctl.run.parts.resource_flags`)."""
    memory: StrictStr | None = None
    """Harbor's older size string for `memory_mb` ("2G", "512M"); `memory_mb` wins when both are given."""
    storage: StrictStr | None = None
    """The same for `storage_mb`."""
    allow_internet: StrictBool = True
    """Harbor's switch: false means no network for the task's containers (the lab's network policy
    decides what true reaches)."""

    @field_validator("memory", "storage")
    @classmethod
    def _size(cls, v: str | None) -> str | None:
        if v is not None:
            size_mb(v)
        return v

    @model_validator(mode="after")
    def _sizes(self) -> Environment:
        for text, field in ((self.memory, "memory_mb"), (self.storage, "storage_mb")):
            if text is not None and getattr(self, field) is None:
                object.__setattr__(self, field, size_mb(text))
        return self


class Verifier(_Table):
    """`[verifier]`: how long tests/test.sh may take, as whom, with which environment."""

    timeout_sec: StrictInt | StrictFloat = Field(default=DEFAULT_VERIFIER_TIMEOUT_S, gt=0)
    """Seconds; the verifier container's own deadline adds a grace period."""
    env: dict[str, StrictStr] = {}
    """Environment variables for tests/test.sh."""
    user: StrictStr | StrictInt | None = None
    """The user test.sh runs as; absent: the task image's user."""


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
        elif err["type"] == "bool_type":
            msg = f"{key} must be true or false"
        elif err["type"] == "value_error":
            msg = f"{key}: {str(err['msg']).removeprefix('Value error, ')}"
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


def prebuilt_image(task_dir: Path, prefer_prebuilt: bool = False) -> str | None:
    """The prebuilt image a task's image is made from, or None where labctl builds the task's
    environment/Dockerfile: `[environment] docker_image` when the task has no Dockerfile, or when the
    lab prefers prebuilt images (`build: {task_image: prebuilt}`) and the task names one. Beside a
    Dockerfile (as Terminal-Bench 2 writes it) docker_image is otherwise a copy of what is built."""
    has_dockerfile = (task_dir / "environment" / "Dockerfile").is_file()
    if has_dockerfile and not prefer_prebuilt or not (task_dir / "task.toml").is_file():
        return None
    return read_task(task_dir).environment.docker_image


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


KNOWN_KEYS: dict[tuple[str, ...], frozenset[str]] = {
    (): frozenset({"schema_version", "version", "task", "metadata", "verifier", "agent", "environment",
                   "solution", "source", "labctl"}),
    ("task",): frozenset({"name", "version", "description", "authors", "keywords"}),
    ("environment",): frozenset({"build_timeout_sec", "docker_image", "cpus", "memory_mb", "storage_mb",
                                 "gpus", "gpu_types", "allow_internet", "network_mode", "allowed_hosts",
                                 "mcp_servers", "env", "skills_dir", "healthcheck", "memory", "storage"}),
    ("verifier",): frozenset({"timeout_sec", "env", "user", "network_mode", "allowed_hosts"}),
    ("agent",): frozenset({"timeout_sec", "user", "network_mode", "allowed_hosts"}),
    ("solution",): frozenset({"env"}),
    ("labctl",): frozenset({"repository", "outcome", "report"}),
    ("labctl", "repository"): frozenset({"path", "setup"}),
    ("labctl", "report"): frozenset({"build_check", "screenshot_check", "build_command"}),
}
"""Every key of Harbor's task.toml schema (src/harbor/models/task/config.py) and of labctl's tables;
`[metadata]` is free-form. A key outside these is reported as unknown."""
NOT_ACTED_ON: frozenset[tuple[str, str]] = frozenset({
    ("environment", "gpu_types"), ("environment", "mcp_servers"), ("environment", "env"),
    ("environment", "skills_dir"), ("environment", "healthcheck"), ("environment", "network_mode"),
    ("environment", "allowed_hosts"), ("verifier", "network_mode"), ("verifier", "allowed_hosts"),
    ("agent", "user"), ("agent", "network_mode"), ("agent", "allowed_hosts"), ("solution", "env")})
"""Harbor's keys that labctl reads past (`gpus` too, when not 0): reported so an author knows."""


def task_warnings(task_dir: Path) -> list[str]:
    """What task.toml says that labctl will not act on, one line each: keys that are in neither
    Harbor's schema nor labctl's, and Harbor's keys labctl does not honour. Never fatal."""
    toml = task_dir / "task.toml"
    try:
        data = _load(toml)
    except TaskError:
        return []
    out: list[str] = []

    def walk(table: tuple[str, ...], value: Any) -> None:
        known = KNOWN_KEYS.get(table)
        if known is None or not isinstance(value, dict):
            return
        where = f"[{'.'.join(table)}]" if table else "(top level)"
        for key, sub in value.items():
            if key not in known:
                out.append(f"{toml}: {where} {key}: unknown key, ignored")
            elif (table[-1:] + (key,)) in NOT_ACTED_ON and len(table) == 1:
                out.append(f"{toml}: {where} {key}: Harbor's key, not acted on by labctl")
            elif table == ("environment",) and key == "gpus" and sub:
                out.append(f"{toml}: {where} gpus: Harbor's key, not acted on by labctl (a task "
                           "container gets no GPU)")
            else:
                walk((*table, key), sub)

    walk((), data)
    return out
