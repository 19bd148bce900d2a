"""What one exchange cost, from the declared price and the wire's own usage fields.

Why from the wire's own fields and never from a total: the providers bill four kinds of token at
four prices, and each wire splits them differently. OpenAI's chat `prompt_tokens` and the Responses
API's `input_tokens` *include* the cached tokens (`prompt_tokens_details.cached_tokens`,
`input_tokens_details.cached_tokens`) and there is no cache write; Anthropic's `input_tokens`
*excludes* both `cache_read_input_tokens` and `cache_creation_input_tokens`. A total times one
price would be wrong by up to 10× on a cache-heavy agent loop. Pure: no I/O, tested alone.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, NamedTuple

from labctl.meter.transcript import Dialect
from labctl.spec.price import Price

MILLION = Decimal(1_000_000)


class Billed(NamedTuple):
    """One exchange's tokens by the price each is billed at."""

    input: int
    """Uncached input tokens."""
    output: int
    cache_read: int
    cache_write: int


def billed(dialect: Dialect, usage: dict[str, Any]) -> Billed:
    """The tokens of `usage` (a transcript record's normalised usage, its wire object under `raw`)
    split by billing kind. An answer cut before its closing usage (`partial`) bills at least the
    output the stream carried: the normalised `completion_tokens`, a lower bound."""
    raw = usage.get("raw") or {}
    if dialect == "anthropic":
        split = Billed(int(raw.get("input_tokens") or 0), int(raw.get("output_tokens") or 0),
                       int(raw.get("cache_read_input_tokens") or 0),
                       int(raw.get("cache_creation_input_tokens") or 0))
    else:
        prompt, out, details = (("prompt_tokens", "completion_tokens", "prompt_tokens_details")
                                if dialect == "openai" else
                                ("input_tokens", "output_tokens", "input_tokens_details"))
        cached = int((raw.get(details) or {}).get("cached_tokens") or 0)
        split = Billed(max(int(raw.get(prompt) or 0) - cached, 0), int(raw.get(out) or 0), cached, 0)
    if usage.get("partial"):
        split = split._replace(output=max(split.output, int(usage.get("completion_tokens") or 0)))
    return split


def exchange_cost(dialect: Dialect, usage: dict[str, Any] | None, price: Price | None) -> float | None:
    """USD for one exchange; None when unpriced (a local model, a cloud contestant with no `price`),
    0.0 for a priced exchange with no usage (refused or failed before the model answered)."""
    if price is None:
        return None
    if not usage:
        return 0.0
    b = billed(dialect, usage)
    # Decimal: the per-million prices are short decimals (0.3, 3.75); in floats their products drift
    # in the last digits, and a recomputation from the transcript should give the same figure.
    usd = sum((Decimal(n) * Decimal(str(p)) for n, p in
               ((b.input, price.input), (b.output, price.output), (b.cache_read, price.cache_read),
                (b.cache_write, price.cache_write))), Decimal(0)) / MILLION
    return float(usd)


def add_cost(total: float | None, cost: float | None) -> float | None:
    """A running total in USD, summed in Decimal (rounded to 1e-12 USD) so it does not drift."""
    if cost is None:
        return total
    return float((Decimal(str(total or 0.0)) + Decimal(str(cost))).quantize(Decimal("1e-12")))
