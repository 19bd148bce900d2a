"""`labctl model tiny`: a deterministic tiny GGUF (same parameters ⇒ same bytes on any machine);
`labctl model twin`: a contestant's shape twin (its real layout, no weights); `labctl model probe`: the
tool-call preflight of the local models (`labctl.plan.probe`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError

from labctl.cli.console import (
    DEFAULT_LAB,
    JsonOpt,
    LabArg,
    ProfileOpt,
    emit,
    fail,
    open_lab,
    open_locked,
    out,
)
from labctl.errors import LabctlError
from labctl.gguf.tinyparams import TinyModelParams, canonical_params_json, tiny_model_name

if TYPE_CHECKING:  # the lock loads only in the commands that read one
    from labctl.lock.lockfile import FileLock, Lock, ModelLock

model_app = typer.Typer(help="Model utilities.", no_args_is_help=True)


@model_app.command("tiny")
def tiny(
    output: Annotated[Path | None, typer.Option("--out", "-o", help="File (default: ./<name>.gguf).")] = None,
    seed: int = 0,
    layers: Annotated[int, typer.Option(help="Transformer blocks.")] = 2,
    embd: Annotated[int, typer.Option(help="Hidden size.")] = 64,
    heads: Annotated[int, typer.Option(help="Query heads.")] = 4,
    kv_heads: Annotated[str, typer.Option(help="KV heads: N, or per layer `4,0,1` (deci).")] = "2",
    ff: Annotated[int, typer.Option(help="Feed-forward size.")] = 128,
    context: Annotated[int, typer.Option(help="Training context.")] = 4096,
    key_length: Annotated[int | None, typer.Option(help="Head dim (default embd/heads).")] = None,
    sliding_window: Annotated[int | None, typer.Option(help="Sliding window (gemma3).")] = None,
    arch: Annotated[str, typer.Option(help="llama, deci or gemma3.")] = "llama",
    dtype: Annotated[str, typer.Option(help="f32 or f16 weights.")] = "f32",
    as_json: JsonOpt = False,
) -> None:
    """Generate a tiny random-weight GGUF that llama-server loads (it speaks gibberish)."""
    from labctl.gguf.tiny import write_tiny_gguf  # gguf + numpy only when writing

    kv: int | list[int] = [int(x) for x in kv_heads.split(",")] if "," in kv_heads else int(kv_heads)
    try:
        params = TinyModelParams(
            seed=seed, n_layer=layers, n_embd=embd, n_head=heads, n_head_kv=kv, n_ff=ff,
            context_length=context, key_length=key_length, value_length=key_length,
            sliding_window=sliding_window, architecture=arch, dtype=dtype,
        )
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise fail(f"{where + ': ' if where else ''}{first['msg'].removeprefix('Value error, ')}", as_json,
                   code=2) from None
    name = tiny_model_name(params)
    path = output or Path(f"{name}.gguf")
    sha = write_tiny_gguf(path, params)
    if as_json:
        emit({"ok": True, "name": name, "path": str(path), "sha256": sha, "size": path.stat().st_size,
              "params": canonical_params_json(params)})
        return
    size = path.stat().st_size
    out.print(f"wrote {path} ({size:,} bytes)\n  name   {name}\n  sha256 {sha}", highlight=False)


def _read_lock_quietly(lab: Path, as_json: bool) -> Lock | None:
    from labctl.lock.lockfile import LockFileError, lock_path, read_lock

    lp = lock_path(lab)
    if not lp.is_file():
        return None
    try:
        return read_lock(lp)
    except LockFileError as e:
        raise fail(f"{lp} does not parse: {e}", as_json) from None


def hub_refetch(model: ModelLock | None) -> Callable[[FileLock], bytes] | None:
    """Fetch a locked header again (its first header_size bytes) from the pinned Hugging Face file."""
    if model is None or model.source != "hf" or not model.commit or not model.repo:
        return None  # (a locked hf model always has both; the check tells the type checker)
    repo, commit = model.repo, model.commit
    from huggingface_hub import hf_hub_url

    from labctl.lock.hub import range_fetcher

    def refetch(f: FileLock) -> bytes:
        return range_fetcher(hf_hub_url(repo, f.name, revision=commit))(0, f.header_size or 0)
    return refetch


@model_app.command("twin")
def twin(
    contestant: Annotated[str, typer.Argument(help="Contestant id (a local model).")],
    lab: LabArg = DEFAULT_LAB,
    output: Annotated[Path | None, typer.Option("--out", "-o", help="File (default: ./<id>.twin.gguf); "
                                                "a split model: <stem>-0000i-of-0000n.gguf.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a shape twin: a sparse GGUF with the model's real layout and no weights.

    From the locked header when the header cache has it (exactly the real file's layout), else from
    the lock's or the lab's declared metadata. llama.cpp loads it and allocates what the real model
    needs; its output is meaningless.
    """
    from labctl.plan.twin import write_twin
    from labctl.spec.lab import LocalContestant

    loaded = open_lab(lab, None, as_json)
    c = next((x for x in loaded.lab.contestants if x.id == contestant), None)
    if not isinstance(c, LocalContestant):
        ids = [x.id for x in loaded.lab.contestants if isinstance(x, LocalContestant)]
        raise fail(f"no local contestant {contestant!r} in {lab} (local: {', '.join(ids) or 'none'})",
                   as_json, code=2)
    lock = _read_lock_quietly(lab, as_json)
    model = lock.models.get(c.id) if lock else None
    file_name = c.model.file or (c.model.path.name if c.model.path else f"{c.id}.gguf")
    try:
        t = write_twin(model, c.model.declared, file_name, output or Path(f"{c.id}.twin.gguf"),
                       refetch=hub_refetch(model))
    except (LabctlError, OSError) as e:
        raise fail(f"contestant {c.id}: {e}", as_json) from None
    if as_json:
        emit({"ok": True, "contestant": c.id, "path": str(t.path), "files": [str(p) for p in t.files],
              "source": t.source, "size": t.size, "disk": t.disk})
        return
    out.print(f"wrote {t.path} (twin from {t.source}): {t.size:,} bytes as llama.cpp sees it, "
              f"{t.disk:,} on disk", highlight=False)


@model_app.command("probe")
def probe(
    lab: LabArg = DEFAULT_LAB,
    contestant: Annotated[str | None, typer.Argument(help="One local contestant (default: all).")] = None,
    profile: ProfileOpt = None,
    llama_server: Annotated[Path | None, typer.Option(
        "--llama-server", help="A llama-server binary on this host (default: the lab's llama-server image, "
        "built by `labctl build`).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Ask again even when this model, llama.cpp "
                                           "build and flags were probed before.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Serve each local model with its planned flags and ask it for one call of a declared tool.

    Says whether the chat template carries tools (llama-server's /apply-template), whether a structured
    tool call came back (tool_choice auto, then required) and which context the server really serves.
    Warns, never refuses: exit 0 whatever the model does.
    """
    from labctl.cli.plan import render_preflight, run_preflight
    from labctl.plan.planner import plan_lab

    loaded, lock = open_locked(lab, profile, as_json)
    if contestant is not None and contestant not in lock.models:
        raise fail(f"no local contestant {contestant!r} in {lab} (local: {', '.join(lock.models) or 'none'})",
                   as_json, code=2)
    plan = plan_lab(loaded, lock)
    try:
        pre = run_preflight(loaded, lock, plan, llama_server, only=contestant, use_cache=not no_cache,
                            say=lambda s: None)
    except (LabctlError, OSError) as e:
        raise fail(str(e), as_json) from None
    if as_json:
        emit({"ok": True, **pre.model_dump(mode="json")})
        return
    render_preflight(pre)
