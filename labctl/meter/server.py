"""Serving a meter: the listening socket, the event loop it runs on, and the handle to stop it.

Why apart from labctl/meter/proxy.py: that module is what the proxy does with one call; this one is
how it is hosted, the same for the `labctl meter` command (its own process, in a run's meter
container) and for tests and in-process runners (a loop in a background thread).

The loop is uvloop's: the meter's CPU per streamed token and per call is mostly event-loop and
socket overhead (one read and one write per upstream event), and uvloop does that part in C.

API: `MeterConfig` → `await start_meter(cfg)` → `MeterHandle` (url, state, `await stop()`), or
`with meter_in_thread(cfg) as handle:` from synchronous code; `run_loop(coro)` runs a coroutine
on a fresh uvloop loop (the command's foreground).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import uvloop
from aiohttp import web

from labctl.meter.proxy import Meter
from labctl.meter.state import MeterConfig, MeterState

__all__ = ["MeterHandle", "meter_in_thread", "run_loop", "start_meter"]

T = TypeVar("T")
SHUTDOWN_S = 3.0
"""How long a stopping meter lets calls in flight finish before it cancels them (and records them)."""


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` on a uvloop loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


@dataclass
class MeterHandle:
    """A running meter: where it listens, its live state, and how to stop it."""

    meter: Meter
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def state(self) -> MeterState:
        return self.meter.state

    def drain(self) -> None:
        """Block until every record and status so far is on disk (from any thread but the meter's)."""
        loop = self.meter.loop
        if loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(self.meter.flush(), loop).result(30)
        self.meter.recorder.drain()

    async def stop(self) -> None:
        await self.runner.cleanup()
        await self.meter.close()


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "labctl-meter"  # the same for every contestant


async def start_meter(cfg: MeterConfig) -> MeterHandle:
    """Start listening on the running loop; stop with `await handle.stop()`."""
    meter = Meter(cfg)
    await meter.open()
    app = web.Application(client_max_size=cfg.max_request_bytes)  # long contexts exceed aiohttp's 1 MiB
    app.on_response_prepare.append(_server_header)
    app.router.add_route("*", "/{tail:.*}", meter.handle)
    # handler_cancellation: an agent that hangs up (stopped at its wall time) ends its call at once,
    # even while the upstream is silent (a long prompt), so the call is recorded and the upstream
    # connection closed; shutdown_timeout: a stop ends calls in flight well within docker stop's grace.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, handler_cancellation=True,
                           shutdown_timeout=SHUTDOWN_S)
    await runner.setup()
    try:
        await web.TCPSite(runner, cfg.host, cfg.port).start()
    except OSError:
        await runner.cleanup()
        await meter.close()
        raise
    return MeterHandle(meter, runner, cfg.host, runner.addresses[0][1])


@contextlib.contextmanager
def meter_in_thread(cfg: MeterConfig) -> Iterator[MeterHandle]:
    """A meter on its own event loop in a background thread (tests, in-process runners)."""
    loop = uvloop.new_event_loop()
    box: dict[str, Any] = {}
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            box["handle"] = loop.run_until_complete(start_meter(cfg))
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e
            ready.set()
            loop.close()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(box["handle"].stop())
        loop.close()

    thread = threading.Thread(target=run, name="labctl-meter", daemon=True)
    thread.start()
    if not ready.wait(30):
        raise TimeoutError("the meter did not start within 30 s")
    if "error" in box:
        raise box["error"]
    try:
        yield box["handle"]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
