"""`labctl model tiny`: write a deterministic tiny GGUF (same parameters ⇒ same bytes on any machine)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from labctl.console import JsonOpt, emit, fail, out
from labctl.tinyparams import TinyModelParams, canonical_params_json, tiny_model_name

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
    from labctl.tinymodel import write_tiny_gguf  # gguf + numpy only when writing

    kv: int | list[int] = [int(x) for x in kv_heads.split(",")] if "," in kv_heads else int(kv_heads)
    try:
        params = TinyModelParams(
            seed=seed, n_layer=layers, n_embd=embd, n_head=heads, n_head_kv=kv, n_ff=ff,
            context_length=context, key_length=key_length, value_length=key_length,
            sliding_window=sliding_window, architecture=arch, dtype=dtype,  # type: ignore[arg-type]
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
