"""`labctl build` and `labctl images`: build a lab's images by input hash, list what it needs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from labctl.cli.console import (
    DEFAULT_LAB,
    EXIT_FAIL,
    JsonOpt,
    LabArg,
    ProfileOpt,
    emit,
    err,
    fail,
    open_locked,
    out,
)
from labctl.engine.container import Engine, detect_engine
from labctl.errors import LabctlError
from labctl.images.build import ImageResult, build_all, image_status
from labctl.images.model import CA_BUNDLE_ENV, ImageSpec
from labctl.images.specs import lab_images, settings_for
from labctl.lock.lockfile import Lock, lock_path, write_lock
from labctl.spec.load import LoadedLab
from labctl.spec.units import format_size

CaBundleOpt = Annotated[Path | None, typer.Option(
    "--ca-bundle", envvar=CA_BUNDLE_ENV, help="PEM bundle pip/npm trust while building (corporate "
    "proxy or private mirror); it does not change image tags.")]


def _prepare(lab: Path, profile: str | None, as_json: bool, ca_bundle: Path | None
             ) -> tuple[LoadedLab, Lock, list[ImageSpec], Engine]:
    loaded, lock = open_locked(lab, profile, as_json)
    try:
        specs = lab_images(loaded, lock, settings=settings_for(loaded, ca_bundle=ca_bundle))
        engine = detect_engine()
    except LabctlError as e:
        raise fail(str(e), as_json) from None
    return loaded, lock, specs, engine


def build_command(lab: LabArg = DEFAULT_LAB, profile: ProfileOpt = None, as_json: JsonOpt = False,
                  ca_bundle: CaBundleOpt = None) -> None:
    """Build the lab's images (llama-server, task + agent runtimes, labctl); existing tags are reused."""
    loaded, lock, specs, engine = _prepare(lab, profile, as_json, ca_bundle)
    console = err if as_json else out
    log_dir = loaded.base_dir / ".labctl" / "logs"
    console.print(f"lab [bold]{loaded.lab.lab.name}[/], profile {loaded.profile.name}, "
                  f"{engine.name} ({engine.builder()} builder)", highlight=False)
    try:
        results = build_all(engine, specs, log_dir=log_dir, console=console)
    except LabctlError as e:
        raise fail(str(e), as_json) from None
    note = _record_version(loaded, lock, results, console)
    failed = [r for r in results if r.status == "failed"]
    if as_json:
        emit({"ok": not failed, "lab": loaded.lab.lab.name, "profile": loaded.profile.name,
              "engine": engine.name, "builder": engine.builder(), "lock_version": note,
              "images": [r.as_dict() for r in results]})
    else:
        counts = {s: sum(r.status == s for r in results) for s in ("cached", "built", "failed")}
        console.print(", ".join(f"{n} {s}" for s, n in counts.items()), highlight=False)
    if failed:
        raise typer.Exit(EXIT_FAIL)


def images_command(lab: LabArg = DEFAULT_LAB, profile: ProfileOpt = None, as_json: JsonOpt = False) -> None:
    """List the images a lab needs, their input-hash tags, and which are present."""
    loaded, _, specs, engine = _prepare(lab, profile, as_json, None)
    results = image_status(engine, specs)
    if as_json:
        emit({"ok": True, "lab": loaded.lab.lab.name, "profile": loaded.profile.name,
              "images": [r.as_dict() for r in results]})
        return
    table = Table(title=f"Images of lab {loaded.lab.lab.name} (profile {loaded.profile.name})")
    for col in ("image", "tag", "present", "size", "version"):
        table.add_column(col)
    for r in results:
        table.add_row(r.name, r.tag, "[green]yes[/]" if r.status == "cached" else "[yellow]no[/]",
                      format_size(r.size) if r.size else "—", r.version or "")
    out.print(table)


def _record_version(loaded: LoadedLab, lock: Lock, results: list[ImageResult], console: Console
                    ) -> str | None:
    """Write llama-server's `version:` line into lab.lock (llama_cpp.version) the first time; a
    different one later is reported, not overwritten: the same source must give the same version."""
    version = next((r.version for r in results if r.name == "llama-server" and r.version), None)
    if version is None:
        return None
    line = version.split("; ")[0]
    current = lock.llama_cpp.version
    if current == line:
        return line
    if current is not None:
        console.print(f"[yellow]warning:[/] llama-server reports {line!r}, lab.lock recorded {current!r}",
                      highlight=False)
        return current
    updated = lock.model_copy(update={"llama_cpp": lock.llama_cpp.model_copy(update={"version": line})})
    write_lock(lock_path(loaded.path), updated)
    console.print(f"recorded llama_cpp.version {line!r} in {lock_path(loaded.path).name}", highlight=False)
    return line
