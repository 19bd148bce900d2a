"""Human units in lab files: sizes (`32GiB`), durations (`45m`), counts (`2M`).

Single-letter size suffixes are binary (K = KiB), as in Docker and llama.cpp; spelled-out
SI suffixes (`KB`, `MB`, `GB`) are decimal, because that is what a GPU's box says.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator, WithJsonSchema

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "ki": 1024, "kib": 1024, "kb": 1000,
    "m": 1024**2, "mi": 1024**2, "mib": 1024**2, "mb": 1000**2,
    "g": 1024**3, "gi": 1024**3, "gib": 1024**3, "gb": 1000**3,
    "t": 1024**4, "ti": 1024**4, "tib": 1024**4, "tb": 1000**4,
}
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_COUNT_UNITS = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}

SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*([KMGT]i?B?|[kmgt]i?b?|[KMGT]B|B|b)?\s*$"
DURATION_PATTERN = r"^\s*(\d+(\.\d+)?\s*(ms|s|m|h|d)\s*)+$|^\s*\d+(\.\d+)?\s*$"
COUNT_PATTERN = r"^\s*\d+(\.\d+)?\s*[kKmMgG]?\s*$"

_NUM_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")


def _reject_bool(value: Any, what: str) -> None:
    # YAML `yes`/`true` load as bool, and bool is an int subclass: never accept it as a number.
    if isinstance(value, bool):
        raise ValueError(f"expected {what}, got {str(value).lower()}")


def parse_size(value: Any) -> int:
    """Bytes from an int or a string like `32GiB`, `6.9GB`, `512M`."""
    _reject_bool(value, "a size like 32GiB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, float) and value >= 0:
        return int(value)
    if isinstance(value, str):
        m = _NUM_UNIT.match(value)
        if m and m.group(2).lower() in _SIZE_UNITS:
            return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    raise ValueError(f"expected a size like 32GiB, 512MiB or 6.9GB, got {value!r}")


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like `45m`, `1h30m`, `300s`, `250ms`."""
    _reject_bool(value, "a duration like 45m")
    if isinstance(value, int | float) and value >= 0:
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return float(text)
        parts = _DURATION_PART.findall(text)
        if parts and re.fullmatch(r"(\s*\d+(\.\d+)?\s*(ms|s|m|h|d)\s*)+", text):
            return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    raise ValueError(f"expected a duration like 45m, 1h30m or 300s, got {value!r}")


def parse_count(value: Any) -> int:
    """A count from an int or a string like `2M`, `500k`."""
    _reject_bool(value, "a count like 2M")
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str):
        m = _NUM_UNIT.match(value)
        if m and m.group(2).lower() in _COUNT_UNITS:
            return int(float(m.group(1)) * _COUNT_UNITS[m.group(2).lower()])
    raise ValueError(f"expected a non-negative count like 200000 or 2M, got {value!r}")


def format_size(n: int) -> str:
    """`34359738368` → `32.0 GiB`."""
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def format_duration(seconds: float) -> str:
    """`2700` → `45m`, `5400` → `1h30m`."""
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    out = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{sec}s" if sec else "")
    return out or "0s"


def _schema(pattern: str, number: str, example: str) -> WithJsonSchema:
    return WithJsonSchema(
        {"anyOf": [{"type": number, "minimum": 0}, {"type": "string", "pattern": pattern}],
         "examples": [example]}
    )


Size = Annotated[int, PlainValidator(parse_size), _schema(SIZE_PATTERN, "integer", "32GiB")]
"""Bytes; accepts `32GiB`, `6.9GB`, `512M` or a plain integer."""

Duration = Annotated[
    float,
    PlainValidator(parse_duration),
    PlainSerializer(format_duration, when_used="json"),
    _schema(DURATION_PATTERN, "number", "45m"),
]
"""Seconds; accepts `45m`, `1h30m`, `300s` or a plain number of seconds."""

Count = Annotated[int, PlainValidator(parse_count), _schema(COUNT_PATTERN, "integer", "2M")]
"""A count; accepts `2M`, `500k` or a plain integer."""
