"""What a shared lab and a shared round hold (`labctl bundle`), and how anyone re-checks a round
bundle offline (`labctl verify round.tar`).

A lab bundle holds the lab file, its lock, the task tree and every local file the lab names (a
local GGUF and its shards, a local llama.cpp tree, a relative CA bundle, the hardware profile when
it comes from a file), each at the place the lab's relative paths give it, so the unpacked lab
loads and `labctl lock --offline` passes there. Model blobs from the Hub and generated models are
not carried: the lock pins them by sha256 and `labctl fetch` brings them. A bundle is refused when
the lock does not match what it would carry (a stale lock shared is a lie).

A round bundle holds `round/<round-id>/` (every file of the round directory) and `lab/` (the lab
bundle of the lab the round ran: the round's own lab.yaml and lab.lock copies, the task tree the
lock pins). The round directory alone cannot locate its task (the lab's task path is relative to
where the lab file was), so `labctl bundle ROUND` finds the lab file whose bytes equal the round's
lab.yaml (`--lab`, else in the working directory), and refuses when its task no longer has the
round's tree hash.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path, PurePosixPath

from labctl.lock.gitref import gitignored
from labctl.lock.hub import shard_names
from labctl.lock.lockfile import Lock, lock_path
from labctl.lock.resolve import spec_sha256
from labctl.round.bundle import (
    INDEX,
    BundleError,
    Index,
    IndexEntry,
    Source,
    entry_of,
    hash_sources,
    index_problems,
    read_index,
    unpack,
)
from labctl.round.layout import LAB_FILE, LOCK_FILE, RUNS_DIR, read_sealed
from labctl.round.verify import Problem, Verification, verify_round
from labctl.spec.dataset import find_tasks
from labctl.spec.lab import LocalContestant
from labctl.spec.load import LoadedLab, load_lab
from labctl.spec.located import SpecError
from labctl.spec.task import read_task
from labctl.treehash import Ignore, tree_entries, tree_sha256

LAB_PART = "lab"
"""Where a round bundle keeps the lab bundle of the lab the round ran."""
ROUND_PART = "round"
"""Where a round bundle keeps the round directory (`round/<round-id>/`)."""


# --- a lab ---------------------------------------------------------------------------------------


class _Placer:
    """Bundle positions of the lab's relative paths, computed lexically from the lab file's place:
    the lab directory keeps as many of its own trailing names as the deepest `..` climbs, so
    `labs/x.yaml` naming `../tasks/t` becomes `labs/x.yaml` and `tasks/t`."""

    def __init__(self, loaded: LoadedLab, named: list[tuple[tuple[str | int, ...], Path]]) -> None:
        problems = [str(loaded.doc.issue(loc, f"{p} is absolute: a bundle carries only paths relative "
                                              "to the lab file"))
                    for loc, p in named if p.is_absolute()]
        if problems:
            raise BundleError(problems)
        climbs = [self._climb(p) for _, p in named]
        names = loaded.base_dir.parts[1:]
        depth = max(climbs, default=0)
        if depth > len(names):
            raise BundleError([f"{loaded.path}: its paths climb above the file system root"])
        self.lab_dir = PurePosixPath(*names[len(names) - depth:]) if depth else PurePosixPath()

    @staticmethod
    def _climb(p: Path) -> int:
        depth = lowest = 0
        for part in p.as_posix().split("/"):
            depth += -1 if part == ".." else 0 if part in ("", ".") else 1
            lowest = min(lowest, depth)
        return -lowest

    def place(self, rel: Path | str) -> str:
        return os.path.normpath((self.lab_dir / PurePosixPath(rel)).as_posix())


def lab_sources(loaded: LoadedLab, lock_bytes: bytes) -> tuple[str, dict[str, Source], list[str]]:
    """(the lab file's path in the bundle, every entry, notes on what is not carried and why)."""
    lab = loaded.lab
    notes: list[str] = []
    ref = lab.task
    named: list[tuple[tuple[str | int, ...], Path]] = [  # as written: an absolute one is refused
        (("task", k), Path(v)) for k in ("path", "dataset", "glob") if (v := getattr(ref, k)) is not None]
    named += [(("task", "paths", i), p) for i, p in enumerate(ref.paths or [])]
    trees: list[tuple[Path, Path, Ignore | None]] = []
    files: list[tuple[Path, Path]] = []
    # A dataset carries every task it could select (before `select`), so a seeded sample or a tag
    # filter picks the same tasks from the bundle as from the original.
    candidates = (find_tasks(lab.task.model_copy(update={"select": None}), loaded.base_dir).tasks
                  if lab.task.is_dataset else loaded.tasks)
    for task_dir in candidates.values():
        rel = Path(os.path.relpath(task_dir, loaded.base_dir))
        named.append((("task",), rel))
        trees.append((rel, task_dir, None))
        repo = read_task(task_dir).repository_dir
        if repo is not None and repo.is_dir() and not repo.resolve().is_relative_to(task_dir.resolve()):
            rel = Path(os.path.relpath(repo, loaded.base_dir))
            named.append((("task",), rel))
            trees.append((rel, repo, None))
    src = lab.engine.llama_cpp
    if src.path is not None:
        named.append((("engine", "llama_cpp", "path"), src.path))
        if not src.path.is_absolute():
            where = loaded.resolve(src.path)
            trees.append((src.path, where, gitignored(where)))  # what the lock's tree hash covers
    for i, c in enumerate(lab.contestants):
        if isinstance(c, LocalContestant) and c.model.path is not None:
            named.append((("contestants", i, "model", "path"), c.model.path))
            for shard in shard_names(c.model.path.name):
                rel = c.model.path.with_name(shard)
                files.append((rel, loaded.resolve(rel)))
    ca = lab.build.ca_bundle
    if ca is not None and ca.is_absolute():
        notes.append(f"build.ca_bundle {ca} is absolute (this machine's): not carried")
    elif ca is not None:
        named.append((("build", "ca_bundle"), ca))
        files.append((ca, loaded.resolve(ca)))
    placer = _Placer(loaded, named)

    lab_name = loaded.path.name
    sources: dict[str, Source] = {placer.place(lab_name): Source(path=loaded.path),
                                  placer.place(lock_path(Path(lab_name))): Source(data=lock_bytes)}
    for rel, where in files:
        if not where.is_file():
            raise BundleError([f"{where}: no such file (named by {loaded.path})"])
        sources[placer.place(rel)] = Source(path=where)
    for rel, where, ignore in trees:
        for name, _, _ in tree_entries(where, ignore=ignore):
            sub = os.fsdecode(name)
            sources[placer.place(Path(rel, sub))] = Source(path=where / sub)
    if loaded.profile_source not in ("builtin", "inline"):  # a profile file: next to the lab, found first
        profile = Path(loaded.profile_source)
        sources[placer.place(Path("profiles", profile.name))] = Source(path=profile)
    return placer.place(lab_name), sources, notes


def lab_problems(loaded: LoadedLab, lock: Lock, entries: dict[str, IndexEntry] | None = None,
                 lab_at: str = "") -> list[str]:
    """What in the lab does not match its lock, checked without a network: the spec hash, the task
    tree, a local llama.cpp tree, local model files (by `entries`, an index already hashed, when
    given, else from disk)."""
    problems: list[str] = []
    if lock.spec_sha256 != spec_sha256(loaded):
        problems.append(f"{loaded.path}: changed since its lock was written (spec sha256): "
                        f"run `labctl lock {loaded.path}`")
    if lock.lab != loaded.lab.lab.name:
        problems.append(f"lock is for lab {lock.lab!r}, the lab file names {loaded.lab.lab.name!r}")
    tree = loaded.tree_sha256()
    if tree != lock.task.tree_sha256:
        where = loaded.task_dir if not loaded.is_dataset else loaded.path
        problems.append(f"{where}: task tree sha256 {tree[:12]}… differs from the lock's "
                        f"{lock.task.tree_sha256[:12]}…")
    src = loaded.lab.engine.llama_cpp
    if src.path is not None:
        where = loaded.resolve(src.path)
        tree = tree_sha256(where, ignore=gitignored(where))
        if tree != lock.llama_cpp.tree_sha256:
            problems.append(f"{where}: llama.cpp tree sha256 {tree[:12]}… differs from the lock")
    for c in loaded.lab.contestants:
        if not (isinstance(c, LocalContestant) and c.model.path is not None):
            continue
        model = lock.models.get(c.id)
        if model is None:
            problems.append(f"models.{c.id}: not in the lock")
            continue
        for f in model.files:
            rel = c.model.path.with_name(f.name)
            key = os.path.normpath(PurePosixPath(lab_at).parent.joinpath(rel.as_posix()).as_posix())
            got = entries.get(key) if entries is not None else None
            if got is None:
                path = loaded.resolve(rel)
                got = entry_of(path) if path.is_file() else None
            if got is None or (got.sha256, got.size) != (f.sha256, f.size):
                problems.append(f"models.{c.id}: {rel} does not have the locked sha256 {f.sha256[:12]}…")
    return problems


def lab_index(loaded: LoadedLab, lock_bytes: bytes) -> tuple[Index, dict[str, Source], list[str]]:
    """The lab bundle's index (hashed) and entries, refused when the lock does not fit the lab."""
    try:
        lock = Lock.model_validate_json(lock_bytes)
    except ValueError as e:
        raise BundleError([f"{lock_path(loaded.path)}: not a valid lock: {str(e).splitlines()[0]}"]) from None
    at, sources, notes = lab_sources(loaded, lock_bytes)
    index = Index(kind="lab", lab=at, files=hash_sources(sources))
    problems = lab_problems(loaded, lock, index.files, at)
    if problems:
        raise BundleError(problems)
    return index, sources, notes


# --- a round -------------------------------------------------------------------------------------


def find_round_lab(round_dir: Path, given: Path | None) -> Path:
    """The lab file the round ran: `given`, or a lab in the working directory (or the round's
    rounds/ parent) whose bytes equal the round's lab.yaml."""
    want = (round_dir / LAB_FILE).read_bytes()
    if given is not None:
        if not given.is_file() or given.read_bytes() != want:
            raise BundleError([f"{given} is not the lab this round ran (its bytes differ from "
                               f"{round_dir / LAB_FILE})"])
        return given
    seen: list[Path] = []
    for base in dict.fromkeys([Path.cwd(), round_dir.resolve().parent.parent]):
        for pattern in ("*.yaml", "labs/*.yaml"):
            for candidate in sorted(base.glob(pattern)):
                seen.append(candidate)
                if candidate.is_file() and candidate.read_bytes() == want:
                    return candidate
    raise BundleError([f"no lab file with the bytes of {round_dir / LAB_FILE} among {len(seen)} in the "
                       "working directory: pass --lab PATH (the lab file the round was sealed from)"])


def round_index(round_dir: Path, lab: Path | None) -> tuple[Index, dict[str, Source], list[str]]:
    """A round bundle's index and entries: the round directory plus the lab bundle it ran."""
    try:
        sealed = read_sealed(round_dir)
    except (OSError, ValueError) as e:
        raise BundleError([f"{round_dir}: not a round directory ({str(e).splitlines()[0]})"]) from None
    if round_dir.name != sealed.round:
        raise BundleError([f"{round_dir}: the directory name differs from its round id {sealed.round}"])
    lab_file = find_round_lab(round_dir, lab)
    try:
        loaded = load_lab(lab_file)
    except SpecError as e:
        raise BundleError([str(i) for i in e.issues]) from None
    try:
        lab_idx, lab_src, notes = lab_index(loaded, (round_dir / LOCK_FILE).read_bytes())
    except BundleError as e:
        raise BundleError([f"the lab as this round ran it: {p}" for p in e.problems]) from None
    sources = {f"{LAB_PART}/{k}": v for k, v in lab_src.items()}
    sources[f"{LAB_PART}/{INDEX}"] = Source(data=lab_idx.text())
    prefix = f"{ROUND_PART}/{sealed.round}"
    for top, dirs, names in os.walk(round_dir):
        dirs.sort()
        for name in sorted(names) + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            path = Path(top) / name
            sources[f"{prefix}/{path.relative_to(round_dir).as_posix()}"] = Source(path=path)
    index = Index(kind="round", lab=f"{LAB_PART}/{lab_idx.lab}", round=sealed.round,
                  files=hash_sources(sources))
    return index, sources, notes


# --- verifying a round bundle --------------------------------------------------------------------


def verify_bundle(bundle: Path, digest: str | None = None) -> Verification:
    """`labctl verify round.tar`: unpack it safely into a temporary directory, then every check of
    `verify_round` on the round, the bundle's index, and the lab against the round's lock.
    Needs no labctl state (no store, no envelope, no config) and no network."""
    v = Verification(bundle)
    with tempfile.TemporaryDirectory(prefix="labctl-verify-") as tmp:
        root = Path(tmp) / "bundle"
        try:
            index = unpack(bundle, root)
        except BundleError as e:
            v.problems += [Problem(str(bundle), p) for p in e.problems]
            return v

        def add(rel: str, what: str) -> None:
            parts = rel.split("/")
            run = parts[3] if len(parts) > 4 and parts[0] == ROUND_PART and parts[2] == RUNS_DIR else None
            v.problems.append(Problem(f"{bundle}:{rel}", what, run))

        for rel, what in index_problems(root, index):
            add(rel, what)
        v.checked["bundle_files"] = len(index.files)
        if index.kind != "round" or index.round is None:
            add(INDEX, "a lab bundle, not a round bundle: `labctl unbundle` it")
            return v
        round_dir = root / ROUND_PART / index.round
        inner = verify_round(round_dir, digest)
        v.digest = inner.digest
        for p in inner.problems:
            where = Path(p.where)
            rel = where.relative_to(root).as_posix() if where.is_relative_to(root) else p.where
            v.problems.append(Problem(f"{bundle}:{rel}", p.what, p.run))
        v.notes += inner.notes
        v.checked.update(inner.checked)
        for rel, what in _lab_part_problems(root, index, round_dir):
            add(rel, what)
        v.checked["lab"] = True
    return v


def _lab_part_problems(root: Path, index: Index, round_dir: Path) -> list[tuple[str, str]]:
    """The lab bundle inside a round bundle: consistent with its own index, byte-identical to the
    round's lab.yaml and lab.lock, and matching that lock (spec hash, task tree, local files)."""
    lab_root = root / LAB_PART
    try:
        inner = read_index(lab_root)
    except BundleError as e:
        return [(f"{LAB_PART}/{INDEX}", e.problems[0])]
    out = [(f"{LAB_PART}/{rel}", what) for rel, what in index_problems(lab_root, inner)]
    lab_file = lab_root / inner.lab
    lock_file = lock_path(lab_file)
    for mine, theirs in ((lab_file, LAB_FILE), (lock_file, LOCK_FILE)):
        rel = mine.relative_to(root).as_posix()
        if not mine.is_file() or (round_dir / theirs).is_file() and \
                mine.read_bytes() != (round_dir / theirs).read_bytes():
            out.append((rel, f"differs from the round's {theirs}: not the lab the round ran"))
    try:
        lock = Lock.model_validate_json(lock_file.read_bytes())
        loaded = load_lab(lab_file)
    except (OSError, ValueError, SpecError) as e:
        return [*out, (lab_file.relative_to(root).as_posix(), f"does not load: {str(e).splitlines()[0]}")]
    return out + [(lab_file.relative_to(root).as_posix(), p) for p in lab_problems(loaded, lock)]


__all__ = ["LAB_PART", "ROUND_PART", "find_round_lab", "lab_index", "lab_problems", "lab_sources",
           "round_index", "verify_bundle"]
