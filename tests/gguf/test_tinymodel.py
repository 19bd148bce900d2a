"""Tests for labctl.gguf.tiny: determinism, metadata, and loading in a real llama-server."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest
from pydantic import ValidationError

from labctl.gguf.tiny import (
    CHAT_TOKENS,
    TinyModelParams,
    build_vocab,
    canonical_params_json,
    tiny_model_name,
    write_tiny_gguf,
)
from labctl.plan import llamaserver
from labctl.plan.llamaserver import http_json as _http


def _field(reader: gguf.GGUFReader, key: str):
    f = reader.get_field(key)
    assert f is not None, f"missing GGUF key {key}"
    return f.contents()


# ------------------------------------------------------------------ determinism


def test_same_params_same_bytes(tmp_path: Path) -> None:
    p = TinyModelParams(seed=7)
    a = write_tiny_gguf(tmp_path / "a.gguf", p)
    b = write_tiny_gguf(tmp_path / "sub" / "b.gguf", TinyModelParams(seed=7))
    assert a == b
    assert (tmp_path / "a.gguf").read_bytes() == (tmp_path / "sub" / "b.gguf").read_bytes()
    import hashlib

    assert hashlib.sha256((tmp_path / "a.gguf").read_bytes()).hexdigest() == a
    # no temp files left behind
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.gguf", "sub"]


def test_different_seed_different_bytes(tmp_path: Path) -> None:
    a = write_tiny_gguf(tmp_path / "a.gguf", TinyModelParams(seed=0))
    b = write_tiny_gguf(tmp_path / "b.gguf", TinyModelParams(seed=1))
    assert a != b


def test_overwrite_is_atomic_replace(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"old")
    h = write_tiny_gguf(path, TinyModelParams())
    assert path.read_bytes()[:4] == b"GGUF"
    assert write_tiny_gguf(path, TinyModelParams()) == h


def test_default_model_is_small(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    write_tiny_gguf(path, TinyModelParams())
    assert path.stat().st_size < 2 * 1024 * 1024
    f16 = tmp_path / "h.gguf"
    write_tiny_gguf(f16, TinyModelParams(dtype="f16"))
    assert f16.stat().st_size < path.stat().st_size


def test_name_is_stable_and_param_sensitive() -> None:
    p = TinyModelParams()
    assert tiny_model_name(p) == tiny_model_name(TinyModelParams())
    assert tiny_model_name(p).startswith("tiny-llama-")
    assert len(tiny_model_name(p).rsplit("-", 1)[1]) == 12
    assert tiny_model_name(p) != tiny_model_name(TinyModelParams(seed=1))
    # lists and tuples are the same params
    as_list, as_tuple = TinyModelParams(n_head_kv=[2, 2]), TinyModelParams(n_head_kv=(2, 2))
    assert tiny_model_name(as_list) == tiny_model_name(as_tuple)
    assert json.loads(canonical_params_json(p))["params"]["seed"] == 0


# ------------------------------------------------------------------ metadata


def test_metadata_scalar_head_count_kv(tmp_path: Path) -> None:
    p = TinyModelParams(n_layer=3, n_embd=64, n_head=4, n_head_kv=2, context_length=2048)
    path = tmp_path / "m.gguf"
    write_tiny_gguf(path, p)
    r = gguf.GGUFReader(path)
    assert _field(r, "general.architecture") == "llama"
    assert _field(r, "general.name") == tiny_model_name(p)
    assert _field(r, "general.file_type") == 0
    assert _field(r, "llama.block_count") == 3
    assert _field(r, "llama.context_length") == 2048
    assert _field(r, "llama.embedding_length") == 64
    assert _field(r, "llama.attention.head_count") == 4
    assert _field(r, "llama.attention.head_count_kv") == 2
    assert _field(r, "llama.attention.key_length") == 16
    assert _field(r, "llama.attention.value_length") == 16
    assert _field(r, "llama.rope.dimension_count") == 16
    assert _field(r, "llama.rope.freq_base") == pytest.approx(10000.0)
    assert _field(r, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(1e-5)
    assert _field(r, "tokenizer.ggml.model") == "llama"
    assert "<|assistant|>" in _field(r, "tokenizer.chat_template")
    assert json.loads(_field(r, "labctl.gguf.tiny.params")) == json.loads(canonical_params_json(p))
    names = {t.name for t in r.tensors}
    assert {"token_embd.weight", "output_norm.weight", "output.weight", "blk.2.attn_k.weight"} <= names
    k = next(t for t in r.tensors if t.name == "blk.0.attn_k.weight")
    assert list(k.shape) == [64, 2 * 16]  # ggml ne order: [n_embd, n_kv * head_dim]
    assert k.tensor_type == gguf.GGMLQuantizationType.F32


def test_metadata_array_head_count_kv_and_key_length(tmp_path: Path) -> None:
    p = TinyModelParams(n_layer=3, n_head=4, n_head_kv=[2, 2, 2], key_length=32, dtype="f16")
    path = tmp_path / "m.gguf"
    write_tiny_gguf(path, p)
    r = gguf.GGUFReader(path)
    f = r.get_field("llama.attention.head_count_kv")
    assert f.types == [gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.UINT32]
    assert f.contents() == [2, 2, 2]
    assert _field(r, "llama.attention.key_length") == 32
    assert _field(r, "llama.attention.value_length") == 32
    assert _field(r, "llama.rope.dimension_count") == 32
    assert _field(r, "general.file_type") == 1
    q = next(t for t in r.tensors if t.name == "blk.1.attn_q.weight")
    assert list(q.shape) == [64, 4 * 32]
    assert q.tensor_type == gguf.GGMLQuantizationType.F16
    norm = next(t for t in r.tensors if t.name == "blk.1.attn_norm.weight")
    assert norm.tensor_type == gguf.GGMLQuantizationType.F32


def test_metadata_deci_per_layer_kv(tmp_path: Path) -> None:
    p = TinyModelParams(architecture="deci", n_layer=3, n_head=4, n_head_kv=[4, 0, 1])
    path = tmp_path / "m.gguf"
    write_tiny_gguf(path, p)
    r = gguf.GGUFReader(path)
    assert _field(r, "deci.attention.head_count_kv") == [4, 0, 1]
    shapes = {t.name: list(t.shape) for t in r.tensors}
    assert shapes["blk.0.attn_k.weight"] == [64, 64]
    assert "blk.1.attn_k.weight" not in shapes
    assert shapes["blk.1.attn_output.weight"] == [64, 64]
    assert shapes["blk.2.attn_v.weight"] == [64, 16]


def test_metadata_gemma3_sliding_window(tmp_path: Path) -> None:
    p = TinyModelParams(architecture="gemma3", n_layer=4, sliding_window=128, sliding_window_pattern=2)
    path = tmp_path / "m.gguf"
    write_tiny_gguf(path, p)
    r = gguf.GGUFReader(path)
    assert _field(r, "gemma3.attention.sliding_window") == 128
    assert _field(r, "gemma3.attention.sliding_window_pattern") == 2
    p2 = TinyModelParams(
        architecture="gemma3", n_layer=3, sliding_window=64, sliding_window_pattern=[True, False, True]
    )
    write_tiny_gguf(path, p2)
    r2 = gguf.GGUFReader(path)
    assert _field(r2, "gemma3.attention.sliding_window_pattern") == [True, False, True]
    assert "output.weight" not in {t.name for t in r2.tensors}  # tied embeddings


def test_vocab_layout() -> None:
    tokens, scores, types = build_vocab(512)
    assert len(tokens) == len(scores) == len(types) == 512
    assert len(set(tokens)) == 512
    assert tokens[:3] == ["<unk>", "<s>", "</s>"]
    assert tokens[3] == "<0x00>" and tokens[258] == "<0xFF>"
    assert set(types[3:259]) == {6}
    assert tokens[259 : 259 + len(CHAT_TOKENS)] == list(CHAT_TOKENS)
    assert "\u2581the" in tokens
    big, _, _ = build_vocab(5000)
    assert len(set(big)) == 5000


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_embd": 65},  # not divisible by n_head
        {"n_head_kv": 3},  # does not divide n_head
        {"n_head_kv": [2, 2, 2]},  # wrong length
        {"n_head_kv": [2, 4]},  # differing per-layer values need deci
        {"key_length": 16, "value_length": 32},
        {"key_length": 15},
        {"sliding_window": 64},  # llama has no SWA
        {"architecture": "gemma3", "sliding_window_pattern": 2},  # pattern without window
        {"bogus": 1},
        {"vocab_size": 100},
    ],
)
def test_invalid_params(kwargs: dict) -> None:
    with pytest.raises(ValidationError):
        TinyModelParams(**kwargs)


def test_params_frozen_and_hashable() -> None:
    p = TinyModelParams(n_head_kv=[2, 2])
    assert p.n_head_kv == (2, 2)
    hash(p)
    with pytest.raises(ValidationError):
        p.seed = 3  # type: ignore[misc]


# ------------------------------------------------------------------ llama-server


@pytest.mark.llama
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"n_head_kv": [2, 2], "key_length": 32, "dtype": "f16"},
        {"architecture": "deci", "n_layer": 3, "n_head_kv": [4, 0, 1]},
        {"architecture": "gemma3", "n_layer": 4, "sliding_window": 128, "sliding_window_pattern": 2},
    ],
    ids=["llama", "llama-kvarr-keylen", "deci-per-layer-kv", "gemma3-swa"],
)
def test_llama_server_chat_completion(tmp_path: Path, llama_server: Path, kwargs: dict) -> None:
    params = TinyModelParams(**kwargs)
    model = tmp_path / f"{tiny_model_name(params)}.gguf"
    write_tiny_gguf(model, params)
    argv = llamaserver.server_argv(llama_server, model, llamaserver.ServerSettings(context=512))
    with llamaserver.serve(argv, tmp_path / "server.log", timeout=90) as base:
        status, resp = _http(
            "POST",
            base + "/v1/chat/completions",
            {
                "messages": [
                    {"role": "system", "content": "You are terse."},
                    {"role": "user", "content": "Say hello to the world."},
                ],
                "max_tokens": 16,
                "temperature": 0,
                "seed": 0,
            },
        )
        assert status == 200, resp
        assert resp["choices"] and resp["choices"][0]["message"]["role"] == "assistant"
        usage = resp["usage"]
        assert usage["prompt_tokens"] > 0
        assert 0 < usage["completion_tokens"] <= 16 or resp["choices"][0]["finish_reason"] == "stop"
        assert isinstance(resp["timings"], dict) and "predicted_n" in resp["timings"]

        # the chat template renders tool calls and tool results
        status, resp = _http(
            "POST",
            base + "/v1/chat/completions",
            {
                "messages": [
                    {"role": "user", "content": "What is 2+2?"},
                    {
                        "role": "assistant",
                        "content": "",
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "add", "arguments": '{"a": 2, "b": 2}'},
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": "call_1", "content": "4"},
                ],
                "max_tokens": 4,
            },
        )
        assert status == 200, resp
        assert resp["choices"]
