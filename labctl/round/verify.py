"""`labctl verify`: let anyone re-check a round from its directory alone — every byte against the
manifest, the seal against the revealed salt and mapping, the lock against its recorded hash, and
every grade against the verifier output it came from.

What that guarantees: a round whose files agree with each other. Someone who edits a file and
rewrites manifest.json to match is still caught where verify re-derives what was edited (a grade
from its reward and metrics, a control's kind from the reveal, the reveal from the commitment
published before any run), but not in a file nothing re-derives (a transcript, a log). For that,
the round's digest — the sha256 of manifest.json, printed by verify — is what to publish with the
results: `labctl verify ROUND --digest SHA` then catches any rewrite at all.

The grading rule is `labctl.round.grading`'s, the one the runner's grader uses too, so a grade
written into result.json and the grade verify re-derives can only differ when a file was changed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from labctl.meter import blobs
from labctl.round.controls import control_failures
from labctl.round.grading import derive_outcome, read_reward
from labctl.round.layout import (
    EGRESS_FILE,
    FINISHED,
    LAB_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    RUNS_DIR,
    SEALED_FILE,
    UNSEALED_FILE,
    SealedRound,
    Unsealed,
    commitment_of,
    manifest_differences,
    metrics_path,
    read_egress,
    read_manifest,
    read_result,
    read_sealed,
    read_unsealed,
    result_path,
    run_dir,
)
from labctl.round.opened import read_round_lab, read_round_lock
from labctl.round.operator import operator_problems
from labctl.round.records import read_metrics
from labctl.spec.lab import Outcome
from labctl.spec.located import SpecError


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
    digest: str | None = None
    """sha256 of manifest.json's bytes: one figure that pins every file of the round."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, rel: str, what: str, run: str | None = None) -> None:
        self.problems.append(Problem(str(self.round_dir / rel), what, run))


def verify_round(round_dir: Path, digest: str | None = None) -> Verification:
    """Every check that needs only the round directory (see the module docstring); with `digest`
    (a published sha256 of manifest.json), also that the round is the one published."""
    v = Verification(round_dir)
    if not round_dir.is_dir():
        v.problems.append(Problem(str(round_dir), "not a directory"))
        return v
    _check_manifest(v, digest)
    _check_blobs(v)
    _check_egress(v)
    for rel, what, run in operator_problems(round_dir):  # a human's help, neither hidden nor invented
        v.add(rel, what, run)
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
    for f in control_failures(v.round_dir):
        v.add(f"{RUNS_DIR}/{f.run_id}/result.json", f"controls failed: {f}", f.run_id)


def _check_manifest(v: Verification, digest: str | None) -> None:
    try:
        v.digest = hashlib.sha256((v.round_dir / MANIFEST_FILE).read_bytes()).hexdigest()
        listed = read_manifest(v.round_dir)
    except (OSError, ValueError) as e:
        v.add(MANIFEST_FILE, f"unreadable: {str(e).splitlines()[0]}")
        return
    want = digest.lower().removeprefix("sha256:") if digest else None
    if want is not None and want != v.digest:
        v.add(MANIFEST_FILE, f"the round's digest sha256:{v.digest[:16]}… is not the published "
                             f"sha256:{want[:16]}…: files were changed and the manifest rewritten")
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


def _check_egress(v: Verification) -> None:
    """Every run's egress.jsonl (the gateway's log) is a list of egress records: a file edited into
    something else is named, beside the manifest's hash check."""
    for log in sorted((v.round_dir / RUNS_DIR).glob(f"*/{EGRESS_FILE}")):
        run = log.parent.name
        try:
            read_egress(log)
        except (OSError, ValueError) as e:
            v.add(f"{RUNS_DIR}/{run}/{EGRESS_FILE}", f"not an egress log: {e}", run)


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
        lock = read_round_lock(v.round_dir)
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
        lab = read_round_lab(v.round_dir)
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


__all__ = ["Problem", "Verification", "verify_round"]
