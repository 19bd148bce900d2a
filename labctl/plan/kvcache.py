"""llama.cpp's memory arithmetic: KV cache, recurrent state, compute and output buffers.

Pure functions over `GGUFMeta`, so a plan can be made before any GGUF is downloaded. Each figure
follows the llama.cpp source it imitates (the vendored tree of the pinned sdist), so the planner and
the server agree on what a context costs:

* KV cache (`src/llama-kv-cache.cpp`): per layer a K tensor of `row(type_k, key_length·kv_heads)` and
  a V tensor of `row(type_v, value_length·kv_heads)` bytes per cell. Without flash attention V is
  stored transposed and every layer's V row is padded to the widest layer's (`n_embd_v_gqa_max`).
* Cells (`src/llama-context.cpp`, `llama-kv-cache-iswa.cpp`): `n_ctx` is padded to 256; without a
  unified cache each of the `n_seq` streams holds `pad256(n_ctx / n_seq)` cells; a sliding-window
  layer holds `pad256(min(n_ctx_seq, n_swa·(n_seq if unified else 1) + n_ubatch))` cells per stream.
* Recurrent layers (`src/llama-memory-recurrent.cpp`, `llama-hparams.cpp`): f32 rows of
  `(d_conv-1)·(d_inner + 2·n_group·d_state)` (conv) and `d_state·d_inner` (state), one per sequence.
* Output buffer (`output_reserve`): `n_vocab · n_outputs · 4` bytes; llama-server reserves one output
  per slot.
* Compute buffer: an estimate fitted to ggml-alloc's reuse on llama-server's worst-case graph (see
  `compute_buffer`); it is the one figure that is modelled, not copied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from labctl.errors import LabctlError
from labctl.gguf.meta import GGUFMeta
from labctl.plan.archs import KNOWN_ARCHS, ArchTraits

CACHE_TYPES: dict[str, tuple[int, int]] = {
    "f32": (1, 4), "f16": (1, 2), "bf16": (1, 2),
    "q8_0": (32, 34), "q4_0": (32, 18), "q4_1": (32, 20),
    "q5_0": (32, 22), "q5_1": (32, 24), "iq4_nl": (32, 18),
}
"""Cache type → (elements per block, bytes per block), as ggml's type traits; what `-ctk/-ctv` accept."""

FlashAttention = Literal["on", "off", "auto"]
LayerKind = Literal["full", "swa", "recurrent"]
DEFAULT_UBATCH = 512
"""llama-server's physical batch (`-ub`); the compute graph and the SWA cells are sized by it."""
DEFAULT_VOCAB = 262_144
"""Vocabulary assumed for the output buffer when the metadata has none (the largest common one)."""


class KVError(LabctlError, ValueError):
    """Metadata or settings llama.cpp would refuse (or that the planner cannot size)."""


def block(cache_type: str) -> tuple[int, int]:
    """(elements, bytes) of one block of a cache type; a clear error for one llama.cpp lacks."""
    try:
        return CACHE_TYPES[cache_type]
    except KeyError:
        raise KVError(f"cache type {cache_type!r} is not supported by llama.cpp "
                      f"(allowed: {', '.join(CACHE_TYPES)})") from None


def bytes_per_element(cache_type: str) -> float:
    """q8_0 = 34/32 bytes, f16 = 2, …"""
    n, b = block(cache_type)
    return b / n


def row_bytes(cache_type: str, n: int) -> int:
    """Bytes of a row of `n` elements (ggml_row_size); exact because rows are whole blocks."""
    per, size = block(cache_type)
    return n // per * size if n % per == 0 else -(-n * size // per)


def pad(n: int, to: int = 256) -> int:
    """GGML_PAD: round up to a multiple."""
    return -(-n // to) * to


def is_flash(flash_attention: FlashAttention | bool) -> bool:
    """`auto` counts as on: llama.cpp enables it wherever the backend supports it (CPU, CUDA)."""
    return flash_attention is True or flash_attention in ("on", "auto")


@dataclass(frozen=True)
class Layer:
    """One block as the cache sees it."""

    index: int
    kind: LayerKind
    n_head: int
    n_head_kv: int
    head_k: int
    head_v: int

    @property
    def k_width(self) -> int:
        return self.head_k * self.n_head_kv

    @property
    def v_width(self) -> int:
        return self.head_v * self.n_head_kv


def _missing(meta: GGUFMeta, names: tuple[str, ...]) -> list[str]:
    out = []
    for name in names:
        obj, _, attr = name.rpartition(".")
        holder = getattr(meta, obj) if obj else meta
        if holder is None or not getattr(holder, attr):
            out.append(name)
    return out


def _per_layer(meta: GGUFMeta, name: str) -> list[int]:
    values = meta.per_layer(getattr(meta, name))
    if len(values) != meta.block_count:
        raise KVError(f"{name} has {len(values)} entries but block_count is {meta.block_count}")
    return values


def _swa_flags(meta: GGUFMeta, traits: ArchTraits) -> list[bool]:
    """Which layers slide; llama.cpp's set_swa_pattern: with an int n, every n-th layer is global."""
    if not meta.sliding_window:
        return [False] * meta.block_count
    pat = meta.sliding_window_pattern if meta.sliding_window_pattern is not None else traits.swa_pattern
    if pat is None:
        raise KVError(f"{meta.architecture}: sliding_window is set but sliding_window_pattern is missing")
    if isinstance(pat, list):
        if len(pat) != meta.block_count:
            raise KVError(f"sliding_window_pattern has {len(pat)} entries but block_count is "
                          f"{meta.block_count}")
        return list(pat)
    return [pat == 0 or i % pat < pat - 1 for i in range(meta.block_count)]


def layers(meta: GGUFMeta, *, allow_unknown: bool = False) -> list[Layer]:
    """Every block with its cache kind and dims; unknown architectures only with `allow_unknown`.

    The fallback for an unknown architecture is conservative: every layer full attention, so
    sliding-window or recurrent savings are ignored (the plan can only be too large, never too small).
    """
    traits = KNOWN_ARCHS.get(meta.architecture)
    if traits is None:
        missing = _missing(meta, ("key_length", "value_length"))
        known = ", ".join(sorted(KNOWN_ARCHS))
        if not allow_unknown or missing:
            need = (f"; a conservative estimate (every layer full attention) needs "
                    f"{', '.join(missing)}, missing from the metadata") if missing else ""
            hint = "" if allow_unknown else "; opt in to a conservative estimate (every layer full attention)"
            raise KVError(f"architecture {meta.architecture!r} is not known to the planner "
                          f"(known: {known}){need}{hint}")
        traits = ArchTraits()
    else:
        missing = _missing(meta, traits.needs)
        if traits.hybrid and not meta.full_attention_interval:
            missing.append("full_attention_interval")
        if missing:
            raise KVError(f"architecture {meta.architecture!r} needs {', '.join(missing)}, "
                          "missing from the metadata")
    heads, kv_heads = _per_layer(meta, "head_count"), _per_layer(meta, "head_count_kv")
    swa = _swa_flags(meta, traits) if meta.architecture in KNOWN_ARCHS else [False] * meta.block_count
    interval = meta.full_attention_interval or 0
    out = []
    for i in range(meta.block_count):
        if traits.recurrent or (traits.hybrid and (i + 1) % interval != 0):
            kind: LayerKind = "recurrent"
        else:
            kind = "swa" if swa[i] else "full"
        base = meta.embedding_length // heads[i] if heads[i] else 0
        hk = meta.key_length or base
        hv = meta.value_length or base
        if kind == "swa":
            hk, hv = meta.key_length_swa or hk, meta.value_length_swa or hv
        out.append(Layer(i, kind, heads[i], kv_heads[i], hk, hv))
    return out


def check_settings(meta: GGUFMeta, type_k: str, type_v: str, flash_attention: FlashAttention | bool,
                   *, allow_unknown: bool = False) -> None:
    """Refuse what llama_init_from_model refuses, before anything runs."""
    (kb, _), (vb, _) = block(type_k), block(type_v)
    fa = flash_attention is True or flash_attention == "on"
    if vb > 1 and flash_attention in ("off", False):
        raise KVError(f"a quantized V cache ({type_v}) needs flash attention; llama.cpp refuses "
                      "-fa off with it (set flash_attention: on, or cache_type_v: f16)")
    attn = [ly for ly in layers(meta, allow_unknown=allow_unknown) if ly.kind != "recurrent"]
    for name, t, blk in (("K", type_k, kb), ("V", type_v, vb)):
        if blk == 1:
            continue
        for ly in attn:
            head = ly.head_k if name == "K" else ly.head_v
            width = ly.k_width if name == "K" else ly.v_width
            # With FA llama.cpp checks the head dim; without it ggml needs whole blocks per row.
            n = head if (fa or flash_attention == "auto") else width
            if n % blk:
                what = "head dim" if n == head else "row"
                raise KVError(f"{name} cache type {t} (block {blk}) does not divide the {what} "
                              f"{n} of layer {ly.index}; use f16, or a model whose head dims are "
                              f"multiples of {blk}")


@dataclass(frozen=True)
class Cells:
    """How many cells each cache holds, per stream (as llama_context and llama_kv_cache_iswa size them)."""

    n_ctx: int
    """Context after llama.cpp's padding (what `-c` becomes)."""
    n_ctx_seq: int
    """Cells of a full-attention layer per stream."""
    streams: int
    swa: int
    """Cells of a sliding-window layer per stream."""
    rs_rows: int
    """Rows of recurrent state (one per sequence)."""


def cells(meta: GGUFMeta, n_ctx: int, *, n_seq: int = 1, n_ubatch: int = DEFAULT_UBATCH,
          unified: bool = False) -> Cells:
    """Cells per stream for a context of `n_ctx` tokens over `n_seq` slots."""
    n_ubatch = min(n_ubatch, n_ctx)
    ctx = pad(n_ctx)
    if unified or n_seq == 1:
        ctx_seq, streams = ctx, 1
    else:
        ctx_seq, streams = pad(ctx // n_seq), n_seq
        ctx = ctx_seq * n_seq
    swa = 0
    if meta.sliding_window:
        swa = pad(min(ctx_seq, meta.sliding_window * (n_seq if unified else 1) + n_ubatch))
    return Cells(ctx, ctx_seq, streams, swa, max(1, n_seq))


def recurrent_row_floats(meta: GGUFMeta) -> tuple[int, int]:
    """(r, s) f32 elements per sequence of one recurrent layer: conv state and SSM / DeltaNet state."""
    s = meta.ssm
    if s is None:
        return 0, 0
    conv = max(s.conv_kernel - 1, 0) * (s.inner_size + 2 * s.group_count * s.state_size)
    return conv, s.state_size * s.inner_size


@dataclass(frozen=True)
class KVEstimate:
    """The memory module: KV cache plus recurrent state, per layer and in total."""

    cells: Cells
    type_k: str
    type_v: str
    layer_bytes: list[int]
    """Bytes held for each block (K + V, or recurrent state)."""
    k_bytes: int
    v_bytes: int
    full_bytes: int
    """K + V of full-attention layers (grows with the context)."""
    swa_bytes: int
    """K + V of sliding-window layers (capped by the window)."""
    recurrent_bytes: int
    """Recurrent state (fixed per sequence)."""
    bytes_per_token: int
    """K + V bytes of one token in the full-attention layers."""
    layers: list[Layer] = field(default_factory=list)
    """The blocks these bytes belong to (same order as layer_bytes)."""

    @property
    def total(self) -> int:
        return self.k_bytes + self.v_bytes + self.recurrent_bytes

    @property
    def kv_bytes(self) -> int:
        """The attention KV cache alone (what llama_kv_cache logs as `size`)."""
        return self.k_bytes + self.v_bytes


def kv_cache(meta: GGUFMeta, n_ctx: int, *, type_k: str = "f16", type_v: str = "f16",
             flash_attention: FlashAttention | bool = "on", n_seq: int = 1,
             n_ubatch: int = DEFAULT_UBATCH, unified: bool = False, allow_unknown: bool = False
             ) -> KVEstimate:
    """KV cache and recurrent state of a context, byte for byte as llama.cpp allocates them."""
    check_settings(meta, type_k, type_v, flash_attention, allow_unknown=allow_unknown)
    lays = layers(meta, allow_unknown=allow_unknown)
    c = cells(meta, n_ctx, n_seq=n_seq, n_ubatch=n_ubatch, unified=unified)
    v_trans = not is_flash(flash_attention)
    v_max = max((ly.v_width for ly in lays), default=0)
    r, s = recurrent_row_floats(meta)
    per_layer: list[int] = []
    k_total = v_total = full = swa = rec = per_token = 0
    for ly in lays:
        if ly.kind == "recurrent":
            b = (r + s) * 4 * c.rs_rows
            rec += b
            per_layer.append(b)
            continue
        n = (c.n_ctx_seq if ly.kind == "full" else c.swa) * c.streams
        kb = row_bytes(type_k, ly.k_width)
        vb = row_bytes(type_v, v_max if v_trans else ly.v_width)
        k_total += kb * n
        v_total += vb * n
        if ly.kind == "full":
            full += (kb + vb) * n
            per_token += kb + vb
        else:
            swa += (kb + vb) * n
        per_layer.append((kb + vb) * n)
    return KVEstimate(c, type_k, type_v, per_layer, k_total, v_total, full, swa, rec, per_token, lays)


def kv_bytes_per_token(meta: GGUFMeta, type_k: str = "f16", type_v: str = "f16",
                       flash_attention: FlashAttention | bool = "on", *, allow_unknown: bool = False) -> int:
    """K + V bytes per token of context in the full-attention layers (the part that grows)."""
    return kv_cache(meta, 256, type_k=type_k, type_v=type_v, flash_attention=flash_attention,
                    allow_unknown=allow_unknown).bytes_per_token


def ffn_width(meta: GGUFMeta, n_ff: int | None = None) -> int:
    """Widest per-token FFN activation: `n_ff`, else a dense model's feed_forward_length (the header's,
    or declared), else an estimate: 4·n_embd for dense models, 3·n_embd for MoE (expert_used × width)."""
    if n_ff:
        return n_ff
    if meta.feed_forward_length and not meta.expert_count:
        return max(meta.per_layer(meta.feed_forward_length))
    return meta.embedding_length * (3 if meta.expert_count else 4)


def compute_buffer(meta: GGUFMeta, kv: KVEstimate, *, flash_attention: FlashAttention | bool = "on",
                   n_ubatch: int = DEFAULT_UBATCH, n_ff: int | None = None, cuda: bool = False) -> int:
    """Estimated compute buffer of the worst-case prompt graph (one device's share).

    ggml-alloc reuses memory, so the peak is the KQ mask (an input, alive across all layers) plus the
    largest single-layer working set: the attention scores without flash attention
    (n_kv × n_ubatch × n_head f32, plus Q/K/V), else the larger of the FFN activations (≈4 tensors
    of n_ff × n_ubatch f32) and Q/K/V/output/residual. Fitted against the CPU llama-server of the pinned tree
    (tests/plan/test_plan.py compares them). With `cuda`, flash attention over a cache that is not f16 also
    holds an f16 copy of one layer's K and V (ggml-cuda/fattn.cu: the MMA / tile kernels of prompt
    processing need f16, and the copy is part of the node's allocation) — from the source, not measured.
    """
    t = min(n_ubatch, kv.cells.n_ctx)
    fa = is_flash(flash_attention)
    kinds = {ly.kind for ly in kv.layers}
    mask_cells = (kv.cells.n_ctx_seq if "full" in kinds else 0) + (kv.cells.swa if "swa" in kinds else 0)
    mask = mask_cells * t * (2 if fa else 4)
    lays = [ly for ly in kv.layers if ly.kind != "recurrent"]
    heads = max((ly.n_head for ly in lays), default=0)
    # Q, K, V, the attention output and the residual stream, all f32 rows of n_ubatch tokens
    qkvo = max((2 * ly.n_head * max(ly.head_k, ly.head_v) + ly.k_width + ly.v_width for ly in lays),
               default=0) + 2 * meta.embedding_length
    qkvo *= t * 4
    ffn = 4 * ffn_width(meta, n_ff) * t * 4
    scores = 0 if fa else max(kv.cells.n_ctx_seq, kv.cells.swa) * t * heads * 4 + qkvo
    f16_copy = 0
    if cuda and fa:
        for ly in lays:
            n = (kv.cells.n_ctx_seq if ly.kind == "full" else kv.cells.swa) * kv.cells.streams
            f16_copy = max(f16_copy, n * 2 * ((ly.k_width if kv.type_k != "f16" else 0)
                                              + (ly.v_width if kv.type_v != "f16" else 0)))
    return mask + max(ffn, qkvo + f16_copy, scores)


def output_buffer(meta: GGUFMeta, n_seq: int = 1) -> int:
    """Logits of one output per slot (llama-server reserves n_outputs_max = n_parallel)."""
    return (meta.vocab_size or DEFAULT_VOCAB) * max(1, n_seq) * 4


@dataclass(frozen=True)
class MemoryEstimate:
    """Everything a context costs besides the weights."""

    kv: KVEstimate
    compute: int
    output: int

    @property
    def total(self) -> int:
        return self.kv.total + self.compute + self.output


def estimate(meta: GGUFMeta, n_ctx: int, *, type_k: str = "f16", type_v: str = "f16",
             flash_attention: FlashAttention | bool = "on", n_seq: int = 1, n_ubatch: int = DEFAULT_UBATCH,
             unified: bool = False, n_ff: int | None = None, allow_unknown: bool = False,
             cuda: bool = False) -> MemoryEstimate:
    """KV cache, recurrent state, compute buffer and output buffer of one llama-server context."""
    kv = kv_cache(meta, n_ctx, type_k=type_k, type_v=type_v, flash_attention=flash_attention, n_seq=n_seq,
                  n_ubatch=n_ubatch, unified=unified, allow_unknown=allow_unknown)
    comp = compute_buffer(meta, kv, flash_attention=flash_attention, n_ubatch=n_ubatch, n_ff=n_ff, cuda=cuda)
    return MemoryEstimate(kv, comp, output_buffer(meta, n_seq))
