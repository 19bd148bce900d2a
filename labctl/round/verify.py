"""`labctl verify`: let anyone re-check a round from its directory alone — every byte against the
manifest, the seal against the revealed salt and mapping, the lock against its recorded hash, and
every grade against the verifier output it came from.

`derive_outcome` is the one grading rule; the runner's grader imports it too, so a grade written
into result.json and the grade verify re-derives can only differ when a file was changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labctl.lock.lockfile import read_lock
from labctl.meter import blobs
from labctl.round.layout import (
    FINISHED,
    LAB_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    RUNS_DIR,
    SEALED_FILE,
    UNSEALED_FILE,
    OutcomeRules,
    SealedRound,
    Unsealed,
    commitment_of,
    manifest_differences,
    metrics_path,
    read_manifest,
    read_result,
    read_sealed,
    read_unsealed,
    result_path,
    run_dir,
)
from labctl.round.records import RunMetrics, check_passed, read_metrics
from labctl.spec.lab import Lab, Outcome
from labctl.spec.located import SpecError, load_yaml, validate

Reward = dict[str, Any] | float


def named_checks(reward: Reward | None) -> dict[str, Any] | None:
    """reward.json's named checks, in either form: labctl's `checks` object, and Harbor's flat form
    where every top-level key but `reward` whose value is a number or a boolean is a named check
    (`{"reward": 0, "name_argument": 1}`). Both at once are merged; the `checks` object wins a clash.
    None when there is none (reward.txt, or a reward.json with `reward` only)."""
    if not isinstance(reward, dict):
        return None
    flat = {k: v for k, v in reward.items()
            if k not in ("reward", "checks") and (isinstance(v, bool) or type(v) in (int, float))}
    nested = reward.get("checks")
    found = {**flat, **(nested if isinstance(nested, dict) else {})}
    return found if found or isinstance(nested, dict) else None


def derive_outcome(reward: Reward | None, metrics: RunMetrics | dict[str, Any] | None,
                   rules: OutcomeRules | dict[str, Any] | None) -> Outcome | None:
    """The outcome class of a run, from its verifier output and its metrics.

    0. `metrics.upstream_errored` ⇒ None: ungraded. The provider or server failed (5xx, a refused
       key), so the model never had its chance; the run is `errored` and is re-run, not judged.
    1. `metrics.tool_calls == 0` ⇒ Total failure: the agent never acted. Contestants without a
       model (oracle, nop) have `tool_calls` absent or null, so this rule never grades them.
    2. No verifier output (`reward` None) ⇒ None: ungraded (the run errored before the verifier).
    3. With `rules` and named checks in reward.json (`named_checks`: the `checks` object or Harbor's
       flat numeric keys): Complete when every `complete` check passed,
       Partial when every `partial` check passed (and there are some), else Failed. A check the
       verifier did not write counts as failed.
    4. Otherwise the numeric reward (reward.txt, or reward.json's "reward"): ≥ 1 Complete,
       > 0 Partial, else Failed.
    A named check passes by `labctl.round.records.check_passed`, the rule grade and report use too.
    Raises ValueError when the reward has neither checks nor a number (or metrics that are no
    metrics record).
    """
    m = RunMetrics.model_validate(metrics) if isinstance(metrics, dict) else metrics or RunMetrics()
    if m.upstream_errored is True:
        return None
    if m.tool_calls == 0:
        return "Total failure"
    if reward is None:
        return None
    if isinstance(rules, dict):
        rules = OutcomeRules.model_validate(rules)
    checks = named_checks(reward)
    if rules is not None and checks is not None:
        if all(check_passed(checks.get(c)) for c in rules.complete):
            return "Complete"
        if rules.partial and all(check_passed(checks.get(c)) for c in rules.partial):
            return "Partial"
        return "Failed"
    value = reward.get("reward") if isinstance(reward, dict) else reward
    if type(value) not in (int, float):
        raise ValueError(f"no numeric reward to grade by (got {value!r})")
    return "Complete" if value >= 1 else "Partial" if value > 0 else "Failed"


def read_reward(run: Path) -> tuple[Reward | None, str | None]:
    """(reward, file it came from): verifier/reward.json first, then reward.txt (Harbor's order)."""
    j, t = run / "verifier" / "reward.json", run / "verifier" / "reward.txt"
    if j.is_file():
        data = json.loads(j.read_text(encoding="utf-8"))
        if isinstance(data, dict) or type(data) in (int, float):
            return (data if isinstance(data, dict) else float(data)), "verifier/reward.json"
        raise ValueError("verifier/reward.json is neither an object nor a number")
    if t.is_file():
        return float(t.read_text(encoding="utf-8").strip()), "verifier/reward.txt"
    return None, None


@dataclass
class Problem:
    """One thing that does not check out: what is wrong, and where (a path; the run id if any)."""

    where: str
    what: str
    run: str | None = None

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass
class Verification:
    round_dir: Path
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Things not checked, and why (not problems: e.g. a round not yet unsealed)."""
    checked: dict[str, int | bool] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, rel: str, what: str, run: str | None = None) -> None:
        self.problems.append(Problem(str(self.round_dir / rel), what, run))


def verify_round(round_dir: Path) -> Verification:
    """Every check that needs only the round directory; see the module docstring."""
    v = Verification(round_dir)
    if not round_dir.is_dir():
        v.problems.append(Problem(str(round_dir), "not a directory"))
        return v
    _check_manifest(v)
    _check_blobs(v)
    try:
        sealed = read_sealed(round_dir)
    except (OSError, ValueError) as e:
        v.add(SEALED_FILE, f"unreadable: {str(e).splitlines()[0]}")
        return v
    _check_sealed_shape(v, sealed)
    _check_lock(v, sealed)
    unsealed = _check_seal(v, sealed)
    _check_runs(v, sealed, unsealed)
    _check_controls(v)
    return v


def _check_controls(v: Verification) -> None:
    """An oracle not Complete or a nop not Failed: the round's grades cannot be trusted."""
    from labctl.round.controls import control_failures  # it imports this module's grading rule

    for f in control_failures(v.round_dir):
        v.add(f"{RUNS_DIR}/{f.run_id}/result.json", f"controls failed: {f}", f.run_id)


def _check_manifest(v: Verification) -> None:
    try:
        listed = read_manifest(v.round_dir)
    except (OSError, ValueError) as e:
        v.add(MANIFEST_FILE, f"unreadable: {str(e).splitlines()[0]}")
        return
    for rel, what in manifest_differences(v.round_dir, listed):
        parts = rel.split("/")
        v.add(rel, what, parts[1] if len(parts) > 2 and parts[0] == RUNS_DIR else None)
    v.checked["files"] = len(listed)


def _check_blobs(v: Verification) -> None:
    """Every request blob a transcript references is there and hashes to its name (labctl/meter/blobs.py);
    the manifest hashes the blob files too, this ties them to the records that name them."""
    for transcript in sorted((v.round_dir / RUNS_DIR).glob("*/transcript.jsonl")):
        run = transcript.parent.name
        for rel, what in blobs.check(transcript):
            v.add(f"{RUNS_DIR}/{run}/{rel}", what, run)


def _check_sealed_shape(v: Verification, sealed: SealedRound) -> None:
    if v.round_dir.name != sealed.round:
        v.add(SEALED_FILE, f"round id {sealed.round} differs from the directory name {v.round_dir.name}")
    if len(set(sealed.run_ids)) != len(sealed.run_ids):
        v.add(SEALED_FILE, "run_ids has duplicates")
    if sorted(sealed.order) != sorted(sealed.run_ids):
        v.add(SEALED_FILE, "order is not a permutation of run_ids")


def _check_lock(v: Verification, sealed: SealedRound) -> None:
    """The round's lab.lock must be the lock the round was sealed with, by bytes and by content."""
    path = v.round_dir / LOCK_FILE
    try:
        raw = path.read_bytes()
        lock = read_lock(path)
    except (OSError, ValueError) as e:
        v.add(LOCK_FILE, f"unreadable: {str(e).splitlines()[0]}")
        return
    if (got := hashlib.sha256(raw).hexdigest()) != sealed.lock_file_sha256:
        v.add(LOCK_FILE, f"file sha256 {got[:16]}… differs from sealed.json's lock_file_sha256 "
                         f"{sealed.lock_file_sha256[:16]}…")
    if (got := lock.sha256()) != sealed.lock_sha256:
        v.add(LOCK_FILE, f"Lock.sha256() {got[:16]}… differs from sealed.json's lock_sha256 "
                         f"{sealed.lock_sha256[:16]}…")
    if lock.task.tree_sha256 != sealed.task_tree_sha256:
        v.add(LOCK_FILE, "task tree sha256 differs from sealed.json's task_tree_sha256")
    if lock.lab != sealed.lab:
        v.add(LOCK_FILE, f"lock is for lab {lock.lab!r}, the round for {sealed.lab!r}")
    v.checked["lock"] = True


def _check_seal(v: Verification, sealed: SealedRound) -> Unsealed | None:
    """The reveal must reproduce the commitment and be a bijection onto contestants × repeats."""
    if not (v.round_dir / UNSEALED_FILE).exists():
        v.notes.append("not unsealed yet: the commitment cannot be checked until `labctl unseal`")
        return None
    try:
        u = read_unsealed(v.round_dir)
    except (OSError, ValueError) as e:
        v.add(UNSEALED_FILE, f"unreadable: {str(e).splitlines()[0]}")
        return None
    recomputed = commitment_of(bytes.fromhex(u.salt), u.mapping)
    if recomputed != sealed.commitment:
        v.add(UNSEALED_FILE, f"sha256(salt ‖ mapping) = {recomputed[:16]}… does not match the sealed "
                             f"commitment {sealed.commitment[:16]}…: salt or mapping changed after the seal")
    if u.commitment != sealed.commitment:
        v.add(UNSEALED_FILE, "its commitment differs from sealed.json's")
    if u.round != sealed.round:
        v.add(UNSEALED_FILE, f"round id {u.round} differs from sealed.json's {sealed.round}")
    if sorted(u.mapping) != sorted(sealed.run_ids):
        v.add(UNSEALED_FILE, "mapping does not cover exactly the sealed run ids")
    if sealed.mapping is not None and sealed.mapping != u.mapping:
        v.add(UNSEALED_FILE, "mapping differs from the open mapping in sealed.json")
    try:
        lab = validate(Lab, load_yaml(v.round_dir / LAB_FILE))
    except (OSError, SpecError) as e:
        v.add(LAB_FILE, f"does not load, contestants not checked: {str(e).splitlines()[0]}")
    else:
        tasks = sorted(sealed.tasks) if sealed.tasks is not None else [None]  # a dataset: every task too
        want = sorted((c.id, k, t or "") for c in lab.contestants for k in range(1, sealed.repeats + 1)
                      for t in tasks)
        got = sorted((s.contestant, s.repeat, s.task or "") for s in u.mapping.values())
        if got != want:
            v.add(UNSEALED_FILE, "mapping is not one run per contestant, repeat (and task) of lab.yaml")
        if sealed.run_tasks is not None and {r: s.task for r, s in u.mapping.items()} != sealed.run_tasks:
            v.add(UNSEALED_FILE, "mapping's tasks differ from sealed.json's run_tasks")
    v.checked["seal"] = True
    return u


def _check_runs(v: Verification, sealed: SealedRound, unsealed: Unsealed | None) -> None:
    """Each run's result.json grade must be what its verifier output and metrics give."""
    must_finish = unsealed is not None and not unsealed.forced
    runs = v.round_dir / RUNS_DIR
    for extra in sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []:
        if extra not in sealed.run_ids:
            v.add(f"{RUNS_DIR}/{extra}", "a run directory for a run id the round did not seal", extra)
    graded = 0
    for rid in sealed.run_ids:
        rel = f"{RUNS_DIR}/{rid}"
        if not run_dir(v.round_dir, rid).is_dir():
            if must_finish:
                v.add(rel, "run directory is missing", rid)
            else:
                v.notes.append(f"{rid}: no run directory yet")
            continue
        if not result_path(v.round_dir, rid).is_file():
            if must_finish:
                v.add(f"{rel}/result.json", "missing", rid)
            else:
                v.notes.append(f"{rid}: no result.json yet")
            continue
        try:
            result = read_result(v.round_dir, rid)
        except ValueError as e:
            v.add(f"{rel}/result.json", f"unreadable: {str(e).splitlines()[0]}", rid)
            continue
        if result.run_id != rid:
            v.add(f"{rel}/result.json", f"run_id is {result.run_id!r}", rid)
        if result.status not in FINISHED:
            if must_finish:
                v.add(f"{rel}/result.json", f"status {result.status}, yet the round was unsealed "
                                            "without --force", rid)
            else:
                v.notes.append(f"{rid}: {result.status}, not graded")
            continue
        _check_outcome(v, sealed, rid, result.outcome)
        graded += 1
    v.checked["runs"] = graded


def _check_outcome(v: Verification, sealed: SealedRound, rid: str, recorded: Outcome | None) -> None:
    rel = f"{RUNS_DIR}/{rid}"
    try:
        reward, source = read_reward(run_dir(v.round_dir, rid))
    except (OSError, ValueError) as e:
        v.add(f"{rel}/verifier", f"unreadable verifier output: {str(e).splitlines()[0]}", rid)
        return
    try:
        metrics = read_metrics(metrics_path(v.round_dir, rid))
    except (OSError, ValueError) as e:
        v.add(f"{rel}/metrics.json", f"unreadable: {str(e).splitlines()[0]}", rid)
        return
    try:
        derived = derive_outcome(reward, metrics, sealed.rules_for(rid))
    except ValueError as e:
        v.add(f"{rel}/{source}", f"cannot grade: {e}", rid)
        return
    if derived != recorded:
        basis = " and ".join(s for s in (source, "metrics.json" if metrics is not None else None) if s)
        v.add(f"{rel}/result.json", f"outcome {recorded!r} differs from {derived!r} re-derived from "
                                    f"{basis or 'no verifier output'}", rid)


__all__ = ["Problem", "Verification", "check_passed", "derive_outcome", "named_checks", "read_reward",
           "verify_round"]
