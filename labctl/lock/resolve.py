"""`labctl lock`: resolve every moving reference of a lab to a content hash and write `lab.lock`.

lab.yaml stays the human's file; the lock is separate and fully determined by what upstream
serves, so locking twice with nothing moved gives the same bytes. `--check` re-resolves and names
every entry that drifted; `--offline` re-verifies what can be verified without a network.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labctl.errors import LabctlError
from labctl.gguf.meta import GGUFMeta
from labctl.lock.gitref import lock_path_source, resolve_git
from labctl.lock.lockfile import (
    ImageLock,
    Lock,
    ModelLock,
    PackageLock,
    SourceLock,
    TaskLock,
    lock_path,
    read_lock,
)
from labctl.spec.dataset import dataset_label
from labctl.spec.lab import AgentRuntime, CloudContestant, Lab, LocalContestant
from labctl.spec.load import LoadedLab
from labctl.spec.price import Price
from labctl.treehash import tree_sha256

if TYPE_CHECKING:
    from labctl.gguf.store import Store

# The resolvers (huggingface_hub, httpx, the Docker client) are imported where they are used:
# `require_lock` runs on every command that needs a lock, and must stay cheap.

Report = Callable[[str, str], None]
"""Progress callback: (entry, what happened)."""


class LockError(LabctlError):
    """Locking failed, or the lock does not match the lab; one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def spec_sha256(loaded: LoadedLab) -> str:
    """Hash of the parts of lab.yaml the lock pins, so a stale lock is noticed before a run."""
    lab = loaded.lab
    pinned = {
        "engine": lab.engine.model_dump(mode="json"),
        "models": {c.id: c.model.model_dump(mode="json", exclude={"declared"})
                   for c in lab.contestants if isinstance(c, LocalContestant)},
        "agent": lab.agent.model_dump(mode="json", include={"runtime", "version"}) if lab.agent else None,
        "task": str(lab.task.path) if not lab.task.is_dataset else lab.task.model_dump(mode="json",
                                                                                          exclude_none=True),
    }
    if prices := declared_prices(lab):  # only when declared, so the locks of unpriced labs keep their hash
        pinned["prices"] = {cid: p.model_dump(mode="json") for cid, p in prices.items()}
    own = contestant_agents(loaded)
    if own:  # only when used, so the locks of labs without them keep their hash
        pinned["agents"] = {name: a.model_dump(mode="json", include={"runtime", "version"})
                            for name, a in sorted(own.items())}
    return hashlib.sha256(json.dumps(pinned, sort_keys=True).encode()).hexdigest()


def declared_prices(lab: Lab) -> dict[str, Price]:
    """The cloud contestants' declared prices, by contestant id (unpriced ones left out)."""
    return {c.id: c.price for c in lab.contestants if isinstance(c, CloudContestant) and c.price}


def contestant_agents(loaded: LoadedLab) -> dict[str, AgentRuntime]:
    """Runtimes only contestants name (not the lab's own `agent`), by name."""
    lab = loaded.lab
    return {name: a for name, a in lab.agents().items() if lab.agent is None or name != lab.agent.runtime}


def _noop(entry: str, what: str) -> None:
    pass


def resolve(loaded: LoadedLab, store: Store, report: Report = _noop) -> Lock:
    """Resolve every entry (network: git, registries, the Hub); raises LockError listing failures."""
    from labctl.lock.hub import lock_model
    from labctl.lock.packages import resolve_package
    from labctl.lock.registry import image_references

    lab = loaded.lab
    problems: list[str] = []

    def attempt(entry: str, fn: Callable[[], Any]) -> Any:
        try:
            value = fn()
            report(entry, "resolved")
            return value
        except Exception as e:  # every resolver raises a one-line error of its own kind
            problems.append(f"{entry}: {e}")
            report(entry, "failed")
            return None

    source = attempt("llama_cpp", lambda: _source(loaded))
    images: dict[str, ImageLock] = {}
    mirrors = {**lab.build.image_mirrors, **loaded.profile.image_mirrors}
    for ref in attempt("images", lambda: image_references(loaded)) or []:
        pinned = attempt(f"images.{ref}", partial(_image, ref, mirrors))
        if pinned is not None:
            images[ref] = pinned
    models: dict[str, ModelLock] = {}
    for c in lab.contestants:
        if isinstance(c, LocalContestant):
            m = attempt(f"models.{c.id}", partial(lock_model, c, base_dir=loaded.base_dir, store=store))
            if m is not None:
                problems += _declared_mismatch(c, m)
                models[c.id] = m
    agent = None
    if lab.agent is not None:
        resolved = attempt("agent", partial(resolve_package, lab.agent.runtime, lab.agent.version))
        if resolved is not None:
            from labctl.lock.runtime import pin_tree

            agent = attempt("agent.tree", lambda: pin_tree(resolved.lock.model_copy(
                update={"integrity": resolved.integrity})))
    agents: dict[str, PackageLock] = {}
    for name, a in sorted(contestant_agents(loaded).items()):
        got = attempt(f"agents.{name}", partial(_pin_runtime, a.runtime, a.version))
        if got is not None:
            agents[name] = got
    task = attempt("task", lambda: TaskLock(path=dataset_label(lab.task), tree_sha256=loaded.tree_sha256()))
    if problems or source is None or task is None:
        raise LockError(problems)
    return Lock(lab=lab.lab.name, spec_sha256=spec_sha256(loaded), llama_cpp=source, images=images,
                models=models, agent=agent, agents=agents or None, task=task, tasks=task_locks(loaded),
                prices=declared_prices(lab) or None)


def _pin_runtime(runtime: str, version: str) -> PackageLock:
    from labctl.lock.packages import resolve_package
    from labctl.lock.runtime import pin_tree

    resolved = resolve_package(runtime, version)
    return pin_tree(resolved.lock.model_copy(update={"integrity": resolved.integrity}))


def task_locks(loaded: LoadedLab) -> dict[str, TaskLock] | None:
    """A dataset's per-task pins (None for a one-task lab)."""
    if not loaded.is_dataset:
        return None
    return {name: TaskLock(path=_relative(d, loaded.base_dir), tree_sha256=tree_sha256(d))
            for name, d in loaded.tasks.items()}


def _relative(d: Path, base: Path) -> str:
    """A task's path as the lock records it: relative to the lab's directory when below it."""
    try:
        return os.path.relpath(d.resolve(), base.resolve())
    except ValueError:
        return str(d)


def _source(loaded: LoadedLab) -> SourceLock:
    src = loaded.lab.engine.llama_cpp
    if src.git is not None:
        assert src.ref is not None
        return SourceLock(git=src.git, ref=src.ref, commit=resolve_git(src.git, src.ref))
    if src.path is not None:
        tree, commit, dirty = lock_path_source(loaded.resolve(src.path))
        return SourceLock(path=str(src.path), tree_sha256=tree, commit=commit, dirty=dirty or None)
    assert src.sdist is not None
    from labctl.lock.packages import resolve_pypi

    name, version = src.sdist.split("==")
    r = resolve_pypi(name, version, sdist=True)
    return SourceLock(sdist=src.sdist, sdist_file=r.lock.filename, sdist_sha256=r.lock.sha256,
                      subdir=src.subdir)


def _image(ref: str, mirrors: dict[str, str]) -> ImageLock:
    """An image built or imported here (no registry digest) is pinned locally without asking a
    registry; anything else is pinned by its registry's manifest digest. Both go through the mirror
    map: what is looked up is the image the build will use (`labctl.lock.mirrors`)."""
    from python_on_whales import DockerClient, DockerException

    from labctl.lock.mirrors import mirror_target
    from labctl.lock.registry import local_image_id, resolve_image

    docker = DockerClient()
    target = mirror_target(ref, mirrors)
    name = target or ref
    try:
        if docker.image.exists(name) and not docker.image.inspect(name).repo_digests:
            local = local_image_id(name, docker)
            if local:
                return ImageLock(digest=local, source="local", mirror=target)
    except DockerException:
        pass  # no engine here: the registry decides
    return resolve_image(ref, docker=docker, mirrors=mirrors)


DECLARED_SKIP = {"source", "file_size"}


def _declared_mismatch(c: LocalContestant, m: ModelLock) -> list[str]:
    """Declared numbers (from a model card) must agree with the real header."""
    declared = c.model.declared
    if declared is None or m.gguf is None:
        return []
    out: list[str] = []
    header = m.gguf.model_dump()
    for name in sorted(declared.model_fields_set - DECLARED_SKIP):
        want, got = getattr(declared, name), header.get(name)
        if name in GGUFMeta.model_fields and _norm(want) != _norm(got):
            out.append(f"models.{c.id}: declared {name} = {want!r}, but the GGUF header says {got!r}")
    if declared.file_size is not None:
        size = sum(f.size for f in m.files)
        if abs(size - declared.file_size) > 0.01 * size:  # a card's "17.7 GB" is rounded
            out.append(f"models.{c.id}: declared file_size = {declared.file_size:,} B, "
                       f"but the files have {size:,} B")
    return out


def _norm(v: Any) -> Any:
    """A per-layer list whose values are all equal means the same as the scalar."""
    if isinstance(v, list) and v and all(x == v[0] for x in v) and not isinstance(v[0], bool):
        return v[0]
    return v.model_dump() if hasattr(v, "model_dump") else v


# --- check and offline verification --------------------------------------------------------------


BUILD_FACTS = {"llama_cpp.version"}
"""Written into the lock by `labctl build` (what the built server reports), not resolved upstream."""


def carry_build_facts(old: Lock | None, new: Lock) -> Lock:
    """Keep what `labctl build` recorded when the source it describes is still the same."""
    if old is None or old.llama_cpp.version is None:
        return new
    same = old.llama_cpp.model_copy(update={"version": None}) == new.llama_cpp
    if not same:
        return new
    source = new.llama_cpp.model_copy(update={"version": old.llama_cpp.version})
    return new.model_copy(update={"llama_cpp": source})


def drift(old: Lock, new: Lock) -> list[str]:
    """Every entry whose resolved value differs, as `entry: field was X, now Y`."""
    a, b = _flat(old.model_dump(mode="json", exclude_none=True)), _flat(new.model_dump(mode="json",
                                                                                        exclude_none=True))
    out = []
    for key in sorted((set(a) | set(b)) - BUILD_FACTS):
        if a.get(key) != b.get(key):
            out.append(f"{key}: was {_short(a.get(key))}, now {_short(b.get(key))}")
    return out


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(d, list) and d and isinstance(d[0], dict):
        out = {}
        for i, v in enumerate(d):
            out.update(_flat(v, f"{prefix}[{i}]"))
        return out
    return {prefix: d}


def _short(v: Any) -> str:
    if v is None:
        return "absent"
    text = json.dumps(v) if not isinstance(v, str) else v
    return text if len(text) <= 24 else text[:21] + "…"


@dataclass
class OfflineResult:
    verified: list[str] = field(default_factory=list)
    drifted: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    """Entries that need a network to re-check (git refs, registries, the Hub, package registries)."""


def verify_offline(loaded: LoadedLab, lock: Lock, store: Store) -> OfflineResult:
    """Re-derive what needs no network: the spec hash, the task tree, local and generated models,
    a local llama.cpp tree and locally built images."""
    from labctl.lock.hub import lock_model
    from labctl.lock.registry import local_image_id

    r = OfflineResult()

    def check(entry: str, ok: bool, detail: str) -> None:
        (r.verified if ok else r.drifted).append(entry if ok else f"{entry}: {detail}")

    check("lab", lock.spec_sha256 == spec_sha256(loaded), "lab.yaml changed since the lock was written")
    check("task", lock.task.tree_sha256 == loaded.tree_sha256(), "task directory content changed")
    for name, pinned in sorted((task_locks(loaded) or {}).items()):
        old_task = (lock.tasks or {}).get(name)
        check(f"tasks.{name}", old_task is not None and old_task.tree_sha256 == pinned.tree_sha256,
              "not in the lock" if old_task is None else "task directory content changed")
    src = loaded.lab.engine.llama_cpp
    if src.path is not None:
        tree = lock_path_source(loaded.resolve(src.path)).tree_sha256
        check("llama_cpp", tree == lock.llama_cpp.tree_sha256, "source tree changed")
    else:
        r.unchecked.append("llama_cpp")
    for ref, img in sorted(lock.images.items()):
        if img.source == "local":
            check(f"images.{ref}", local_image_id(img.mirror or ref) == img.digest,
                  f"local image id of {img.mirror or ref} differs")
        else:
            r.unchecked.append(f"images.{ref}")
    for c in loaded.lab.contestants:
        if not isinstance(c, LocalContestant):
            continue
        entry, old = f"models.{c.id}", lock.models.get(c.id)
        if old is None:
            r.drifted.append(f"{entry}: not in the lock")
        elif old.source == "hf":
            r.unchecked.append(entry)
        else:
            new = lock_model(c, base_dir=loaded.base_dir, store=store)
            bad = [f.name for f, g in zip(old.files, new.files, strict=False) if f.sha256 != g.sha256]
            check(entry, not bad and len(old.files) == len(new.files), f"sha256 changed for {', '.join(bad)}")
    for cid, price in sorted(declared_prices(loaded.lab).items()):
        check(f"prices.{cid}", (lock.prices or {}).get(cid) == price, "declared price changed")
    (r.unchecked if lock.agent else r.verified).append("agent")
    r.unchecked += [f"agents.{name}" for name in sorted(lock.agents or {})]
    return r


def require_lock(loaded: LoadedLab) -> Lock:
    """The lab's lock, or a clear refusal: no lock, an unreadable one, or one older than lab.yaml."""
    path = lock_path(loaded.path)
    if not path.exists():
        raise LockError([f"no {path.name} next to {loaded.path}: run `labctl lock {loaded.path}`"])
    try:
        lock = read_lock(path)
    except Exception as e:
        raise LockError([f"{path} is not a valid lock ({str(e).splitlines()[0]}): run `labctl lock`"]) from e
    if lock.spec_sha256 != spec_sha256(loaded):
        raise LockError([f"{loaded.path} changed since {path.name} was written: "
                         f"run `labctl lock {loaded.path}`"])
    return lock


__all__ = ["LockError", "OfflineResult", "carry_build_facts", "drift", "lock_path", "require_lock", "resolve",
           "declared_prices", "spec_sha256", "verify_offline"]
