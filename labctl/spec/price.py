"""A cloud contestant's declared price: USD per million tokens of each kind a provider bills.

Why a pinned input: a provider's price changes without notice, and a cost figure is only as good as
the price it was computed from; declared in lab.yaml, with the date and the page it was read from,
and recorded in lab.lock, a changed price is drift (`labctl lock --check`) like a moved model.
"""

from __future__ import annotations

import datetime as dt

from pydantic import Field

from labctl.spec.base import Spec


class Price(Spec):
    """USD per million tokens, by the kind of token the provider bills. All four are given (0 where
    the provider charges nothing, e.g. OpenAI's cache writes): a kind left out would be a guess."""

    input: float = Field(ge=0)
    """Uncached input (prompt) tokens, USD per million."""
    output: float = Field(ge=0)
    """Output tokens (reasoning included: providers bill them as output), USD per million."""
    cache_read: float = Field(ge=0)
    """Input tokens served from the provider's prompt cache, USD per million."""
    cache_write: float = Field(ge=0)
    """Input tokens written to the prompt cache (Anthropic's `cache_creation_input_tokens`), USD per
    million; 0 for OpenAI, which bills no write."""
    as_of: dt.date
    """The date the price was read (YYYY-MM-DD): prices move, so a figure says when it held."""
    source: str = Field(min_length=1)
    """Where it was read: the provider's pricing page URL, or a line saying where else."""
