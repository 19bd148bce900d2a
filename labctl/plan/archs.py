"""The llama.cpp architectures whose cache layout the planner knows, and what sets each apart
(sliding-window pattern, hybrid or fully recurrent layers, fields it cannot be sized without)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArchTraits:
    """What the generic arithmetic needs to know about one llama.cpp architecture."""

    swa_pattern: int | None = None
    """Default `sliding_window_pattern` when the header has a window but no pattern."""
    hybrid: bool = False
    """Attention layers every `full_attention_interval`-th, recurrent (SSM / DeltaNet) otherwise."""
    recurrent: bool = False
    """Every layer recurrent (Mamba): no KV cache at all."""
    needs: tuple[str, ...] = ()
    """Fields this architecture cannot be sized without."""


_SSM = ("ssm.conv_kernel", "ssm.state_size", "ssm.inner_size")
KNOWN_ARCHS: dict[str, ArchTraits] = {
    **{a: ArchTraits() for a in (
        "llama", "deci", "mistral3", "qwen2", "qwen2moe", "qwen3", "qwen3moe", "phi3", "granite",
        "olmo2", "starcoder2", "internlm2", "command-r", "exaone", "smollm3", "seed_oss")},
    "gemma": ArchTraits(),
    "gemma2": ArchTraits(swa_pattern=2),
    "gemma3": ArchTraits(swa_pattern=6),
    "cohere2": ArchTraits(swa_pattern=4),
    # Gemma 4 reads the pattern as a per-layer array and has its own SWA head dims.
    "gemma4": ArchTraits(needs=("sliding_window", "sliding_window_pattern", "key_length_swa")),
    "qwen3next": ArchTraits(hybrid=True, needs=_SSM),
    "qwen35": ArchTraits(hybrid=True, needs=_SSM),
    "qwen35moe": ArchTraits(hybrid=True, needs=_SSM),
    "mamba": ArchTraits(recurrent=True, needs=_SSM),
    "mamba2": ArchTraits(recurrent=True, needs=_SSM),
}
"""Architectures whose cache layout the planner knows (others need an explicit opt-in)."""
