"""GGUF header reading (local and by Range requests) and Hugging Face resolution against a loopback hub.

The real huggingface_hub client talks to tests/hfserver.py through HF_ENDPOINT; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType, LlamaFileType

from labctl.gguf.read import (
    GGUFError,
    meta_from_headers,
    parse_header,
    quant_from_filename,
    read_local,
    read_prefix,
)
from labctl.gguf.store import Store
from labctl.gguf.tiny import TinyModelParams, canonical_params_json, write_tiny_gguf
from labctl.lock.hub import HubError, lock_generated, lock_hf, lock_local, shard_names
from labctl.spec.lab import ModelSource
from tests.hfserver import HubServer, client_pointed_at, free_port, hub_server  # noqa: F401

BIG = TinyModelParams(seed=1, n_layer=2, n_embd=128, vocab_size=6000)  # header ≈ 120 KB


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def write_moe(path: Path, split_max_tensors: int = 0) -> list[Path]:
    """A MoE / hybrid / SWA header with quantized tensors (not loadable: only its header matters)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(path, "qwen35moe", split_max_tensors=split_max_tensors)
    w.add_block_count(4)
    w.add_context_length(262144)
    w.add_embedding_length(256)
    w.add_head_count(16)
    w.add_key_value("qwen35moe.attention.head_count_kv", [2, 0, 0, 2], GGUFValueType.ARRAY,
                    sub_type=GGUFValueType.UINT32)
    w.add_key_length(128)
    w.add_value_length(128)
    w.add_uint32("qwen35moe.attention.key_length_swa", 64)
    w.add_uint32("qwen35moe.attention.value_length_swa", 64)
    w.add_sliding_window(1024)
    w.add_key_value("qwen35moe.attention.sliding_window_pattern", [True, False, True, False],
                    GGUFValueType.ARRAY, sub_type=GGUFValueType.BOOL)
    w.add_uint32("qwen35moe.full_attention_interval", 4)
    for key, v in (("conv_kernel", 4), ("state_size", 128), ("group_count", 16), ("time_step_rank", 32),
                   ("inner_size", 4096)):
        w.add_uint32(f"qwen35moe.ssm.{key}", v)
    w.add_expert_count(8)
    w.add_expert_used_count(2)
    w.add_file_type(LlamaFileType.MOSTLY_Q4_K_M)
    w.add_token_list([f"t{i}" for i in range(5000)])
    w.add_tensor("token_embd.weight", np.zeros((100, 256), dtype=np.float32))
    w.add_tensor("blk.0.ffn_gate_exps.weight", np.zeros((8, 64, 256), dtype=np.float16))
    w.add_tensor("blk.0.ffn_down_shexp.weight", np.zeros((256, 64), dtype=np.float16))
    w.add_tensor("blk.0.attn_q.weight", np.zeros((64, 144), dtype=np.uint8), raw_dtype=Q.Q4_K)
    w.write_header_to_file(path)
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return sorted(path.parent.glob(path.stem + "*.gguf"))


# ---------------------------------------------------------------------------- ggufread


def test_local_and_prefix_readers_agree_and_count_tensors(tmp_path: Path) -> None:
    p = tmp_path / "big.gguf"
    write_tiny_gguf(p, BIG)
    data = p.read_bytes()
    calls: list[tuple[int, int]] = []

    def fetch(a: int, b: int) -> bytes:
        calls.append((a, b))
        return data[a:b]

    header = read_prefix(fetch, total_size=len(data), first=4096)
    assert [c[0] for c in calls] == [0] + [b for _, b in calls[:-1]]  # only new bytes, doubling
    assert calls[-1][1] < len(data) and header.size <= calls[-1][1]
    local = read_local([p])
    assert meta_from_headers([header]) == local
    reader = gguf.GGUFReader(p)
    assert local.n_params == sum(int(t.n_elements) for t in reader.tensors)
    assert local.tensor_bytes == sum(int(t.n_bytes) for t in reader.tensors)
    assert (local.architecture, local.block_count, local.embedding_length) == ("llama", 2, 128)
    assert (local.head_count, local.head_count_kv, local.vocab_size, local.quant) == (4, 2, 6000, "F32")
    assert local.n_params_active == local.n_params and local.expert_count is None


def test_moe_hybrid_swa_metadata(tmp_path: Path) -> None:
    meta = read_local(write_moe(tmp_path / "moe.gguf"))
    assert meta.architecture == "qwen35moe" and meta.head_count_kv == [2, 0, 0, 2]
    assert (meta.key_length_swa, meta.value_length_swa, meta.sliding_window) == (64, 64, 1024)
    assert meta.sliding_window_pattern == [True, False, True, False]
    assert meta.full_attention_interval == 4 and meta.ssm is not None and meta.ssm.inner_size == 4096
    assert (meta.expert_count, meta.expert_used_count, meta.quant, meta.vocab_size) == (8, 2, "Q4_K_M", 5000)
    experts, shared = 8 * 64 * 256, 100 * 256 + 256 * 64 + 64 * 256
    assert meta.n_params == experts + shared
    assert meta.n_params_active == shared + experts * 2 // 8
    assert meta.tensor_bytes == 100 * 256 * 4 + experts * 2 + 256 * 64 * 2 + 64 * 144  # Q4_K: 144 B / 256


def test_sharded_local_sums_all_shards(tmp_path: Path) -> None:
    whole = read_local(write_moe(tmp_path / "one" / "m.gguf"))
    shards = write_moe(tmp_path / "split" / "m.gguf", split_max_tensors=2)
    assert [s.name for s in shards] == ["m-00001-of-00002.gguf", "m-00002-of-00002.gguf"]
    assert read_local(shards) == whole
    assert read_local(list(reversed(shards))) == whole  # metadata comes from split.no 0
    with pytest.raises(GGUFError, match="split.count says 2 shards, got 1"):
        read_local(shards[:1])


def test_bad_headers_are_clear(tmp_path: Path) -> None:
    with pytest.raises(GGUFError, match="not a GGUF file"):
        parse_header(b"PK\x03\x04" + bytes(100))
    p = tmp_path / "m.gguf"
    write_tiny_gguf(p, TinyModelParams())
    head = p.read_bytes()[:3000]
    with pytest.raises(GGUFError, match="ends inside its GGUF header"):
        read_prefix(lambda a, b: head[a:b], first=1024)
    for data, why in ((head, "file ends inside its GGUF header"), (b"hello" * 9, "not a GGUF file"),
                      (b"GGUF\x03\0\0\0" + (1 << 40).to_bytes(8, "little") + bytes(8), "implausible")):
        (tmp_path / "bad.gguf").write_bytes(data)
        with pytest.raises(HubError, match=f"^x: bad.gguf: bad GGUF header: {why}"):
            lock_local(tmp_path / "bad.gguf", contestant="x")


@pytest.mark.parametrize(("name", "quant"), [
    ("Qwen3-Coder-30B-A3B-Instruct-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"), ("Devstral-Small-2507-Q8_0.gguf", "Q8_0"),
    ("Q4_K_M/Big-Q4_K_M-00001-of-00003.gguf", "Q4_K_M"), ("m-IQ2_XXS.gguf", "IQ2_XXS"),
    ("m-BF16.gguf", "BF16"), ("model.gguf", None),
])
def test_quant_from_filename(name: str, quant: str | None) -> None:
    assert quant_from_filename(name) == quant


def test_shard_names() -> None:
    assert shard_names("Q4/M-00001-of-00003.gguf") == [f"Q4/M-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert shard_names("M.gguf") == ["M.gguf"]


# ------------------------------------------------------------------------------- hub


def test_lock_hf_pins_commit_hashes_and_header(hub_server: HubServer, tmp_path: Path) -> None:  # noqa: F811
    p = tmp_path / "m.gguf"
    write_tiny_gguf(p, BIG)
    commit = hub_server.add_repo("org/tiny-GGUF", {"m.gguf": p, "README.md": b"# tiny\n"})
    hub_server.reset_counters()
    lock = lock_hf("tiny", ModelSource(repo="org/tiny-GGUF", file="m.gguf"))
    assert (lock.source, lock.repo, lock.revision, lock.commit) == ("hf", "org/tiny-GGUF", "main", commit)
    assert [(f.name, f.sha256, f.size) for f in lock.files] == [("m.gguf", sha256(p), p.stat().st_size)]
    assert lock.gguf == read_local([p])
    assert hub_server.bytes_served <= 1 << 20 < p.stat().st_size  # a prefix, not the file
    gets = [h for m, path, h in hub_server.requests if m == "GET" and "/resolve/" in path]
    assert gets and all(h.get("Range", "").startswith("bytes=0-") for h in gets)
    assert all(commit in path for m, path, _ in hub_server.requests if "/resolve/" in path)
    # a tag and the commit itself resolve to the same pin
    hub_server.repos["org/tiny-GGUF"].refs["v1.0"] = commit
    for rev in ("v1.0", commit):
        again = lock_hf("tiny", ModelSource(repo="org/tiny-GGUF", file="m.gguf", revision=rev))
        assert again.commit == commit and again.files == lock.files and again.gguf == lock.gguf


def test_lock_hf_sharded(hub_server: HubServer, tmp_path: Path) -> None:  # noqa: F811
    shards = write_moe(tmp_path / "m.gguf", split_max_tensors=2)
    hub_server.add_repo("org/moe", {f"Q4_K_M/{s.name}": s for s in shards})
    lock = lock_hf("moe", ModelSource(repo="org/moe", file="Q4_K_M/m-00001-of-00002.gguf"))
    assert [(f.name, f.sha256, f.size) for f in lock.files] == [
        (f"Q4_K_M/{s.name}", sha256(s), s.stat().st_size) for s in shards]
    assert lock.gguf == read_local(shards)
    with pytest.raises(HubError, match="name the first shard"):
        lock_hf("moe", ModelSource(repo="org/moe", file="Q4_K_M/m-00002-of-00002.gguf"))
    hub_server.add_repo("org/moe", {f"Q4_K_M/{shards[0].name}": shards[0]})
    with pytest.raises(HubError) as e:
        lock_hf("moe", ModelSource(repo="org/moe", file="Q4_K_M/m-00001-of-00002.gguf"))
    assert str(e.value).startswith("moe: Q4_K_M/m-00002-of-00002.gguf: shard not found in org/moe")


def _one_line(e: pytest.ExceptionInfo[HubError], contestant: str, file: str) -> str:
    text = str(e.value)
    assert "\n" not in text and text.startswith(f"{contestant}: {file}: "), text
    return text


def test_lock_hf_errors_are_one_clear_line(hub_server: HubServer, tmp_path: Path) -> None:  # noqa: F811
    p = tmp_path / "m.gguf"
    write_tiny_gguf(p, TinyModelParams())
    hub_server.add_repo("org/m", {"m.gguf": p, "other.gguf": p, "bad.gguf": b"not a gguf at all"})
    cases = [
        (ModelSource(repo="org/nope", file="m.gguf"), "repository org/nope not found on http://127.0.0.1"),
        (ModelSource(repo="org/m", file="x.gguf"),
         "file not found in org/m at 'main'; it has bad.gguf, m.gguf, other.gguf"),
        (ModelSource(repo="org/m", file="m.gguf", revision="v9"), "revision 'v9' does not exist in org/m"),
        (ModelSource(repo="org/m", file="bad.gguf"), "bad GGUF header: not a GGUF file"),
    ]
    for src, expected in cases:
        with pytest.raises(HubError) as e:
            lock_hf("c1", src)
        assert expected in _one_line(e, "c1", src.file or "")


def test_private_and_refused_repos(hub_server: HubServer, tmp_path: Path) -> None:  # noqa: F811
    p = tmp_path / "m.gguf"
    write_tiny_gguf(p, TinyModelParams())
    hub_server.add_repo("org/private", {"m.gguf": p}, token="hf_secret")
    src = ModelSource(repo="org/private", file="m.gguf")
    with pytest.raises(HubError) as e:
        lock_hf("p", src)
    assert "not found" in _one_line(e, "p", "m.gguf") and "HF_TOKEN" in str(e.value)
    os.environ["HF_TOKEN"] = "hf_wrong"  # the client reads HF_TOKEN at call time; the fixture restores it
    with pytest.raises(HubError) as e:
        lock_hf("p", src)
    assert "unauthorized (401)" in _one_line(e, "p", "m.gguf") and "Invalid credentials" in str(e.value)
    os.environ["HF_TOKEN"] = "hf_secret"
    assert lock_hf("p", src).files[0].sha256 == sha256(p)
    assert all(h.get("authorization") == "Bearer hf_secret" for _, _, h in hub_server.requests[-2:])
    hub_server.refuse("org/private", 403)
    with pytest.raises(HubError) as e:
        lock_hf("p", src)
    assert "refused (403)" in _one_line(e, "p", "m.gguf")


def test_network_failure(tmp_path: Path) -> None:
    with client_pointed_at(f"http://127.0.0.1:{free_port()}", tmp_path / "hf"), pytest.raises(HubError) as e:
        lock_hf("n", ModelSource(repo="org/m", file="m.gguf"))
    assert "network failure: cannot reach http://127.0.0.1:" in _one_line(e, "n", "m.gguf")


def test_cdn_redirect_drops_the_token(tmp_path: Path) -> None:
    """Like the Hub: LFS files redirect to another origin; the header is read there, without the token."""
    p = tmp_path / "m.gguf"
    write_tiny_gguf(p, BIG)
    server = HubServer(cdn_redirect=True).start()
    try:
        server.add_repo("org/m", {"m.gguf": p}, token="hf_secret")
        with client_pointed_at(server.url, tmp_path / "hf"):
            os.environ["HF_TOKEN"] = "hf_secret"
            lock = lock_hf("c", ModelSource(repo="org/m", file="m.gguf"))
    finally:
        server.stop()
    assert lock.gguf == read_local([p]) and lock.files[0].sha256 == sha256(p)
    cdn = [h for _, path, h in server.requests if path.startswith("/_cdn/")]
    assert cdn and not any("authorization" in {k.lower() for k in h} for h in cdn)


# ------------------------------------------------------------------ local & generated


def test_lock_local_and_shards(tmp_path: Path) -> None:
    p = tmp_path / "m.gguf"
    write_tiny_gguf(p, TinyModelParams())
    lock = lock_local(p, contestant="l", as_written="models/m.gguf")
    assert (lock.source, lock.path, lock.files[0].sha256) == ("path", "models/m.gguf", sha256(p))
    shards = write_moe(tmp_path / "s" / "m.gguf", split_max_tensors=3)
    assert [f.name for f in lock_local(shards[0]).files] == [s.name for s in shards]
    with pytest.raises(HubError, match="^l: m-00002-of-00002.gguf: name the first shard"):
        lock_local(shards[1], contestant="l")
    shards[1].unlink()
    with pytest.raises(HubError, match="^l: m-00002-of-00002.gguf: no such file"):
        lock_local(shards[0], contestant="l")


def test_lock_generated_records_params_and_bytes(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    params = TinyModelParams(seed=5)
    lock = lock_generated(params, store, contestant="g")
    f = lock.files[0]
    assert f.sha256 == write_tiny_gguf(tmp_path / "again.gguf", params) and store.has(f.sha256, f.size)
    assert canonical_params_json(params) == canonical_params_json(
        TinyModelParams.model_validate(lock.generator["params"]))  # type: ignore[index]
    assert (store.links / "generated" / f.name).resolve() == store.blob_path(f.sha256)
    assert lock.gguf is not None and lock.gguf.vocab_size == params.vocab_size


def test_server_speaks_the_hub_shapes(hub_server: HubServer, tmp_path: Path) -> None:  # noqa: F811
    """The loopback hub answers the client's own calls in the shapes it parses."""
    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url

    p = tmp_path / "m.gguf"
    write_tiny_gguf(p, TinyModelParams())
    commit = hub_server.add_repo("org/m", {"Q4/m.gguf": p, "README.md": b"hi"})
    tree = {f.path: f for f in HfApi().list_repo_tree("org/m", recursive=True)}
    assert set(tree) == {"Q4", "Q4/m.gguf", "README.md"}
    assert tree["Q4/m.gguf"].lfs.sha256 == sha256(p) and tree["Q4/m.gguf"].size == p.stat().st_size
    assert {f.path for f in HfApi().list_repo_tree("org/m")} == {"Q4", "README.md"}
    meta = get_hf_file_metadata(hf_hub_url("org/m", "Q4/m.gguf"))
    assert (meta.commit_hash, meta.etag, meta.size) == (commit, sha256(p), p.stat().st_size)


# ------------------------------------------------------- fetch resumes across commands

RESUME = TinyModelParams(seed=6)  # ≈ 570 KB
CUT = 300_000


def _hub_lab(hub: HubServer, tmp_path: Path) -> tuple[Path, bytes, str]:
    """A lab with one Hub model, locked against the loopback hub: (lab file, the file's bytes, its sha256)."""
    from labctl.lock.lockfile import Lock, SourceLock, TaskLock, lock_path, write_lock
    from labctl.lock.resolve import spec_sha256
    from labctl.spec.load import load_lab

    p = tmp_path / "src" / "m.gguf"
    write_tiny_gguf(p, RESUME)
    hub.add_repo("org/m", {"m.gguf": p})
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "task.toml").write_text('version = "1.0"\n')
    (tmp_path / "task" / "instruction.md").write_text("hi\n")
    lab = tmp_path / "lab.yaml"
    lab.write_text("version: 1\nlab: {name: resume}\nengine: {llama_cpp: {sdist: llama-cpp-python==0.3.36}}\n"
                   "agent: {runtime: mini-swe-agent, version: 2.4.6}\ntask: {path: task}\ncontestants:\n"
                   "  - {id: hf, kind: local, model: {repo: org/m, file: m.gguf}}\n")
    model = lock_hf("hf", ModelSource(repo="org/m", file="m.gguf"))
    write_lock(lock_path(lab), Lock(lab="resume", spec_sha256=spec_sha256(load_lab(lab)),
                                    llama_cpp=SourceLock(sdist="llama-cpp-python==0.3.36"),
                                    task=TaskLock(path="task", tree_sha256="0" * 64), models={"hf": model}))
    return lab, p.read_bytes(), model.files[0].sha256


def _gets(hub: HubServer) -> list[str | None]:
    return [h.get("Range") for m, _, h in hub.requests if m == "GET"]


def test_fetch_resumes_after_a_lost_connection(hub_server: HubServer, tmp_path: Path) -> None:  # noqa: F811
    """The connection drops at byte CUT and stays down for every retry: the fetch fails, keeping
    CUT bytes; the next fetch asks for `bytes=CUT-` only, and the whole file verifies."""
    from labctl.lock.fetch import FetchError, fetch
    from labctl.lock.lockfile import lock_path, read_lock

    lab, data, sha = _hub_lab(hub_server, tmp_path)
    lock = read_lock(lock_path(lab))
    store = Store(tmp_path / "store")
    hub_server.fault("org/m", "m.gguf", drop_at=CUT)
    hub_server.reset_counters()
    with pytest.raises(FetchError) as e:
        fetch(lock, store, progress=False)
    assert str(e.value).startswith("hf: m.gguf: network failure: the connection to http://127.0.0.1:")
    assert f"; {CUT} of {len(data)} bytes kept, the next `labctl fetch` resumes from there" in str(e.value)
    assert _gets(hub_server)[0] is None and set(_gets(hub_server)[1:]) == {f"bytes={CUT}-"}
    assert store.partial_path(sha).read_bytes() == data[:CUT] and not store.has(sha)

    hub_server.faults.clear()
    hub_server.reset_counters()
    report = fetch(lock, store, progress=False)
    assert _gets(hub_server) == [f"bytes={CUT}-"]
    assert report.files[0].downloaded == hub_server.bytes_served == len(data) - CUT
    assert store.blob_path(sha).read_bytes() == data and not store.partial_path(sha).exists()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_fetch_resumes_after_the_command_is_killed(hub_server: HubServer, tmp_path: Path,  # noqa: F811
                                                   sig: signal.Signals) -> None:
    """`labctl fetch` is killed (or Ctrl-C'd) with CUT bytes of the file on disk; the next
    `labctl fetch` sends `Range: bytes=CUT-` and the result verifies against the lock."""
    lab, data, sha = _hub_lab(hub_server, tmp_path)
    store = Store(tmp_path / "store")
    part = store.partial_path(sha)
    env = {**os.environ, "HF_ENDPOINT": hub_server.url, "HF_HOME": str(tmp_path / "hf"),
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    cmd = [sys.executable, "-m", "labctl", "fetch", str(lab), "--store", str(store.root), "--json"]
    hub_server.fault("org/m", "m.gguf", stall_at=CUT)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120  # a hung test fails instead of hanging; no timing is asserted
        while not (part.is_file() and part.stat().st_size == CUT):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the first fetch never reached the cut"
            time.sleep(0.05)
        proc.send_signal(sig)
        if sig == signal.SIGINT:
            hub_server.release()  # the stalled connection drops; the interrupted fetch stops there
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == (130 if sig == signal.SIGINT else -signal.SIGKILL)
    if sig == signal.SIGINT:
        assert "interrupted:" in stderr and "`labctl fetch` resumes from there" in stderr
    assert part.read_bytes() == data[:CUT] and not store.has(sha)

    hub_server.release()
    hub_server.faults.clear()
    hub_server.reset_counters()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert _gets(hub_server) == [f"bytes={CUT}-"]
    report = json.loads(done.stdout)
    assert report["files"][0]["status"] == "downloaded" and report["bytes_downloaded"] == len(data) - CUT
    assert store.blob_path(sha).read_bytes() == data and hashlib.sha256(data).hexdigest() == sha
    assert not part.exists()
