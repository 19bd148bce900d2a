"""The plan: per contestant, what llama-server will be told on a given hardware profile, and why.

Everything comes from metadata (lab.lock's GGUF headers, else the lab's `model.declared` numbers,
else a generated model's parameters), so a lab can be planned before anything is downloaded, and
swapping `--profile` changes only the plan. The flags in `llama_args` are the ones the runner
passes; `labctl.plan.llamaserver.server_argv` builds the command line from the same `ServerSettings`.

Placement follows llama.cpp's `-ngl`: the last N repeating layers go to the GPU, with their KV cache;
`n_layer + 1` also moves the output layer. Weights are split evenly over n_layer + 1 parts (the
embeddings and output count as one), which slightly over-counts VRAM when fully offloaded (the token
embeddings stay in host memory).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from labctl.errors import LabctlError
from labctl.gguf.meta import GGUFMeta
from labctl.gguf.read import quant_from_filename
from labctl.gguf.tiny import TinyModelParams
from labctl.lock.lockfile import Lock
from labctl.plan import kvcache
from labctl.plan.firstprompt import fit_warning, lookup
from labctl.plan.llamaserver import ServerSettings, yarn_scale
from labctl.spec.lab import SERVE_DEFAULTS, CloudContestant, LocalContestant, Serve
from labctl.spec.load import LoadedLab
from labctl.spec.profiles import Profile
from labctl.spec.units import format_size

ROPE_SCALING_LIMIT = 4
"""With allow_rope_scaling, `context: max` stops at this multiple of the training context (YaRN's usual)."""


class PlanError(LabctlError, ValueError):
    """A contestant cannot be planned (or cannot fit); the message names it and says by how much."""


class ContestantPlan(BaseModel):
    """One row of the Contestants table."""

    id: str
    name: str
    kind: str
    status: Literal["planned", "not served", "error"]
    error: str | None = None
    meta_source: Literal["lock", "declared", "generated"] | None = None
    """Where the architecture numbers came from (`declared` = the lab's model.declared, unverified)."""
    architecture: str | None = None
    model: str | None = None
    type: str | None = None
    quant: str | None = None
    weights_bytes: int | None = None
    weights_source: str | None = None
    n_layers: int | None = None
    training_context: int | None = None
    kv_bytes_per_token: int | None = None
    """K + V bytes per token of the full-attention layers, for the chosen cache types."""
    kv_fixed_bytes: int | None = None
    """Sliding-window cache and recurrent state: sized by the window / per sequence, not the context."""
    kv_bytes: int | None = None
    compute_bytes: int | None = None
    output_bytes: int | None = None
    context: int | None = None
    context_mode: Literal["max", "explicit"] | None = None
    slot_context: int | None = None
    """The context of one slot as llama-server must report it (`/props` default_generation_settings.n_ctx):
    the per-slot cells, padded to 256 as llama.cpp pads them. A run whose server reports another
    number errors (`labctl.run.served`)."""
    max_output: int | None = None
    vram_used: int | None = None
    vram_free: int | None = None
    ram_used: int | None = None
    gpu_layers: int | None = None
    offloaded_layers: int | None = None
    """Repeating layers left in host RAM (0 = the whole model on the GPU)."""
    server: ServerSettings | None = None
    llama_args: list[str] = []
    notes: list[str] = []
    warnings: list[str] = []
    """What may go wrong in a run although the plan fits (e.g. the runtime's first prompt + max_output
    exceeding the context: `labctl.plan.firstprompt`)."""


class Plan(BaseModel):
    """The Contestants table for one profile."""

    lab: str
    profile: str
    profile_summary: str
    gpu: bool
    vram_total: int
    vram_reserve: int
    vram_budget: int
    host_ram: int
    contestants: list[ContestantPlan]

    @property
    def errors(self) -> list[str]:
        return [c.error for c in self.contestants if c.status == "error" and c.error]

    def raise_if_errors(self) -> None:
        if self.errors:
            raise PlanError("; ".join(self.errors))


@dataclass(frozen=True)
class Source:
    """A contestant's metadata and weights, with where each came from."""

    meta: GGUFMeta
    origin: Literal["lock", "declared", "generated"]
    weights: int
    weights_source: str
    n_ff: int | None = None


def tiny_meta(params: TinyModelParams) -> tuple[GGUFMeta, int]:
    """Metadata and tensor bytes of a generated model, computed from its parameters (no file needed)."""
    hk, hv = params.head_dims()
    V, E, F, H = params.vocab_size, params.n_embd, params.n_ff, params.n_head
    mat = 2 if params.dtype == "f16" else 4
    gemma = params.architecture == "gemma3"
    total = V * E * mat + E * 4 + (0 if gemma else V * E * mat)
    for kv in params.head_count_kv_per_layer():
        total += E * 4 * (4 if gemma else 2) + 3 * F * E * mat
        attn = (2 * H * hk * E + 2 * kv * hk * E) * mat + (8 * hk if gemma else 0)  # q, o, k, v, q/k norms
        total += E * E * mat if kv == 0 else attn
    kv_heads = params.n_head_kv if isinstance(params.n_head_kv, int) else list(params.n_head_kv)
    pattern = params.sliding_window_pattern
    meta = GGUFMeta(
        architecture=params.architecture, block_count=params.n_layer, context_length=params.context_length,
        embedding_length=E, head_count=H, head_count_kv=kv_heads, key_length=hk, value_length=hv,
        sliding_window=params.sliding_window,
        sliding_window_pattern=list(pattern) if isinstance(pattern, tuple) else pattern,
        file_type=1 if params.dtype == "f16" else 0, quant=params.dtype.upper(), vocab_size=V,
        feed_forward_length=F,
        tensor_bytes=total)
    return meta, total


def resolve_source(c: LocalContestant, lock: Lock | None) -> Source:
    """Lock header first (checked bytes), then a generated model's own parameters, then declared."""
    locked = lock.models.get(c.id) if lock else None
    lock_bytes = sum(f.size for f in locked.files) if locked else None
    if locked and locked.gguf:
        return Source(locked.gguf, "lock", lock_bytes or locked.gguf.tensor_bytes or 0, "lock files")
    if c.model.generate is not None:
        meta, size = tiny_meta(c.model.generate)
        return Source(meta, "generated", lock_bytes or size, "lock files" if lock_bytes else "generated",
                      c.model.generate.n_ff)
    d = c.model.declared
    if d is not None:
        found, src = lock_bytes, "lock files"
        if found is None:
            found, src = (d.file_size, "declared file_size") if d.file_size else (d.tensor_bytes, "declared")
        if not found:
            found, src = _shape_bytes(d, c.model.file), "declared shape"
        if not found:
            raise PlanError(f"contestant {c.id}: declared metadata has no file_size or tensor_bytes; "
                            "run `labctl lock` or declare model.declared.file_size")
        return Source(d, "declared", found, src)
    raise PlanError(f"contestant {c.id}: no GGUF metadata (lab.lock has none for it and the lab declares "
                    "none); run `labctl lock` or declare model.declared")


def _shape_bytes(meta: GGUFMeta, file: str | None) -> int | None:
    """Tensor bytes of the model's twin layout (declared shape, quant from the file name), if buildable."""
    from labctl.plan.twin import TwinError, layout_bytes

    try:
        return layout_bytes(meta, quant_name(meta, file))
    except TwinError:
        return None


def _billions(n: int | None) -> str:
    return f"{n / 1e9:.1f}B" if n and n >= 1e8 else (f"{n / 1e6:.1f}M" if n else "")


def model_type(meta: GGUFMeta) -> str:
    """`dense 14.8B`, `MoE 30.5B total / 3.3B active`, or the expert counts when params are unknown."""
    if meta.expert_count:
        if meta.n_params and meta.n_params_active:
            return f"MoE {_billions(meta.n_params)} total / {_billions(meta.n_params_active)} active"
        return f"MoE {meta.expert_count} experts / {meta.expert_used_count or '?'} active"
    return f"dense {_billions(meta.n_params)}".strip()


def quant_name(meta: GGUFMeta, file: str | None) -> str | None:
    """The header's quant, else the publisher's name in the file name (`UD-Q4_K_XL`), else the file type."""
    if meta.quant:
        return meta.quant
    return (quant_from_filename(file) if file else None) or {0: "F32", 1: "F16", 7: "Q8_0", 32: "BF16"}.get(
        meta.file_type if meta.file_type is not None else -1)


@dataclass(frozen=True)
class Fit:
    """One placement: GPU layers, the VRAM and host RAM it takes, and what is missing when it fails."""

    ok: bool
    gpu_layers: int
    vram: int
    ram: int
    mem: kvcache.MemoryEstimate
    short: int = 0
    """Bytes missing when not ok."""
    short_of: str = ""


class _Planner:
    """Placement and context search for one contestant on one profile."""

    def __init__(self, c: LocalContestant, src: Source, serve: Serve, profile: Profile, allow_unknown: bool):
        self.c, self.src, self.serve, self.profile, self.allow_unknown = c, src, serve, profile, allow_unknown
        self.L = src.meta.block_count
        self.budget = profile.total_vram - profile.vram_reserve if profile.is_gpu else 0

    def memory(self, ctx: int) -> kvcache.MemoryEstimate:
        s = self.serve
        return kvcache.estimate(self.src.meta, ctx, type_k=s.cache_type_k or "f16",
                                type_v=s.cache_type_v or "f16", flash_attention=s.flash_attention or "auto",
                                n_seq=s.parallel or 1, n_ff=self.src.n_ff, allow_unknown=self.allow_unknown,
                                cuda=self.profile.is_gpu)

    def place(self, mem: kvcache.MemoryEstimate, g: int) -> tuple[int, int]:
        """(VRAM, RAM) with the last `g` layers (g = n_layer + 1: output too) on the GPU."""
        w, L = self.src.weights, self.L
        part = w // (L + 1)
        on = min(g, L)
        w_gpu = on * part + (w - L * part if g > L else 0)
        kv_gpu = sum(mem.kv.layer_bytes[L - on:]) if on else 0
        vram = w_gpu + kv_gpu + (mem.compute if g > 0 else 0)
        ram = (w - w_gpu) + (mem.kv.total - kv_gpu) + mem.output + (mem.compute if g <= L else 0)
        return vram, ram

    def fit(self, ctx: int, full_only: bool = False) -> Fit:
        mem = self.memory(ctx)
        host = self.profile.host_ram
        if not self.profile.is_gpu:
            _, ram = self.place(mem, 0)
            return Fit(ram <= host, 0, 0, ram, mem, max(0, ram - host), "RAM")
        want = self.serve.gpu_layers
        if full_only or want == "all" or isinstance(want, int):
            g = self.L + 1 if full_only or not isinstance(want, int) else min(want, self.L + 1)
            vram, ram = self.place(mem, g)
            if vram > self.budget:
                return Fit(False, g, vram, ram, mem, vram - self.budget, "VRAM")
            return Fit(ram <= host, g, vram, ram, mem, max(0, ram - host), "RAM")
        for g in range(self.L + 1, -1, -1):
            vram, ram = self.place(mem, g)
            if vram <= self.budget:
                return Fit(ram <= host, g, vram, ram, mem, max(0, ram - host), "RAM")
        raise AssertionError("g = 0 always fits VRAM")  # pragma: no cover

    def largest(self, cap: int, test: Callable[[int], bool]) -> int | None:
        """Largest multiple of 1024 (256 below 4096) up to `cap` that passes; None if not even 256."""
        def search(step: int, lo: int, hi: int) -> int | None:
            best, a, b = None, lo // step, hi // step
            while a <= b:
                mid = (a + b) // 2
                if test(mid * step):
                    best, a = mid * step, mid + 1
                else:
                    b = mid - 1
            return best
        best = search(1024, 4096, cap) if cap >= 4096 else None
        return best if best is not None else search(256, 256, min(cap, 4096))

    def context(self) -> tuple[int, Fit, Literal["max", "explicit"]]:
        meta, want, name = self.src.meta, self.serve.context, self.profile.name
        train = meta.context_length
        rope = bool(self.serve.allow_rope_scaling)
        if isinstance(want, int):
            if want > train and not rope:
                raise PlanError(f"contestant {self.c.id}: context {want} is larger than the model's training "
                                f"context {train}; lower it or set serve.allow_rope_scaling: true")
            f = self.fit(want)
            if not f.ok:
                raise PlanError(f"contestant {self.c.id}: context {want} needs {format_size(f.short)} more "
                                f"{f.short_of} than {name} has free")
            return want, f, "explicit"
        cap = (train * (ROPE_SCALING_LIMIT if rope else 1)) // 256 * 256
        # Prefer the whole model on the GPU; only when not even 256 tokens allow that, offload layers.
        full = self.profile.is_gpu and self.serve.gpu_layers == "auto"
        best = self.largest(cap, lambda n: self.fit(n, full_only=True).ok) if full else None
        if best is not None:
            return best, self.fit(best, full_only=True), "max"
        best = self.largest(cap, lambda n: self.fit(n).ok)
        if best is None:
            f = self.fit(256)
            raise PlanError(f"contestant {self.c.id}: does not fit {name} even with 256 tokens of context: "
                            f"needs {format_size(f.short)} more {f.short_of}")
        return best, self.fit(best), "max"


def plan_contestant(lab_serve: Serve, c: LocalContestant, lock: Lock | None, profile: Profile, *,
                    allow_unknown_arch: bool = False) -> ContestantPlan:
    """The plan of one local contestant; raises PlanError when it cannot be planned or cannot fit."""
    serve = c.serve.over(lab_serve.over(SERVE_DEFAULTS))
    src = resolve_source(c, lock)
    meta = src.meta
    p = _Planner(c, src, serve, profile, allow_unknown_arch)
    try:
        ctx, f, mode = p.context()
    except kvcache.KVError as e:
        raise PlanError(f"contestant {c.id}: {e}") from None
    n_seq = serve.parallel or 1
    per_slot = f.mem.kv.cells.n_ctx_seq if n_seq > 1 else ctx
    max_out = serve.max_output if serve.max_output is not None else per_slot // 4
    notes = []
    if max_out > per_slot:
        notes.append(f"max_output {max_out} exceeds the per-slot context {per_slot}: responses stop there")
    if meta.architecture not in kvcache.KNOWN_ARCHS:
        notes.append(f"unknown architecture {meta.architecture!r}: planned conservatively "
                     "(every layer full attention)")
    rope_scale = None
    slot = f.mem.kv.cells.n_ctx_seq
    if slot > meta.context_length and serve.allow_rope_scaling:
        # Without these flags llama-server would cap the slot at the training context and serve less
        # than planned; with them its adjusted training context covers the whole slot.
        rope_scale = yarn_scale(slot, meta.context_length)
        notes.append(f"context beyond the training context {meta.context_length}: served with YaRN "
                     f"(--rope-scale {rope_scale} --yarn-orig-ctx {meta.context_length})")
    elif slot > meta.context_length:  # llama.cpp's 256-cell padding only: it caps there
        slot = meta.context_length
    offloaded = p.L - min(f.gpu_layers, p.L) if profile.is_gpu else p.L
    if profile.is_gpu and offloaded:
        notes.append(f"{offloaded} of {p.L} layers offloaded to host RAM (-ngl {f.gpu_layers})")
    settings = ServerSettings(
        context=ctx, gpu_layers=f.gpu_layers, flash_attention=serve.flash_attention or "auto",
        cache_type_k=serve.cache_type_k or "f16", cache_type_v=serve.cache_type_v or "f16",
        max_output=max_out, parallel=n_seq, rope_scale=rope_scale,
        yarn_orig_ctx=meta.context_length if rope_scale else None, extra_args=tuple(serve.extra_args or ()))
    model = c.model.file or (str(c.model.path) if c.model.path else "generated")
    return ContestantPlan(
        id=c.id, name=c.name or c.id, kind=c.kind, status="planned", meta_source=src.origin,
        architecture=meta.architecture, model=(f"{c.model.repo}/{c.model.file}" if c.model.repo else model),
        type=model_type(meta), quant=quant_name(meta, model), weights_bytes=src.weights,
        weights_source=src.weights_source, n_layers=p.L, training_context=meta.context_length,
        kv_bytes_per_token=f.mem.kv.bytes_per_token,
        kv_fixed_bytes=f.mem.kv.swa_bytes + f.mem.kv.recurrent_bytes,
        kv_bytes=f.mem.kv.total, compute_bytes=f.mem.compute, output_bytes=f.mem.output, context=ctx,
        context_mode=mode, slot_context=slot, max_output=max_out, vram_used=f.vram,
        vram_free=p.budget - f.vram if profile.is_gpu else None, ram_used=f.ram, gpu_layers=f.gpu_layers,
        offloaded_layers=offloaded if profile.is_gpu else None, server=settings, llama_args=settings.args(),
        notes=notes)


def plan_lab(loaded: LoadedLab, lock: Lock | None, profile: Profile | None = None, *,
             allow_unknown_arch: bool = False) -> Plan:
    """One row per contestant; a contestant that cannot be planned is an `error` row (see Plan.errors)."""
    profile = profile or loaded.profile
    lab = loaded.lab
    rows: list[ContestantPlan] = []
    for c in lab.contestants:
        base: dict[str, Any] = {"id": c.id, "name": c.name or c.id, "kind": c.kind}
        if not isinstance(c, LocalContestant):
            extra: dict[str, Any] = {"model": c.model, "context": c.context,
                     "max_output": c.max_output} if isinstance(c, CloudContestant) else {}
            rows.append(ContestantPlan(**base, **extra, status="not served",
                                       type="cloud" if c.kind == "cloud" else c.kind))
            continue
        try:
            rows.append(plan_contestant(lab.serve, c, lock, profile, allow_unknown_arch=allow_unknown_arch))
        except PlanError as e:
            rows.append(ContestantPlan(**base, status="error", error=str(e)))
            continue
    for row, c in zip(rows, lab.contestants, strict=True):
        agent = lab.agent_for(c) if c.kind in ("local", "cloud") else None
        ctx = row.slot_context or row.context
        locked = lock.models.get(c.id) if lock else None
        sha = locked.files[0].sha256 if locked else None
        if agent and (w := fit_warning(ctx, row.max_output, lookup(agent.runtime, agent.version, sha))):
            row.warnings.append(w)
    return Plan(lab=lab.lab.name, profile=profile.name, profile_summary=profile.summary(), gpu=profile.is_gpu,
                vram_total=profile.total_vram, vram_reserve=profile.vram_reserve,
                vram_budget=profile.total_vram - profile.vram_reserve if profile.is_gpu else 0,
                host_ram=profile.host_ram, contestants=rows)
