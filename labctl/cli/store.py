"""`labctl fetch` and `labctl store ls|verify|gc`: the model store from the command line.

Kept apart from the library (labctl.gguf.store, labctl.lock.fetch) so those stay usable without typer; the
lead registers `fetch_command` and `store_app` in labctl.cli.app. Every failure is one line on stderr
(and `{"ok": false, ...}` with `--json`), exit status 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from labctl.cli.console import DEFAULT_LAB, JsonOpt, LabArg, emit, err, fail, open_locked, out
from labctl.gguf.store import Store, StoreError
from labctl.lock.lockfile import Lock
from labctl.spec.units import format_size

if TYPE_CHECKING:
    from labctl.lock.fetch import FetchReport

__all__ = ["fetch_command", "store_app"]

StoreOpt = Annotated[
    Path | None,
    typer.Option("--store", help="Model store root (default: $LABCTL_STORE or ~/.cache/labctl/models).",
                 show_default=False),
]
JobsOpt = Annotated[int, typer.Option("--jobs", "-j", min=1, max=32, help="Files downloaded at once.")]

store_app = typer.Typer(help="The content-addressed model store: list, verify, clean up.",
                        no_args_is_help=True)


def _lock_of(lab: Path, as_json: bool) -> Lock:
    return open_locked(lab, as_json=as_json)[1]


def _print_report(report: FetchReport) -> None:
    t = Table(box=None, show_edge=False)
    for col in ("contestant", "file", "size", "status", "downloaded"):
        t.add_column(col, justify="right" if col in ("size", "downloaded") else "left")
    for f in report.files:
        t.add_row(f.contestant, f.name, format_size(f.size), f.status, format_size(f.downloaded))
    out.print(t)
    got = format_size(report.bytes_downloaded)
    out.print(f"{len(report.files)} file(s) ready in {report.store}; downloaded {got}", highlight=False)


def fetch_command(
    lab: LabArg = DEFAULT_LAB,
    jobs: JobsOpt = 3,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Download, generate or verify every model of the lab's lock into the store (hash-checked)."""
    from labctl.lock.fetch import FetchError, fetch  # huggingface_hub only when fetching

    loaded, lock = open_locked(lab, as_json=as_json)
    st = Store(store)
    try:
        report = fetch(lock, st, jobs=jobs, progress=not as_json and err.is_terminal,
                       base_dir=loaded.base_dir, console=err)
    except KeyboardInterrupt:
        err.print("interrupted: what each download received is kept in the store's partial/ directory; "
                  "`labctl fetch` resumes from there", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    except FetchError as e:
        if as_json:
            emit(e.report.as_dict())
        for line in e.errors:
            err.print(f"error: {line}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if as_json:
        emit(report.as_dict())
    else:
        _print_report(report)


@store_app.command("ls")
def ls_command(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """List blobs with their size and the links that name them."""
    st = Store(store)
    blobs = st.ls()
    if as_json:
        emit({"ok": True, "store": str(st.root), "total_bytes": sum(b.size for b in blobs),
              "blobs": [{"sha256": b.sha256, "size": b.size, "links": b.links} for b in blobs]})
        return
    t = Table(box=None, show_edge=False)
    t.add_column("sha256")
    t.add_column("size", justify="right")
    t.add_column("links")
    for b in blobs:
        t.add_row(b.sha256[:16], format_size(b.size), "\n".join(b.links) or "-")
    out.print(t)
    total = format_size(sum(b.size for b in blobs))
    out.print(f"{len(blobs)} blob(s), {total} in {st.root}", highlight=False)


@store_app.command("verify")
def store_verify_command(
    sha256: Annotated[str | None, typer.Argument(help="Only this blob (full sha256).")] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-hash blobs; a blob whose bytes changed is moved to quarantine (exit 1)."""
    st = Store(store)
    try:
        results = st.verify(sha256)
    except StoreError as e:
        raise fail(str(e), as_json) from None
    bad = [r for r in results if not r.ok]
    if as_json:
        emit({"ok": not bad, "store": str(st.root), "checked": len(results),
              "bad": [{"sha256": r.sha256, "actual": r.actual, "quarantined": str(r.quarantined)}
                      for r in bad]})
    else:
        for r in bad:
            err.print(f"error: blob sha256-{r.sha256} has sha256 {r.actual}; moved to {r.quarantined}",
                      markup=False, highlight=False, soft_wrap=True)
        good = len(results) - len(bad)
        out.print(f"{good} of {len(results)} blob(s) verified in {st.root}", highlight=False)
    if bad:
        raise typer.Exit(1)


@store_app.command("gc")
def gc_command(
    labs: Annotated[list[Path] | None, typer.Argument(help="Labs whose locked models to keep "
                                                           "(default: lab.yaml).")] = None,
    store: StoreOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would be removed.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove blobs that none of the given labs' locks reference, and dangling links."""
    st = Store(store)
    keep: set[str] = set()
    for lab in labs or [DEFAULT_LAB]:
        lock = _lock_of(lab, as_json)
        keep |= {f.sha256 for m in lock.models.values() for f in m.files}
    doomed = st.unreferenced(keep)
    freed = st.gc(keep, dry_run=dry_run)
    if as_json:
        emit({"ok": True, "store": str(st.root), "dry_run": dry_run, "freed_bytes": freed,
              "removed": [b.sha256 for b in doomed], "kept": len(keep)})
        return
    verb = "would remove" if dry_run else "removed"
    for b in doomed:
        out.print(f"{verb} sha256-{b.sha256} ({format_size(b.size)})", highlight=False)
    out.print(f"{verb} {len(doomed)} blob(s), {format_size(freed)} freed in {st.root}", highlight=False)
