"""Build a lab's images: skip what exists, verify every pinned input first, then build in order.

The order of work is deliberate: (1) a spec whose tag exists with the same input-hash label is
`cached` and never touched; (2) every remaining spec's sources are fetched and verified (sdist and
distribution sha256, tree hashes, local base image ids) *before any build starts*, so a wrong hash
stops the command with a clear error and no half-built round; (3) builds run one at a time (a
2-core CI box compiling llama.cpp has no cores to spare), each writing its own log file, and a
failed image fails only itself and its dependents.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from rich.console import Console

from labctl.engine.buildlog import PULL_FAILED
from labctl.engine.container import BuildFailed, BuildRequest, Engine, EngineError
from labctl.images.model import L_BUILD_ID, L_INPUT, L_STAGE, ImageError, ImageSpec

Status = Literal["cached", "built", "failed", "missing"]


@dataclass
class ImageResult:
    """What happened to one image (or, for `labctl images`, whether it is present)."""

    name: str
    tag: str
    status: Status
    input_hash: str
    log: Path | None = None
    seconds: float | None = None
    error: str | None = None
    image_id: str | None = None
    size: int | None = None
    version: str | None = None
    """`llama-server --version` (from the image label) for the llama-server image."""
    build_id: str | None = None
    """Nonce on the build's intermediate stages (see prune_build_stages)."""

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["log"] = str(self.log) if self.log else None
        return d


def version_text(output: str) -> str:
    """`llama-server --version` output as one line: the `version:` and `built with` lines (a CUDA
    build also prints backend-loading chatter), joined with `; `."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    keep = [ln for ln in lines if ln.startswith(("version:", "built with"))] or lines
    return "; ".join(keep)


def _present(engine: Engine, spec: ImageSpec) -> ImageResult | None:
    info = engine.image(spec.tag)
    if info is None or info.labels.get(L_INPUT) != spec.input_hash():
        return None  # absent, or a tag that does not carry this input hash (hand-made): rebuild
    version = info.labels.get(spec.probe.label) if spec.probe else None
    return ImageResult(spec.name, spec.tag, "cached", spec.input_hash(), image_id=info.id, size=info.size,
                       version=version)


def image_status(engine: Engine, specs: list[ImageSpec]) -> list[ImageResult]:
    """Which of the lab's images exist (`cached`) and which do not (`missing`)."""
    return [_present(engine, s) or ImageResult(s.name, s.tag, "missing", s.input_hash()) for s in specs]


def prepare(engine: Engine, specs: list[ImageSpec], log: Callable[[str], None]
            ) -> dict[str, dict[str, str]]:
    """Fetch and verify every spec's inputs; raises (SourceError, ImageError) before any build."""
    late: dict[str, dict[str, str]] = {}
    for spec in specs:
        late[spec.name] = spec.prepare(log) if spec.prepare else {}
        for ref, digest in spec.local_bases.items():
            info = engine.image(ref)
            if info is None or info.id != digest:
                now = info.id if info else "absent"
                raise ImageError(f"local image {ref} is {now}, but lab.lock pins {digest}: "
                                 "restore it or run `labctl lock`"
                                 + (f"; {spec.pull_help[ref]}" if ref in spec.pull_help else ""))
    return late


def build_all(engine: Engine, specs: list[ImageSpec], *, log_dir: Path,
              console: Console | None = None) -> list[ImageResult]:
    """Build what is missing; one progress line per image on `console`. Returns results in spec order."""
    say = console.print if console is not None else (lambda *a, **k: None)
    results: dict[str, ImageResult] = {}
    todo: list[ImageSpec] = []
    for spec in specs:
        hit = _present(engine, spec)
        if hit is None:
            todo.append(spec)
            continue
        results[spec.name] = hit
        say(f"[green]✓[/] {spec.name:<22} [dim]{spec.tag}[/]  cached", highlight=False)
    late: dict[str, dict[str, str]] = {}
    try:
        if todo:
            late = prepare(engine, todo, lambda msg: say(f"  [dim]{msg}[/]", highlight=False))
            log_dir.mkdir(parents=True, exist_ok=True)
        _build_todo(engine, todo, late, results, log_dir, console)
    finally:
        for spec in todo:
            if spec.build_dir is not None:
                shutil.rmtree(spec.build_dir, ignore_errors=True)
                spec.build_dir = None
    return [results[s.name] for s in specs]


def _build_todo(engine: Engine, todo: list[ImageSpec], late: dict[str, dict[str, str]],
                results: dict[str, ImageResult], log_dir: Path, console: Console | None) -> None:
    say = console.print if console is not None else (lambda *a, **k: None)
    for spec in todo:
        broken = [d for d in spec.depends_on if d in results and results[d].status == "failed"]
        log_path = log_dir / f"{spec.name}-{spec.input_hash()[:12]}.log"
        if broken:
            results[spec.name] = ImageResult(spec.name, spec.tag, "failed", spec.input_hash(),
                                             error=f"needs {', '.join(broken)}, which failed")
            say(f"[red]✗[/] {spec.name:<22} failed: {results[spec.name].error}", highlight=False)
            continue
        started = time.monotonic()
        try:
            if console is not None and console.is_terminal:
                with console.status(f"building {spec.name} (log: {log_path})"):
                    result = _build_one(engine, spec, late[spec.name], log_path)
            else:
                say(f"  building {spec.name} (log: {log_path})", highlight=False)
                result = _build_one(engine, spec, late[spec.name], log_path)
        except (BuildFailed, EngineError) as e:
            error = str(e)
            if PULL_FAILED in error and spec.pull_help:
                error += " — " + "; ".join(spec.pull_help.values())
            result = ImageResult(spec.name, spec.tag, "failed", spec.input_hash(), log=log_path, error=error)
        result.seconds = round(time.monotonic() - started, 1)
        results[spec.name] = result
        if result.status == "built":
            say(f"[green]✓[/] {spec.name:<22} [dim]{spec.tag}[/]  built in {result.seconds:.0f}s  "
                f"[dim]log: {log_path}[/]", highlight=False)
        else:
            say(f"[red]✗[/] {spec.name:<22} failed: {result.error}  log: {log_path}", highlight=False)


def _build_one(engine: Engine, spec: ImageSpec, late_args: dict[str, str], log_path: Path
               ) -> ImageResult:
    h, build_id = spec.input_hash(), uuid.uuid4().hex[:16]
    context = spec.build_dir or spec.context
    args = {**spec.build_args, **spec.unhashed_args, **late_args}
    text = spec.dockerfile.read_text(encoding="utf-8")
    args.update({k: v for k, v in (("LABCTL_INPUT_HASH", h), ("LABCTL_BUILD_ID", build_id)) if k in text})
    labels = {**spec.labels, **spec.meta_labels, L_INPUT: h}
    version = None
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(f"# {spec.name} → {spec.tag}\n# input hash {h}\n# context {spec.context}\n"
                  f"# dockerfile {spec.dockerfile}\n")
        log.flush()
        if spec.probe is not None:
            probe = spec.probe
            stage_tag = f"{spec.tag}-{probe.target}"
            engine.build(BuildRequest(context, spec.dockerfile, stage_tag, args, {}, probe.target), log)
            ran = engine.run(stage_tag, probe.argv, labels=spec.meta_labels)
            log.write(f"# {' '.join(probe.argv)} → exit {ran.returncode}\n{ran.stdout}{ran.stderr}\n")
            if ran.returncode != 0:
                tail = (ran.stderr.strip().splitlines() or ["(no output)"])[-1]
                raise EngineError(f"{' '.join(probe.argv)} exited {ran.returncode}: {tail}")
            version = version_text(ran.stdout + "\n" + ran.stderr)
            args[probe.build_arg] = version
        image_id = engine.build(BuildRequest(context, spec.dockerfile, spec.tag, args, labels, spec.target),
                                log)
        if spec.probe is not None:
            engine.remove_image(f"{spec.tag}-{spec.probe.target}")  # untags; layers stay in the image
    _remove_stages(engine, build_id, {"context"})
    info = engine.image(spec.tag)
    return ImageResult(spec.name, spec.tag, "built", h, log=log_path, image_id=image_id,
                       size=info.size if info else None, version=version, build_id=build_id)


def _remove_stages(engine: Engine, build_id: str, stages: set[str]) -> int:
    removed = 0
    for image_id in engine.images_with_label(L_BUILD_ID, build_id, dangling=True):
        info = engine.image(image_id)
        if info is not None and info.labels.get(L_STAGE) in stages:
            engine.remove_image(image_id, force=True)
            removed += 1
    return removed


def prune_build_stages(engine: Engine, build_ids: list[str]) -> int:
    """Remove the leftover intermediate stages of these builds (ImageResult.build_id): with the
    classic builder, llama-server's compile stage (~0.5 GB) stays behind as layer cache. Returns
    how many images were removed."""
    return sum(_remove_stages(engine, b, {"context", "compile"}) for b in build_ids if b)
