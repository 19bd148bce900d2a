"""Shape twins (`labctl model twin`), the lock's raw headers, `labctl plan --measure` and the classing of
out-of-memory starts. The `llama` tests load every twin in the pinned CPU llama-server and compare
what it allocates with the planner."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labctl.cli.app import app
from labctl.cli.model import hub_refetch
from labctl.gguf import headers as ggufheaders
from labctl.gguf.read import meta_from_headers, read_header_local
from labctl.gguf.tiny import TinyModelParams, write_tiny_gguf
from labctl.lock.hub import lock_hf, lock_local
from labctl.plan import llamaserver as ls
from labctl.plan.measure import fit_params_binary, measure_plan
from labctl.plan.measured import Measurement, parse_breakdown, read_measured
from labctl.plan.planner import plan_lab
from labctl.plan.twin import TwinError, layout_bytes, tensors, write_twin
from labctl.spec.lab import LocalContestant, ModelSource
from labctl.spec.load import load_lab
from tests.helpers import ROOT
from tests.hfserver import HubServer, hub_server  # noqa: F401
from tests.lock.test_hub import write_moe

TWINS = ROOT / "labs" / "twins.yaml"
MiB = 1 << 20


@pytest.fixture(autouse=True)
def _header_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ggufheaders.ENV_DIR, str(tmp_path / "headers"))


def _locals(lab: Path) -> list[LocalContestant]:
    return [c for c in load_lab(lab).lab.contestants if isinstance(c, LocalContestant)]


# ------------------------------------------------------------------ twins from metadata


def test_the_architecture_checks_below_are_reached() -> None:
    """The layout test's per-architecture checks sit under `if`: the twins lab must hold both
    architectures, or those checks would pass by never running."""
    archs = {c.model.declared.architecture for c in _locals(TWINS) if c.model.declared is not None}
    assert {"qwen35moe", "gemma4"} <= archs, archs


@pytest.mark.parametrize("c", _locals(TWINS), ids=lambda c: c.id)
def test_declared_twin_has_the_declared_header_and_layout(tmp_path: Path, c: LocalContestant) -> None:
    d = c.model.declared
    assert d is not None and c.model.file
    t = write_twin(None, d, c.model.file, tmp_path / "t.gguf")
    header = read_header_local(t.path)
    meta = meta_from_headers([header], name_hint=c.model.file)
    for field in d.model_fields_set - {"source", "file_size"}:
        got = getattr(meta, field)
        want = getattr(d, field)
        assert got == want or (isinstance(got, list) and want == got[0] and len(set(got)) == 1), field
    names = {ti.name for ti in header.tensors}
    assert len(names) == len(header.tensors) == len(tensors(d, "Q8_0"))
    assert meta.tensor_bytes == layout_bytes(d, "Q8_0") and t.source == "declared"
    n_layers = d.block_count
    assert all(f"blk.{i}.attn_norm.weight" in names for i in range(n_layers))
    if d.architecture == "qwen35moe":  # every 4th layer attends, the rest are gated delta nets
        assert "blk.3.attn_k.weight" in names and "blk.0.ssm_conv1d.weight" in names
        assert "blk.0.attn_k.weight" not in names and "blk.3.ssm_a" not in names
    if d.architecture == "gemma4":  # tied output, one rope_freqs, per-layer head dims
        assert "output.weight" not in names and "rope_freqs.weight" in names
        shapes = {ti.name: ti.shape for ti in header.tensors}
        assert shapes["blk.0.attn_k.weight"] == (256, 2 * 64) and shapes["blk.5.attn_k.weight"] == (256, 128)


@pytest.mark.parametrize("cid", ["qwen3.6-35b-a3b", "gemma-4-12b", "hermes-4-14b", "qwen3-coder-30b-a3b",
                                 "devstral-24b"])
def test_round7_twins_are_sparse_and_near_the_real_size(tmp_path: Path, cid: str) -> None:
    (c,) = [c for c in _locals(ROOT / "lab.yaml") if c.id == cid]
    d = c.model.declared
    assert d is not None and d.file_size and c.model.file
    t = write_twin(None, d, c.model.file, tmp_path / f"{cid}.gguf")
    assert t.size > 5e9 and t.disk < 32 * MiB  # the tensor data is a hole
    # Typed from the quant in the file name, the twin's weights land near the published file's bytes
    # (an Unsloth "UD" mix keeps more tensors at higher precision than one uniform type).
    assert 0.85 < t.size / d.file_size < 1.02, t.size / d.file_size


def test_twin_needs_shape_numbers_and_a_known_architecture(tmp_path: Path) -> None:
    (c,) = [c for c in _locals(TWINS) if c.id == "twin-qwen3moe"]
    d = c.model.declared
    assert d is not None
    with pytest.raises(TwinError, match="needs expert_feed_forward_length"):
        write_twin(None, d.model_copy(update={"expert_feed_forward_length": None}), "x.gguf", tmp_path / "x")
    with pytest.raises(TwinError, match="no twin layout for architecture 'mystery'"):
        write_twin(None, d.model_copy(update={"architecture": "mystery"}), "x.gguf", tmp_path / "x")


# ------------------------------------------------------------------ twins from the locked header


def test_lock_keeps_the_raw_header_and_the_twin_is_it_plus_holes(tmp_path: Path) -> None:
    real = tmp_path / "real.gguf"
    write_tiny_gguf(real, TinyModelParams(n_layer=3, n_embd=64, vocab_size=600))
    model = lock_local(real)
    (f,) = model.files
    assert f.header_sha256 and f.header_size and ggufheaders.get(f.header_sha256) is not None
    t = write_twin(model, None, "real.gguf", tmp_path / "twin.gguf")
    raw = real.read_bytes()
    got = t.path.read_bytes()
    assert t.source == "lock header" and len(got) == len(raw) == f.size
    assert got[:f.header_size] == raw[:f.header_size] and not any(got[f.header_size:])
    a, b = read_header_local(real), read_header_local(t.path)
    assert a.tensors == b.tensors and a.kv == b.kv

    # Not cached here: fetched again from the pinned file (checked against the lock's sha256) ...
    ggufheaders.header_path(f.header_sha256).unlink()
    t = write_twin(model, None, "real.gguf", tmp_path / "again.gguf",
                   refetch=lambda fl: real.read_bytes()[:fl.header_size])
    assert t.source == "lock header" and ggufheaders.get(f.header_sha256) is not None
    # ... and a file that changed since the lock is refused.
    ggufheaders.header_path(f.header_sha256).unlink()
    with pytest.raises(TwinError, match="no longer match the locked header"):
        write_twin(model, None, "real.gguf", tmp_path / "bad.gguf", refetch=lambda fl: b"GGUF" + bytes(60))
    # Without the cache and a way to fetch, the lock's header numbers still make a twin.
    t = write_twin(model, None, "real.gguf", tmp_path / "meta.gguf")
    assert t.source == "lock metadata"


def test_split_model_on_the_hub_twins_shard_by_shard(hub_server: HubServer, tmp_path: Path) -> None:  # noqa: F811
    """`labctl lock` reads each shard's header over HTTP ranges; the twin keeps the split, and a header
    missing from the cache is fetched again (a range request) from the pinned commit."""
    shards = write_moe(tmp_path / "m.gguf", split_max_tensors=2)
    hub_server.add_repo("org/moe", {f"Q4_K_M/{s.name}": s for s in shards})
    lock = lock_hf("moe", ModelSource(repo="org/moe", file="Q4_K_M/m-00001-of-00002.gguf"))
    assert all(f.header_sha256 for f in lock.files)
    for f in lock.files:
        assert f.header_sha256
        ggufheaders.header_path(f.header_sha256).unlink()
    t = write_twin(lock, None, "m-00001-of-00002.gguf", tmp_path / "tw" / "moe.gguf",
                   refetch=hub_refetch(lock))
    assert t.source == "lock header"
    assert [p.name for p in t.files] == ["moe-00001-of-00002.gguf", "moe-00002-of-00002.gguf"]
    for real, twin in zip(shards, t.files, strict=True):
        assert twin.stat().st_size == real.stat().st_size
        assert read_header_local(twin).tensors == read_header_local(real).tensors


def test_model_twin_command(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "q.gguf"
    res = runner.invoke(app, ["model", "twin", "twin-qwen35moe", str(TWINS), "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["source"] == "declared" and data["size"] == out.stat().st_size
    res = runner.invoke(app, ["model", "twin", "nobody", str(TWINS)])
    assert res.exit_code == 2 and "no local contestant 'nobody'" in res.output and "twin-llama" in res.output


# ------------------------------------------------------------------ llama.cpp's own words


_CUDA_LOAD_LOG = """\
0.00.512.301 I llama_model_loader: - type q8_0:  281 tensors
0.01.201.774 E ggml_backend_cuda_buffer_type_alloc_buffer: allocating 18432.00 MiB on device 0: cudaMalloc failed: out of memory
0.01.201.790 E alloc_tensor_range: failed to allocate CUDA0 buffer of size 19327352832
0.01.202.120 E llama_model_load: error loading model: unable to allocate CUDA0 buffer
0.01.202.131 E llama_model_load_from_file_impl: failed to load model
"""  # noqa: E501 - the format strings of ggml-cuda.cu, ggml-alloc.c and llama-model.cpp of the pinned tree
_CUDA_KV_LOG = """\
0.03.000.001 E ggml_backend_cuda_buffer_type_alloc_buffer: allocating 9216.00 MiB on device 0: cudaMalloc failed: out of memory
0.03.000.010 E llama_init_from_model: failed to initialize the context: failed to allocate buffer for kv cache
"""  # noqa: E501


def test_cuda_out_of_memory_at_load_is_classified_oom() -> None:
    kind, line = ls.classify_failure(_CUDA_LOAD_LOG)
    assert kind == "oom" and line.startswith("ggml_backend_cuda_buffer_type_alloc_buffer: allocating 18432")
    kind, line = ls.classify_failure(_CUDA_KV_LOG)
    assert kind == "oom" and "cudaMalloc failed: out of memory" in line


def test_memory_breakdown_table_is_parsed() -> None:
    log = (  # common_memory_breakdown_print's templates (common/fit.cpp)
        "0.09.1 I common_memory_breakdown_print: | memory breakdown [MiB] | total   free    self   model"
        "   context   compute    unaccounted |\n"
        "0.09.1 I common_memory_breakdown_print: |   - CUDA0 (H200)       | 143771 = 110000 + (31000 = "
        "17000 +  13000 +   1000) +        2771 |\n"
        "0.09.1 I common_memory_breakdown_print: |   - Host               |                  1340 =  "
        "1200 +      0 +    140                |\n"
        "0.09.1 I common_memory_breakdown_print: |   - CPU_REPACK         |                    10 =    "
        "10 +      0 +      0                |\n")
    got = parse_breakdown(log)
    assert got["CUDA0 (H200)"] == {"total": 143771, "free": 110000, "self": 31000, "model": 17000,
                                   "context": 13000, "compute": 1000, "unaccounted": 2771}
    assert got["Host"] == {"self": 1340, "model": 1200, "context": 0, "compute": 140}
    assert set(got) == {"CUDA0 (H200)", "Host", "CPU_REPACK"}


@pytest.mark.llama
@pytest.mark.parametrize("cid", ["qwen3.6-35b-a3b", "gemma-4-12b", "hermes-4-14b", "qwen3-coder-30b-a3b",
                                 "devstral-24b"])
def test_round7_twins_load_in_the_pinned_llama_cpp_and_kv_matches_the_plan(tmp_path: Path, cid: str) -> None:
    """Each full-size Round 7 twin goes through the pinned llama.cpp's loader (every tensor created) and
    llama.cpp's own estimate of its KV cache + recurrent state equals the planner's, at the plan's
    context on the RTX 5090 (`--fit-print`: nothing is allocated, so it runs on any CPU)."""
    from labctl.plan.measure import fit_print

    env = os.environ.get("LABCTL_LLAMA_FIT_PARAMS")
    fit = Path(env or fit_params_binary(ls.find_binary(build=True)) or "")
    assert fit.is_file(), "llama-fit-params is built beside llama-server by scripts/build-llama-server.sh"
    loaded = load_lab(ROOT / "lab.yaml")
    (p,) = [p for p in plan_lab(loaded, None).contestants if p.id == cid]
    (c,) = [c for c in _locals(ROOT / "lab.yaml") if c.id == cid]
    assert p.server is not None and c.model.declared is not None and c.model.file
    t = write_twin(None, c.model.declared, c.model.file, tmp_path / "t.gguf")
    cpu = p.server.model_copy(update={"gpu_layers": 0})  # same context and cache types, on the host
    got = fit_print(fit, t.path, cpu)
    context_mib = sum(r["context"] for r in got.values())
    assert context_mib == (p.kv_bytes or 0) // MiB, (got, p.kv_bytes)


@pytest.mark.llama
def test_measure_every_architecture_on_the_cpu_server(tmp_path: Path, llama_server: Path) -> None:
    """`plan --measure` on CPU: every twin loads with the planned flags; KV and state exact to llama.cpp's
    log; the breakdown, the fitter's answer and the speed recorded; `labctl plan` shows them."""
    lab = tmp_path / "twins.yaml"
    shutil.copy(TWINS, lab)
    (tmp_path / "tasks").symlink_to(ROOT / "tasks")
    lab.write_text(lab.read_text().replace("../tasks/", "tasks/"))
    loaded = load_lab(lab)
    plan = plan_lab(loaded, None)
    m = measure_plan(loaded, None, plan, llama_server, fit_params_binary(llama_server), work=tmp_path / "w")
    rows = {r.id: r for r in m.contestants}
    assert set(rows) == {c.id for c in _locals(TWINS)}
    for p in plan.contestants:
        r = rows[p.id]
        assert r.loaded, (p.id, r.error)
        assert r.n_ctx == p.context and "-fit" in r.args and r.args[r.args.index("-fit") + 1] == "off"
        # KV cache and recurrent state: the planner's bytes against llama.cpp's own (2-decimal MiB) log
        assert (p.kv_bytes or 0) / MiB == pytest.approx((r.kv_mib or 0) + (r.recurrent_mib or 0), abs=0.02)
        assert r.breakdown and r.speed and r.speed.generated_tokens > 0
        if r.fitter is not None:
            assert r.fitter.ok and r.fitter.context, r.fitter
    from labctl.plan.measure import write_measured
    from labctl.plan.measured import measured_path

    write_measured(measured_path(lab, plan.profile), m)
    assert isinstance(read_measured(lab, plan.profile), Measurement)
    res = CliRunner().invoke(app, ["plan", str(lab)], env={"COLUMNS": "200"})
    assert "Measured on" in res.stdout and "twin-gemma4" in res.stdout


@pytest.mark.llama
def test_a_plan_that_does_not_fit_fails_as_oom(tmp_path: Path, llama_server: Path) -> None:
    """A real out-of-memory start: a 128 TiB KV cache (past any machine's memory and past the 47-bit
    address space, so even an overcommitting kernel refuses it)."""
    (c,) = [c for c in _locals(TWINS) if c.id == "twin-llama"]
    d = c.model.declared
    assert d is not None
    big = d.model_copy(update={"context_length": 1 << 30, "head_count_kv": 4, "block_count": 64,
                               "key_length": 128, "value_length": 128})
    t = write_twin(None, big, "big.gguf", tmp_path / "big.gguf")
    settings = ls.ServerSettings(context=1 << 30)
    with pytest.raises(ls.ServerStartError) as e, ls.serve(ls.server_argv(llama_server, t.path, settings),
                                                          tmp_path / "s.log", env={"OMP_NUM_THREADS": "1"}):
        pass
    assert e.value.kind == "oom", e.value.log_tail
    assert os.path.exists(tmp_path / "s.log")


def test_ballast_without_a_gpu_is_a_clear_error() -> None:
    """No CUDA runtime here: the ballast says so and --measure stops before measuring anything."""
    from labctl.plan.measure import ballast

    with pytest.raises(RuntimeError, match="GPU ballast did not start: error: "), ballast(1 << 30):
        pass
