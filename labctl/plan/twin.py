"""Shape twins: a model's GGUF layout with no weights, so llama.cpp allocates what the real file needs.

A twin is a *sparse* file: the real header (key/values, tokenizer, every tensor's name, type, shape
and offset) followed by a hole as long as the tensor data. On disk it costs the header; to llama.cpp
it is the model — same tensors, same buffer sizes, same KV cache — except that every weight reads as
zero, so its output is meaningless (fine: the twin exists to measure memory and speed).

Two sources, best first:
* **the lock's header**: `labctl lock` keeps each file's raw header in the header cache
  (`labctl.gguf.headers`, named by `header_sha256` in lab.lock); the twin is those bytes plus holes,
  byte-for-byte the real layout (shards keep their names, so llama.cpp finds them).
* **metadata** (the lock's `gguf` numbers, else the lab's `model.declared`): tensors named and shaped
  as the pinned llama.cpp's `load_arch_tensors` creates them (src/models/<arch>.cpp of the tree
  llama-cpp-python 0.3.36 vendors) for `llama`, `qwen3`, `qwen3moe`, `qwen35moe` and `gemma4`, typed
  from the quant in the file name. The vocabulary is labctl's generated one at the declared size (its
  strings do not change any buffer llama.cpp sizes).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from gguf import GGUFValueType, Keys

from labctl.gguf import headers as ggufheaders
from labctl.gguf.meta import GGUFMeta
from labctl.gguf.read import GGUFError, parse_header, quant_from_filename
from labctl.gguf.tiny import CHAT_TEMPLATE, add_spm_tokenizer, build_vocab
from labctl.lock.lockfile import FileLock, ModelLock
from labctl.plan.twinlayout import TWIN_ARCHS, TwinError, layout_bytes, swa_layers, tensors

__all__ = ["TWIN_ARCHS", "Twin", "TwinError", "layout_bytes", "tensors", "twin_from_meta", "write_twin"]

QWEN35_ROPE_SECTIONS = [11, 11, 10, 0]
"""Qwen3.5's M-RoPE sections (text positions use the first three); required by the pinned loader."""


@dataclass(frozen=True)
class Twin:
    """What was written: the first file (pass it to `-m`), every file, and how it was built."""

    path: Path
    files: list[Path]
    source: str
    """`lock header`, `lock metadata` or `declared`."""
    size: int
    """Apparent bytes of all files (what llama.cpp sees)."""
    disk: int
    """Bytes actually allocated on disk."""


# ----------------------------------------------------------------------------- from a header


def _sparse(path: Path, head: bytes, size: int) -> None:
    """`head`, then a hole up to `size` bytes (truncate past the end: no data blocks are written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(head)
        f.truncate(max(size, len(head)))
    os.replace(tmp, path)


def header_bytes(f: FileLock, refetch: Callable[[FileLock], bytes] | None = None) -> bytes | None:
    """The locked raw header of one file: from the header cache, else `refetch` (checked by sha256)."""
    if not f.header_sha256:
        return None
    raw = ggufheaders.get(f.header_sha256)
    if raw is None and refetch is not None:
        got = refetch(f)
        if ggufheaders.put(got) != f.header_sha256:
            raise TwinError(f"{f.name}: the first {f.header_size} bytes no longer match the locked header")
        raw = got
    return raw


def shard_paths(out: Path, n: int) -> list[Path]:
    """`out` for one file; `<out stem>-0000i-of-0000n.gguf` beside it for a split model (the names
    llama.cpp derives the other shards' paths from)."""
    if n == 1:
        return [out]
    stem = out.name.removesuffix(".gguf")
    return [out.with_name(f"{stem}-{i:05d}-of-{n:05d}.gguf") for i in range(1, n + 1)]


def twin_from_headers(model: ModelLock, out: Path, refetch: Callable[[FileLock], bytes] | None = None
                      ) -> list[Path] | None:
    """Write every file of the model as header + holes (`shard_paths(out)`); None when a header is missing."""
    raws = [header_bytes(f, refetch) for f in model.files]
    if any(r is None for r in raws):
        return None
    paths = shard_paths(out, len(model.files))
    for f, raw, p in zip(model.files, raws, paths, strict=True):
        assert raw is not None
        parse_header(raw)  # a damaged cache entry fails here, not inside llama.cpp
        _sparse(p, raw, f.size)
    return paths


# ---------------------------------------------------------------------------- from metadata


def _u32_array(w: gguf.GGUFWriter, key: str, values: list[int]) -> None:
    w.add_key_value(key, values, GGUFValueType.ARRAY, sub_type=GGUFValueType.UINT32)


def _metadata(w: gguf.GGUFWriter, meta: GGUFMeta, name: str) -> None:
    arch = meta.architecture
    k = lambda t: t.format(arch=arch)  # noqa: E731
    heads = meta.per_layer(meta.head_count)
    hk = meta.key_length or meta.embedding_length // heads[0]
    w.add_type("model")
    w.add_name(name)
    w.add_description("labctl shape twin: the model's layout, no weights (all zeros)")
    w.add_vocab_size(meta.vocab_size or 0)
    w.add_context_length(meta.context_length)
    w.add_embedding_length(meta.embedding_length)
    w.add_block_count(meta.block_count)
    ff = meta.feed_forward_length
    if isinstance(ff, list):
        _u32_array(w, k(Keys.LLM.FEED_FORWARD_LENGTH), ff)
    elif ff:
        w.add_feed_forward_length(ff)
    for key, v in ((Keys.Attention.HEAD_COUNT, meta.head_count), (Keys.Attention.HEAD_COUNT_KV,
                                                                  meta.head_count_kv)):
        if isinstance(v, list) and len(set(v)) > 1:
            _u32_array(w, k(key), v)
        else:
            w.add_uint32(k(key), v[0] if isinstance(v, list) else v)
    w.add_key_length(hk)
    w.add_value_length(meta.value_length or hk)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1e6 if arch.startswith("qwen") else 1e4)
    if arch == "qwen35moe":
        w.add_rope_dimension_count(hk // 4)  # partial rotary: a quarter of the head
        _u32_array(w, k(Keys.Rope.DIMENSION_SECTIONS), QWEN35_ROPE_SECTIONS)
        w.add_full_attention_interval(meta.full_attention_interval or 4)
        s = meta.ssm
        assert s is not None
        w.add_ssm_conv_kernel(s.conv_kernel)
        w.add_ssm_state_size(s.state_size)
        w.add_ssm_group_count(s.group_count)
        w.add_ssm_time_step_rank(s.time_step_rank)
        w.add_ssm_inner_size(s.inner_size or s.state_size * s.time_step_rank)
    elif arch != "gemma4":
        w.add_rope_dimension_count(hk)
    if meta.expert_count:
        w.add_expert_count(meta.expert_count)
        w.add_expert_used_count(meta.expert_used_count or 1)
        w.add_expert_feed_forward_length(meta.expert_feed_forward_length or 0)
        if meta.expert_shared_feed_forward_length:
            w.add_expert_shared_feed_forward_length(meta.expert_shared_feed_forward_length)
    if arch == "gemma4":
        w.add_sliding_window(meta.sliding_window or 0)
        w.add_key_value(k(Keys.Attention.SLIDING_WINDOW_PATTERN), swa_layers(meta), GGUFValueType.ARRAY,
                        sub_type=GGUFValueType.BOOL)
        w.add_uint32(k(Keys.Attention.KEY_LENGTH_SWA), meta.key_length_swa or hk)
        w.add_uint32(k(Keys.Attention.VALUE_LENGTH_SWA), meta.value_length_swa or meta.key_length_swa or hk)
        w.add_uint32(k(Keys.LLM.EMBD_LENGTH_PER_LAYER_INP), 0)
        # Sliding layers rotate their own (smaller) heads; unset, llama.cpp would take the global n_rot.
        w.add_uint32(k("{arch}.rope.dimension_count_swa"), meta.key_length_swa or hk)
        w.add_rope_freq_base_swa(1e4)
    add_spm_tokenizer(w, *build_vocab(meta.vocab_size or 0))
    w.add_chat_template(CHAT_TEMPLATE)


def twin_from_meta(meta: GGUFMeta, quant: str | None, path: Path, name: str = "twin") -> Path:
    """Write a twin built from metadata: header (via gguf's writer) then holes for the tensor data."""
    ts = tensors(meta, quant)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    w = gguf.GGUFWriter(tmp, meta.architecture, endianess=gguf.GGUFEndian.LITTLE)
    _metadata(w, meta, name)
    for t in ts:
        w.add_tensor_info(t.name, tuple(reversed(t.ne)), np.dtype(np.float32), t.nbytes, raw_dtype=t.type)
    w.write_header_to_file(tmp)
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    assert w.fout is not None
    fout = w.fout[0]
    head_end = fout.tell()
    fout.close()
    w.fout = None
    align = w.data_alignment
    data = sum(gguf.GGUFWriter.ggml_pad(t.nbytes, align) for t in ts)
    with open(tmp, "r+b") as f:
        f.truncate(gguf.GGUFWriter.ggml_pad(head_end, align) + data)
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------- one contestant


def _disk(p: Path) -> int:
    st = p.stat()
    return getattr(st, "st_blocks", 0) * 512 or st.st_size


def write_twin(model: ModelLock | None, declared: GGUFMeta | None, file_name: str, out: Path, *,
               refetch: Callable[[FileLock], bytes] | None = None) -> Twin:
    """The twin of one model at `out` (a split model's shards: `shard_paths(out, n)`).

    The locked header wins; else the lock's header metadata; else the declared metadata.
    """
    out = Path(out)
    if model is not None and all(f.header_sha256 for f in model.files):
        paths = twin_from_headers(model, out, refetch)
        if paths is not None:
            return _done(paths, "lock header")
    meta, source = (declared, "declared")
    if model is not None and model.gguf:
        meta, source = model.gguf, "lock metadata"
    if meta is None:
        raise TwinError("no header or metadata for this model: run `labctl lock`, or declare model.declared")
    quant = meta.quant or quant_from_filename(file_name)
    try:
        twin_from_meta(meta, quant, out, name=f"twin of {file_name}")
    except (ValueError, KeyError) as e:
        if isinstance(e, TwinError):
            raise
        raise TwinError(f"cannot write the twin: {e}") from None
    return _done([out], source)


def _done(paths: list[Path], source: str) -> Twin:
    try:
        parse_header(paths[0].open("rb").read(64 << 20))
    except GGUFError as e:  # pragma: no cover - a writer bug, not user input
        raise TwinError(f"wrote an unreadable twin: {e}") from None
    return Twin(path=paths[0], files=paths, source=source, size=sum(p.stat().st_size for p in paths),
                disk=sum(_disk(p) for p in paths))
