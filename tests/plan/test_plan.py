"""The planner: llama.cpp's KV / buffer arithmetic, the Round 7 plan on two profiles, bad input, and
(marked `llama`) the planner's figures against what a real llama-server reports when it loads."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from labctl.cli.plan import plan_command
from labctl.gguf.meta import GGUFMeta, SSMState
from labctl.gguf.read import meta_from_headers, read_header_local
from labctl.gguf.tiny import TinyModelParams, write_tiny_gguf
from labctl.lock.lockfile import FileLock, Lock, ModelLock, SourceLock, TaskLock
from labctl.plan import kvcache as kc
from labctl.plan import llamaserver as ls
from labctl.plan.planner import PlanError, plan_lab, tiny_meta
from labctl.spec.load import load_lab
from labctl.spec.profiles import Profile, find_profile
from labctl.spec.units import format_size
from tests.helpers import ROOT, lab_copy

GiB, MiB = 1024**3, 1024**2
CODER = GGUFMeta(architecture="qwen3moe", block_count=48, context_length=262144, embedding_length=2048,
                 head_count=32, head_count_kv=4, key_length=128, value_length=128, expert_count=128,
                 expert_used_count=8)


# ------------------------------------------------------------------ arithmetic


def test_bytes_per_element_table() -> None:
    bpe = {t: kc.bytes_per_element(t) for t in kc.CACHE_TYPES}
    assert bpe == {"f32": 4, "f16": 2, "bf16": 2, "q8_0": 34 / 32, "q4_0": 18 / 32, "q4_1": 20 / 32,
                   "q5_0": 22 / 32, "q5_1": 24 / 32, "iq4_nl": 18 / 32}
    assert kc.row_bytes("q8_0", 512) == 544 and kc.row_bytes("f16", 512) == 1024


def test_qwen3_coder_kv_per_token_and_64k() -> None:
    # 48 layers × 4 KV heads × 128 dims × (K + V) × 34/32 bytes
    assert kc.kv_bytes_per_token(CODER, "q8_0", "q8_0") == 52_224
    assert kc.kv_bytes_per_token(CODER, "f16", "f16") == 98_304
    kv = kc.kv_cache(CODER, 65536, type_k="q8_0", type_v="q8_0")
    assert kv.total == 52_224 * 65536 and kv.total / GiB == pytest.approx(3.1875)
    assert kv.swa_bytes == kv.recurrent_bytes == 0


def _gemma3(**kw) -> GGUFMeta:
    base = {"architecture": "gemma3", "block_count": 6, "context_length": 32768, "embedding_length": 64,
            "head_count": 4, "head_count_kv": 2, "key_length": 64, "value_length": 64, "sliding_window": 128}
    return GGUFMeta(**{**base, **kw})


def test_sliding_window_cells_follow_llama_cpp() -> None:
    m = _gemma3(sliding_window_pattern=3)  # layers 2 and 5 global
    assert [ly.kind for ly in kc.layers(m)] == ["swa", "swa", "full"] * 2
    # the colleague's measured server: window 128, 4 unified slots → 1024 cells; one slot → 768
    assert kc.cells(m, 4096, n_seq=4, unified=True).swa == 1024
    assert kc.cells(m, 4096, n_seq=1).swa == 768
    c = kc.cells(m, 4096, n_seq=4)  # labctl's explicit -np: one stream per slot
    assert (c.n_ctx_seq, c.streams, c.swa) == (1024, 4, 768)
    assert kc.cells(m, 512).swa == 512  # never more than the context
    kv = kc.kv_cache(m, 4096)
    row = 2 * 64 * 2 * 2  # K + V, f16
    assert kv.full_bytes == 2 * row * 4096 and kv.swa_bytes == 4 * row * 768
    assert kv.bytes_per_token == 2 * row
    # default pattern of gemma3 (6) applies when the header has a window but no pattern
    assert [ly.kind for ly in kc.layers(_gemma3())] == ["swa"] * 5 + ["full"]
    bools = _gemma3(block_count=3, sliding_window_pattern=[True, False, True])
    assert [ly.kind for ly in kc.layers(bools)] == ["swa", "full", "swa"]


def test_per_layer_kv_heads_and_transposed_v_padding() -> None:
    m = GGUFMeta(architecture="deci", block_count=3, context_length=4096, embedding_length=64, head_count=4,
                 head_count_kv=[4, 0, 1], key_length=32, value_length=32)
    assert kc.kv_cache(m, 4096).total == (4 + 0 + 1) * 32 * 2 * 2 * 4096
    # without flash attention V is transposed and every layer's V row padded to the widest (4 × 32)
    off = kc.kv_cache(m, 4096, flash_attention="off")
    assert off.k_bytes == 5 * 32 * 2 * 4096 and off.v_bytes == 3 * 128 * 2 * 4096


def test_swa_head_dims_and_gemma4_declared_shape() -> None:
    lab = load_lab(ROOT / "lab.yaml")
    gemma = next(c for c in lab.lab.contestants if c.id == "gemma-4-12b").model.declared
    kv = kc.kv_cache(gemma, 65536, type_k="q8_0", type_v="q8_0")
    assert kv.bytes_per_token == 8 * 1 * 512 * 2 * 34 // 32  # 8 global layers, 1 KV head of 512
    assert kv.swa_bytes == 40 * 8 * 256 * 2 * 34 // 32 * 1536  # 40 sliding layers × (1024 + 512) cells


def test_hybrid_recurrent_state_is_fixed() -> None:
    m = GGUFMeta(architecture="qwen35moe", block_count=40, context_length=262144, embedding_length=2048,
                 head_count=16, head_count_kv=2, key_length=256, value_length=256, full_attention_interval=4,
                 ssm=SSMState(conv_kernel=4, state_size=128, group_count=16, time_step_rank=32,
                              inner_size=4096),
                 expert_count=256, expert_used_count=8)
    kinds = [ly.kind for ly in kc.layers(m)]
    assert kinds.count("full") == 10 and kinds[3] == "full" and kinds[0] == "recurrent"
    a, b = kc.kv_cache(m, 65536, type_k="q8_0", type_v="q8_0"), kc.kv_cache(m, 131072, type_k="q8_0",
                                                                           type_v="q8_0")
    per_seq = 30 * (3 * (4096 + 2 * 16 * 128) + 128 * 4096) * 4  # conv + DeltaNet state, f32
    assert a.recurrent_bytes == b.recurrent_bytes == per_seq and per_seq / MiB == pytest.approx(62.81, 0.01)
    assert a.bytes_per_token == 10 * 2 * 256 * 2 * 34 // 32
    assert kc.kv_cache(m, 65536, n_seq=2).recurrent_bytes == 2 * per_seq


def test_buffers() -> None:
    m = CODER.model_copy(update={"vocab_size": 151936})
    assert kc.output_buffer(m, 1) == 151936 * 4 and kc.output_buffer(m, 4) == 4 * 151936 * 4
    kv = kc.kv_cache(m, 65536, type_k="q8_0", type_v="q8_0")
    on = kc.compute_buffer(m, kv, flash_attention="on")
    off = kc.compute_buffer(m, kv, flash_attention="off")
    assert on >= 65536 * 512 * 2 and off > 65536 * 512 * 32 * 4  # f16 mask; KQ scores of 32 heads
    # CUDA's flash attention keeps an f16 copy of one layer's quantized K and V (ggml-cuda/fattn.cu)
    cuda = kc.compute_buffer(m, kv, flash_attention="on", cuda=True)
    assert cuda - on >= 65536 * (512 + 512) * 2 - 4 * 8 * 2048 * 512 * 4
    f16 = kc.kv_cache(m, 65536)
    assert kc.compute_buffer(m, f16, cuda=True) == kc.compute_buffer(m, f16)


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"type_k": "q9_0"}, "cache type 'q9_0' is not supported by llama.cpp"),
    ({"type_v": "q8_0", "flash_attention": "off"}, "quantized V cache (q8_0) needs flash attention"),
    ({"type_k": "q8_0", "meta": {"key_length": 16, "value_length": 16}}, "does not divide the head dim 16"),
    ({"meta": {"architecture": "mystery"}}, "architecture 'mystery' is not known to the planner"),
    ({"meta": {"architecture": "mystery", "key_length": None}},
     "needs key_length, missing from the metadata"),
    ({"meta": {"architecture": "qwen35moe"}}, "needs ssm.conv_kernel, ssm.state_size, ssm.inner_size, "
                                              "full_attention_interval"),
    ({"meta": {"architecture": "gemma4"}}, "needs sliding_window, sliding_window_pattern, key_length_swa"),
])
def test_bad_input_is_a_clear_error(kwargs: dict, needle: str) -> None:
    meta = CODER.model_copy(update=kwargs.pop("meta", {}))
    with pytest.raises(kc.KVError) as e:
        kc.kv_cache(meta, 4096, **kwargs)
    assert needle in str(e.value)


def test_unknown_architecture_fallback_only_when_opted_in() -> None:
    m = CODER.model_copy(update={"architecture": "mystery", "sliding_window": 128})
    kv = kc.kv_cache(m, 4096, allow_unknown=True)
    assert kv.full_bytes == kc.kv_cache(CODER, 4096).full_bytes and kv.swa_bytes == 0  # conservative


# ------------------------------------------------------------------ the Round 7 plan


def _plan(profile: str, lab: Path = ROOT / "lab.yaml", lock: Lock | None = None, **kw):
    loaded = load_lab(lab, profile=profile)
    return plan_lab(loaded, lock, **kw)


@pytest.mark.parametrize("profile", ["rtx5090-32g", "h100-80g"])
def test_round7_rows_are_complete(profile: str) -> None:
    plan = _plan(profile)
    assert plan.errors == [] and len(plan.contestants) == 6
    cloud = plan.contestants[-1]
    assert cloud.status == "not served" and cloud.kind == "cloud" and cloud.llama_args == []
    for c in plan.contestants[:5]:
        assert c.status == "planned" and c.meta_source == "declared", c
        for f in ("type", "quant", "weights_bytes", "kv_bytes_per_token", "context", "max_output",
                  "vram_used", "vram_free", "gpu_layers", "offloaded_layers"):
            assert getattr(c, f) is not None, (c.id, f)
        assert c.vram_used + c.vram_free == plan.vram_budget and c.vram_free >= 0
        assert c.offloaded_layers == 0 and c.gpu_layers == c.n_layers + 1
        assert c.context <= c.training_context and c.context % 1024 == 0
        args = dict(zip(c.llama_args[::2], c.llama_args[1::2], strict=True))
        assert args == {"-c": str(c.context), "-ngl": str(c.gpu_layers), "-fa": "on", "-ctk": "q8_0",
                        "-ctv": "q8_0", "-n": str(c.max_output), "-np": "1", "-fit": "off"}
    by = {c.id: c for c in plan.contestants}
    assert by["qwen3-coder-30b-a3b"].kv_bytes_per_token == 52_224
    assert by["qwen3-coder-30b-a3b"].type == "MoE 128 experts / 8 active"  # params come with the lock
    assert by["hermes-4-14b"].type == "dense"
    assert by["hermes-4-14b"].context == 40960  # capped by its training context
    assert by["qwen3.6-35b-a3b"].max_output == 81920 and by["qwen3.6-35b-a3b"].kv_fixed_bytes > 60 * MiB
    assert by["devstral-24b"].quant == "Q5_K_M" and by["gemma-4-12b"].weights_bytes == 7366423360


def test_profile_swap_changes_only_the_plan(tmp_path: Path) -> None:
    lab = lab_copy(tmp_path)
    before = lab.read_bytes()
    a, b = load_lab(lab, profile="rtx5090-32g"), load_lab(lab, profile="h100-80g")
    assert a.lab == b.lab  # the lab (engine, images, task, contestants) is the same
    lock = _lock()
    text = lock.text()
    small, big = plan_lab(a, lock), plan_lab(b, lock)
    assert lock.text() == text and lab.read_bytes() == before and not (tmp_path / "lab.lock").exists()
    for s, h in zip(small.contestants, big.contestants, strict=True):
        if s.status == "planned":
            assert h.context >= s.context and h.vram_free > s.vram_free
    # a smaller card gets a smaller context for the same lab
    tight = Profile(name="tight-20g", gpu="X", cuda_arch=90, vram_per_gpu=20 * GiB, host_ram=64 * GiB)
    coder = next(c for c in plan_lab(a, None, tight).contestants if c.id == "qwen3-coder-30b-a3b")
    assert 4096 <= coder.context < 262144 and coder.context % 1024 == 0 and coder.offloaded_layers == 0


def _lock(**models: ModelLock) -> Lock:
    return Lock(lab="model-showdown-round-7", spec_sha256="1" * 64,
                llama_cpp=SourceLock(git="x", ref="b9660"),
                task=TaskLock(path="tasks/tag-manager", tree_sha256="0" * 64), models=models)


def test_lock_metadata_wins_over_declared() -> None:
    header = CODER.model_copy(update={"tensor_bytes": 17_000_000_000, "n_params": 30_532_122_624,
                                      "n_params_active": 3_345_000_000})
    ml = ModelLock(source="hf", repo="unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF", files=[
        FileLock(name="Qwen3-Coder-30B-A3B-Instruct-UD-Q4_K_XL.gguf", sha256="a" * 64, size=17_665_334_000)],
        gguf=header)
    plan = _plan("rtx5090-32g", lock=_lock(**{"qwen3-coder-30b-a3b": ml}))
    by = {c.id: c for c in plan.contestants}
    assert by["qwen3-coder-30b-a3b"].meta_source == "lock"
    assert by["qwen3-coder-30b-a3b"].weights_bytes == 17_665_334_000
    assert by["qwen3-coder-30b-a3b"].type == "MoE 30.5B total / 3.3B active"
    assert by["devstral-24b"].meta_source == "declared"


_MINI = """\
version: 1
lab: {{name: mini}}
engine: {{llama_cpp: {{git: https://github.com/ggml-org/llama.cpp, ref: b9660}}}}
profile: {profile}
serve: {serve}
agent: {{runtime: mini-swe-agent, version: 2.4.6}}
task: {{path: tasks/tag-manager}}
contestants:
{contestants}
"""
_DEVSTRAL = {"architecture": "llama", "block_count": 40, "context_length": 131072, "embedding_length": 5120,
             "head_count": 32, "head_count_kv": 8, "key_length": 128, "value_length": 128,
             "file_size": 16763993312}


def _mini(tmp: Path, serve: dict, declared: dict | None = _DEVSTRAL, profile: str = "rtx4090-24g",
          extra: str = "") -> Path:
    model = {"repo": "unsloth/Devstral-Small-2507-GGUF", "file": "Devstral-Small-2507-Q5_K_M.gguf"}
    if declared is not None:
        model["declared"] = declared
    c = textwrap.indent(f"- {json.dumps({'id': 'dev', 'kind': 'local', 'model': model})}\n{extra}", "  ")
    return lab_copy(tmp, _MINI.format(profile=profile, serve=json.dumps(serve), contestants=c))


def test_context_too_big_for_the_card_names_the_shortfall(tmp_path: Path) -> None:
    """The whole model on the GPU at 128K: weights + KV cache + compute buffer exceed the card's
    budget, and the error says by how much."""
    serve = {"context": 131072, "gpu_layers": "all", "cache_type_k": "q8_0", "cache_type_v": "q8_0",
             "flash_attention": "on"}
    meta = GGUFMeta(**{k: v for k, v in _DEVSTRAL.items() if k != "file_size"})
    kv = kc.kv_cache(meta, 131072, type_k="q8_0", type_v="q8_0")
    assert kv.total == 40 * 8 * 128 * 2 * 34 // 32 * 131072  # layers × KV heads × dims × (K + V) × q8_0
    compute = kc.compute_buffer(meta, kv, flash_attention="on", cuda=True)  # checked in test_buffers
    card = find_profile("rtx4090-24g")
    short = _DEVSTRAL["file_size"] + kv.total + compute - (card.total_vram - card.vram_reserve)
    assert short > 0
    plan = _plan("rtx4090-24g", _mini(tmp_path, serve))
    (row,) = plan.contestants
    want = f"contestant dev: context 131072 needs {format_size(short)} more VRAM than rtx4090-24g has free"
    assert row.status == "error" and row.error == want, row.error
    with pytest.raises(PlanError, match="contestant dev"):
        plan.raise_if_errors()


@pytest.mark.parametrize(("serve", "declared", "needle"), [
    ({"context": 262144}, _DEVSTRAL, "context 262144 is larger than the model's training context 131072"),
    ({"cache_type_v": "q8_0", "flash_attention": "off"}, _DEVSTRAL, "quantized V cache (q8_0) needs flash"),
    ({}, None, "contestant dev: no GGUF metadata"),
    ({}, {**_DEVSTRAL, "architecture": "mystery"}, "architecture 'mystery' is not known to the planner"),
])
def test_bad_plans_are_error_rows(tmp_path: Path, serve: dict, declared: dict | None, needle: str) -> None:
    plan = _plan("rtx4090-24g", _mini(tmp_path, serve, declared))
    (row,) = [c for c in plan.contestants if c.id == "dev"]
    assert row.status == "error" and needle in row.error, row.error
    with pytest.raises(PlanError, match="contestant dev"):
        plan.raise_if_errors()
    if needle.startswith("contestant dev: no GGUF"):
        assert "run `labctl lock` or declare model.declared" in row.error


def test_offload_cpu_profile_and_unknown_arch_opt_in(tmp_path: Path) -> None:
    lab = _mini(tmp_path, {"context": 65536, "cache_type_k": "q8_0", "cache_type_v": "q8_0",
                           "flash_attention": "on"},
                {**_DEVSTRAL, "file_size": "30GB"})
    (row,) = _plan("rtx4090-24g", lab).contestants  # 30 GB of weights on a 24 GiB card
    assert row.status == "planned" and 0 < row.offloaded_layers < 40 and row.gpu_layers < 41
    assert row.vram_free >= 0 and row.ram_used < 64 * GiB and "offloaded to host RAM" in " ".join(row.notes)
    small = _mini(tmp_path / "c", {"context": "max"}, {**_DEVSTRAL, "file_size": "4GB"})
    (cpu,) = _plan("cpu", small).contestants
    assert cpu.gpu_layers == 0 and cpu.vram_used == 0 and cpu.ram_used <= 8 * GiB and cpu.context >= 4096
    assert "-ngl" in cpu.llama_args and cpu.llama_args[cpu.llama_args.index("-ngl") + 1] == "0"
    lab = _mini(tmp_path / "u", {}, {**_DEVSTRAL, "architecture": "mystery"})
    (row,) = _plan("rtx4090-24g", lab, allow_unknown_arch=True).contestants
    assert row.status == "planned" and "planned conservatively" in " ".join(row.notes)


def test_generated_model_needs_no_lock(tmp_path: Path) -> None:
    params = TinyModelParams(architecture="gemma3", n_layer=4, sliding_window=64, sliding_window_pattern=2)
    meta, size = tiny_meta(params)
    write_tiny_gguf(tmp_path / "m.gguf", params)
    header, n_ff = _header_meta(tmp_path / "m.gguf")
    assert size == header.tensor_bytes and n_ff == params.n_ff
    skip = {"quant", "n_params", "n_params_active"}
    assert meta.model_dump(exclude=skip) == header.model_dump(exclude=skip)


def test_plan_command_table_and_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("labctl.cli.plan.out", Console(width=220))
    app = typer.Typer()
    app.command("plan")(plan_command)
    app.command("noop")(lambda: None)
    runner = CliRunner()
    res = runner.invoke(app, ["plan", str(ROOT / "lab.yaml"), "--profile", "h100-80g"], terminal_width=220)
    assert res.exit_code == 0, res.output
    assert "not served" in res.stdout and "h100-80g" in res.stdout
    assert [ln for ln in res.stdout.splitlines() if "declared" in ln and "B" in ln][4]
    assert "llama-server -c 40960 -ngl 41 -fa on -ctk q8_0 -ctv q8_0 -n 32768 -np 1" in res.stdout
    res = runner.invoke(app, ["plan", str(ROOT / "lab.yaml"), "--json"])
    data = json.loads(res.stdout)
    assert data["ok"] and data["profile"] == "rtx5090-32g" and len(data["contestants"]) == 6


# ------------------------------------------------------------------ against llama-server itself


def _header_meta(path: Path) -> tuple[GGUFMeta, int | None]:
    """The planner's metadata read from the GGUF header (as `labctl lock` records it), and n_ff."""
    header = read_header_local(path)
    meta = meta_from_headers([header], name_hint=path.name)
    return meta, header.kv.get(f"{meta.architecture}.feed_forward_length")


_BASE = {"n_embd": 128, "n_head": 4, "n_ff": 384, "vocab_size": 2048, "context_length": 32768}
SHAPES = {
    "llama-kv1-k32": {**_BASE, "n_layer": 4, "n_head_kv": 1, "key_length": 32},
    "llama-kv2-k64": {**_BASE, "n_layer": 4, "n_head_kv": 2, "key_length": 64},
    "llama-kv4-k32": {**_BASE, "n_layer": 4, "n_head_kv": 4, "key_length": 32},
    "deci-kv-4-0-1-2": {**_BASE, "architecture": "deci", "n_layer": 4, "n_head_kv": [4, 0, 1, 2],
                        "key_length": 32},
    "gemma3-swa-every-3rd": {**_BASE, "architecture": "gemma3", "n_layer": 6, "n_head_kv": 2,
                             "key_length": 64, "sliding_window": 256, "sliding_window_pattern": 3},
    "gemma3-swa-bools": {**_BASE, "architecture": "gemma3", "n_layer": 4, "n_head_kv": 2, "key_length": 64,
                         "sliding_window": 512, "sliding_window_pattern": [True, False, True, True]},
}
CASES = [(s, t, "on", 1) for s in SHAPES for t in ("f16", "q8_0", "q4_0")] + [
    ("deci-kv-4-0-1-2", "f16", "off", 1), ("gemma3-swa-every-3rd", "f16", "off", 1),
    ("gemma3-swa-every-3rd", "q8_0", "on", 2), ("llama-kv2-k64", "f16", "on", 3)]


@pytest.mark.llama
@pytest.mark.parametrize(("shape", "cache", "fa", "n_seq"), CASES,
                         ids=[f"{s}-{t}-fa{f}-np{n}" for s, t, f, n in CASES])
def test_planner_matches_llama_server(tmp_path: Path, llama_server: Path, shape: str, cache: str, fa: str,
                                      n_seq: int) -> None:
    model = tmp_path / "m.gguf"
    write_tiny_gguf(model, TinyModelParams(**SHAPES[shape]))
    meta, n_ff = _header_meta(model)
    settings = ls.ServerSettings(context=16384, flash_attention=fa, cache_type_k=cache, cache_type_v=cache,
                                 parallel=n_seq)
    est = kc.estimate(meta, 16384, type_k=cache, type_v=cache, flash_attention=fa, n_seq=n_seq, n_ff=n_ff)
    with ls.serve(ls.server_argv(llama_server, model, settings, verbosity=4), tmp_path / "server.log") as url:
        assert ls.http_json("GET", url + "/health")[0] == 200
    got = ls.parse_kv_log((tmp_path / "server.log").read_text())
    assert got["n_ctx"] == est.kv.cells.n_ctx and len(got["kv"]) == (2 if meta.sliding_window else 1)
    assert est.kv.kv_bytes / MiB == pytest.approx(got["kv_mib"], rel=0.01)
    assert est.kv.swa_bytes / MiB == pytest.approx(got["kv_swa_mib"], rel=0.01, abs=0.01)
    real = sum(got["model"].values()) + got["kv_mib"] + sum(got["compute"].values()) \
        + sum(got["output"].values())
    assert (meta.tensor_bytes + est.total) / MiB == pytest.approx(real, rel=0.05)


@pytest.mark.llama
def test_server_start_failures_are_classified(tmp_path: Path, llama_server: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises(ls.ServerStartError) as e, ls.serve(
            ls.server_argv(llama_server, bad, ls.ServerSettings(context=512)), tmp_path / "a.log"):
        pass
    assert e.value.kind == "bad_model" and "invalid magic" in e.value.log_tail
    model = tmp_path / "m.gguf"
    write_tiny_gguf(model, TinyModelParams(key_length=32))
    v_q8 = ls.ServerSettings(context=512, flash_attention="off", cache_type_v="q8_0")
    with pytest.raises(ls.ServerStartError) as e, ls.serve(
            ls.server_argv(llama_server, model, v_q8), tmp_path / "b.log"):
        pass
    assert e.value.kind == "unsupported_cache" and "flash_attn" in e.value.message
    argv = ls.server_argv(llama_server, model, ls.ServerSettings(context=512))
    with ls.serve(argv, tmp_path / "c.log") as url:
        pass
    with pytest.raises(OSError):  # stopped on exit: nothing listens any more
        ls.http_json("GET", url + "/health", timeout=2)


def test_server_argv_and_log_parsing() -> None:
    s = ls.ServerSettings(context=8192, gpu_layers=49, flash_attention="on", cache_type_k="q8_0",
                          cache_type_v="q8_0", max_output=2048, parallel=1, extra_args=("--temp", "0.7"))
    argv = ls.server_argv("/bin/llama-server", "/m/x.gguf", s, port=8081)
    for flag in ("-c", "--port", "--host", "-np", "-fa", "-ctk", "-ctv", "-ngl", "-n", "--jinja", "--alias"):
        assert flag in argv
    assert argv[argv.index("-c") + 1] == "8192" and argv[-5:] == ["--port", "8081", "--jinja", "--alias", "x"]
    log = textwrap.dedent("""\
        0.00.006 I llama_context:        CPU  output buffer size =     0.01 MiB
        0.00.006 I llama_kv_cache_iswa: creating non-SWA KV cache, size = 4096 cells
        0.00.006 I llama_kv_cache: size =    1.00 MiB (  4096 cells,   2 layers,  1/1 seqs), K (f16):    0.50 MiB, V (f16):    0.50 MiB
        0.00.006 I llama_kv_cache_iswa: creating     SWA KV cache, size = 768 cells
        0.00.006 I llama_kv_cache: size =    0.19 MiB (   768 cells,   2 layers,  1/1 seqs), K (q8_0):    0.09 MiB, V (q8_0):    0.09 MiB
        0.00.007 I sched_reserve:        CPU compute buffer size =     5.89 MiB
        0.00.005 I load_tensors:   CPU_Mapped model buffer size =     0.69 MiB
        """)  # noqa: E501
    got = ls.parse_kv_log(log)
    assert got["kv_mib"] == pytest.approx(1.19) and got["kv_swa_mib"] == pytest.approx(0.19)
    assert got["kv"][1]["cells"] == 768 and got["kv"][1]["k_type"] == "q8_0"
    assert got["compute"] == {"CPU": 5.89} and got["model"] == {"CPU_Mapped": 0.69}
    assert got["output"] == {"CPU": 0.01}
    assert ls.classify_failure("0.1 E llama_init_from_model: quantized V cache requires flash_attn")[0] == \
        "unsupported_cache"
    assert ls.classify_failure("ggml_backend_cuda_buffer_type_alloc_buffer: cudaMalloc failed: out of memory"
                               )[0] == "oom"
    assert ls.classify_failure("Segmentation fault")[0] == "crash"


def test_builtin_profiles_exist() -> None:
    assert find_profile("rtx5090-32g") and find_profile("h100-80g") and find_profile("rtx4090-24g")
