"""The real llama-server: find (or build) it, spell its arguments, run it, read its load log.

One launcher for everything that starts llama-server (tests, the planner's verification, the
runner), so the flags a plan chose are exactly the flags that run, a failed start says why in one
word (`oom`, `bad_model`, `unsupported_cache`, `crash`, …), and no server outlives its block.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from labctl.errors import LabctlError

BUILD_SCRIPT = Path(__file__).resolve().parent / "build-llama-server.sh"
ENV_BINARY = "LABCTL_LLAMA_SERVER"
BUILD_TIMEOUT_S = 3600

StartFailure = Literal["oom", "bad_model", "unsupported_cache", "bad_args", "port", "timeout", "crash"]


class MeasureError(LabctlError, RuntimeError):
    """A tool `plan --measure` needs failed: the llama-server build, the GPU ballast, llama-fit-params,
    or no GPU where the profile wants one (a RuntimeError still, as before)."""


class ServerStartError(LabctlError, RuntimeError):
    """llama-server did not become healthy; `kind` classifies why from its log."""

    def __init__(self, kind: StartFailure, message: str, log_tail: str = "") -> None:
        super().__init__(f"llama-server failed to start ({kind}): {message}")
        self.kind = kind
        self.message = message
        self.log_tail = log_tail


class ServerSettings(BaseModel):
    """The llama-server flags a plan decides; `args()` spells them, every one explicit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    context: int = Field(ge=1)
    """`-c`: always passed (0 would mean the training context, and auto-fit may shrink an unset one)."""
    gpu_layers: int = Field(default=0, ge=0)
    """`-ngl`: layers on the GPU (n_layer + 1 = all, output layer included)."""
    flash_attention: Literal["on", "off", "auto"] = "auto"
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    max_output: int = -1
    """`-n`: most tokens per response (-1: until the context is full)."""
    parallel: int = Field(default=1, ge=1)
    """`-np`: slots; passed explicitly so the cache is not the server's 4-slot unified default."""
    fit: Literal["on", "off"] = "off"
    """`-fit`: off, so llama-server runs exactly the planned flags; with `on` it would quietly offload
    layers or shrink the context when memory is short, and a plan that does not fit would look like a
    slow model instead of a clear out-of-memory error."""
    rope_scale: str | None = None
    """`--rope-scaling yarn --rope-scale F`: set only when the plan serves more than the training
    context (serve.allow_rope_scaling). Without it llama-server caps every slot at the training context
    ("exceeds the training context of the model … capping"); with it llama.cpp re-adjusts its training
    context to yarn_orig_ctx × F (`llama_init_from_model`), so the slot really gets the planned context.
    Spelled as a decimal string (see `yarn_scale`) so the float32 arithmetic lands on the plan."""
    yarn_orig_ctx: int | None = None
    """`--yarn-orig-ctx N`: the model's training context, which the scale multiplies."""
    extra_args: tuple[str, ...] = ()
    """Passed after the planned flags, as they are."""

    def args(self) -> list[str]:
        rope = (["--rope-scaling", "yarn", "--rope-scale", self.rope_scale, "--yarn-orig-ctx",
                 str(self.yarn_orig_ctx)] if self.rope_scale and self.yarn_orig_ctx else [])
        return ["-c", str(self.context), "-ngl", str(self.gpu_layers), "-fa", self.flash_attention,
                "-ctk", self.cache_type_k, "-ctv", self.cache_type_v, "-n", str(self.max_output),
                "-np", str(self.parallel), "-fit", self.fit, *rope, *self.extra_args]


def _f32(x: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


def yarn_context(train: int, scale: str) -> int:
    """The training context llama.cpp adopts for `--rope-scale scale --yarn-orig-ctx train`, in its own
    float32 arithmetic: rope_freq_scale = 1.0f / stof(scale); n_ctx_train = (uint32) (train / freq)."""
    freq = _f32(1.0 / _f32(float(scale)))
    return int(_f32(train / freq))


def yarn_scale(target: int, train: int) -> str:
    """The shortest decimal factor F (≥ target / train) for which llama.cpp's adjusted training context
    is at least `target` (float32 truncation could otherwise land one token short: 12287 for 12288)."""
    for digits in range(3, 10):
        f = target / train
        for _ in range(200):
            s = f"{f:.{digits}f}"
            if yarn_context(train, s) >= target:
                return s.rstrip("0").rstrip(".") if "." in s else s
            f += 10.0 ** -digits
    raise ValueError(f"no rope scale reaches {target} from {train}")  # pragma: no cover


def find_binary(build: bool = True) -> Path:
    """`$LABCTL_LLAMA_SERVER`, else the cached CPU build (built by scripts/build-llama-server.sh,
    which is idempotent and prints the binary's path last)."""
    env = os.environ.get(ENV_BINARY)
    if env:
        path = Path(env)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise FileNotFoundError(f"{ENV_BINARY}={env} is not an executable file")
        return path
    cache = Path(os.environ.get("LABCTL_LLAMA_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "labctl" / "llama.cpp")
    cached = cache / "bin" / "llama-server"
    if not build:
        if cached.is_file():
            return cached
        raise FileNotFoundError(f"no llama-server at {cached}; run {BUILD_SCRIPT} or set {ENV_BINARY}")
    done = subprocess.run(["bash", str(BUILD_SCRIPT)], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=BUILD_TIMEOUT_S)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or not Path(lines[-1]).is_file():
        tail = "\n".join((done.stderr or "").strip().splitlines()[-20:])
        raise MeasureError(f"{BUILD_SCRIPT.name} failed (exit {done.returncode}):\n{tail}")
    return Path(lines[-1])


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def server_argv(binary: Path | str, model_path: Path | str, settings: ServerSettings | Any,
                host: str = "127.0.0.1", port: int | None = None, *, alias: str | None = None,
                verbosity: int | None = None) -> list[str]:
    """The full command line. `settings` is a ServerSettings or anything carrying one as `.server`
    (a ContestantPlan), so a plan's decisions reach the server unchanged."""
    s = settings if isinstance(settings, ServerSettings) else getattr(settings, "server", None)
    if not isinstance(s, ServerSettings):
        raise TypeError("settings must be a ServerSettings or carry one as .server (a served plan)")
    argv = [str(binary), "-m", str(model_path), *s.args(), "--metrics", "--host", host,
            "--port", str(port if port is not None else free_port(host)), "--jinja",
            "--alias", alias or Path(model_path).stem]
    if verbosity is not None:
        argv += ["-lv", str(verbosity)]
    return argv


def http_json(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 60
              ) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) of a request; HTTP errors are returned, not raised."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return e.code, {"error": raw.decode(errors="replace")}


_FAILURES: list[tuple[StartFailure, re.Pattern[str]]] = [
    ("oom", re.compile(r"out of memory|failed to allocate|cudaMalloc failed|unable to allocate|"
                       r"std::bad_alloc|not enough memory", re.I)),
    ("unsupported_cache", re.compile(r"quantized V cache requires flash_attn|cache type \S+ with block size|"
                                     r"Unsupported cache type|does not support different K", re.I)),
    ("port", re.compile(r"couldn't bind|address already in use|failed to listen", re.I)),
    ("bad_args", re.compile(r"error while handling argument|invalid argument|unknown argument", re.I)),
    ("bad_model", re.compile(r"failed to load model|error loading model|invalid magic|unknown model "
                             r"architecture|gguf_init_from_file|failed to read", re.I)),
]


def classify_failure(log: str) -> tuple[StartFailure, str]:
    """The kind of a failed start and the log line that says so (first matching kind wins)."""
    for kind, pat in _FAILURES:
        for line in log.splitlines():
            if pat.search(line):
                return kind, re.sub(r"^[\d.]+ [EWIDT] ", "", line.strip())
    errors = [ln for ln in log.splitlines() if re.match(r"^[\d.]+ E ", ln)]
    return "crash", (errors[-1] if errors else (log.strip().splitlines() or ["no output"])[-1]).strip()


def _endpoint(argv: Sequence[str]) -> str:
    def flag(name: str, default: str) -> str:
        return argv[argv.index(name) + 1] if name in argv else default
    host = flag("--host", "127.0.0.1")
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{flag('--port', '8080')}"


def _stop(proc: subprocess.Popen[bytes], grace: float = 10) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@contextlib.contextmanager
def serve(argv: Sequence[str], log_path: Path, timeout: float = 120, env: dict[str, str] | None = None
          ) -> Iterator[str]:
    """Run llama-server until the block ends; yields its base URL once /health says ok.

    A server that exits, or is not healthy within `timeout`, raises ServerStartError with the kind
    read from its log. On leaving the block it is always stopped: SIGTERM, then SIGKILL.
    """
    base = _endpoint(argv)
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(list(argv), stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **(env or {})})

    def tail() -> str:
        return log_path.read_text(errors="replace")[-6000:]

    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                text = log_path.read_text(errors="replace")
                kind, line = classify_failure(text)
                raise ServerStartError(kind, f"exited with {proc.returncode}: {line}", tail())
            with contextlib.suppress(OSError):
                status, _ = http_json("GET", base + "/health", timeout=2)
                if status == 200:
                    break
            if time.monotonic() > deadline:
                raise ServerStartError("timeout", f"not healthy after {timeout:.0f}s", tail())
            time.sleep(0.1)
        yield base
    finally:
        _stop(proc)


_MIB = r"([\d.]+) MiB"
_KV = re.compile(r"llama_kv_cache: size = +" + _MIB
                 + r" \( *(\d+) cells, +(\d+) layers, +(\d+)/(\d+) seqs\), "
                 + r"K \((\w+)\): +" + _MIB + r", V \((\w+)\): +" + _MIB)
_RS = re.compile(r"llama_memory_recurrent: size = +" + _MIB + r" \( *(\d+) cells, +(\d+) layers")
_ISWA = re.compile(r"creating +(non-SWA|SWA) KV cache, size = (\d+) cells")
_BUF = re.compile(r"(\S+) +(model|compute|output|KV|RS) buffer size = +" + _MIB)
_NCTX = re.compile(r"llama_context: n_ctx += (\d+)")


def parse_kv_log(text: str) -> dict[str, Any]:
    """Sizes llama-server logs while loading (MiB, as printed with two decimals).

    Returns `kv` (one entry per llama_kv_cache: kind base/swa, cells, layers, seqs, streams, k/v
    type and MiB, size), `kv_mib` (sum), `kv_swa_mib`, `kv_base_mib`, `recurrent_mib`, and
    `model` / `compute` / `output` buffers as {device: MiB}, plus `n_ctx`.
    """
    out: dict[str, Any] = {"kv": [], "model": {}, "compute": {}, "output": {}, "kv_buffers": {},
                           "recurrent_mib": 0.0, "n_ctx": None}
    pending = "base"
    for line in text.splitlines():
        if m := _ISWA.search(line):
            pending = "swa" if m.group(1) == "SWA" else "base"
        elif m := _KV.search(line):
            out["kv"].append({"kind": pending, "size_mib": float(m.group(1)), "cells": int(m.group(2)),
                              "layers": int(m.group(3)), "seqs": int(m.group(4)), "streams": int(m.group(5)),
                              "k_type": m.group(6), "k_mib": float(m.group(7)), "v_type": m.group(8),
                              "v_mib": float(m.group(9))})
            pending = "base"
        elif m := _RS.search(line):
            out["recurrent_mib"] += float(m.group(1))
        elif m := _BUF.search(line):
            dev, what, mib = m.group(1), m.group(2), float(m.group(3))
            bucket = {"KV": "kv_buffers", "RS": "kv_buffers"}.get(what, what)
            out[bucket][dev] = out[bucket].get(dev, 0.0) + mib
        elif (m := _NCTX.search(line)) and out["n_ctx"] is None:
            out["n_ctx"] = int(m.group(1))
    out["kv_mib"] = sum(k["size_mib"] for k in out["kv"])
    out["kv_swa_mib"] = sum(k["size_mib"] for k in out["kv"] if k["kind"] == "swa")
    out["kv_base_mib"] = out["kv_mib"] - out["kv_swa_mib"]
    return out
