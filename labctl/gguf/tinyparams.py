"""Parameters and names of generated tiny models, without the generator's heavy imports (gguf,
numpy): the lab spec validates `generate:` blocks with these, and every command loads the spec."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

GENERATOR_ID = "labctl.gguf.tiny/1"
"""Identifies the byte layout this module produces; bump it when output bytes change."""

# Architectures this generator writes, all verified to load in llama-server:
#   llama  -- plain Llama (untied output); per-layer head_count_kv must be uniform
#   deci   -- Llama-3.1-Nemotron style: per-layer head_count_kv may differ per layer
#             (0 = "linear attention" layer with no KV cache)
#   gemma3 -- Gemma 3 (q/k norms, post norms, tied output); supports sliding_window
Architecture = Literal["llama", "deci", "gemma3"]


class TinyModelParams(BaseModel):
    """Parameters of a generated tiny model; same params => same bytes => same sha256."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    seed: int = Field(0, ge=0)
    """Seed for numpy.random.default_rng; the only source of the weights."""

    n_layer: int = Field(2, ge=1, le=512)
    """Number of transformer blocks (GGUF `<arch>.block_count`)."""

    n_embd: int = Field(64, ge=1)
    """Hidden size (GGUF `<arch>.embedding_length`)."""

    n_head: int = Field(4, ge=1)
    """Number of query heads (GGUF `<arch>.attention.head_count`)."""

    n_head_kv: int | tuple[int, ...] = 2
    """KV heads: a scalar, or one value per layer (written as a GGUF array
    `<arch>.attention.head_count_kv`). Lists are accepted and stored as tuples.
    Values must divide n_head. Per-layer values may differ only for architecture
    "deci", where 0 marks a layer without attention KV ("linear attention")."""

    n_ff: int = Field(128, ge=1)
    """Feed-forward (SwiGLU) hidden size (GGUF `<arch>.feed_forward_length`)."""

    context_length: int = Field(4096, ge=1)
    """Training context length (GGUF `<arch>.context_length`)."""

    key_length: int | None = Field(None, ge=2)
    """Head dim of K (and Q); default n_embd // n_head. Also the RoPE dimension count.
    Must be even and, for the supported architectures, equal value_length."""

    value_length: int | None = Field(None, ge=2)
    """Head dim of V; default key_length (or n_embd // n_head)."""

    sliding_window: int | None = Field(None, ge=1)
    """Sliding-window attention size n_swa (GGUF `<arch>.attention.sliding_window`);
    requires an architecture with SWA support ("gemma3")."""

    sliding_window_pattern: int | tuple[bool, ...] | None = None
    """SWA layer pattern (GGUF `<arch>.attention.sliding_window_pattern`): an int N
    means every N-th layer is full attention and the others use the window (llama.cpp's
    default for gemma3 is 6); a per-layer list of bools marks the SWA layers. Only with
    sliding_window; None leaves the key out (architecture default)."""

    vocab_size: int = Field(512, ge=265, le=65536)
    """Number of tokens: <unk>, <s>, </s>, 256 byte tokens, 5 chat-role tokens, then
    generated word pieces."""

    architecture: Architecture = "llama"
    """GGUF general.architecture; see the module docs for what each supports."""

    dtype: Literal["f32", "f16"] = "f32"
    """Storage type of the 2-D weights (norm vectors are always f32)."""

    @model_validator(mode="after")
    def _check(self) -> TinyModelParams:
        if self.key_length is None and self.n_embd % self.n_head:
            raise ValueError("n_embd must be divisible by n_head unless key_length is set")
        hd_k, hd_v = self.head_dims()
        if hd_k % 2:
            raise ValueError(f"key_length (head dim, also the rope dimension) must be even, got {hd_k}")
        if hd_k != hd_v:
            raise ValueError(f"key_length ({hd_k}) must equal value_length ({hd_v}) for {self.architecture}")

        kv = self.head_count_kv_per_layer()
        if isinstance(self.n_head_kv, tuple) and len(self.n_head_kv) != self.n_layer:
            raise ValueError(f"n_head_kv has {len(self.n_head_kv)} entries, expected n_layer={self.n_layer}")
        for il, v in enumerate(kv):
            if v == 0 and self.architecture == "deci":
                continue
            if v < 1 or v > self.n_head or self.n_head % v:
                raise ValueError(f"n_head_kv[{il}]={v} must be >= 1 and divide n_head={self.n_head}")
        if self.architecture != "deci" and len(set(kv)) > 1:
            raise ValueError(
                f"per-layer n_head_kv values must all be equal for {self.architecture} "
                "(llama.cpp sizes its tensors from layer 0); use architecture='deci' for differing values"
            )

        if self.sliding_window is not None and self.architecture != "gemma3":
            raise ValueError(
                f"sliding_window needs an architecture with SWA support (gemma3), not {self.architecture}"
            )
        if self.sliding_window_pattern is not None:
            if self.sliding_window is None:
                raise ValueError("sliding_window_pattern needs sliding_window")
            pat = self.sliding_window_pattern
            if isinstance(pat, tuple) and len(pat) != self.n_layer:
                raise ValueError(
                    f"sliding_window_pattern has {len(pat)} entries, expected n_layer={self.n_layer}"
                )
            if isinstance(pat, int) and pat < 1:
                raise ValueError("sliding_window_pattern must be >= 1")
        return self

    def head_dims(self) -> tuple[int, int]:
        """Effective (key_length, value_length)."""
        k = self.key_length if self.key_length is not None else self.n_embd // self.n_head
        v = self.value_length if self.value_length is not None else k
        return k, v

    def head_count_kv_per_layer(self) -> tuple[int, ...]:
        """n_head_kv expanded to one value per layer."""
        if isinstance(self.n_head_kv, int):
            return (self.n_head_kv,) * self.n_layer
        return tuple(self.n_head_kv)


# --------------------------------------------------------------------------- naming


def canonical_params_json(params: TinyModelParams) -> str:
    """Canonical JSON of the generator id and the params: sorted keys, no whitespace."""
    doc = {"generator": GENERATOR_ID, "params": params.model_dump(mode="json")}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def tiny_model_name(params: TinyModelParams) -> str:
    """Stable short name, e.g. ``tiny-llama-0123456789ab`` (12 hex of sha256 of canonical params)."""
    digest = hashlib.sha256(canonical_params_json(params).encode("ascii")).hexdigest()
    return f"tiny-{params.architecture}-{digest[:12]}"
