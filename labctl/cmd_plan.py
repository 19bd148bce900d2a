"""`labctl plan`: the Contestants table for a hardware profile, and the llama-server flags it implies."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from labctl.console import DEFAULT_LAB, EXIT_FAIL, JsonOpt, LabArg, ProfileOpt, emit, err, fail, open_lab, out
from labctl.lockfile import Lock, lock_path, read_lock
from labctl.plan import ContestantPlan, Plan, plan_lab
from labctl.units import format_size

UnknownArchOpt = Annotated[
    bool, typer.Option("--allow-unknown-arch",
                       help="Plan unknown architectures conservatively (every layer full attention).")
]


def _size(n: int | None) -> str:
    return "—" if n is None else format_size(n)


def _tokens(n: int | None) -> str:
    return "—" if n is None else f"{n:,}"


def _row(c: ContestantPlan, gpu: bool, host_ram: int) -> list[str]:
    name, meta = c.name, {"declared": "[yellow]declared[/]"}.get(c.meta_source or "", c.meta_source or "—")
    if c.status == "not served":
        return [name, c.type or c.kind, "—", "—", "—", _tokens(c.context), _tokens(c.max_output),
                "not served", "—", "—", "—"]
    if c.status == "error":
        return [name, "[red]error[/]", "—", "—", "—", "—", "—", "—", "—", "—", meta]
    kv = f"{c.kv_bytes_per_token:,} B" if c.kv_bytes_per_token is not None else "—"
    if c.kv_fixed_bytes:
        kv += f" + {format_size(c.kv_fixed_bytes)}"
    if gpu:
        used, free = _size(c.vram_used), _size(c.vram_free)
        offload = "no" if not c.offloaded_layers else f"[yellow]{c.offloaded_layers}/{c.n_layers} layers[/]"
    else:
        used, free, offload = _size(c.ram_used), _size(host_ram - (c.ram_used or 0)), "CPU only"
    return [name, c.type or "", c.quant or "", _size(c.weights_bytes), kv, _tokens(c.context),
            _tokens(c.max_output), used, free, offload, meta]


def render(plan: Plan) -> None:
    """The Contestants table, then each served contestant's llama-server flags, then errors."""
    budget = (f"{format_size(plan.vram_budget)} usable VRAM of {format_size(plan.vram_total)} "
              f"({format_size(plan.vram_reserve)} reserved), " if plan.gpu else "")
    t = Table(title=f"Contestants on {plan.profile}: {plan.profile_summary}",
              caption=f"{budget}{format_size(plan.host_ram)} host RAM. KV / token: K+V bytes per token of "
                      "context (+ sliding-window / recurrent state). Meta: where the architecture numbers "
                      "come from (lock = GGUF header; declared = the lab's model.declared, checked by "
                      "`labctl lock`).", caption_justify="left")
    for col in ("Model", "Type", "Quant", "Weights", "KV / token", "Context", "Max output",
                "VRAM" if plan.gpu else "RAM", "Free VRAM" if plan.gpu else "Free RAM", "Offload", "Meta"):
        right = col in ("Weights", "Context", "Max output", "VRAM", "RAM")
        t.add_column(col, overflow="fold", justify="right" if right else "left")
    for c in plan.contestants:
        t.add_row(*_row(c, plan.gpu, plan.host_ram))
    out.print(t, emoji=False)
    for c in plan.contestants:
        if c.status == "planned":
            note = "".join(f"\n    [dim]{n}[/]" for n in c.notes)
            out.print(f"  [bold]{c.id}[/]: llama-server {' '.join(c.llama_args)}{note}", highlight=False,
                      emoji=False)
    for e in plan.errors:
        err.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True, emoji=False)


def plan_command(lab: LabArg = DEFAULT_LAB, profile: ProfileOpt = None, as_json: JsonOpt = False,
                 allow_unknown_arch: UnknownArchOpt = False) -> None:
    """Plan every contestant for a hardware profile: context, KV cache, VRAM, offload, llama-server flags.

    Works before anything is downloaded: metadata comes from lab.lock, else from model.declared.
    Exits 1 when a contestant cannot be planned or does not fit.
    """
    loaded = open_lab(lab, profile, as_json)
    lock: Lock | None = None
    lp = lock_path(lab)
    if lp.is_file():
        try:
            lock = read_lock(lp)
        except (ValidationError, ValueError) as e:
            raise fail(f"{lp} does not parse: {e}", as_json) from None
    result = plan_lab(loaded, lock, allow_unknown_arch=allow_unknown_arch)
    if as_json:
        emit({"ok": not result.errors, "lock": str(lp) if lock else None, **result.model_dump(mode="json")})
    else:
        render(result)
    if result.errors:
        raise typer.Exit(EXIT_FAIL)
