"""`labctl plan`: the Contestants table for a hardware profile, and the llama-server flags it implies."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
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
    open_lab,
    out,
)
from labctl.errors import LabctlError
from labctl.lock.lockfile import Lock, LockFileError, lock_path, read_lock
from labctl.plan.measured import Measurement, measured_path, read_measured
from labctl.plan.planner import ContestantPlan, Plan, plan_lab
from labctl.run.preflight import run_preflight
from labctl.spec.units import format_size

if TYPE_CHECKING:
    from labctl.plan.preflight import LabPreflight

MeasureOpt = Annotated[
    bool, typer.Option("--measure", help="Run llama.cpp on every shape twin (fitter, then "
                       "the planned flags with -fit off); write <lab>.measured.<profile>.json by the lock.")
]
ServerOpt = Annotated[
    Path | None, typer.Option("--llama-server", help="llama-server binary for --measure (default: "
                              "$LABCTL_LLAMA_SERVER, else labctl's cached CPU build); llama-fit-params is "
                              "taken from beside it.")
]
ProbeOpt = Annotated[
    bool, typer.Option("--probe", help="Serve each local model with its planned flags and ask it for one "
                       "tool call: does the chat template carry tools, does a structured call come back, "
                       "which context is served (the lab's llama-server image, or --llama-server).")
]
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
            note += "".join(f"\n    [yellow]warning: {w}[/]" for w in c.warnings)
            out.print(f"  [bold]{c.id}[/]: llama-server {' '.join(c.llama_args)}{note}", highlight=False,
                      emoji=False)
    for c in plan.contestants:
        if c.status == "not served" and c.warnings:
            out.print(f"  [bold]{c.id}[/]:" + "".join(f"\n    [yellow]warning: {w}[/]" for w in c.warnings),
                      highlight=False, emoji=False)
    for e in plan.errors:
        err.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True, emoji=False)


def _mib(n: float | int | None) -> str:
    return "—" if n is None else format_size(int(n * (1 << 20)))


def _pct(planned: int | None, got_mib: float | None) -> str:
    if not planned or not got_mib:
        return ""
    return f" ({(planned / (got_mib * (1 << 20)) - 1) * 100:+.1f}%)"


def render_measured(plan: Plan, m: Measurement) -> None:
    """Planned next to measured, one row per measured contestant."""
    host = m.host.get("gpu") or m.host.get("cpu") or "?"
    t = Table(title=f"Measured on {host} ({m.date}, llama.cpp {m.llama_cpp.get('build')} "
                    f"{m.llama_cpp.get('commit')}), shape twins", caption_justify="left",
              caption="Planned (measured, planned vs measured). Context: the plan's / llama-fit-params' "
                      "choice on the same budget. Total: model + context + compute on the "
                      + ("GPU." if plan.gpu else "host."))
    for col in ("Model", "Loaded", "Context plan / fitter", "KV + state", "Compute", "Total", "pp t/s",
                "tg t/s"):
        t.add_column(col, overflow="fold")
    rows = {c.id: c for c in plan.contestants}
    for r in m.contestants:
        p = rows.get(r.id)
        if p is None:
            continue
        ctx = f"{_tokens(p.context)} / {_tokens(r.fitter.context) if r.fitter and r.fitter.ok else '—'}"
        ok = "[green]yes[/]" if r.loaded else f"[red]no ({r.error_kind})[/]"
        ctx_mib, comp_mib, total_mib = r.totals(plan.gpu)
        planned_total = p.vram_used if plan.gpu else p.ram_used
        t.add_row(p.name, ok, ctx, f"{_size(p.kv_bytes)} ({_mib(ctx_mib)}){_pct(p.kv_bytes, ctx_mib)}",
                  f"{_size(p.compute_bytes)} ({_mib(comp_mib)}){_pct(p.compute_bytes, comp_mib)}",
                  f"{_size(planned_total)} ({_mib(total_mib)}){_pct(planned_total, total_mib)}",
                  f"{r.speed.prompt_per_second:,.0f}" if r.speed else "—",
                  f"{r.speed.generated_per_second:,.1f}" if r.speed else "—")
    out.print(t, emoji=False)


def render_preflight(pre: LabPreflight) -> None:
    for cid, p in pre.contestants.items():
        out.print(f"  [bold]{cid}[/]: {p.verdict()}", highlight=False, markup=True, emoji=False)
        if problem := p.context_problem():
            out.print(f"    [yellow]{problem}[/]", highlight=False, emoji=False)


def plan_command(lab: LabArg = DEFAULT_LAB, profile: ProfileOpt = None, as_json: JsonOpt = False,
                 allow_unknown_arch: UnknownArchOpt = False, measure: MeasureOpt = False,
                 llama_server: ServerOpt = None, probe: ProbeOpt = False) -> None:
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
        except LockFileError as e:
            raise fail(f"{lp} does not parse: {e}", as_json) from None
    result = plan_lab(loaded, lock, allow_unknown_arch=allow_unknown_arch)
    mp = measured_path(lab, result.profile)
    if measure:
        from labctl.plan import llamaserver
        from labctl.plan.measure import fit_params_binary, measure_plan, write_measured

        try:
            server = llama_server or llamaserver.find_binary(build=True)
            work = os.environ.get("LABCTL_MEASURE_WORK")  # keep twins and server logs there
            got = measure_plan(loaded, lock, result, server, fit_params_binary(server),
                               work=Path(work) if work else None)
        except (LabctlError, OSError) as e:  # OSError: the binary, twins or logs on disk
            raise fail(f"--measure: {e}", as_json) from None
        write_measured(mp, got)
        if not as_json:
            err.print(f"wrote {mp}", highlight=False)
    measured = read_measured(lab, result.profile)
    pre = None
    if probe:
        if lock is None:
            raise fail(f"--probe needs the lab's lock ({lp}): run `labctl lock` and `labctl fetch`", as_json)
        try:
            pre = run_preflight(loaded, lock, result, llama_server)
        except (LabctlError, OSError) as e:
            raise fail(f"--probe: {e}", as_json) from None
    if as_json:
        emit({"ok": not result.errors, "lock": str(lp) if lock else None, **result.model_dump(mode="json"),
              "measured": measured.model_dump(mode="json") if measured else None,
              **({"preflight": pre.model_dump(mode="json")} if pre else {})})
    else:
        render(result)
        if measured is not None:
            render_measured(result, measured)
        if pre is not None:
            out.print("Preflight (one tool call asked of each served model):", highlight=False)
            render_preflight(pre)
    if result.errors:
        raise typer.Exit(EXIT_FAIL)
