"""The seal: a round directory that names no contestant, a private 0600 envelope outside it, a
uniform CSPRNG shuffle, and an unseal that refuses early rounds and tampered envelopes.

No Docker: the lock is constructed directly, and runs are faked as the runner would write them.
The helpers here (`sealed_lab`, `cli`, `fake_runs`) are shared with test_verify.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import stat
from collections import Counter
from pathlib import Path

import pytest

from labctl.lock.lockfile import (
    FileLock,
    Lock,
    ModelLock,
    PackageLock,
    SourceLock,
    TaskLock,
    lock_path,
    write_lock,
)
from labctl.lock.resolve import require_lock, spec_sha256
from labctl.round.grading import derive_outcome
from labctl.round.layout import (
    RunResult,
    canonical,
    read_sealed,
    read_unsealed,
    run_dir,
    write_result,
)
from labctl.round.seal import ENVELOPES_ENV, envelope_path, load_envelope, seal_round
from labctl.spec.load import load_lab
from labctl.treehash import tree_sha256
from tests.helpers import run_cli as cli

ROOT = Path(__file__).resolve().parents[2]

IDS = {"tiny-llama": "zqx-local-model", "oracle": "zqx-ref-solution", "nop": "zqx-idle-agent"}
"""The smoke lab's contestants renamed to ids that cannot occur by accident in any other text."""
LOCAL, ORACLE, NOP = IDS.values()



def make_lab(tmp: Path, **round_fields: str) -> Path:
    """labs/smoke.yaml (contestants renamed, `round:` fields replaced) + tasks/ + a matching lock."""
    shutil.copytree(ROOT / "tasks", tmp / "tasks")
    text = (ROOT / "labs" / "smoke.yaml").read_text(encoding="utf-8")
    for old, new in IDS.items():
        text = text.replace(f"- id: {old}\n", f"- id: {new}\n")
    for key, value in round_fields.items():
        text, n = re.subn(rf"^  {key}: .*$", f"  {key}: {value}", text, flags=re.M)
        assert n == 1, key
    (tmp / "labs").mkdir()
    path = tmp / "labs" / "smoke.yaml"
    path.write_text(text, encoding="utf-8")
    loaded = load_lab(path)
    lock = Lock(
        lab="smoke", spec_sha256=spec_sha256(loaded),
        llama_cpp=SourceLock(sdist="llama-cpp-python==0.3.36", sdist_file="llama_cpp_python-0.3.36.tar.gz",
                             sdist_sha256="ab" * 32, subdir="vendor/llama.cpp"),
        models={LOCAL: ModelLock(source="generate", generator={"seed": 7},
                                 files=[FileLock(name="tiny-7.gguf", sha256="cd" * 32, size=4096)])},
        agent=PackageLock(registry="pypi", name="mini-swe-agent", version="2.4.6",
                          filename="mini_swe_agent-2.4.6-py3-none-any.whl", sha256="ef" * 32),
        task=TaskLock(path="../tasks/smoke-hello", tree_sha256=tree_sha256(loaded.task_dir)),
    )
    write_lock(lock_path(path), lock)
    return path


SEALED_IMAGES = {"task-smoke-hello": "labctl/task-smoke-hello:" + "0" * 20}
"""What `labctl seal` records as the runs' images here: make_lab's lock is synthetic (no image pins,
no llama.cpp sdist), so deriving the real tags is left to test_images; test_runner seals real ones."""


@pytest.fixture
def envelopes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "private" / "envelopes"
    monkeypatch.setenv(ENVELOPES_ENV, str(d))
    monkeypatch.setattr("labctl.cli.seal.image_tags", lambda loaded, lock: dict(SEALED_IMAGES))
    return d


@pytest.fixture
def sealed_lab(tmp_path: Path, envelopes: Path) -> tuple[Path, Path]:
    """(lab file, round directory) of a freshly sealed smoke round."""
    lab = make_lab(tmp_path / "lab")
    code, stdout, stderr = cli("seal", lab, "--rounds-dir", tmp_path / "rounds", "--json")
    assert code == 0, stderr
    return lab, Path(json.loads(stdout)["round_dir"])


CHECKS = ("greeting_file", "greeting_text", "committed")
PLAYS = {  # contestant → (checks passed, tool_calls, expected outcome)
    ORACLE: (CHECKS, None, "Complete"),
    NOP: ((), None, "Failed"),
    LOCAL: (("greeting_file",), 4, "Partial"),
}


def fake_run(round_dir: Path, run_id: str, contestant: str, status: str = "done") -> None:
    """A run as the runner leaves it; the runner learns the contestant from the envelope only."""
    passed, tool_calls, outcome = PLAYS[contestant]
    d = run_dir(round_dir, run_id)
    (d / "verifier").mkdir(parents=True)
    reward = {"reward": int(len(passed) == len(CHECKS)), "checks": {c: c in passed for c in CHECKS}}
    (d / "verifier" / "reward.json").write_text(json.dumps(reward) + "\n")
    (d / "verifier" / "stdout.txt").write_text(json.dumps(reward) + "\n")
    metrics = {"tool_calls": tool_calls, "total_tokens": 0 if tool_calls is None else 1234, "wall_s": 12.5}
    (d / "metrics.json").write_text(json.dumps(metrics) + "\n")
    (d / "transcript.jsonl").write_text(
        json.dumps({"request": {"messages": [{"role": "user", "content": "say hello"}]}}) + "\n"
        + json.dumps({"response": {"usage": {"prompt_tokens": 10, "completion_tokens": 3}}}) + "\n")
    assert derive_outcome(reward, metrics, read_sealed(round_dir).outcome_rules) == outcome
    write_result(round_dir, RunResult(run_id=run_id, status=status, outcome=outcome, attempts=1,  # type: ignore[arg-type]
                                      started="2026-01-01T00:00:00Z", ended="2026-01-01T00:01:00Z"))


def fake_runs(round_dir: Path, only: int | None = None) -> None:
    mapping = load_envelope(round_dir.name).mapping
    for rid in read_sealed(round_dir).order[:only]:
        fake_run(round_dir, rid, mapping[rid].contestant)


def round_texts(round_dir: Path) -> dict[str, str]:
    return {p.relative_to(round_dir).as_posix(): p.read_text(encoding="utf-8", errors="replace")
            for p in round_dir.rglob("*") if p.is_file()}


# --- seal ----------------------------------------------------------------------------------------


def test_seal_writes_public_round_and_private_envelope(sealed_lab: tuple[Path, Path],
                                                        envelopes: Path) -> None:
    lab, rd = sealed_lab
    assert re.fullmatch(r"smoke-\d{8}-\d{6}-[0-9a-f]{4}", rd.name)
    assert sorted(p.name for p in rd.iterdir()) == ["lab.lock", "lab.yaml", "manifest.json", "sealed.json"]
    assert (rd / "lab.yaml").read_bytes() == lab.read_bytes()
    assert (rd / "lab.lock").read_bytes() == lock_path(lab).read_bytes()
    s = read_sealed(rd)
    lock = require_lock(load_lab(lab))
    assert s.lock_sha256 == lock.sha256() == s.lock_file_sha256
    assert s.task_tree_sha256 == lock.task.tree_sha256
    assert s.run_ids == ["run-1", "run-2", "run-3"] and sorted(s.order) == s.run_ids
    assert s.sealed and s.mapping is None and s.salt_bits == 256
    assert s.outcome_rules is not None and s.outcome_rules.partial == ["greeting_file"]
    raw = json.loads((rd / "sealed.json").read_text())
    assert raw["scheme"] == "sha256(salt || canonical_mapping)" and "salt" not in raw

    env_file = envelope_path(rd.name)
    assert env_file.parent == envelopes and not env_file.resolve().is_relative_to(rd.resolve())
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(envelopes.stat().st_mode) == 0o700
    env = load_envelope(rd.name)
    assert len(bytes.fromhex(env.salt)) == 32
    canon = json.dumps({k: v.model_dump() for k, v in env.mapping.items()}, sort_keys=True,
                       separators=(",", ":")).encode()
    assert canon == canonical(env.mapping)
    assert hashlib.sha256(bytes.fromhex(env.salt) + canon).hexdigest() == s.commitment == env.commitment
    assert sorted(slot.contestant for slot in env.mapping.values()) == sorted(IDS.values())


def test_seal_prints_ids_order_commitment_and_nothing_private(tmp_path: Path, envelopes: Path) -> None:
    lab = make_lab(tmp_path / "lab")
    code, stdout, stderr = cli("seal", lab, "--rounds-dir", tmp_path / "rounds")
    assert code == 0, stderr
    rd = next((tmp_path / "rounds").iterdir())
    s, env = read_sealed(rd), load_envelope(rd.name)
    assert rd.name in stdout and s.commitment in stdout and " ".join(s.order) in stdout
    assert env.salt not in stdout + stderr
    assert not [c for c in IDS.values() if c in stdout + stderr]


def test_nothing_in_the_round_names_a_contestant_before_unseal(sealed_lab: tuple[Path, Path]) -> None:
    _, rd = sealed_lab
    fake_runs(rd)
    # lab.yaml and lab.lock list who competes (public); nothing may say which run is whose.
    texts = {rel: t for rel, t in round_texts(rd).items() if rel not in ("lab.yaml", "lab.lock")}
    assert any(rel.startswith("runs/") for rel in texts)
    leaks = [(rel, c) for rel, t in texts.items() for c in IDS.values() if c in t]
    assert leaks == []
    assert all(c in (rd / "lab.yaml").read_text() for c in IDS.values())  # the grep can find them
    assert cli("unseal", rd)[0] == 0
    assert all(c in (rd / "unsealed.json").read_text() for c in IDS.values())


def test_the_shuffle_is_uniform(tmp_path: Path, envelopes: Path) -> None:
    """300 seals of 3 contestants: each (run id, contestant) cell expects 100 (σ ≈ 8.2); [55, 145]
    fails by chance with probability < 1e-6. Same for which run goes first."""
    loaded = load_lab(make_lab(tmp_path / "lab"))
    lock = require_lock(loaded)
    cells: Counter[tuple[str, str]] = Counter()
    first: Counter[str] = Counter()
    commitments = set()
    for _ in range(300):
        made = seal_round(loaded, lock, tmp_path / "rounds")
        for rid, slot in load_envelope(made.record.round).mapping.items():
            cells[rid, slot.contestant] += 1
        first[made.record.order[0]] += 1
        commitments.add(made.record.commitment)
    assert len(commitments) == 300  # salted: even equal mappings commit differently
    assert len(cells) == 9 and all(55 <= n <= 145 for n in cells.values()), cells
    assert len(first) == 3 and all(55 <= n <= 145 for n in first.values()), first


def test_repeats_and_fixed_order(tmp_path: Path, envelopes: Path) -> None:
    lab = make_lab(tmp_path / "lab", repeats="2", randomize_order="false", first_number="10")
    code, stdout, _ = cli("seal", lab, "--rounds-dir", tmp_path / "rounds", "--json")
    assert code == 0
    s = read_sealed(Path(json.loads(stdout)["round_dir"]))
    assert s.run_ids == [f"run-{n}" for n in range(10, 16)] and s.order == s.run_ids and s.repeats == 2
    slots = sorted((x.contestant, x.repeat) for x in load_envelope(s.round).mapping.values())
    assert slots == sorted((c, k) for c in IDS.values() for k in (1, 2))


def test_seal_false_publishes_the_mapping(tmp_path: Path, envelopes: Path) -> None:
    lab = make_lab(tmp_path / "lab", seal="false")
    code, stdout, _ = cli("seal", lab, "--rounds-dir", tmp_path / "rounds")
    assert code == 0 and "mapping is open" in stdout
    rd = next((tmp_path / "rounds").iterdir())
    s = read_sealed(rd)
    assert not s.sealed and s.mapping == load_envelope(rd.name).mapping
    fake_runs(rd)
    assert cli("unseal", rd)[0] == 0
    assert cli("verify", rd)[0] == 0


def test_seal_needs_a_current_lock_and_task(tmp_path: Path, envelopes: Path) -> None:
    lab = make_lab(tmp_path / "lab")
    (tmp_path / "lab" / "tasks" / "smoke-hello" / "instruction.md").write_text("changed\n")
    code, _, stderr = cli("seal", lab, "--rounds-dir", tmp_path / "rounds")
    assert code == 1 and "changed since smoke.lock" in stderr
    lock_path(lab).unlink()
    code, _, stderr = cli("seal", lab, "--rounds-dir", tmp_path / "rounds")
    assert code == 1 and "labctl lock" in stderr
    assert not (tmp_path / "rounds").exists() or not any((tmp_path / "rounds").iterdir())
    assert not envelopes.exists() or not any(envelopes.iterdir())


# --- unseal --------------------------------------------------------------------------------------


def test_unseal_refuses_until_every_run_finished(sealed_lab: tuple[Path, Path]) -> None:
    _, rd = sealed_lab
    s = read_sealed(rd)
    code, _, stderr = cli("unseal", rd)
    assert code == 1 and all(f"{rid} not finished: no result.json" in stderr for rid in s.run_ids)
    fake_runs(rd, only=2)
    last = s.order[2]
    write_result(rd, RunResult(run_id=last, status="running", attempts=1))
    code, _, stderr = cli("unseal", rd)
    assert code == 1 and f"{last} not finished: running" in stderr and s.order[0] not in stderr
    assert not (rd / "unsealed.json").exists()
    assert not [c for c in IDS.values() if c in stderr]

    code, stdout, stderr = cli("unseal", rd, "--force", "--json")
    assert code == 0, stderr
    out = json.loads(stdout)
    assert out["forced"] is True and out["unfinished"] == [last]
    u = read_unsealed(rd)
    assert u.forced and u.unfinished == [last]
    assert json.loads((rd / "unsealed.json").read_text())["forced"] is True
    code, stdout, _ = cli("verify", rd)
    assert code == 0 and f"{last}: running, not graded" in stdout
    code, _, stderr = cli("unseal", rd, "--force")
    assert code == 1 and "already unsealed" in stderr


def test_unseal_prints_the_mapping(sealed_lab: tuple[Path, Path]) -> None:
    _, rd = sealed_lab
    fake_runs(rd)
    code, stdout, stderr = cli("unseal", rd)
    assert code == 0, stderr
    u = read_unsealed(rd)
    assert not u.forced and u.mapping == load_envelope(rd.name).mapping
    for rid, slot in u.mapping.items():
        assert re.search(rf"{rid}\s.*{slot.contestant}", stdout)


def test_unseal_catches_a_tampered_envelope(sealed_lab: tuple[Path, Path]) -> None:
    _, rd = sealed_lab
    fake_runs(rd)
    path = envelope_path(rd.name)
    data = json.loads(path.read_text())
    a, b = sorted(data["mapping"])[:2]
    data["mapping"][a], data["mapping"][b] = data["mapping"][b], data["mapping"][a]
    path.write_text(json.dumps(data))
    code, _, stderr = cli("unseal", rd)
    assert code == 1 and "commitment mismatch" in stderr and "envelope tampered" in stderr
    assert not (rd / "unsealed.json").exists()


def test_unseal_refuses_a_changed_seal_file(sealed_lab: tuple[Path, Path]) -> None:
    _, rd = sealed_lab
    fake_runs(rd)
    data = json.loads((rd / "sealed.json").read_text())
    data["order"].reverse()
    (rd / "sealed.json").write_text(json.dumps(data))
    code, _, stderr = cli("unseal", rd)
    assert code == 1 and "sealed.json: changed" in stderr and "fixed by the seal" in stderr


def test_unseal_table_lists_runs_in_number_order(tmp_path: Path, envelopes: Path) -> None:
    lab = make_lab(tmp_path / "lab", repeats="2", first_number="8")
    assert cli("seal", lab, "--rounds-dir", tmp_path / "rounds")[0] == 0
    rd = next((tmp_path / "rounds").iterdir())
    fake_runs(rd)
    code, stdout, _ = cli("unseal", rd)
    assert code == 0
    rows = re.findall(r"\b(run-\d+)\b", stdout)
    assert rows == [f"run-{n}" for n in range(8, 14)]
