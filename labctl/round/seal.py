"""The seal: commit to which contestant is behind each run id before anything runs, reveal after.

Commit–reveal: `seal_round` shuffles contestants × repeats onto run ids with a CSPRNG, draws a
256-bit salt and publishes only `sha256(salt ‖ canonical(mapping))` in sealed.json. The mapping and
salt (the *envelope*) go to a private file outside the round directory, so nothing the operator
looks at while the round runs says who is who. `unseal_round` writes salt and mapping into the
round, and anyone can recompute the commitment (`labctl verify`).

Blindness policy — nothing labctl prints, writes into a round, or puts on a container, network or
volume before unseal may contain a contestant id: use `run_label(run_id)` wherever a run is named.
Only the runner reads the envelope (`load_envelope`), to know which model to serve, and never
prints it. lab.yaml and lab.lock in the round do name the contestants — who competes is public;
which run is whose is not.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from labctl import __version__
from labctl.errors import LabctlError
from labctl.lock.lockfile import Lock, lock_path
from labctl.round.layout import (
    FINISHED,
    IMMUTABLE,
    LAB_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    SEALED_FILE,
    SHA256,
    UNSEALED_FILE,
    Mapping,
    Record,
    SealedRound,
    SealedTask,
    Slot,
    Unsealed,
    commitment_of,
    json_text,
    manifest_differences,
    read_manifest,
    read_result,
    read_sealed,
    result_path,
    write_json,
    write_manifest,
)
from labctl.spec.load import LoadedLab
from labctl.spec.task import OutcomeRules, TaskError, read_task
from labctl.treehash import tree_sha256

ENVELOPES_ENV = "LABCTL_ENVELOPES"
SALT_BYTES = 32


class SealError(LabctlError):
    """Sealing or unsealing refused; one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class Envelope(Record):
    """The private half of the seal: `<envelopes>/<round-id>.json`, mode 0600."""

    version: Literal[1] = 1
    round: str
    lab: str
    lock_sha256: str = Field(pattern=SHA256)
    salt: str = Field(pattern=r"^[0-9a-f]{64}$")
    mapping: Mapping
    commitment: str = Field(pattern=SHA256)


def run_label(run_id: str) -> str:
    """The only name a run may carry before unseal (logs, tables, container/network/volume labels).

    It is the run id itself, never the contestant id or model name: those would unblind the round.
    Exists so every caller names runs the same way and a reviewer can grep for violations.
    """
    return run_id


def envelopes_dir() -> Path:
    """`$LABCTL_ENVELOPES`, else `~/.local/share/labctl/envelopes` (outside any round directory)."""
    env = os.environ.get(ENVELOPES_ENV)
    return Path(env).expanduser() if env else Path.home() / ".local" / "share" / "labctl" / "envelopes"


def envelope_path(round_id: str) -> Path:
    return envelopes_dir() / f"{round_id}.json"


def load_envelope(round_id: str) -> Envelope:
    """The envelope of a round, for the runner (which model to serve) and for unseal. Internal:
    whatever is read from it must never be printed or written into the round before unseal."""
    return Envelope.model_validate_json(envelope_path(round_id).read_text(encoding="utf-8"))


def _write_envelope(env: Envelope) -> Path:
    """Create the envelope with mode 0600 in a 0700 directory; O_EXCL: never overwrite one."""
    d = envelopes_dir()
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    if d.stat().st_mode & 0o077:
        d.chmod(0o700)  # labctl's own directory: other users have no business listing rounds
    path = d / f"{env.round}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)  # whatever the umask says
        f.write(json_text(env.model_dump(mode="json")))
    return path


# --- seal ----------------------------------------------------------------------------------------


def round_id(lab_name: str, now: datetime) -> str:
    """`<lab>-<UTC yyyymmdd-HHMMSS>-<4 hex>`: sortable by time, unique, and naming no contestant."""
    return f"{lab_name}-{now.astimezone(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def draw(contestants: list[str], repeats: int, run_ids: list[str], rng: secrets.SystemRandom,
         tasks: list[str] | None = None) -> Mapping:
    """A uniformly random bijection of run ids onto contestants × tasks × repeats (Fisher–Yates on a
    CSPRNG: a seeded PRNG could be replayed to unblind the round). `tasks` None: the lab's one task."""
    each_task: list[str | None] = [*tasks] if tasks else [None]
    slots = [Slot(contestant=c, repeat=k, task=t) for t in each_task for c in contestants
             for k in range(1, repeats + 1)]
    if len(slots) != len(run_ids):
        raise ValueError(f"{len(run_ids)} run ids for {len(slots)} slots")
    rng.shuffle(slots)
    return dict(zip(run_ids, slots, strict=True))


@dataclass
class Sealed:
    """What `seal_round` made: the public record and where the round is. The envelope is not here
    on purpose — callers print this."""

    record: SealedRound
    round_dir: Path
    envelope: Path = field(repr=False)


def seal_round(loaded: LoadedLab, lock: Lock, rounds_dir: Path,
               images: dict[str, str] | None = None) -> Sealed:
    """Create `rounds_dir/<round-id>/` with lab.yaml, lab.lock, sealed.json and manifest.json, and the
    envelope outside it. `lock` is the lab's current lock (`require_lock`); `images` (name → tag) is
    what the runs will use (`labctl.images.specs.image_tags`), recorded in sealed.json."""
    lock_file = lock_path(loaded.path)
    lock_bytes = lock_file.read_bytes()
    if Lock.model_validate_json(lock_bytes) != lock:  # the copy must be the lock that was checked
        raise SealError([f"{lock_file} changed while sealing: run `labctl seal` again"])
    if loaded.is_dataset:
        return _seal(loaded, lock, lock_file, lock_bytes, rounds_dir, **sealed_dataset(loaded, lock),
                     images=images)
    tree = tree_sha256(loaded.task_dir)
    if tree != lock.task.tree_sha256:
        raise SealError([f"task {loaded.task_dir} changed since {lock_file.name} was written "
                         f"(tree sha256 {tree[:12]}…, lock says {lock.task.tree_sha256[:12]}…): "
                         f"run `labctl lock {loaded.path}`"])
    try:
        rules = read_task(loaded.task_dir).labctl.outcome
    except TaskError as e:
        raise SealError(e.problems) from e
    return _seal(loaded, lock, lock_file, lock_bytes, rounds_dir, rules=rules, tasks=None, images=images)


def sealed_dataset(loaded: LoadedLab, lock: Lock) -> dict[str, Any]:
    """A dataset's tasks as sealed.json records them, each checked against its pin in the lock."""
    problems: list[str] = []
    tasks: dict[str, SealedTask] = {}
    pins = lock.tasks or {}
    for name, d in loaded.tasks.items():
        tree = tree_sha256(d)
        pinned = pins.get(name)
        if pinned is None or pinned.tree_sha256 != tree:
            was = f"lock says {pinned.tree_sha256[:12]}…" if pinned else "not in the lock"
            problems.append(f"task {name} ({d}) changed since {lock_path(loaded.path).name} was written "
                            f"(tree sha256 {tree[:12]}…, {was}): run `labctl lock {loaded.path}`")
            continue
        try:
            tasks[name] = SealedTask(tree_sha256=tree, outcome_rules=read_task(d).labctl.outcome)
        except TaskError as e:
            problems += e.problems
    if not problems and set(pins) != set(loaded.tasks):
        problems.append(f"{lock_path(loaded.path).name} pins other tasks than the lab selects: "
                        f"run `labctl lock {loaded.path}`")
    if problems:
        raise SealError(problems)
    return {"rules": None, "tasks": tasks}


def interleaved_order(mapping: Mapping, rng: secrets.SystemRandom) -> list[str]:
    """A dataset round's execution order: repeat by repeat, the tasks in a random order, and each
    task's runs (one per contestant) in a random order. So a contestant's runs are spread over the
    whole round, never one contestant's tasks in a block, and a task's image stays warm for its
    runs. Public (sealed.json): it follows from the public run → task map and a shuffle only."""
    by: dict[tuple[int, str], list[str]] = {}
    for rid, slot in mapping.items():
        by.setdefault((slot.repeat, slot.task or ""), []).append(rid)
    order: list[str] = []
    for repeat in sorted({k[0] for k in by}):
        tasks = sorted(t for r, t in by if r == repeat)
        rng.shuffle(tasks)
        for t in tasks:
            runs = sorted(by[(repeat, t)])
            rng.shuffle(runs)
            order += runs
    return order


def _seal(loaded: LoadedLab, lock: Lock, lock_file: Path, lock_bytes: bytes, rounds_dir: Path,
          rules: OutcomeRules | None, tasks: dict[str, SealedTask] | None,
          images: dict[str, str] | None = None) -> Sealed:
    lab, rnd = loaded.lab, loaded.lab.round
    rng = secrets.SystemRandom()
    names = sorted(tasks) if tasks is not None else None
    n = len(lab.contestants) * rnd.repeats * (len(names) if names else 1)
    run_ids = [f"{rnd.run_prefix}{rnd.first_number + i}" for i in range(n)]
    mapping = draw([c.id for c in lab.contestants], rnd.repeats, run_ids, rng, names)
    order = list(run_ids)
    if rnd.randomize_order:
        order = interleaved_order(mapping, rng) if names else rng.sample(order, len(order))
    run_tasks = {rid: s.task for rid, s in mapping.items() if s.task is not None} if names else None
    salt = secrets.token_bytes(SALT_BYTES)
    commitment = commitment_of(salt, mapping)

    rounds_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).replace(microsecond=0)
    while True:  # the 4 hex digits make a clash within one second unlikely, not impossible
        rid = round_id(lab.lab.name, now)
        final = rounds_dir / rid
        if not final.exists() and not envelope_path(rid).exists():
            break
    record = SealedRound(
        round=rid, lab=lab.lab.name, created=now, labctl_version=__version__,
        lock_sha256=lock.sha256(), lock_file_sha256=hashlib.sha256(lock_bytes).hexdigest(),
        task_tree_sha256=lock.task.tree_sha256, run_ids=run_ids, order=order, repeats=rnd.repeats,
        sealed=rnd.seal, mapping=None if rnd.seal else mapping, commitment=commitment,
        salt_bits=SALT_BYTES * 8, outcome_rules=rules, lab_dir=str(loaded.base_dir), tasks=tasks,
        run_tasks=run_tasks, images=images or {},
    )
    # Build the round beside its final place and rename it in, after the envelope exists: a round
    # directory is never visible without the envelope that can open it.
    tmp = rounds_dir / f".{rid}.tmp"
    tmp.mkdir()
    env_path: Path | None = None
    try:
        (tmp / LAB_FILE).write_bytes(loaded.path.read_bytes())
        (tmp / LOCK_FILE).write_bytes(lock_bytes)
        write_json(tmp / SEALED_FILE, record)
        write_manifest(tmp)
        env_path = _write_envelope(Envelope(round=rid, lab=lab.lab.name, lock_sha256=record.lock_sha256,
                                            salt=salt.hex(), mapping=mapping, commitment=commitment))
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if env_path is not None:
            env_path.unlink(missing_ok=True)
        raise
    assert env_path is not None
    return Sealed(record=record, round_dir=final, envelope=env_path)


# --- unseal --------------------------------------------------------------------------------------


def unfinished_runs(round_dir: Path, sealed: SealedRound) -> dict[str, str]:
    """{run id: why} for each run without a result.json in a finished status."""
    out: dict[str, str] = {}
    for rid in sealed.run_ids:
        if not result_path(round_dir, rid).exists():
            out[rid] = "no result.json"
            continue
        try:
            status = read_result(round_dir, rid).status
        except ValueError as e:
            out[rid] = f"unreadable result.json ({str(e).splitlines()[0]})"
            continue
        if status not in FINISHED:
            out[rid] = status
    return out


def check_envelope(env: Envelope, sealed: SealedRound) -> list[str]:
    """Every reason the envelope cannot be the one this round committed to."""
    problems = []
    if env.round != sealed.round:
        problems.append(f"envelope is for round {env.round}, not {sealed.round}")
    if env.lock_sha256 != sealed.lock_sha256:
        problems.append("envelope's lock_sha256 differs from sealed.json's")
    recomputed = commitment_of(bytes.fromhex(env.salt), env.mapping)
    if recomputed != sealed.commitment:
        problems.append(f"commitment mismatch: salt + mapping of the envelope give {recomputed[:16]}…, "
                        f"sealed.json committed to {sealed.commitment[:16]}… (envelope tampered or wrong)")
    if sorted(env.mapping) != sorted(sealed.run_ids):
        problems.append("envelope's mapping does not cover exactly the sealed run ids")
    if sealed.run_tasks is not None and {r: s.task for r, s in env.mapping.items()} != sealed.run_tasks:
        problems.append("envelope's tasks per run differ from sealed.json's run_tasks")
    if sealed.mapping is not None and sealed.mapping != env.mapping:
        problems.append("envelope's mapping differs from the open mapping in sealed.json")
    return problems


def unseal_round(round_dir: Path, *, force: bool = False) -> Unsealed:
    """Reveal: check the seal's files, the runs and the envelope; write unsealed.json and the
    manifest. Raises SealError naming every reason it refuses."""
    if (round_dir / UNSEALED_FILE).exists():
        raise SealError([f"{round_dir / UNSEALED_FILE} exists: the round is already unsealed "
                         f"(`labctl verify {round_dir}` re-checks it)"])
    try:
        sealed = read_sealed(round_dir)
    except (OSError, ValueError) as e:
        raise SealError([f"{round_dir / SEALED_FILE}: {str(e).splitlines()[0]}"]) from e
    problems = sealed_files_changed(round_dir)
    unfinished = unfinished_runs(round_dir, sealed)
    if unfinished and not force:
        problems += [f"{rid} not finished: {why}" for rid, why in unfinished.items()] + [
            "unseal waits for every run to be done, errored or killed (--force unseals anyway, recorded)"]
    try:
        env = load_envelope(sealed.round)
    except FileNotFoundError:
        problems.append(f"no envelope at {envelope_path(sealed.round)} (set {ENVELOPES_ENV} to where it is)")
    except ValueError as e:
        problems.append(f"{envelope_path(sealed.round)} is not an envelope: {str(e).splitlines()[0]}")
    else:
        problems += check_envelope(env, sealed)
    if problems:
        raise SealError(problems)
    unsealed = Unsealed(round=sealed.round, salt=env.salt, mapping=env.mapping,
                        commitment=commitment_of(bytes.fromhex(env.salt), env.mapping),
                        forced=bool(unfinished), unfinished=list(unfinished),
                        unsealed_at=datetime.now(UTC).replace(microsecond=0))
    write_json(round_dir / UNSEALED_FILE, unsealed)
    write_manifest(round_dir)
    return unsealed


def sealed_files_changed(round_dir: Path) -> list[str]:
    """lab.yaml, lab.lock and sealed.json must be what the seal wrote."""
    try:
        listed = read_manifest(round_dir)
    except (OSError, ValueError) as e:
        return [f"{round_dir / MANIFEST_FILE}: {str(e).splitlines()[0]}"]
    out = [f"{round_dir / name}: not in manifest.json" for name in IMMUTABLE if name not in listed]
    sealed_part = {name: listed[name] for name in IMMUTABLE if name in listed}
    out += [f"{round_dir / rel}: {what}; it is fixed by the seal"
            for rel, what in manifest_differences(round_dir, sealed_part) if rel in sealed_part]
    return out
