"""`labctl lock`: write lab.lock, or check it (`--check`, online; `--offline`, local only)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from labctl.cli.console import DEFAULT_LAB, EXIT_FAIL, JsonOpt, LabArg, emit, err, fail, open_lab, out
from labctl.cli.store import StoreOpt
from labctl.gguf.store import Store, default_store_root
from labctl.lock.lockfile import Lock, lock_path, read_lock, write_lock
from labctl.lock.resolve import LockError, carry_build_facts, drift, resolve, verify_offline


def lock_command(
    lab: LabArg = DEFAULT_LAB,
    check: Annotated[bool, typer.Option("--check", help="Re-resolve; exit 1 on drift.")] = False,
    offline: Annotated[bool, typer.Option("--offline", help="Verify what needs no network.")] = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Resolve every moving reference to a content hash and write lab.lock next to the lab."""
    loaded = open_lab(lab, as_json=as_json)
    path = lock_path(lab)
    st = Store(store or default_store_root())
    existing = _existing(path, as_json) if (check or offline) else None
    if offline:
        assert existing is not None
        r = verify_offline(loaded, existing, st)
        if as_json:
            emit({"ok": not r.drifted, "verified": r.verified, "drifted": r.drifted,
                  "unchecked": r.unchecked})
        else:
            for e in r.verified:
                out.print(f"[green]✓[/] {e}", highlight=False)
            for e in r.unchecked:
                out.print(f"[dim]· {e}: not checked offline[/]", highlight=False)
            for e in r.drifted:
                err.print(f"[red]✗[/] {e}", highlight=False)
        if r.drifted:
            raise typer.Exit(EXIT_FAIL)
        return
    try:
        with err.status(f"resolving {lab} …") if not as_json else nullcontext():
            new = resolve(loaded, st, report=lambda e, w: None)
    except LockError as e:
        if as_json:
            emit({"ok": False, "errors": e.problems})
        for p in e.problems:
            err.print(f"error: {p}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAIL) from None
    if check:
        assert existing is not None
        changes = drift(existing, new)
        if as_json:
            emit({"ok": not changes, "drifted": changes})
        for c in changes:
            err.print(f"drifted: {c}", markup=False, highlight=False, soft_wrap=True)
        if changes:
            raise typer.Exit(EXIT_FAIL)
        if not as_json:
            out.print(f"[green]✓[/] {path} is current ({len(_entries(new))} entries)", highlight=False)
        return
    try:
        previous = read_lock(path) if path.exists() else None
    except ValueError:
        previous = None  # an unreadable old lock is simply replaced
    new = carry_build_facts(previous, new)
    changed = write_lock(path, new)
    if as_json:
        emit({"ok": True, "lock": str(path), "changed": changed, "sha256": new.sha256(),
              "entries": _entries(new)})
        return
    t = Table(title=f"{path} ({'written' if changed else 'unchanged'}) sha256 {new.sha256()[:12]}")
    t.add_column("entry", no_wrap=True)
    t.add_column("pinned to")
    for entry, pin in _entries(new).items():
        t.add_row(entry, pin)
    out.print(t)


def _existing(path: Path, as_json: bool) -> Lock:
    if not path.exists():
        raise fail(f"no {path.name} next to the lab: run `labctl lock` first", as_json)
    try:
        return read_lock(path)
    except Exception as e:
        raise fail(f"{path} is not a valid lock: {str(e).splitlines()[0]}", as_json) from None


def _entries(lock: Lock) -> dict[str, str]:
    """One short line per entry, for people."""
    src = lock.llama_cpp
    rows = {"llama_cpp": (f"{src.ref} → {src.commit}" if src.git else
                          f"{src.sdist} sha256:{src.sdist_sha256}" if src.sdist else
                          f"tree sha256:{src.tree_sha256}")}
    for ref, img in lock.images.items():
        via = f", via {img.mirror}" if img.mirror else ""
        rows[f"images.{ref}"] = f"{img.digest} ({img.source}{via})"
    for cid, m in lock.models.items():
        first = m.files[0]
        more = f" (+{len(m.files) - 1} shards)" if len(m.files) > 1 else ""
        rows[f"models.{cid}"] = f"{first.name} sha256:{first.sha256[:16]}… {first.size:,} B{more}"
    pins = {"agent": lock.agent} if lock.agent else {}
    pins.update({f"agents.{name}": a for name, a in (lock.agents or {}).items()})
    for entry, a in pins.items():
        tree = ""
        if a.wheels:
            tree = f" +{len(a.wheels)} wheels"
        elif a.npm_packages and a.node:
            tree = f" +{len(a.npm_packages) - 1} npm packages, node {a.node.version}"
        head = f"{a.name}=={a.version} {a.filename or ''} {a.sha256 or a.integrity or ''}".strip()
        rows[entry] = head + tree
    rows["task"] = f"{lock.task.path} tree sha256:{lock.task.tree_sha256[:16]}…"
    return rows
