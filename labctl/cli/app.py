"""The `labctl` command line. Each command is a thin layer over a module named after a lab noun."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from labctl import __version__
from labctl.cli.console import (
    DEFAULT_LAB,
    JsonOpt,
    LabArg,
    ProfileOpt,
    emit,
    err,
    fail_spec,
    open_lab,
    out,
)
from labctl.spec.located import SpecError
from labctl.spec.units import format_size

app = typer.Typer(
    help="Reproducible, blind showdowns of local GGUF and cloud models as coding agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
def _version(value: bool) -> None:
    if value:
        out.print(f"labctl {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """labctl: declarative, content-pinned, blind and isolated model showdowns."""


@app.command()
def validate(lab: LabArg = DEFAULT_LAB, profile: ProfileOpt = None, as_json: JsonOpt = False) -> None:
    """Check a lab file; errors name file:line:col and the field (exit 2)."""
    from labctl.cli.task import warn_tasks
    from labctl.spec.dataset import dataset_label

    loaded = open_lab(lab, profile, as_json)
    warnings = warn_tasks(loaded.tasks.values())
    kinds: dict[str, int] = {}
    for c in loaded.lab.contestants:
        kinds[c.kind] = kinds.get(c.kind, 0) + 1
    summary = {
        "ok": True,
        "lab": str(lab),
        "name": loaded.lab.lab.name,
        "profile": loaded.profile.name,
        "profile_source": loaded.profile_source,
        "contestants": [{"id": c.id, "kind": c.kind, "name": c.name} for c in loaded.lab.contestants],
        "task": dataset_label(loaded.lab.task),
        "tasks": sorted(loaded.tasks),
        "warnings": warnings,
    }
    if as_json:
        emit(summary)
        return
    counts = ", ".join(f"{n} {k}" for k, n in kinds.items())
    out.print(f"[green]✓[/] {lab}: lab [bold]{loaded.lab.lab.name}[/] is valid — "
              f"{len(loaded.lab.contestants)} contestants ({counts}), profile {loaded.profile.name}, "
              + (f"task {loaded.lab.task.path}" if not loaded.is_dataset else
                 f"{len(loaded.tasks)} tasks ({dataset_label(loaded.lab.task)})"), highlight=False)


@app.command()
def schema(
    write: Annotated[Path | None, typer.Option("--write", "-w", help="Also write the schema to this file.")]
    = None,
) -> None:
    """Print the JSON Schema of lab.yaml (editors use it through the file's modeline)."""
    from labctl.spec.schema import lab_schema_text

    text = lab_schema_text()
    if write is not None:
        write.write_text(text, encoding="utf-8")
        err.print(f"wrote {write}", highlight=False)
    else:
        sys.stdout.write(text)


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Where to create the lab.")] = Path("."),
    name: Annotated[str | None, typer.Option(help="Lab name (default: the directory's name).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Scaffold a commented lab.yaml, its schema and a Harbor task skeleton."""
    from labctl.spec.scaffold import ScaffoldError, scaffold

    try:
        written = scaffold(directory, name=name, force=force)
    except ScaffoldError as e:
        err.print(f"[red]error:[/] {e}", highlight=False)
        raise typer.Exit(1) from None
    if as_json:
        emit({"ok": True, "files": [str(p) for p in written]})
        return
    for p in written:
        out.print(f"  created {p}", highlight=False)
    out.print(f"Next: [bold]labctl validate {directory / 'lab.yaml'}[/]", highlight=False)


@app.command()
def profiles(
    lab: Annotated[Path | None, typer.Option("--lab", help="Also search profiles/ next to this lab.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List hardware profiles (built in and from the search path)."""
    from labctl.spec.profiles import all_profiles

    try:
        found = all_profiles(lab.resolve().parent if lab else None)
    except SpecError as e:
        raise fail_spec(e, as_json) from None
    if as_json:
        emit([{**f.profile.model_dump(), "compute_capability": f.profile.compute_capability,
               "total_vram": f.profile.total_vram, "source": f.source} for f in found.values()])
        return
    t = Table(title="Hardware profiles")
    for col in ("name", "GPU", "count", "VRAM / GPU", "CUDA arch", "host RAM", "reserve", "source"):
        t.add_column(col)
    for f in found.values():
        p = f.profile
        t.add_row(p.name, p.gpu or "—", str(p.gpu_count), format_size(p.vram_per_gpu) if p.is_gpu else "—",
                  f"{p.cuda_arch} ({p.compute_capability})" if p.cuda_arch else "—",
                  format_size(p.host_ram), format_size(p.vram_reserve) if p.vram_reserve else "—", f.source)
    out.print(t)


# The rest of the story lives in modules named after the lab's nouns; wired here in story order.
from labctl.cli.build import build_command, images_command  # noqa: E402
from labctl.cli.bundle import bundle_command, unbundle_command  # noqa: E402
from labctl.cli.compare import compare_command  # noqa: E402
from labctl.cli.export import export_command  # noqa: E402
from labctl.cli.lock import lock_command  # noqa: E402
from labctl.cli.meter import meter_command  # noqa: E402
from labctl.cli.model import model_app  # noqa: E402
from labctl.cli.plan import plan_command  # noqa: E402
from labctl.cli.report import report_command  # noqa: E402
from labctl.cli.round import round_command  # noqa: E402
from labctl.cli.run import down_command, run_command  # noqa: E402
from labctl.cli.seal import seal_command, unseal_command, verify_command  # noqa: E402
from labctl.cli.store import fetch_command, store_app  # noqa: E402
from labctl.cli.task import task_app  # noqa: E402
from labctl.cli.watch import nudge_command, stop_command, watch_command  # noqa: E402

app.command("lock")(lock_command)
app.command("fetch")(fetch_command)
app.command("plan")(plan_command)
app.command("build")(build_command)
app.command("images")(images_command)
app.command("seal")(seal_command)
app.command("run")(run_command)
app.command("watch")(watch_command)
app.command("nudge")(nudge_command)
app.command("stop")(stop_command)
app.command("unseal")(unseal_command)
app.command("verify")(verify_command)
app.command("report")(report_command)
app.command("compare")(compare_command)
app.command("export")(export_command)
app.command("round")(round_command)
app.command("down")(down_command)
app.command("bundle")(bundle_command)
app.command("unbundle")(unbundle_command)
app.command("meter")(meter_command)
app.add_typer(store_app, name="store")
app.add_typer(task_app, name="task")
app.add_typer(model_app, name="model")
