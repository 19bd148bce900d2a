"""The model store and `fetch` against a loopback hub: verification, quarantine, resume, disk full, CLI.

Downloads go through the real huggingface_hub client (HF_ENDPOINT → tests/hfserver.py on 127.0.0.1).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from labctl.cli.store import fetch_command, store_app
from labctl.gguf.store import HASH_BUFFER, HashMismatch, Store, StoreError, sha256_file
from labctl.gguf.tiny import TinyModelParams, write_tiny_gguf
from labctl.lock.fetch import FetchError, fetch, model_files
from labctl.lock.hub import lock_generated, lock_hf, lock_local, lock_model
from labctl.lock.lockfile import Lock, ModelLock, SourceLock, TaskLock, lock_path, write_lock
from labctl.lock.resolve import spec_sha256
from labctl.spec.lab import LocalContestant, ModelSource
from labctl.spec.load import load_lab
from tests.conftest import in_ci
from tests.hfserver import HubServer, hub_server  # noqa: F401

BIG = TinyModelParams(seed=2, n_layer=4, n_embd=256, vocab_size=4096)  # ≈ 13 MB: more than one 10 MiB chunk


def make_lock(models: dict[str, ModelLock], spec: str = "0" * 64) -> Lock:
    """A lock holding only models (the other required fields filled with placeholders)."""
    return Lock(lab="t", spec_sha256=spec, llama_cpp=SourceLock(path="llama", tree_sha256="0" * 64),
                task=TaskLock(path="task", tree_sha256="0" * 64), models=models)


def serve_tiny(hub: HubServer, tmp_path: Path, params: TinyModelParams = TinyModelParams(seed=1),  # noqa: B008
               repo: str = "org/m", name: str = "m.gguf") -> tuple[Path, ModelLock]:
    p = tmp_path / "src" / f"{params.seed}-{name}"
    write_tiny_gguf(p, params)
    hub.add_repo(repo, {name: p})
    return p, lock_hf("c", ModelSource(repo=repo, file=name))


def staged_data(store: Store) -> list[Path]:
    """Regular files left in partial/ other than lock files (and a cache tag)."""
    return [p for p in store.partial.rglob("*") if p.is_file() and not p.is_symlink()
            and p.suffix != ".lock" and p.name != "CACHEDIR.TAG"]


def assert_store_clean(store: Store) -> None:
    """Every blob is verified (its name is its hash) and nothing unverified is left in staging."""
    for b in store.ls():
        assert sha256_file(b.path) == b.sha256
    assert staged_data(store) == []


# ------------------------------------------------------------------------- store


@pytest.mark.parametrize("size", [0, 1, HASH_BUFFER - 1, HASH_BUFFER, HASH_BUFFER + 1, 3 * HASH_BUFFER + 7])
def test_sha256_file_matches_hashlib(tmp_path: Path, size: int) -> None:
    p = tmp_path / "f"
    p.write_bytes(os.urandom(size))
    assert sha256_file(p) == hashlib.sha256(p.read_bytes()).hexdigest()


def test_admit_verifies_then_moves_read_only(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    data = os.urandom(5000)
    sha = hashlib.sha256(data).hexdigest()
    (tmp_path / "a").write_bytes(data)
    blob = store.admit(tmp_path / "a", sha, len(data))
    assert blob == store.blob_path(sha) and blob.read_bytes() == data and not (tmp_path / "a").exists()
    assert blob.stat().st_mode & 0o222 == 0 and store.has(sha, len(data)) and not store.has(sha, 1)
    (tmp_path / "b").write_bytes(data)  # the same bytes again: one copy is kept
    assert store.admit(tmp_path / "b", sha, len(data)) == blob and not (tmp_path / "b").exists()


def test_admit_mismatch_quarantines_with_a_note(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    (tmp_path / "a").write_bytes(b"wrong bytes")
    with pytest.raises(HashMismatch) as e:
        store.admit(tmp_path / "a", "ab" * 32, 11, label="c1: m.gguf")
    assert str(e.value).startswith("c1: m.gguf: sha256 ") and "quarantined as" in str(e.value)
    assert e.value.quarantined.read_bytes() == b"wrong bytes" and store.ls() == []
    note = json.loads(e.value.quarantined.with_name(e.value.quarantined.name + ".json").read_text())
    assert note["expected_sha256"] == "ab" * 32
    assert note["actual_sha256"] == hashlib.sha256(b"wrong bytes").hexdigest()
    (tmp_path / "b").write_bytes(b"short")
    with pytest.raises(HashMismatch, match="size 5 != expected 11"):
        store.admit(tmp_path / "b", "ab" * 32, 11)


def _put(store: Store, tmp_path: Path, data: bytes, link: str) -> str:
    sha = hashlib.sha256(data).hexdigest()
    (tmp_path / "x").write_bytes(data)
    store.link(link, store.admit(tmp_path / "x", sha, len(data)))
    return sha


def test_ls_verify_gc(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    a = _put(store, tmp_path, b"a" * 100, "hf/org/m/" + "1" * 40 + "/a.gguf")
    b = _put(store, tmp_path, b"b" * 300, "generated/b.gguf")
    (tmp_path / "local.gguf").write_bytes(b"l")
    store.link("local/123456789abc/local.gguf", tmp_path / "local.gguf")
    assert [(x.sha256, x.size, x.links) for x in store.ls()] == sorted(
        [(a, 100, ["hf/org/m/" + "1" * 40 + "/a.gguf"]), (b, 300, ["generated/b.gguf"])])
    assert all(r.ok for r in store.verify())
    bad = store.blob_path(b)
    os.chmod(bad, 0o644)
    bad.write_bytes(b"B" * 300)  # bit rot
    results = {r.sha256: r for r in store.verify()}
    assert results[a].ok and not results[b].ok and results[b].quarantined and results[b].quarantined.exists()
    assert not bad.exists()
    with pytest.raises(StoreError, match="no blob"):
        store.verify(b)
    c = _put(store, tmp_path, b"c" * 50, "generated/c.gguf")
    (tmp_path / "local.gguf").unlink()  # a local model went away: its link dangles
    assert store.gc({a}, dry_run=True) == 50 and store.has(c)
    assert store.gc({a}) == 50
    assert [x.sha256 for x in store.ls()] == [a] and not (store.links / "generated").exists()
    assert not (store.links / "local").exists() and (store.links / "hf/org/m").is_dir()


# ------------------------------------------------------------------------- fetch


def test_fetch_then_refetch_downloads_nothing(hub_server: HubServer, tmp_path: Path) -> None:  # noqa: F811
    p, hf = serve_tiny(hub_server, tmp_path)
    local = tmp_path / "local.gguf"
    write_tiny_gguf(local, TinyModelParams(seed=9))
    store = Store(tmp_path / "store")
    gen = lock_generated(TinyModelParams(seed=4), Store(tmp_path / "elsewhere"))
    lock = make_lock({"c": hf, "same-bytes": hf, "g": gen, "l": lock_local(local, as_written="local.gguf")})
    hub_server.reset_counters()
    report = fetch(lock, store, progress=False, base_dir=tmp_path)
    status = {(f.contestant, f.status) for f in report.files}
    assert status == {("c", "downloaded"), ("same-bytes", "present"), ("g", "generated"), ("l", "local")}
    assert report.bytes_downloaded == hub_server.bytes_served == p.stat().st_size  # one download for two
    blob = store.blob_path(hf.files[0].sha256)
    assert blob.read_bytes() == p.read_bytes() and blob.stat().st_nlink == 1  # one copy on disk
    assert (store.links / "hf/org/m" / hf.commit / "m.gguf").resolve() == blob  # type: ignore[operator]
    assert (store.links / "local" / lock.models["l"].files[0].sha256[:12] / "local.gguf").resolve() == local
    assert_store_clean(store)
    hub_server.reset_counters()
    again = fetch(lock, store, progress=False, base_dir=tmp_path)
    assert again.bytes_downloaded == 0 and hub_server.bytes_served == 0 and hub_server.requests == []
    assert {f.status for f in again.files} == {"present", "local"}
    assert model_files(hf, store) == [blob]
    assert model_files(lock.models["l"], store, base_dir=tmp_path) == [local]


def test_hash_mismatch_is_quarantined_never_admitted(hub_server: HubServer, tmp_path: Path) -> None:  # noqa: F811
    _, hf = serve_tiny(hub_server, tmp_path)
    hub_server.fault("org/m", "m.gguf", corrupt=True)
    store = Store(tmp_path / "store")
    with pytest.raises(FetchError) as e:
        fetch(make_lock({"c": hf}), store, progress=False)
    line = str(e.value)
    assert "\n" not in line and line.startswith("c: m.gguf: downloaded bytes do not match the lock (sha256 ")
    assert store.ls() == [] and staged_data(store) == []
    quarantined = [q for q in store.quarantine.iterdir() if q.suffix != ".json"]
    assert len(quarantined) == 1 and str(quarantined[0]) in line
    hub_server.faults.clear()  # the mirror is fixed: the next fetch downloads and admits
    assert fetch(make_lock({"c": hf}), store, progress=False).files[0].status == "downloaded"
    assert_store_clean(store)


def test_truncated_download_is_kept_for_the_next_fetch(hub_server: HubServer, tmp_path: Path) -> None:  # noqa: F811
    """A server that keeps stopping short fails the fetch clearly; the bytes it did send are kept
    (unverified, outside blobs/) and the next fetch asks only for the rest."""
    p, hf = serve_tiny(hub_server, tmp_path)
    hub_server.fault("org/m", "m.gguf", truncate_to=100_000)
    store = Store(tmp_path / "store")
    with pytest.raises(FetchError) as e:
        fetch(make_lock({"c": hf}), store, progress=False)
    assert str(e.value) == (f"c: m.gguf: download incomplete: got 100000 of {p.stat().st_size} bytes; "
                            "kept, the next `labctl fetch` resumes from there")
    assert store.ls() == [] and staged_data(store) == [store.partial_path(hf.files[0].sha256)]
    assert store.partial_path(hf.files[0].sha256).read_bytes() == p.read_bytes()[:100_000]
    hub_server.faults.clear()
    hub_server.reset_counters()
    report = fetch(make_lock({"c": hf}), store, progress=False)
    assert report.files[0].downloaded == hub_server.bytes_served == p.stat().st_size - 100_000
    assert [h.get("Range") for m, _, h in hub_server.requests if m == "GET"] == ["bytes=100000-"]
    assert_store_clean(store)


def test_connection_cut_mid_file_resumes(hub_server: HubServer, tmp_path: Path) -> None:  # noqa: F811
    p, hf = serve_tiny(hub_server, tmp_path, BIG)
    size = p.stat().st_size
    hub_server.fault("org/m", "m.gguf", cut_after=11 << 20)  # once, after 11 MiB
    hub_server.reset_counters()
    store = Store(tmp_path / "store")
    report = fetch(make_lock({"c": hf}), store, progress=False)
    assert report.files[0].status == "downloaded" and store.has(hf.files[0].sha256, size)
    ranges = [h.get("Range") for m, _, h in hub_server.requests if m == "GET"]
    assert ranges == [None, f"bytes={11 << 20}-"]  # the second attempt asked only for the rest
    assert hub_server.bytes_served < 2 * size
    assert_store_clean(store)


def test_disk_full_write_error(hub_server: HubServer, tmp_path: Path) -> None:  # noqa: F811
    """The write itself fails (file size limit, like a full disk mid-download): clear error, no blob."""
    _, hf = serve_tiny(hub_server, tmp_path)
    store = Store(tmp_path / "store")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))
    try:
        with pytest.raises(FetchError) as e:
            fetch(make_lock({"c": hf}), store, progress=False)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert str(e.value).startswith(f"c: m.gguf: disk full in {store.root}")
    assert store.ls() == [] and staged_data(store) == []


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        why = f"cannot mount a tmpfs ({done.stderr.strip()})"
        if in_ci():  # CI runs as root (.ci/run): a mount that fails there is a broken machine, not a skip
            pytest.fail(f"{why}; CI must run this test", pytrace=False)
        pytest.skip(f"{why}; test_disk_full_write_error covers it")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_disk_full_on_a_small_filesystem(hub_server: HubServer, tmp_path: Path) -> None:  # noqa: F811
    _, one = serve_tiny(hub_server, tmp_path, TinyModelParams(seed=1), repo="org/a")
    _, two = serve_tiny(hub_server, tmp_path, TinyModelParams(seed=2), repo="org/b")
    with tmpfs(tmp_path / "small", "1m") as root:  # room for one 560 KiB model, not two
        store = Store(root)
        with pytest.raises(FetchError) as e:
            # One at a time: two concurrent downloads could both hit the full disk (a race, not a bug).
            fetch(make_lock({"a": one, "b": two}), store, jobs=1, progress=False)
        assert len(e.value.errors) == 1 and "disk full in" in str(e.value)
        assert str(e.value).startswith(("a: m.gguf: ", "b: m.gguf: ")) and "\n" not in str(e.value)
        assert len(store.ls()) == 1
        assert_store_clean(store)


def test_local_and_generated_problems_name_contestant_and_file(tmp_path: Path) -> None:
    local = tmp_path / "m.gguf"
    write_tiny_gguf(local, TinyModelParams(seed=3))
    ml = lock_local(local, as_written="m.gguf")
    gen = lock_generated(TinyModelParams(seed=3), Store(tmp_path / "a"))
    gen.generator = {**gen.generator, "generator": "labctl.gguf.tiny/0"}  # type: ignore[dict-item]
    local.write_bytes(local.read_bytes()[:-1] + b"X")  # edited after locking
    with pytest.raises(FetchError) as e:
        fetch(make_lock({"l": ml, "g": gen}), Store(tmp_path / "s"), progress=False, base_dir=tmp_path)
    lines = sorted(str(e.value).splitlines())
    assert lines[0].startswith("g: tiny-llama-") and "locked with generator 'labctl.gguf.tiny/0'" in lines[0]
    assert lines[1].startswith("l: m.gguf: local file changed since the lock: sha256 ")
    assert local.exists()  # a user's own file is never moved to quarantine


# --------------------------------------------------------------------------- CLI


def _lab(tmp_path: Path) -> Path:
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "task.toml").write_text('version = "1.0"\n')
    (tmp_path / "task" / "instruction.md").write_text("hi\n")
    (tmp_path / "llama").mkdir()
    lab = tmp_path / "lab.yaml"
    lab.write_text("version: 1\nlab: {name: storetest}\nengine: {llama_cpp: {path: llama}}\n"
                   "agent: {runtime: mini-swe-agent, version: 2.4.6}\ntask: {path: task}\ncontestants:\n"
                   "  - {id: tiny, kind: local, model: {generate: {seed: 3}}}\n"
                   "  - {id: hf, kind: local, model: {repo: org/m, file: m.gguf}}\n")
    return lab


def test_gc_removes_partial_downloads_of_unreferenced_blobs(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    keep, drop = "a" * 64, "b" * 64
    store.partial_path(keep).write_bytes(b"x" * 10)
    store.partial_path(drop).write_bytes(b"y" * 7)
    with store.partial_lock(drop):
        pass
    assert store.gc({keep}, dry_run=True) == 7 and store.partial_path(drop).exists()
    assert store.gc({keep}) == 7
    assert store.partial_path(keep).exists() and not store.partial_path(drop).exists()
    assert not store.partial_path(drop).with_suffix(".lock").exists()


def test_cli_fetch_ls_verify_gc(hub_server: HubServer, tmp_path: Path) -> None:  # noqa: F811
    serve_tiny(hub_server, tmp_path)
    lab = _lab(tmp_path)
    app = typer.Typer()
    app.command("fetch")(fetch_command)
    app.add_typer(store_app, name="store")
    run = CliRunner().invoke
    s = ["--store", str(tmp_path / "store")]
    r = run(app, ["fetch", str(lab), *s, "--json"])
    assert r.exit_code == 1 and "no lab.lock next to" in r.stderr and "run `labctl lock" in r.stderr
    loaded = load_lab(lab)
    models = {c.id: lock_model(c, base_dir=loaded.base_dir, store=Store(tmp_path / "lockstore"))
              for c in loaded.lab.contestants if isinstance(c, LocalContestant)}
    write_lock(lock_path(lab), make_lock(models))
    stale = run(app, ["fetch", str(lab), *s])
    assert stale.exit_code == 1 and "changed since lab.lock was written" in stale.stderr
    write_lock(lock_path(lab), make_lock(models, spec_sha256(loaded)))
    first = json.loads(run(app, ["fetch", str(lab), *s, "--json"]).stdout)
    assert first["ok"] and first["bytes_downloaded"] == models["hf"].files[0].size
    second = run(app, ["fetch", str(lab), *s, "--json"])
    assert second.exit_code == 0 and json.loads(second.stdout)["bytes_downloaded"] == 0
    human = run(app, ["fetch", str(lab), *s])
    assert human.exit_code == 0 and "downloaded 0 B" in human.stdout
    listing = json.loads(run(app, ["store", "ls", *s, "--json"]).stdout)
    assert {b["sha256"] for b in listing["blobs"]} == {m.files[0].sha256 for m in models.values()}
    assert json.loads(run(app, ["store", "verify", *s, "--json"]).stdout) == {
        "ok": True, "store": s[1], "checked": 2, "bad": []}
    kept = json.loads(run(app, ["store", "gc", str(lab), *s, "--json"]).stdout)
    assert kept["removed"] == [] and kept["freed_bytes"] == 0
    write_lock(lock_path(lab), make_lock({"tiny": models["tiny"]}, spec_sha256(loaded)))
    gone = json.loads(run(app, ["store", "gc", str(lab), *s, "--json"]).stdout)
    assert gone["removed"] == [models["hf"].files[0].sha256]
    assert gone["freed_bytes"] == models["hf"].files[0].size


def test_fetch_hub_refusals_are_one_line(hub_server: HubServer, tmp_path: Path) -> None:  # noqa: F811
    _, hf = serve_tiny(hub_server, tmp_path)
    store = Store(tmp_path / "store")
    hub_server.refuse("org/m", 403)
    with pytest.raises(FetchError) as e:
        fetch(make_lock({"c": hf}), store, progress=False)
    assert str(e.value).startswith("c: m.gguf: refused (403) by http://127.0.0.1:")
    hub_server.refused.clear()
    del hub_server.repos["org/m"]  # the repo went away (or went private) after locking
    with pytest.raises(FetchError) as e:
        fetch(make_lock({"c": hf}), store, progress=False)
    assert str(e.value).startswith("c: m.gguf: repository org/m not found on http://127.0.0.1:")
    assert store.ls() == [] and staged_data(store) == []
