"""The JSON Schema of lab.yaml, for editors (yaml-language-server) and for checking shared labs."""

from __future__ import annotations

import json
from typing import Any

from labctl.spec.lab import Lab

SCHEMA_FILE = "lab.schema.json"
MODELINE = f"# yaml-language-server: $schema=./{SCHEMA_FILE}"


def lab_schema() -> dict[str, Any]:
    schema = Lab.model_json_schema(mode="validation")
    return {**schema, "$schema": "https://json-schema.org/draft/2020-12/schema", "title": "labctl lab"}


def lab_schema_text() -> str:
    """Stable text (sorted keys), so the committed lab.schema.json diffs cleanly."""
    return json.dumps(lab_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
