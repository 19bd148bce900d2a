"""`labctl verify` against a tamperer who also rewrites manifest.json: the manifest's hashes then
agree with the edited files, so what still catches the edit is what verify re-derives (a grade
from its reward and metrics, a control's kind from the reveal). Fixture rounds: tests/round/test_seal.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from labctl.round.layout import read_result, run_dir, write_manifest
from labctl.round.verify import verify_round
from tests.round.test_seal import CHECKS, NOP, ORACLE, cli, envelopes, fake_runs, sealed_lab  # noqa: F401
from tests.round.test_verify import round_dir, run_of  # noqa: F401

ALL_FAILING = ", ".join(sorted(CHECKS))


def fail_the_oracle(rd: Path) -> str:
    """Make the oracle's run a consistent failure (reward, checks and grade agree), as a broken task
    would: the round's controls failed."""
    rid = run_of(rd, ORACLE)
    run = run_dir(rd, rid)
    reward = {"reward": 0, "checks": dict.fromkeys(CHECKS, False)}
    (run / "verifier" / "reward.json").write_text(json.dumps(reward))
    result = json.loads((run / "result.json").read_text())
    result["outcome"] = "Failed"
    result["control"] = "oracle"  # as the runner records a control run (tests/round's fake runs omit it)
    (run / "result.json").write_text(json.dumps(result))
    return rid


def test_a_failed_control_stays_failed_under_a_rewritten_manifest(round_dir: Path) -> None:  # noqa: F811
    rid = fail_the_oracle(round_dir)
    write_manifest(round_dir)
    v = verify_round(round_dir)
    assert [p.what for p in v.problems if p.run == rid] == [
        f"controls failed: {rid} (oracle) is Failed, must be Complete; failing checks: {ALL_FAILING}"]


def test_a_result_edited_to_hide_its_control_does_not_hide_it(round_dir: Path) -> None:  # noqa: F811
    """The tamperer also removes the run's `control` field and rewrites the manifest: after unseal the
    control's kind comes from the reveal and lab.yaml, so verify still names the failed oracle."""
    rid = fail_the_oracle(round_dir)
    path = run_dir(round_dir, rid) / "result.json"
    result = json.loads(path.read_text())
    assert result.pop("control") == "oracle"  # the field the tamperer removes
    path.write_text(json.dumps(result))
    write_manifest(round_dir)
    assert read_result(round_dir, rid).control is None
    code, stdout, _ = cli("verify", round_dir, "--json")
    data = json.loads(stdout)
    assert code == 1 and not data["ok"]
    assert [p["what"] for p in data["problems"]] == [
        f"controls failed: {rid} (oracle) is Failed, must be Complete; failing checks: {ALL_FAILING}"]


def test_a_regraded_run_with_a_rewritten_manifest_is_caught_by_its_grade(round_dir: Path) -> None:  # noqa: F811
    """The nop's grade edited to Complete and the manifest rewritten: the grade no longer follows
    from the untouched reward and metrics."""
    rid = run_of(round_dir, NOP)
    path = run_dir(round_dir, rid) / "result.json"
    path.write_text(path.read_text().replace('"Failed"', '"Complete"'))
    write_manifest(round_dir)
    problems = [p for p in verify_round(round_dir).problems if p.run == rid]
    assert any(p.where.endswith("result.json") and "outcome 'Complete' differs from 'Failed'" in p.what
               for p in problems), problems


def test_a_rewrite_nothing_re_derives_is_caught_by_the_published_digest(round_dir: Path) -> None:  # noqa: F811
    """A transcript edited and the manifest rewritten: the round agrees with itself (what verify
    alone guarantees, README "What a green suite means"), but not with the digest published before."""
    code, stdout, _ = cli("verify", round_dir, "--json")
    published = json.loads(stdout)["digest"]
    manifest = (round_dir / "manifest.json").read_bytes()
    assert code == 0 and published == "sha256:" + hashlib.sha256(manifest).hexdigest()
    code, _, _ = cli("verify", round_dir, "--digest", published)
    assert code == 0
    path = run_dir(round_dir, run_of(round_dir, ORACLE)) / "transcript.jsonl"
    path.write_text(path.read_text().replace("say hello", "say goodbye"))
    write_manifest(round_dir)
    assert verify_round(round_dir).ok  # consistent with itself
    code, stdout, _ = cli("verify", round_dir, "--digest", published, "--json")
    data = json.loads(stdout)
    assert code == 1 and [p["where"].rsplit("/", 1)[-1] for p in data["problems"]] == ["manifest.json"]
    assert "is not the published" in data["problems"][0]["what"] and data["digest"] != published
