"""`task:` in lab.yaml: one Harbor task, or a dataset of them (a directory, a list, a glob) with an
optional selection (names, tags, a seeded sample). `labctl.spec.dataset` finds the tasks."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from labctl.spec.base import Spec


class TaskSample(Spec):
    """A seeded random sample of the tasks left after `names` and `tags`: same seed, same tasks."""

    n: int = Field(ge=1)
    """How many tasks to draw."""
    seed: int = 0
    """Seed of the draw (Python's `random.Random(seed).sample` over the task names, sorted)."""


class TaskSelect(Spec):
    """Which tasks of a dataset run; every given filter applies, in this order."""

    names: list[str] | None = Field(default=None, min_length=1)
    """Only these tasks (directory names); a name the dataset lacks is an error."""
    tags: list[str] | None = Field(default=None, min_length=1)
    """Only tasks whose task.toml `[metadata] tags` hold at least one of these."""
    sample: TaskSample | None = None
    """Then a seeded random sample of N of them."""


class TaskRef(Spec):
    """The task, in Harbor's task directory format: one task (`path`), or a dataset of tasks
    (`dataset`, `paths` or `glob`, with an optional `select`)."""

    path: Path | None = None
    """One task directory relative to the lab file (task.toml, instruction.md, environment/, tests/)."""
    dataset: Path | None = None
    """A directory of Harbor tasks: each subdirectory holding a task.toml is a task."""
    paths: list[Path] | None = Field(default=None, min_length=1)
    """A list of task directories relative to the lab file."""
    glob: str | None = None
    """A glob relative to the lab file matching task directories, e.g. `tasks/*`."""
    select: TaskSelect | None = None
    """Which tasks of the dataset run (default: all)."""

    @model_validator(mode="after")
    def _one_source(self) -> TaskRef:
        given = [n for n in ("path", "dataset", "paths", "glob") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of: path (one task), dataset (a directory of tasks), "
                             "paths (a list of tasks) or glob")
        if self.path is not None and self.select is not None:
            raise ValueError("select applies to a dataset (dataset, paths or glob), not to one task")
        return self

    @property
    def is_dataset(self) -> bool:
        return self.path is None
