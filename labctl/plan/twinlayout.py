"""The tensors the pinned llama.cpp creates for an architecture, shaped from GGUF metadata.

Read from `load_arch_tensors` in src/models/<arch>.cpp of the llama.cpp tree llama-cpp-python 0.3.36
vendors (commit 0c1e57098): names as src/llama-arch.cpp spells them, shapes in ggml order (ne0
first), only the tensors the loader requires or uses (an extra tensor is a load error). Types follow
the quant in the file name the way llama-quantize mixes them: vectors and routers F32, the output
layer at 6 bits in the K-quant mixes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from labctl.errors import LabctlError
from labctl.gguf.meta import GGUFMeta

T = GGMLQuantizationType
TWIN_ARCHS = ("llama", "qwen3", "qwen3moe", "qwen35moe", "gemma4")
"""Architectures a twin can be built for from metadata alone (any architecture from a locked header)."""
class TwinError(LabctlError, ValueError):
    """A twin cannot be built (missing numbers, unknown architecture, header not available)."""


@dataclass(frozen=True)
class TwinTensor:
    name: str
    ne: tuple[int, ...]
    """Shape in ggml order (ne0 first), as `create_tensor` spells it."""
    type: GGMLQuantizationType

    @property
    def nbytes(self) -> int:
        block, size = GGML_QUANT_SIZES[self.type]
        n = 1
        for d in self.ne:
            n *= d
        return n // block * size


def weight_type(quant: str | None) -> GGMLQuantizationType:
    """The ggml type of a 2-D weight for a quant name (`UD-Q4_K_XL` → Q4_K); Q8_0 when unknown."""
    q = (quant or "").upper().removeprefix("UD-")
    for prefix, t in (("IQ4", T.IQ4_XS), ("Q2_K", T.Q2_K), ("Q3_K", T.Q3_K), ("Q4_K", T.Q4_K),
                      ("Q5_K", T.Q5_K), ("Q6_K", T.Q6_K), ("Q4_0", T.Q4_0), ("Q4_1", T.Q4_1),
                      ("Q5_0", T.Q5_0), ("Q5_1", T.Q5_1), ("Q8_0", T.Q8_0), ("BF16", T.BF16),
                      ("F16", T.F16), ("F32", T.F32), ("MXFP4", T.MXFP4)):
        if q.startswith(prefix):
            return t
    return T.Q8_0


def _typed(name: str, ne: tuple[int, ...], wtype: GGMLQuantizationType) -> TwinTensor:
    # llama-quantize keeps vectors, routers and the recurrent layers' small tensors in F32, and falls
    # back to a 32-block type when a row does not divide the quant's block.
    small = len(ne) == 1 or name.endswith(("ffn_gate_inp.weight", "ssm_conv1d.weight", "ssm_a"))
    if small:
        return TwinTensor(name, ne, T.F32)
    t = wtype
    if ne[0] % GGML_QUANT_SIZES[t][0]:
        t = T.Q8_0 if ne[0] % 32 == 0 else T.F16
    if name == "output.weight" and t in (T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.IQ4_XS):
        t = T.Q6_K  # the K-quant mixes keep the output layer at 6 bits
    return TwinTensor(name, ne, t)


def _need(meta: GGUFMeta, *fields: str) -> None:
    missing = [f for f in fields if getattr(meta, f) in (None, 0)]
    if missing:
        raise TwinError(f"a {meta.architecture} twin needs {', '.join(missing)} (declare them in "
                        "model.declared, or run `labctl lock` to read the real header)")


def tensors(meta: GGUFMeta, quant: str | None) -> list[TwinTensor]:
    """The tensors the pinned llama.cpp creates for this architecture, shaped from the metadata."""
    arch = meta.architecture
    if arch not in TWIN_ARCHS:
        raise TwinError(f"no twin layout for architecture {arch!r} from metadata (known: "
                        f"{', '.join(TWIN_ARCHS)}); lock the model so its real header is used")
    _need(meta, "vocab_size", *(("expert_feed_forward_length",) if meta.expert_count else
                                ("feed_forward_length",)))
    E, V, L = meta.embedding_length, meta.vocab_size or 0, meta.block_count
    heads, kv_heads = meta.per_layer(meta.head_count), meta.per_layer(meta.head_count_kv)
    ffs = meta.per_layer(meta.feed_forward_length or 0)
    hk0 = meta.key_length or E // heads[0]
    hv0 = meta.value_length or hk0
    w = weight_type(quant)
    out: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (E, V)), ("output_norm.weight", (E,))]
    if arch != "gemma4":  # Gemma ties the output layer to the token embeddings
        out.append(("output.weight", (E, V)))
    swa = swa_layers(meta)
    if arch == "gemma4" and not all(swa):
        out.append(("rope_freqs.weight", (hk0 // 2,)))
    for i in range(L):
        out += [(f"blk.{i}.{n}", ne) for n, ne in _layer(meta, i, heads[i], kv_heads[i], ffs[i], hk0, hv0,
                                                             swa[i])]
    return [_typed(n, ne, w) for n, ne in out]


def layout_bytes(meta: GGUFMeta, quant: str | None) -> int:
    """Bytes of tensor data the twin of this metadata holds (what llama.cpp will load as weights)."""
    return sum(t.nbytes for t in tensors(meta, quant))


def swa_layers(meta: GGUFMeta) -> list[bool]:
    pat = meta.sliding_window_pattern
    if isinstance(pat, list):
        return [bool(x) for x in pat]
    if isinstance(pat, int) and meta.sliding_window:
        return [(i + 1) % pat != 0 for i in range(meta.block_count)]
    return [False] * meta.block_count


def _layer(meta: GGUFMeta, i: int, H: int, Hkv: int, F: int, hk: int, hv: int, swa: bool
           ) -> Iterator[tuple[str, tuple[int, ...]]]:
    arch, E = meta.architecture, meta.embedding_length
    yield "attn_norm.weight", (E,)
    if arch == "qwen35moe":
        yield from _qwen35moe_layer(meta, i, H, Hkv, hk, hv)
        return
    if arch == "gemma4" and swa:
        hk = meta.key_length_swa or hk
        hv = meta.value_length_swa or hv
    yield "attn_q.weight", (E, hk * H)
    yield "attn_k.weight", (E, hk * Hkv)
    yield "attn_v.weight", (E, hv * Hkv)
    yield "attn_output.weight", (hk * H, E)
    if arch in ("qwen3", "qwen3moe", "gemma4"):
        yield "attn_q_norm.weight", (hk,)
        yield "attn_k_norm.weight", (hk,)
    if arch == "gemma4":
        yield "post_attention_norm.weight", (E,)
    yield "ffn_norm.weight", (E,)
    if meta.expert_count:
        X, Fe = meta.expert_count, meta.expert_feed_forward_length or 0
        yield "ffn_gate_inp.weight", (E, X)
        yield "ffn_gate_exps.weight", (E, Fe, X)
        yield "ffn_down_exps.weight", (Fe, E, X)
        yield "ffn_up_exps.weight", (E, Fe, X)
    else:
        yield "ffn_gate.weight", (E, F)
        yield "ffn_up.weight", (E, F)
        yield "ffn_down.weight", (F, E)
    if arch == "gemma4":
        yield "post_ffw_norm.weight", (E,)


def _qwen35moe_layer(meta: GGUFMeta, i: int, H: int, Hkv: int, hk: int, hv: int
                     ) -> Iterator[tuple[str, tuple[int, ...]]]:
    E = meta.embedding_length
    yield "post_attention_norm.weight", (E,)
    interval = meta.full_attention_interval or 4
    if (i + 1) % interval == 0:  # gated full attention: Q carries its gate (twice the width)
        yield "attn_q.weight", (E, hk * H * 2)
        yield "attn_k.weight", (E, hk * Hkv)
        yield "attn_v.weight", (E, hv * Hkv)
        yield "attn_output.weight", (hk * H, E)
        yield "attn_q_norm.weight", (hk,)
        yield "attn_k_norm.weight", (hk,)
    else:  # gated delta net
        s = meta.ssm
        if s is None or not (s.state_size and s.group_count and s.time_step_rank and s.conv_kernel):
            raise TwinError("a qwen35moe twin needs ssm.state_size, group_count, time_step_rank and "
                            "conv_kernel")
        key_dim, value_dim = s.state_size * s.group_count, s.state_size * s.time_step_rank
        yield "attn_qkv.weight", (E, key_dim * 2 + value_dim)
        yield "attn_gate.weight", (E, value_dim)
        yield "ssm_conv1d.weight", (s.conv_kernel, key_dim * 2 + value_dim)
        yield "ssm_dt.bias", (s.time_step_rank,)
        yield "ssm_a", (s.time_step_rank,)
        yield "ssm_beta.weight", (E, s.time_step_rank)
        yield "ssm_alpha.weight", (E, s.time_step_rank)
        yield "ssm_norm.weight", (s.state_size,)
        yield "ssm_out.weight", (value_dim, E)
    X, Fe = meta.expert_count or 0, meta.expert_feed_forward_length or 0
    Fs = meta.expert_shared_feed_forward_length or Fe
    yield "ffn_gate_inp.weight", (E, X)
    yield "ffn_down_exps.weight", (Fe, E, X)
    yield "ffn_gate_exps.weight", (E, Fe, X)
    yield "ffn_up_exps.weight", (E, Fe, X)
    yield "ffn_gate_inp_shexp.weight", (E,)
    yield "ffn_gate_shexp.weight", (E, Fs)
    yield "ffn_up_shexp.weight", (E, Fs)
    yield "ffn_down_shexp.weight", (Fs, E)


