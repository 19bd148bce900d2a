"""`labctl seal`, `labctl unseal`, `labctl verify`: the commit–reveal life of a round.

Seal prints only what is public (round id, run ids, order, commitment); the envelope's contents are
never printed. Unseal prints the mapping. Verify lists every problem as `path: what` and exits 1.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from labctl.cli.console import (
    DEFAULT_LAB,
    EXIT_FAIL,
    JsonOpt,
    LabArg,
    RoundArg,
    emit,
    err,
    fail,
    open_lab,
    out,
    refuse,
)
from labctl.errors import LabctlError
from labctl.images.specs import image_tags
from labctl.lock.resolve import require_lock
from labctl.round.harvest import harvest_first_prompts
from labctl.round.layout import Mapping
from labctl.round.seal import run_label, seal_round, unseal_round
from labctl.round.verify import verify_round

RoundsDirOpt = Annotated[Path, typer.Option("--rounds-dir", help="Where round directories are created.")]


def seal_command(lab: LabArg = DEFAULT_LAB, rounds_dir: RoundsDirOpt = Path("rounds"),
                 as_json: JsonOpt = False) -> None:
    """Shuffle contestants onto run ids and commit to the mapping: creates rounds/<round-id>/."""
    loaded = open_lab(lab, as_json=as_json)
    try:
        lock = require_lock(loaded)
        made = seal_round(loaded, lock, rounds_dir, image_tags(loaded, lock))
    except LabctlError as e:
        raise refuse(e.problems, as_json) from None
    except OSError as e:
        raise fail(f"cannot create the round: {e}", as_json) from None
    r, where = made.record, escape(str(made.round_dir))
    if as_json:
        data = {"ok": True, "round": r.round, "round_dir": str(made.round_dir), "run_ids": r.run_ids,
                "order": r.order, "commitment": r.commitment, "scheme": r.scheme, "sealed": r.sealed,
                "lock_sha256": r.lock_sha256}
        if r.mapping is not None:
            data["mapping"] = {k: s.model_dump() for k, s in r.mapping.items()}
        if r.run_tasks is not None:
            data["run_tasks"] = r.run_tasks
        emit(data)
        return
    out.print(f"[green]✓[/] sealed round [bold]{r.round}[/] in {where}", highlight=False)
    out.print(f"  runs:       {' '.join(run_label(x) for x in r.run_ids)}", highlight=False)
    out.print(f"  order:      {' '.join(run_label(x) for x in r.order)}", highlight=False)
    if r.tasks is not None:
        names = ", ".join(sorted(r.tasks))
        out.print(f"  tasks:      {len(r.tasks)} ({names}), interleaved", highlight=False)
    out.print(f"  commitment: {r.commitment}  ({r.scheme})", highlight=False)
    if r.mapping is not None:
        out.print("[yellow]round.seal is false:[/] the mapping is open in sealed.json", highlight=False)
        _mapping_table(r.mapping)
    else:
        out.print(f"  publish the commitment now; `labctl unseal {where}` reveals it after the runs",
                  highlight=False)


def unseal_command(
    round_dir: RoundArg,
    force: Annotated[bool, typer.Option("--force", help="Unseal before every run finished (recorded).")]
    = False,
    as_json: JsonOpt = False,
) -> None:
    """Reveal salt and mapping once every run finished; checks the envelope against the commitment."""
    try:
        u = unseal_round(round_dir, force=force)
    except LabctlError as e:
        raise refuse(e.problems, as_json) from None
    harvest_first_prompts(round_dir)  # each runtime's first request, for `plan`'s fit warning
    if as_json:
        emit({"ok": True, "round": u.round, "commitment": u.commitment, "forced": u.forced,
              "unfinished": u.unfinished, "mapping": {k: s.model_dump() for k, s in u.mapping.items()}})
        return
    out.print(f"[green]✓[/] unsealed [bold]{u.round}[/]: salt + mapping reproduce commitment "
              f"{u.commitment[:16]}…", highlight=False)
    if u.forced:
        out.print(f"[yellow]forced:[/] unfinished runs {', '.join(u.unfinished)} (recorded in unsealed.json)",
                  highlight=False)
    _mapping_table(u.mapping)


def _natural(run_id: str) -> list[int | str]:
    """`run-9` before `run-10` (JSON's sorted keys put them the other way round)."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", run_id)]


def _mapping_table(mapping: Mapping) -> None:
    t = Table(title="Run → contestant")
    t.add_column("run", no_wrap=True)
    t.add_column("contestant")
    t.add_column("repeat", justify="right")
    tasks = any(s.task for s in mapping.values())
    if tasks:
        t.add_column("task")
    for rid, slot in sorted(mapping.items(), key=lambda kv: _natural(kv[0])):
        t.add_row(rid, slot.contestant, str(slot.repeat), *([slot.task or ""] if tasks else []))
    out.print(t)


def verify_command(round_dir: RoundArg, digest: Annotated[str | None, typer.Option(
                       "--digest", metavar="SHA256", help="The round's published digest (the sha256 "
                       "of manifest.json that verify prints): the round must be that one")] = None,
                   as_json: JsonOpt = False) -> None:
    """Re-check a round (a directory, or a bundle from `labctl bundle ROUND`): file hashes, the seal,
    the lock and every run's grade; exit 1 on a problem. Prints the round's digest, to publish."""
    if round_dir.is_file():  # a round bundle: unpacked safely, then the same checks (labctl.round.share)
        from labctl.round.share import verify_bundle

        v = verify_bundle(round_dir, digest)
    else:
        v = verify_round(round_dir, digest)
    if as_json:
        emit({"ok": v.ok, "round_dir": str(round_dir), "checked": v.checked, "notes": v.notes,
              "digest": v.digest and f"sha256:{v.digest}",
              "problems": [{"where": p.where, "what": p.what, "run": p.run} for p in v.problems]})
    else:
        for note in v.notes:
            out.print(f"[dim]· {escape(note)}[/]", highlight=False)
        for p in v.problems:
            err.print(f"[red]✗[/] {escape(str(p))}", highlight=False)
        if v.ok:
            c = v.checked
            out.print(f"[green]✓[/] {escape(str(round_dir))}: {c.get('files', 0)} files, "
                      f"{'seal' if c.get('seal') else 'seal not yet revealed'}, lock, "
                      f"{c.get('runs', 0)} graded runs check out; digest sha256:{v.digest}", highlight=False)
        else:
            err.print(f"{len(v.problems)} problem(s) in {round_dir}", markup=False, highlight=False)
    if not v.ok:
        raise typer.Exit(EXIT_FAIL)
