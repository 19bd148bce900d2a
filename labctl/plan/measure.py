"""`labctl plan --measure`: llama.cpp's own numbers for each planned contestant, on its shape twin.

Per local contestant: write the twin (`labctl.plan.twin`), ask llama.cpp's fitter (`llama-fit-params`,
built beside llama-server) which context and `-ngl` it would choose, then start llama-server with
exactly the planned flags and `-fit off`, read the memory breakdown it prints when it stops (model /
context / compute per device and host) and the KV sizes it logs at load, and time a short completion
(prompt and generation speed; the weights are zeros, so the text is meaningless but the work is real).

On a GPU bigger than the profile's, a ballast process (`python -m labctl.plan.ballast`) holds the free
VRAM down to the planner's budget first, so "it loads" means it loads on the profile's card. On a CPU
host (profile `cpu`) the same path runs against the CPU llama-server, the breakdown coming from host
buffers, which is how CI proves it. Results go to `<lab>.measured.<profile>.json` beside the lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from labctl.lock.lockfile import Lock
from labctl.plan import llamaserver as ls
from labctl.plan.measured import Fitter, Measured, Measurement, Speed, parse_breakdown
from labctl.plan.planner import ContestantPlan, Plan
from labctl.plan.twin import TwinError, write_twin
from labctl.spec.lab import LocalContestant
from labctl.spec.load import LoadedLab

MiB = 1 << 20
FREE_ENV = "LABCTL_MEASURE_FREE_MIB"
FIT_TIMEOUT_S = 600
PROMPT_WORDS = 400
GEN_TOKENS = 64
_VERSION = re.compile(r"version: (\S+) \((?:build \S+, commit )?([0-9a-f]+|unknown)\)")


def gpu_info() -> dict[str, Any] | None:
    """nvidia-smi's view of GPU 0 (None without an NVIDIA GPU)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    q = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total,memory.free",
                        "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=60)
    head = subprocess.run([smi], capture_output=True, text=True, timeout=60).stdout
    if q.returncode != 0 or not q.stdout.strip():
        return None
    name, driver, total, free = [x.strip() for x in q.stdout.splitlines()[0].split(",")]
    cuda = re.search(r"CUDA Version: ([\d.]+)", head)
    return {"gpu": name, "driver": driver, "cuda": cuda.group(1) if cuda else None,
            "total_mib": int(total), "free_mib": int(free)}


def llama_version(binary: Path) -> dict[str, str]:
    done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    m = _VERSION.search(done.stdout + done.stderr)
    return {"build": m.group(1), "commit": m.group(2)} if m else {"build": "?", "commit": "?"}


@contextlib.contextmanager
def ballast(free_target: int) -> Iterator[None]:
    """Hold GPU 0's free memory down to `free_target` bytes while the block runs (see labctl.plan.ballast)."""
    proc = subprocess.Popen([sys.executable, "-m", "labctl.plan.ballast", str(free_target)],
                            stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("ready"):
            raise ls.MeasureError(f"GPU ballast did not start: {line.strip() or 'no output'}")
        yield
    finally:
        with contextlib.suppress(OSError):
            if proc.stdin:
                proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_fitter(fit_binary: Path | None, twin: Path, plan: ContestantPlan, margin_mib: int) -> Fitter | None:
    """`llama-fit-params` with the planned cache flags and `-c 0` (the training context, shrunk to fit)."""
    if fit_binary is None or plan.server is None:
        return None
    s = plan.server
    argv = [str(fit_binary), "-m", str(twin), "-c", "0", "-fa", s.flash_attention, "-ctk", s.cache_type_k,
            "-ctv", s.cache_type_v, "-np", str(s.parallel), "-fitt", str(margin_mib)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=FIT_TIMEOUT_S)
    m = re.search(r"-c (\d+) -ngl (-?\d+)", done.stdout)
    if done.returncode != 0 or m is None:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return Fitter(ok=False, error=f"exit {done.returncode}: {tail}")
    return Fitter(ok=True, context=int(m.group(1)), gpu_layers=int(m.group(2)),
                  args=done.stdout.strip().splitlines()[-1])


def fit_print(fit_binary: Path, twin: Path, settings: ls.ServerSettings) -> dict[str, dict[str, int]]:
    """llama.cpp's own estimate (`llama-fit-params --fit-print on`, no memory allocated) for the planned
    context and cache flags: MiB of model / context / compute per device and host."""
    argv = [str(fit_binary), "-m", str(twin), "-c", str(settings.context), "-fa", settings.flash_attention,
            "-ctk", settings.cache_type_k, "-ctv", settings.cache_type_v, "-np", str(settings.parallel),
            "-ngl", str(settings.gpu_layers), "--fit-print", "on"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=FIT_TIMEOUT_S)
    rows = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and all(p.isdigit() for p in parts[1:]):
            rows[parts[0]] = dict(zip(("model", "context", "compute"), map(int, parts[1:]), strict=True))
    if done.returncode != 0 or not rows:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ls.MeasureError(f"llama-fit-params --fit-print failed (exit {done.returncode}): {tail}")
    return rows


def _speed(url: str) -> Speed | None:
    body = {"prompt": "hello " * PROMPT_WORDS, "n_predict": GEN_TOKENS, "ignore_eos": True,
            "cache_prompt": False, "temperature": 0}
    status, got = ls.http_json("POST", url + "/completion", body, timeout=600)
    t = got.get("timings") if status == 200 else None
    if not t:
        return None
    return Speed(prompt_tokens=t["prompt_n"], prompt_per_second=round(t["prompt_per_second"], 2),
                 generated_tokens=t["predicted_n"], generated_per_second=round(t["predicted_per_second"], 2))


def measure_one(c: LocalContestant, plan: ContestantPlan, lock: Lock | None, server: Path,
                fit_binary: Path | None, work: Path, margin_mib: int) -> Measured:
    """Twin, fitter, then llama-server with the planned flags (`-fit off`, as every planned start)."""
    model = lock.models.get(c.id) if lock else None
    file_name = c.model.file or (c.model.path.name if c.model.path else f"{c.id}.gguf")
    t = write_twin(model, c.model.declared, file_name, work / c.id / Path(file_name).name)
    planned = {"context": plan.context, "kv": plan.kv_bytes, "compute": plan.compute_bytes,
               "output": plan.output_bytes, "weights": plan.weights_bytes, "vram_used": plan.vram_used,
               "ram_used": plan.ram_used, "gpu_layers": plan.gpu_layers}
    fitter = run_fitter(fit_binary, t.path, plan, margin_mib)
    assert plan.server is not None
    argv = ls.server_argv(server, t.path, plan.server, alias=c.id, verbosity=4)  # -fit off: as planned
    log = work / c.id / "server.log"
    row = Measured(id=c.id, twin_source=t.source, twin_bytes=t.size, args=argv[1:], loaded=False,
                   fitter=fitter, planned=planned)
    try:
        with ls.serve(argv, log, timeout=900) as url:
            row.loaded = True
            row.speed = _speed(url)
    except ls.ServerStartError as e:
        row.error_kind, row.error = e.kind, e.message
    text = log.read_text(errors="replace") if log.is_file() else ""
    row.breakdown = parse_breakdown(text)
    kv = ls.parse_kv_log(text)
    row.kv_mib, row.recurrent_mib, row.n_ctx = kv["kv_mib"], kv["recurrent_mib"], kv["n_ctx"]
    row.compute_mib = sum(kv["compute"].values()) or None
    return row


def measure_plan(loaded: LoadedLab, lock: Lock | None, plan: Plan, server: Path, fit_binary: Path | None,
            work: Path | None = None) -> Measurement:
    """Measure every planned local contestant of `plan` (its profile) and return the record."""
    gpu = gpu_info() if plan.gpu else None
    if plan.gpu and gpu is None:
        raise ls.MeasureError(f"profile {plan.profile} is a GPU profile but nvidia-smi finds no GPU here")
    # Free VRAM held to the plan's budget (total − reserve): stricter than a bare card of the profile,
    # whose reserve is partly free, so "loads" here means it loads there. FREE_ENV overrides it.
    free_target = None
    want = int(os.environ.get(FREE_ENV, 0)) or plan.vram_budget // MiB
    if gpu is not None and gpu["free_mib"] > want:
        free_target = want
    host = gpu or {"cpu": _cpu_name(), "threads": os.cpu_count()}
    rows: list[Measured] = []
    by_id = {c.id: c for c in loaded.lab.contestants if isinstance(c, LocalContestant)}
    tmp = tempfile.TemporaryDirectory(prefix="labctl-measure-") if work is None else None
    base = Path(tmp.name) if tmp else Path(work)  # type: ignore[arg-type]
    try:
        with ballast(free_target * MiB) if free_target else contextlib.nullcontext():
            for p in plan.contestants:
                if p.status != "planned" or p.id not in by_id:
                    continue
                try:
                    rows.append(measure_one(by_id[p.id], p, lock, server, fit_binary, base, 0))
                except TwinError as e:
                    rows.append(Measured(id=p.id, twin_source="none", twin_bytes=0, args=[], loaded=False,
                                         error_kind="twin", error=str(e)))
    finally:
        if tmp:
            tmp.cleanup()
    return Measurement(lab=plan.lab, profile=plan.profile, date=dt.datetime.now(dt.UTC).isoformat(
        timespec="seconds"), host=host, llama_cpp=llama_version(server), free_target_mib=free_target,
        contestants=rows)


def write_measured(path: Path, m: Measurement) -> None:
    path.write_text(json.dumps(m.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")


def fit_params_binary(server: Path) -> Path | None:
    """`$LABCTL_LLAMA_FIT_PARAMS`, else `llama-fit-params` beside llama-server, else None."""
    env = os.environ.get("LABCTL_LLAMA_FIT_PARAMS")
    if env:
        return Path(env)
    p = server.with_name("llama-fit-params")
    return p if p.is_file() and os.access(p, os.X_OK) else None


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"
