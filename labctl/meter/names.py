"""Upstream model names replaced by the run's alias, as whole words (blindness).

Why whole words: names used to be replaced as substrings, and an upstream named `m` turned every
"m" of a transcript into the alias (`'run-1odel'`). A name is replaced only where no letter, digit
or underscore touches it, longest name first (so `tiny-llama` wins over `llama`), and only names of
3+ characters: a shorter one names no model anyone could recognise, and would still cut words apart
at the edges of punctuation.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

MIN_NAME = 3


@functools.lru_cache(maxsize=64)
def _pattern(names: frozenset[str]) -> re.Pattern[str] | None:
    usable = sorted((n for n in names if len(n) >= MIN_NAME), key=lambda n: (-len(n), n))
    if not usable:
        return None
    return re.compile(r"(?<![A-Za-z0-9_])(?:" + "|".join(map(re.escape, usable)) + r")(?![A-Za-z0-9_])")


@functools.lru_cache(maxsize=64)
def _bytes_pattern(names: frozenset[str]) -> re.Pattern[bytes] | None:
    text = _pattern(names)
    return re.compile(text.pattern.encode()) if text is not None else None


def _usable(names: Iterable[str], alias: str) -> frozenset[str]:
    return frozenset(n for n in names if n and n != alias)


def replace_names(text: str, names: Iterable[str], alias: str) -> str:
    """`text` with every whole-word occurrence of a name in `names` replaced by `alias`."""
    pattern = _pattern(_usable(names, alias))
    return pattern.sub(lambda _: alias, text) if pattern is not None else text


def replace_names_bytes(data: bytes, names: Iterable[str], alias: str) -> bytes:
    """`replace_names` over UTF-8 bytes (a body that is not JSON)."""
    pattern = _bytes_pattern(_usable(names, alias))
    encoded = alias.encode()
    return pattern.sub(lambda _: encoded, data) if pattern is not None else data


__all__ = ["MIN_NAME", "replace_names", "replace_names_bytes"]
