"""`labctl meter`: run the metering proxy in the foreground (in a run's meter container, or by hand).

In a run it is the meter container's command (`labctl meter …` in the labctl image); the latency
benchmark starts it the same way, as its own process.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from pydantic import ValidationError

from labctl.cli.console import EXIT_FAIL, EXIT_SPEC, emit, fail, out
from labctl.errors import LabctlError
from labctl.meter.state import MeterConfigError
from labctl.spec.interventions import Interventions

if TYPE_CHECKING:
    from labctl.meter.server import MeterHandle
    from labctl.meter.state import MeterConfig, MeterState


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` (loopback) or `[v6]:PORT`."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise MeterConfigError(f"--listen wants HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def load_interventions(path: Path | None) -> Interventions:
    """A JSON file holding the lab's `interventions` table (max_nudges, rules)."""
    if path is None:
        return Interventions()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise MeterConfigError(str(e)) from e
    return Interventions.model_validate_json(text)


async def serve_until_signalled(cfg: MeterConfig, ready: Callable[[MeterHandle], None] | None = None
                                ) -> MeterState:
    """Run until SIGINT/SIGTERM; `ready(handle)` is called once listening. Returns the final state."""
    from labctl.meter.server import start_meter

    handle = await start_meter(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready(handle)
    try:
        await stop.wait()
    finally:
        await handle.stop()
    return handle.state


def meter_command(
    upstream: Annotated[str, typer.Option(help="Model server base URL, e.g. http://llama:8080.")],
    dialect: Annotated[Literal["openai", "anthropic"],
                       typer.Option(help="Provider dialect: key header, error and model-list shapes.")],
    transcript: Annotated[Path, typer.Option(help="JSONL transcript (appended); status.json goes beside.")],
    listen: Annotated[str, typer.Option(help="HOST:PORT to listen on (port 0: any free port).")]
    = "127.0.0.1:8080",
    api_key_env: Annotated[str | None, typer.Option(
        help="Host environment variable with the real API key (replaces whatever the agent sends).")] = None,
    token_budget: Annotated[int | None, typer.Option(help="Total tokens before calls are refused.")] = None,
    request_budget: Annotated[int | None, typer.Option(
        help="Model calls forwarded before later ones are refused (runtimes without a turn limit).")] = None,
    cost_budget: Annotated[float | None, typer.Option(
        help="USD (from --price) before later calls are refused.")] = None,
    price: Annotated[str | None, typer.Option(
        help="The declared price as JSON (input, output, cache_read, cache_write per M tokens, as_of, "
             "source): every exchange's cost_usd.")] = None,
    max_output: Annotated[int | None, typer.Option(
        help="Most output tokens per call: every request's output limit is clamped to it (set if absent).",
        min=1)] = None,
    alias: Annotated[str, typer.Option(help="The only model name the agent sees (e.g. the run id).")]
    = "model",
    upstream_model: Annotated[str | None, typer.Option(help="Model id sent upstream (cloud).")] = None,
    interventions: Annotated[Path | None, typer.Option(
        help="JSON file with the interventions table (max_nudges, rules).", exists=True, dir_okay=False)]
    = None,
    status: Annotated[Path | None, typer.Option(help="Status file (default: status.json by the transcript).")]
    = None,
    max_request_bytes: Annotated[int, typer.Option(
        help="Largest request body forwarded; larger ones get 413 from the meter.")] = 32 << 20,
    blob_bytes: Annotated[int, typer.Option(
        help="Request bodies larger than this are kept as transcript.blobs/<sha256> (-1: never).")]
    = 1 << 20,
    control: Annotated[Path | None, typer.Option(
        help="Directory polled for the operator's `labctl nudge` / `labctl stop` (no network route).")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the listening line and final state as JSON.")]
    = False,
) -> None:
    """Run the metering proxy between an agent and its model until SIGINT/SIGTERM."""
    try:
        cfg = meter_config(upstream=upstream, dialect=dialect, transcript=transcript, listen=listen,
                           api_key_env=api_key_env, token_budget=token_budget, request_budget=request_budget,
                           max_output=max_output, alias=alias, upstream_model=upstream_model,
                           interventions=interventions, status=status, max_request_bytes=max_request_bytes,
                           blob_bytes=blob_bytes, control=control, cost_budget=cost_budget, price=price)
    except (LabctlError, ValidationError) as e:  # ValidationError: MeterConfig's or the interventions'
        raise fail(str(e).splitlines()[0] if not isinstance(e, ValidationError) else _first(e), as_json,
                   code=EXIT_SPEC) from None

    def ready(handle: MeterHandle) -> None:
        # one line, flushed: whoever started us (a runner, the benchmark) waits for it
        if as_json:
            print(json.dumps({"listening": handle.url, "transcript": str(cfg.transcript),
                              "status": str(cfg.status_file())}), flush=True)
        else:
            out.print(f"meter listening on {handle.url} → {cfg.dialect} upstream; "
                      f"transcript {cfg.transcript}",
                      highlight=False)
            out.file.flush()

    try:
        from labctl.meter.server import run_loop

        state = run_loop(serve_until_signalled(cfg, ready))
    except (LabctlError, OSError) as e:  # OSError: the port is taken, the transcript cannot be opened
        raise fail(str(e), as_json, code=EXIT_FAIL) from None
    if as_json:
        emit({"ok": not state.errored, "state": state.model_dump()})
    else:
        out.print(f"meter stopped: {state.requests} requests, {state.total_tokens} tokens, "
                  f"{state.errors} errors", highlight=False)


def meter_config(*, upstream: str, dialect: Literal["openai", "anthropic"], transcript: Path, listen: str,
                 api_key_env: str | None, token_budget: int | None, request_budget: int | None,
                 max_output: int | None, alias: str, upstream_model: str | None, interventions: Path | None,
                 status: Path | None, max_request_bytes: int, blob_bytes: int,
                 control: Path | None = None, cost_budget: float | None = None, price: str | None = None
                 ) -> MeterConfig:
    """The config `labctl meter`'s options describe (the inverse of `MeterConfig.to_argv`)."""
    from labctl.meter.state import MeterConfig  # aiohttp only when a meter really starts
    from labctl.spec.price import Price

    host, port = parse_listen(listen)
    return MeterConfig(upstream=upstream, dialect=dialect, transcript=transcript, host=host, port=port,
                       alias=alias, upstream_model=upstream_model, api_key_env=api_key_env,
                       token_budget=token_budget, request_budget=request_budget, max_output=max_output,
                       interventions=load_interventions(interventions), status_path=status,
                       max_request_bytes=max_request_bytes, blob_bytes=None if blob_bytes < 0 else blob_bytes,
                       control_dir=control, cost_budget=cost_budget,
                       price=Price.model_validate_json(price) if price else None)


def _first(e: ValidationError) -> str:
    first = e.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where + ': ' if where else ''}{first['msg'].removeprefix('Value error, ')}"
