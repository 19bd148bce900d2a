"""`labctl verify`: a complete round checks out; every kind of tampering fails it, naming what and
where. Also the grading rule (`derive_outcome`) that runner, grader and verify share."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from labctl.round.grading import derive_outcome, read_reward
from labctl.round.layout import OutcomeRules, read_result, read_sealed, read_unsealed, run_dir
from labctl.round.seal import load_envelope
from labctl.round.verify import verify_round
from tests.round.test_seal import CHECKS, NOP, ORACLE, cli, envelopes, fake_runs, sealed_lab  # noqa: F401

Problems = list[dict[str, str | None]]


@pytest.fixture
def round_dir(sealed_lab: tuple[Path, Path]) -> Path:  # noqa: F811
    """A sealed round whose runs all finished, unsealed: `labctl verify` must pass it."""
    _, rd = sealed_lab
    fake_runs(rd)
    code, _, stderr = cli("unseal", rd)
    assert code == 0, stderr
    return rd


def verify_fails(rd: Path) -> Problems:
    """Run `labctl verify --json`; it must exit 1 and list problems (also as text on stderr)."""
    code, stdout, _ = cli("verify", rd, "--json")
    assert code == 1
    data = json.loads(stdout)
    assert data["ok"] is False and data["problems"]
    text_code, _, stderr = cli("verify", rd)
    assert text_code == 1
    for p in data["problems"]:
        assert p["what"] in stderr  # what and where, for a human too
    return data["problems"]


def has(problems: Problems, where_ends: str, what: str, run: str | None = None) -> bool:
    return any(p["where"].endswith(where_ends) and what in p["what"] and (run is None or p["run"] == run)
               for p in problems)


def run_of(rd: Path, contestant: str) -> str:
    return next(r for r, s in read_unsealed(rd).mapping.items() if s.contestant == contestant)


def test_a_complete_round_verifies(round_dir: Path) -> None:
    code, stdout, stderr = cli("verify", round_dir, "--json")
    assert code == 0, stderr
    data = json.loads(stdout)
    assert data["ok"] and data["problems"] == [] and data["notes"] == []
    assert data["checked"]["seal"] and data["checked"]["lock"] and data["checked"]["runs"] == 3
    manifest = json.loads((round_dir / "manifest.json").read_text())["files"]
    assert "unsealed.json" in manifest and "manifest.json" not in manifest
    on_disk = sum(1 for p in round_dir.rglob("*") if p.is_file()) - 1
    assert data["checked"]["files"] == len(manifest) == on_disk
    code, stdout, _ = cli("verify", round_dir)
    assert code == 0 and "check out" in stdout


def test_a_sealed_round_verifies_what_it_can(sealed_lab: tuple[Path, Path]) -> None:  # noqa: F811
    _, rd = sealed_lab
    v = verify_round(rd)
    assert v.ok and "not unsealed yet" in v.notes[0] and len(v.notes) == 4  # + 3 runs not there yet


def test_edited_transcript(round_dir: Path) -> None:
    rid = run_of(round_dir, ORACLE)
    path = run_dir(round_dir, rid) / "transcript.jsonl"
    path.write_text(path.read_text().replace("say hello", "say goodbye"))
    problems = verify_fails(round_dir)
    assert has(problems, f"runs/{rid}/transcript.jsonl", "changed: sha256", run=rid)
    assert len(problems) == 1


def test_swapped_run_ids_in_the_reveal(round_dir: Path) -> None:
    data = json.loads((round_dir / "unsealed.json").read_text())
    a, b = sorted(data["mapping"])[:2]
    data["mapping"][a], data["mapping"][b] = data["mapping"][b], data["mapping"][a]
    (round_dir / "unsealed.json").write_text(json.dumps(data))
    problems = verify_fails(round_dir)
    assert has(problems, "unsealed.json", "does not match the sealed commitment")
    assert has(problems, "unsealed.json", "changed: sha256")


def test_changed_salt(round_dir: Path) -> None:
    data = json.loads((round_dir / "unsealed.json").read_text())
    data["salt"] = ("0" if data["salt"][0] != "0" else "1") + data["salt"][1:]
    (round_dir / "unsealed.json").write_text(json.dumps(data))
    problems = verify_fails(round_dir)
    assert has(problems, "unsealed.json", "salt or mapping changed after the seal")


def test_edited_reward(round_dir: Path) -> None:
    rid = run_of(round_dir, ORACLE)
    path = run_dir(round_dir, rid) / "verifier" / "reward.json"
    path.write_text(json.dumps({"reward": 0, "checks": dict.fromkeys(CHECKS, False)}))
    problems = verify_fails(round_dir)
    assert has(problems, f"runs/{rid}/result.json", "outcome 'Complete' differs from 'Failed'", run=rid)
    assert has(problems, f"runs/{rid}/verifier/reward.json", "changed: sha256", run=rid)


def test_edited_grade_in_result(round_dir: Path) -> None:
    rid = run_of(round_dir, NOP)
    path = run_dir(round_dir, rid) / "result.json"
    path.write_text(path.read_text().replace('"Failed"', '"Complete"'))
    assert read_result(round_dir, rid).outcome == "Complete"
    problems = verify_fails(round_dir)
    want = "outcome 'Complete' differs from 'Failed' re-derived from verifier/reward.json and metrics.json"
    assert has(problems, f"runs/{rid}/result.json", want, run=rid)


def test_deleted_run_directory(round_dir: Path) -> None:
    rid = read_sealed(round_dir).run_ids[1]
    shutil.rmtree(run_dir(round_dir, rid))
    problems = verify_fails(round_dir)
    assert has(problems, f"runs/{rid}", "run directory is missing", run=rid)
    assert has(problems, f"runs/{rid}/transcript.jsonl", "missing (listed in manifest.json)", run=rid)


def test_changed_lock(round_dir: Path) -> None:
    path = round_dir / "lab.lock"
    path.write_text(path.read_text().replace("ab" * 32, "ba" * 32))
    problems = verify_fails(round_dir)
    assert has(problems, "lab.lock", "differs from sealed.json's lock_file_sha256")
    assert has(problems, "lab.lock", "Lock.sha256()")
    assert has(problems, "lab.lock", "changed: sha256")


def test_reformatted_lock_is_caught_by_bytes(round_dir: Path) -> None:
    """Same content, other bytes: Lock.sha256() still matches, the file hash does not."""
    path = round_dir / "lab.lock"
    path.write_text(json.dumps(json.loads(path.read_text())))
    problems = verify_fails(round_dir)
    assert has(problems, "lab.lock", "lock_file_sha256") and not has(problems, "lab.lock", "Lock.sha256()")


def test_added_file(round_dir: Path) -> None:
    rid = read_sealed(round_dir).run_ids[0]
    (run_dir(round_dir, rid) / "note.txt").write_text("hi")
    problems = verify_fails(round_dir)
    assert has(problems, f"runs/{rid}/note.txt", "not in manifest.json", run=rid)


def test_the_envelope_is_not_needed_to_verify(round_dir: Path, envelopes: Path) -> None:  # noqa: F811
    load_envelope(round_dir.name)
    shutil.rmtree(envelopes)
    assert verify_round(round_dir).ok


# --- the grading rule ----------------------------------------------------------------------------

RULES = OutcomeRules(complete=["a", "b"], partial=["a"])


@pytest.mark.parametrize(("reward", "metrics", "rules", "want"), [
    ({"reward": 1, "checks": {"a": True, "b": True}}, {"tool_calls": 3}, RULES, "Complete"),
    ({"reward": 0, "checks": {"a": True, "b": False}}, {"tool_calls": 3}, RULES, "Partial"),
    ({"reward": 0, "checks": {"a": True}}, {"tool_calls": 3}, RULES, "Partial"),  # b not written: failed
    ({"reward": 1, "checks": {"a": "false", "b": True}}, None, RULES, "Failed"),  # a string is not a pass
    ({"reward": 1, "checks": {"a": True, "b": True}}, {"tool_calls": 0}, RULES, "Total failure"),
    (None, {"tool_calls": 0}, RULES, "Total failure"),
    (None, {"tool_calls": 5}, RULES, None),
    ({"reward": 1, "checks": {"a": True, "b": True}}, {"tool_calls": None}, RULES, "Complete"),  # oracle
    ({"reward": 0, "checks": {"a": True}}, None, {"complete": ["a", "b"]}, "Failed"),  # no partial list
    (1.0, None, RULES, "Complete"),  # reward.txt: numeric even with rules
    (0.5, None, None, "Partial"),
    ({"reward": 0}, None, None, "Failed"),
    ({"reward": 0.0, "checks": {"a": True, "b": True}}, None, None, "Failed"),  # no rules: the number
])
def test_derive_outcome(reward: object, metrics: dict | None, rules: object, want: str | None) -> None:
    assert derive_outcome(reward, metrics, rules) == want  # type: ignore[arg-type]


def test_derive_outcome_needs_something_to_grade_by() -> None:
    with pytest.raises(ValueError, match="no numeric reward"):
        derive_outcome({"checks": {"a": True}}, None, None)


def test_read_reward_prefers_json(tmp_path: Path) -> None:
    (tmp_path / "verifier").mkdir()
    assert read_reward(tmp_path) == (None, None)
    (tmp_path / "verifier" / "reward.txt").write_text("0.25\n")
    assert read_reward(tmp_path) == (0.25, "verifier/reward.txt")
    (tmp_path / "verifier" / "reward.json").write_text('{"reward": 1}')
    assert read_reward(tmp_path) == ({"reward": 1}, "verifier/reward.json")
