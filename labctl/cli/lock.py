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
from labctl.lock.entries import lock_entries
from labctl.lock.lockfile import Lock, LockFileError, lock_path, read_lock, write_lock
from labctl.lock.resolve import LockError, carry_build_facts, drift, resolve, verify_offline


def lock_command(
    lab: LabArg = DEFAULT_LAB,
    check: Annotated[bool, typer.Option("--check", help="Re-resolve; exit 1 on drift.")] = False,
    offline: Annotated[bool, typer.Option("--offline", help="Verify what needs no network.")] = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Resolve every moving reference to a content hash and write lab.lock next to the lab."""
    from labctl.cli.task import warn_tasks

    loaded = open_lab(lab, as_json=as_json)
    warn_tasks(loaded.tasks.values())
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
            out.print(f"[green]✓[/] {path} is current ({len(lock_entries(new))} entries)", highlight=False)
        return
    try:
        previous = read_lock(path) if path.exists() else None
    except LockFileError:
        previous = None  # an unreadable old lock is simply replaced
    new = carry_build_facts(previous, new)
    changed = write_lock(path, new)
    notes = template_notes(new)
    if as_json:
        emit({"ok": True, "lock": str(path), "changed": changed, "sha256": new.sha256(),
              "entries": lock_entries(new), "notes": notes})
        return
    t = Table(title=f"{path} ({'written' if changed else 'unchanged'}) sha256 {new.sha256()[:12]}")
    t.add_column("entry", no_wrap=True)
    t.add_column("pinned to")
    for entry, pin in lock_entries(new).items():
        t.add_row(entry, pin)
    out.print(t)
    for note in notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False)


def template_notes(lock: Lock) -> list[str]:
    """A note for each locked GGUF whose chat template (read from its cached header) renders no tools: a
    warning, never a refusal (a round may mean to show exactly that model failing)."""
    from labctl.gguf import headers
    from labctl.gguf.read import GGUFError, parse_header
    from labctl.gguf.template import chat_template, template_note

    notes = []
    for cid, model in lock.models.items():
        sha = model.files[0].header_sha256 if model.files else None
        raw = headers.get(sha) if sha else None
        if raw is None:
            continue
        try:
            note = template_note(chat_template(parse_header(raw)))
        except GGUFError:
            continue
        if note:
            notes.append(f"contestant {cid}: {note}")
    return notes


def _existing(path: Path, as_json: bool) -> Lock:
    if not path.exists():
        raise fail(f"no {path.name} next to the lab: run `labctl lock` first", as_json)
    try:
        return read_lock(path)
    except LockFileError as e:
        raise fail(f"{path} is not a valid lock: {str(e).splitlines()[0]}", as_json) from None
