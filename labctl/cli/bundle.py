"""`labctl bundle` and `labctl unbundle`: share a lab or a finished round as one deterministic tar.

`labctl verify round.tar` (cmd_round) re-checks a round bundle offline; see labctl.round.share.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from labctl.cli.console import JsonOpt, emit, open_lab, out, refuse
from labctl.lock.lockfile import lock_path
from labctl.round.bundle import BundleError, index_problems, pack, unpack
from labctl.round.layout import SEALED_FILE
from labctl.round.share import lab_index, round_index
from labctl.spec.units import format_size

__all__ = ["bundle_command", "unbundle_command"]


def bundle_command(
    source: Annotated[Path, typer.Argument(help="A lab file, or a round directory (rounds/<round-id>).")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="The tar to write (default: "
                                                "<lab name>.tar or <round-id>.tar here).")] = None,
    lab: Annotated[Path | None, typer.Option("--lab", help="For a round: the lab file it was sealed from "
                                             "(default: the lab here with the round's bytes).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a lab (with its lock, task and local files) or a round (with the lab it ran) as one
    deterministic tar: the same inputs give the same bytes."""
    try:
        if source.is_dir() and (source / SEALED_FILE).is_file():
            index, sources, notes = round_index(source, lab)
            default = f"{index.round}.tar"
        elif source.is_dir():
            raise BundleError([f"{source} is a directory without {SEALED_FILE}: not a round"])
        else:
            loaded = open_lab(source, as_json=as_json)
            lock = lock_path(source)
            if not lock.is_file():
                raise BundleError([f"no {lock.name} next to {source}: run `labctl lock {source}` first"])
            index, sources, notes = lab_index(loaded, lock.read_bytes())
            default = f"{loaded.lab.lab.name}.tar"
        target = output or Path(default)
        sha = pack(target, index, sources)
    except BundleError as e:
        raise refuse(e.problems, as_json) from None
    size = target.stat().st_size
    if as_json:
        emit({"ok": True, "bundle": str(target), "kind": index.kind, "sha256": sha, "size": size,
              "lab": index.lab, "round": index.round, "files": len(index.files), "notes": notes})
        return
    for note in notes:
        out.print(f"[dim]· {escape(note)}[/]", highlight=False)
    out.print(f"[green]✓[/] {escape(str(target))}: {index.kind} bundle, {len(index.files)} files, "
              f"{format_size(size)}, sha256 {sha}", highlight=False)


def unbundle_command(
    bundle: Annotated[Path, typer.Argument(help="A bundle written by `labctl bundle`.")],
    dest: Annotated[Path, typer.Argument(help="A new (or empty) directory to unpack into.")],
    as_json: JsonOpt = False,
) -> None:
    """Unpack a bundle, refusing unsafe entries and any content that does not match its index."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise refuse([f"{dest} exists and is not an empty directory"], as_json)
    # Unpacked beside its destination and renamed in only when it checks out: a refused bundle
    # leaves nothing behind.
    tmp = dest.with_name(f".{dest.name}.unbundle")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        index = unpack(bundle, tmp)
        problems = [f"{bundle}:{rel}: {what}" for rel, what in index_problems(tmp, index)]
        if problems:
            raise BundleError([*problems, f"{bundle} does not match its own index: refused"])
        if dest.exists():
            dest.rmdir()
        tmp.rename(dest)
    except BundleError as e:
        raise refuse(e.problems, as_json) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lab = dest / index.lab
    if as_json:
        emit({"ok": True, "dir": str(dest), "kind": index.kind, "lab": str(lab), "round": index.round,
              "files": len(index.files)})
        return
    out.print(f"[green]✓[/] {escape(str(dest))}: {index.kind} bundle, {len(index.files)} files match "
              "its index", highlight=False)
    if index.kind == "lab":
        out.print(f"  next: labctl lock {escape(str(lab))} --offline", highlight=False)
    else:
        out.print(f"  round: {escape(str(dest / 'round' / str(index.round)))}; lab: {escape(str(lab))}",
                  highlight=False)
