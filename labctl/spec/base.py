"""The base of every lab.yaml record: unknown keys are errors, every field's docstring becomes its
description in the JSON Schema, records are immutable once loaded."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)


ID = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
