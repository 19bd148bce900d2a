"""Deterministic tiny GGUF models for tests, smoke runs and memory planning.

``write_tiny_gguf(path, TinyModelParams(...))`` writes a small, randomly initialised
model that llama.cpp's ``llama-server`` loads and serves (output is gibberish, but the
whole request path -- tokenizer, chat template, KV cache, sampling -- is real).

Everything is generated here: the weights come from ``numpy.random.default_rng(seed)``
(raw PCG64 output, which NumPy keeps stable across versions, turned into floats with
integer arithmetic), and the vocabulary is a small SentencePiece-style ("llama"
tokenizer model) vocab built from fixed lists in this file. Metadata keys and tensors
are written in a fixed order with explicit little-endian dtypes and contain no
timestamps or random ids, so the same parameters always give the same bytes and the
same sha256, on any machine.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np
from gguf import GGUFValueType, Keys, LlamaFileType

from labctl.gguf.tinyparams import (
    GENERATOR_ID,
    TinyModelParams,
    canonical_params_json,
    tiny_model_name,
)

__all__ = [
    "GENERATOR_ID",
    "TinyModelParams",
    "build_vocab",
    "canonical_params_json",
    "tiny_model_name",
    "write_tiny_gguf",
]


# SentencePiece's word-boundary marker (U+2581), as used by llama-style vocabs.
_SP = "\u2581"

# Chat-role markers used by the chat template; stored as CONTROL tokens like real chat
# models' <|im_start|>: one token each when llama-server tokenizes the rendered prompt
# (it parses special tokens there), hidden from generated text, and "<|end|>" is
# recognised by llama.cpp as an end-of-generation token.
CHAT_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|tool|>", "<|end|>")

# A tiny ChatML-like template with plain-text role markers. It renders system, user,
# assistant (including tool_calls) and tool messages, lists tools when given, and
# accepts string or list-of-parts content.
CHAT_TEMPLATE = (
    "{%- if tools is defined and tools -%}"
    "{{- '<|system|>\\nTools:\\n' -}}"
    "{%- for tool in tools -%}{{- tool | tojson -}}{{- '\\n' -}}{%- endfor -%}"
    "{{- '<|end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{- '<|' + message['role'] + '|>\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- elif message['content'] is iterable -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{%- if message['tool_calls'] is defined and message['tool_calls'] -%}"
    "{%- for tool_call in message['tool_calls'] -%}"
    "{{- '\\n<tool_call>' -}}{{- tool_call['function'] | tojson -}}{{- '</tool_call>' -}}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}"
)

# Word pieces, most "frequent" first. Prefixes of multi-character pieces are added
# automatically so SentencePiece-style pair merging can reach every listed piece.
_WORDS_TEXT = """
the of and to in is that for it as with was on be at by this are or from not but have an
they which you one were all we can there their has been if more when will would who so no
do what out up about into than then them its only other new some could time these two may
first any like use used make how our each file code test run error function return value
data type name list string int true false none null self import def class print model
server token tokens chat user system assistant tool call args result ok yes hello world
"""
# Code-ish pieces; U+2581 stands for a space, as SentencePiece escapes spaces to it.
_CODE_TEXT = """
(): () {} [] == != <= >= -> => :: // /* */ ## ▁▁▁▁ ▁▁ ... \"\"\" '' \"\"
+= -= ** && || ${ #! ./ ../ .py .json .md __ __init__ </ />
"""
_WORDS = tuple(_WORDS_TEXT.split())
_CODE = tuple(_CODE_TEXT.split())
_PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
_DIGITS = "0123456789"
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_UPPER = _LOWER.upper()

# llama.cpp / gguf token types
_TT_NORMAL, _TT_UNKNOWN, _TT_CONTROL, _TT_BYTE = 1, 2, 3, 6

# ---------------------------------------------------------------------------- vocab


def _prefixes(piece: str) -> Iterator[str]:
    for i in range(2, len(piece) + 1):
        yield piece[:i]


def _word_pieces() -> Iterator[str]:
    """Normal (non-special) pieces in priority order; finite lists, then an endless tail."""
    yield _SP
    yield from _LOWER
    yield from _UPPER
    yield from _DIGITS
    yield from _PUNCT
    for w in _WORDS:
        yield from _prefixes(_SP + w)
    for c in _CODE:
        if len(c) > 1:
            yield from _prefixes(c)
    for w in _WORDS:
        yield from _prefixes(w)
    yield from (_SP + c for c in _UPPER + _DIGITS + _PUNCT)
    # Endless deterministic tail so any vocab_size can be filled.
    n = 2
    while True:
        for i in range(len(_LOWER) ** n):
            s, j = "", i
            for _ in range(n):
                s = _LOWER[j % 26] + s
                j //= 26
            yield s
            yield _SP + s
        n += 1


def build_vocab(vocab_size: int) -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types of the generated SentencePiece-style vocab.

    Ids: 0 <unk>, 1 <s>, 2 </s>, 3..258 <0x00>..<0xFF>, then the chat-role tokens,
    then word pieces (score -rank, so earlier pieces merge first).
    """
    tokens: list[str] = ["<unk>", "<s>", "</s>"]
    types: list[int] = [_TT_UNKNOWN, _TT_CONTROL, _TT_CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [_TT_BYTE] * 256
    tokens += list(CHAT_TOKENS)
    types += [_TT_CONTROL] * len(CHAT_TOKENS)
    if vocab_size < len(tokens) + 1:
        raise ValueError(f"vocab_size must be at least {len(tokens) + 1}")
    scores: list[float] = [0.0] * len(tokens)

    seen = set(tokens)
    rank = 0
    for piece in _word_pieces():
        if len(tokens) >= vocab_size:
            break
        if piece in seen:
            continue
        seen.add(piece)
        tokens.append(piece)
        types.append(_TT_NORMAL)
        scores.append(-float(rank))
        rank += 1
    return tokens, scores, types


# -------------------------------------------------------------------------- weights


class _Weights:
    """Uniform weights from the raw PCG64 stream of ``default_rng(seed)``.

    Only ``bit_generator.random_raw`` is used (NumPy guarantees bit-generator streams,
    not distribution algorithms), and bits are turned into floats with exact integer
    and power-of-two arithmetic, so values do not depend on NumPy version or platform.
    """

    def __init__(self, seed: int, dtype: str) -> None:
        self._bitgen = np.random.default_rng(seed).bit_generator
        self._dtype = np.dtype("<f2") if dtype == "f16" else np.dtype("<f4")

    def matrix(self, rows: int, cols: int, std: float = 0.02) -> np.ndarray:
        n = rows * cols
        raw = np.asarray(self._bitgen.random_raw(n), dtype=np.uint64)
        # top 24 bits -> integers in [-2^23, 2^23) -> exact float32 in [-1, 1)
        ints = (raw >> np.uint64(40)).astype(np.int64) - (1 << 23)
        unit = ints.astype("<f4") * np.float32(2.0**-23)
        # uniform(-a, a) has std a/sqrt(3); round the scale to float32 once
        scale = np.float32(std * 3.0**0.5)
        w = (unit * scale).astype("<f4").reshape(rows, cols)
        return np.ascontiguousarray(w.astype(self._dtype))

    @staticmethod
    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype="<f4")


# ---------------------------------------------------------------------------- write


def add_spm_tokenizer(w: gguf.GGUFWriter, tokens: list[str], scores: list[float], types: list[int]) -> None:
    """The SPM ("llama") tokenizer keys of `build_vocab`'s vocabulary: unk 0, bos 1, eos 2, bos added."""
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)


def _add_metadata(
    w: gguf.GGUFWriter, params: TinyModelParams, tokens: list[str], scores: list[float], types: list[int],
    chat_template: str = CHAT_TEMPLATE,
) -> None:
    arch = params.architecture
    hd_k, hd_v = params.head_dims()
    w.add_type("model")
    w.add_name(tiny_model_name(params))
    w.add_description(f"Deterministic random tiny {arch} model generated by {GENERATOR_ID} (not trained)")
    w.add_file_type(LlamaFileType.MOSTLY_F16 if params.dtype == "f16" else LlamaFileType.ALL_F32)
    w.add_quantization_version(2)
    w.add_string("labctl.gguf.tiny.params", canonical_params_json(params))

    w.add_vocab_size(params.vocab_size)
    w.add_context_length(params.context_length)
    w.add_embedding_length(params.n_embd)
    w.add_block_count(params.n_layer)
    w.add_feed_forward_length(params.n_ff)
    w.add_head_count(params.n_head)
    if isinstance(params.n_head_kv, int):
        w.add_head_count_kv(params.n_head_kv)
    else:
        w.add_key_value(
            Keys.Attention.HEAD_COUNT_KV.format(arch=arch),
            list(params.n_head_kv),
            GGUFValueType.ARRAY,
            sub_type=GGUFValueType.UINT32,
        )
    w.add_key_length(hd_k)
    w.add_value_length(hd_v)
    w.add_rope_dimension_count(hd_k)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5 if arch != "gemma3" else 1e-6)
    if params.sliding_window is not None:
        w.add_sliding_window(params.sliding_window)
        w.add_rope_freq_base_swa(10000.0)
        pat = params.sliding_window_pattern
        if isinstance(pat, int):
            w.add_sliding_window_pattern(pat)
        elif pat is not None:
            w.add_key_value(
                Keys.Attention.SLIDING_WINDOW_PATTERN.format(arch=arch),
                list(pat),
                GGUFValueType.ARRAY,
                sub_type=GGUFValueType.BOOL,
            )

    add_spm_tokenizer(w, tokens, scores, types)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(True)
    w.add_chat_template(chat_template)


def _tensors(params: TinyModelParams) -> Iterator[tuple[str, np.ndarray]]:
    """(name, array) in file order; numpy shapes are the reverse of ggml's ne."""
    rnd = _Weights(params.seed, params.dtype)
    arch = params.architecture
    E, V, F, H = params.n_embd, params.vocab_size, params.n_ff, params.n_head
    hd, _ = params.head_dims()

    yield "token_embd.weight", rnd.matrix(V, E)
    for il, n_kv in enumerate(params.head_count_kv_per_layer()):
        p = f"blk.{il}."
        yield p + "attn_norm.weight", rnd.ones(E)
        if n_kv == 0:  # deci "linear attention" layer: output projection only
            yield p + "attn_output.weight", rnd.matrix(E, E)
        else:
            yield p + "attn_q.weight", rnd.matrix(H * hd, E)
            yield p + "attn_k.weight", rnd.matrix(n_kv * hd, E)
            yield p + "attn_v.weight", rnd.matrix(n_kv * hd, E)
            yield p + "attn_output.weight", rnd.matrix(E, H * hd)
            if arch == "gemma3":
                yield p + "attn_q_norm.weight", rnd.ones(hd)
                yield p + "attn_k_norm.weight", rnd.ones(hd)
        if arch == "gemma3":
            yield p + "post_attention_norm.weight", rnd.ones(E)
        yield p + "ffn_norm.weight", rnd.ones(E)
        yield p + "ffn_gate.weight", rnd.matrix(F, E)
        yield p + "ffn_up.weight", rnd.matrix(F, E)
        yield p + "ffn_down.weight", rnd.matrix(E, F)
        if arch == "gemma3":
            yield p + "post_ffw_norm.weight", rnd.ones(E)
    yield "output_norm.weight", rnd.ones(E)
    if arch != "gemma3":  # gemma ties output to token_embd
        yield "output.weight", rnd.matrix(V, E)


def write_tiny_gguf(path: Path, params: TinyModelParams, chat_template: str = CHAT_TEMPLATE) -> str:
    """Write the model for ``params`` to ``path`` atomically; return the file's sha256 hex.

    ``chat_template`` replaces the default one (which renders tools), e.g. to test a model whose
    template drops them; the bytes then differ from the generated model's of the same params."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens, scores, types = build_vocab(params.vocab_size)

    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        w = gguf.GGUFWriter(tmp, params.architecture, endianess=gguf.GGUFEndian.LITTLE)
        _add_metadata(w, params, tokens, scores, types, chat_template)
        for name, arr in _tensors(params):
            raw = gguf.GGMLQuantizationType.F16 if arr.dtype.itemsize == 2 else gguf.GGMLQuantizationType.F32
            w.add_tensor(name, arr, raw_dtype=raw, tensor_endianess=gguf.GGUFEndian.LITTLE)
        w.write_header_to_file(tmp)
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

        h = hashlib.sha256()
        with open(tmp, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return h.hexdigest()
