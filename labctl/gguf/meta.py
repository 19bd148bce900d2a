"""What the planner needs to know about a GGUF, read from its header (or declared from a model card).

Field names follow llama.cpp's GGUF keys (`{arch}.block_count`, `{arch}.attention.head_count_kv`,
…). A per-layer value may be an array, exactly as the header stores it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PerLayer = int | list[int]
"""A scalar for every layer, or one value per layer (as llama.cpp's per-layer arrays)."""


class SSMState(BaseModel):
    """Recurrent (Mamba / Gated DeltaNet) layer dimensions: a fixed state per sequence, no KV cache."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    conv_kernel: int = 0
    """`{arch}.ssm.conv_kernel`."""
    state_size: int = 0
    """`{arch}.ssm.state_size`."""
    group_count: int = 0
    """`{arch}.ssm.group_count`."""
    time_step_rank: int = 0
    """`{arch}.ssm.time_step_rank`."""
    inner_size: int = 0
    """`{arch}.ssm.inner_size`."""


class GGUFMeta(BaseModel):
    """Architecture numbers of one model (all shards together)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    source: Literal["header", "declared"] = "header"
    """`header`: read from the GGUF; `declared`: from the lab (model card), checked at lock time."""
    architecture: str
    """`general.architecture`, e.g. `llama`, `qwen3moe`, `gemma3`, `qwen35moe`."""
    block_count: int = Field(ge=1)
    """Number of transformer blocks (layers)."""
    context_length: int = Field(ge=1)
    """Training context (`{arch}.context_length`)."""
    embedding_length: int = Field(ge=1)
    """Hidden size."""
    head_count: PerLayer
    """Attention (query) heads."""
    head_count_kv: PerLayer
    """KV heads (GQA); 0 in a layer means no KV cache there."""
    key_length: int | None = None
    """K head dim; default embedding_length / head_count."""
    value_length: int | None = None
    """V head dim; default embedding_length / head_count."""
    key_length_swa: int | None = None
    """K head dim of sliding-window layers, when it differs (Gemma 4)."""
    value_length_swa: int | None = None
    """V head dim of sliding-window layers, when it differs."""
    sliding_window: int | None = None
    """Window of sliding-window layers (`{arch}.attention.sliding_window`)."""
    sliding_window_pattern: int | list[bool] | None = None
    """Which layers slide: every n-th is global (int), or one bool per layer (true = sliding)."""
    full_attention_interval: int | None = None
    """Hybrid models: every n-th layer is full attention, the rest recurrent (`qwen35moe`: 4)."""
    ssm: SSMState | None = None
    """Recurrent layer dimensions of hybrid / recurrent models."""
    expert_count: int | None = None
    """MoE experts per layer; none for dense models."""
    expert_used_count: int | None = None
    """Experts active per token."""
    file_type: int | None = None
    """`general.file_type` (llama.cpp's LLAMA_FTYPE number)."""
    quant: str | None = None
    """Quantization name, e.g. `Q4_K_M` (from file_type or the file name)."""
    n_params: int | None = None
    """Total parameters (sum of tensor elements)."""
    n_params_active: int | None = None
    """Parameters used per token (MoE: shared + expert_used/expert_count of expert tensors)."""
    tensor_bytes: int | None = None
    """Bytes of all tensor data (≈ the weights' memory)."""
    vocab_size: int | None = None
    """Tokens in the vocabulary (sizes the output buffer)."""
    feed_forward_length: PerLayer | None = None
    """Dense FFN size (`{arch}.feed_forward_length`); shapes a twin's FFN tensors and the compute buffer."""
    expert_feed_forward_length: int | None = None
    """FFN size of one routed expert (`{arch}.expert_feed_forward_length`, MoE)."""
    expert_shared_feed_forward_length: int | None = None
    """FFN size of the shared expert (`{arch}.expert_shared_feed_forward_length`, e.g. `qwen35moe`)."""

    def per_layer(self, value: PerLayer) -> list[int]:
        """A per-layer list for a scalar-or-array field."""
        return list(value) if isinstance(value, list) else [value] * self.block_count
