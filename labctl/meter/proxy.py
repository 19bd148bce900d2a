"""The metering proxy between an agent and its model: the agent's only way out of its container.

Why it exists: a blind, comparable round needs every model call recorded the same way (usage,
its cost at a declared price, llama.cpp `timings`, tool calls), budgets enforced outside the agent,
real API keys kept out of the task container, and nothing that names the model reaching the agent.
So the agent gets a base URL and a dummy key; this proxy swaps in the real key, rewrites the model's
name to a neutral alias, streams bytes straight through (edits on the way, parsing afterwards:
sserelay.py), appends one transcript record per request (large bodies as blobs: blobs.py), answers
413 itself above `max_request_bytes`, and publishes a `MeterState` (status.json, `GET /_labctl/status`).
`Meter` is the logic (routing, one model call from gate to record); serving it: server.py; wire
formats: transcript.py; config and state: state.py; files: recorder.py; the operator's channel (a
directory, never a route): control.py — all in labctl/meter/.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from labctl.meter.control import ControlReader
from labctl.meter.cost import exchange_cost
from labctl.meter.limits import clamps, forwarded_bytes
from labctl.meter.policy import InterventionPolicy
from labctl.meter.recorder import Recorder, StatusPublisher
from labctl.meter.sserelay import StreamRelay
from labctl.meter.state import MeterConfig, MeterConfigError, MeterState
from labctl.meter.transcript import (
    AnyReassembler,
    Dialect,
    downstream_headers,
    dump,
    error_body,
    error_event,
    loads,
    models_body,
    new_record,
    reassembler,
    rewrite_identity,
    scrub,
    scrub_bytes,
    upstream_headers,
    with_model,
)
from labctl.meter.upstream import Pool, UpstreamError, UpstreamResponse

__all__ = ["Meter", "MeterConfig", "MeterState"]

METERED: dict[str, Dialect] = {"/v1/chat/completions": "openai", "/chat/completions": "openai",
                               "/v1/messages": "anthropic", "/messages": "anthropic",
                               "/v1/responses": "responses", "/responses": "responses"}
"""Model calls: recorded, budgeted, open to interventions. Other model-calling paths
(/v1/completions, /completion, …) are refused, so nothing reaches the model unmetered."""
PASSTHROUGH = {"/health", "/v1/health", "/v1/messages/count_tokens"}
"""Forwarded as they are (no tokens spent). Introspection such as llama-server's /props, /slots
or /metrics is refused: it names the model file, its chat template and its size."""
STATUS_PATH = "/_labctl/status"
_INFRA = {401, 403, 404}
"""Upstream answers meaning our side is wrong (key, URL or model id): the run errored."""
_MODEL_FAULT = re.compile(rb"model produced output that does not match|failed to parse (tool call|input)",
                          re.I)
"""llama-server's 500 for output its chat format cannot parse (e.g. a malformed tool call): the
model failed, not the harness — the agent sees it, and the run is graded, not marked errored."""
Rec = dict[str, Any]


class Meter:
    """One proxy: config, state, transcript, the upstream connection pool and the handler."""
    def __init__(self, cfg: MeterConfig) -> None:
        self.cfg = cfg
        self.key: str | None = None
        if cfg.api_key_env:
            self.key = os.environ.get(cfg.api_key_env)
            if not self.key:
                raise MeterConfigError(f"environment variable {cfg.api_key_env} (the API key) is not set")
        self.state = MeterState.starting(cfg)
        self.recorder = Recorder(cfg.transcript, cfg.status_file(), cfg.alias,
                                 secrets=[self.key] if self.key else [], blob_bytes=cfg.blob_bytes)
        self.names = self.recorder.names  # upstream model names seen: redacted wherever they appear
        self.fingerprints: set[str | None] = set()  # upstream system_fingerprints seen: cut from streams
        up = urlsplit(cfg.upstream)
        self.recorder.hidden = {k: "[upstream]" for k in (cfg.upstream.rstrip("/"), up.netloc) if k}
        if cfg.upstream_model:
            self.names.add(cfg.upstream_model)
        self.policy = InterventionPolicy(cfg.interventions)
        self.pool: Pool | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._targets: dict[str, str] = {}
        self.seq = 0
        self.status = StatusPublisher(self.state, self.recorder)
        self.publish = self.status.publish
        self.control = ControlReader(cfg.control_dir, self.state, self.recorder.write, self.publish) \
            if cfg.control_dir else None  # the operator's: labctl/meter/control.py
        self.publish(now=True)

    async def open(self) -> None:
        self.loop = self.status.loop = asyncio.get_running_loop()
        if self.control is not None:
            self.control.start(self.loop)
        # its own lean client (labctl/meter/upstream.py): aiohttp's cost half of what the meter adds
        self.pool = Pool(self.cfg.upstream, connect_timeout_s=self.cfg.connect_timeout_s,
                         read_timeout_s=self.cfg.read_timeout_s, keepalive_s=self.cfg.keepalive_s, limit=64)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
        await self.flush()
        self.recorder.close()

    async def flush(self) -> None:
        """Publish a state still waiting for its turn (drain, shutdown)."""
        self.status.flush()

    def target(self, path: str, query: str = "") -> str:
        """The request target (path and query) on the upstream for one of ours; the path computed
        once per path of ours (they are few: model calls and passthroughs)."""
        if (found := self._targets.get(path)) is None:
            found = self._targets[path] = urlsplit(self.url(path)).path or "/"
        return found + (f"?{query}" if query else "")

    def url(self, path: str, query: str = "") -> str:
        """Upstream URL; a base ending in /v1 (`https://api.openai.com/v1`) is not doubled."""
        base = self.cfg.upstream.rstrip("/")
        if base.endswith("/v1") and path.startswith("/v1/"):
            path = path[3:]
        return base + path + (f"?{query}" if query else "")

    def fail(self, dialect: Dialect, status: int, message: str, kind: str, code: str | None = None
             ) -> web.Response:
        return web.json_response(error_body(dialect, message, kind, code), status=status, dumps=dump)

    @staticmethod
    async def send(request: web.Request, resp: web.StreamResponse) -> web.StreamResponse:
        """Deliver the whole response now: the bookkeeping after it is not on the agent's clock."""
        await resp.prepare(request)
        await resp.write_eof()
        return resp

    # ------------------------------------------------------------------ routing
    async def handle(self, request: web.Request) -> web.StreamResponse:
        path, dialect = request.path, self.cfg.dialect
        if path in METERED and request.method == "POST":
            return await self.exchange(request, METERED[path], "/v1" + path.removeprefix("/v1"))
        if path == STATUS_PATH:
            return web.json_response(self.state.model_dump(), dumps=dump)
        if path in ("/v1/models", "/models") or path.startswith(("/v1/models/", "/models/")):
            listing = path.rstrip("/") in ("/v1/models", "/models")
            return web.json_response(models_body(dialect, self.cfg.alias, listing), dumps=dump)
        if path in PASSTHROUGH:
            return await self.passthrough(request)
        return self.fail(dialect, 404, f"{request.method} {path} is not forwarded by the meter",
                         "not_found_error" if dialect == "anthropic" else "invalid_request_error")

    async def passthrough(self, request: web.Request) -> web.StreamResponse:
        assert self.pool is not None
        headers = upstream_headers(request.headers, self.cfg.dialect, self.key)
        body = await request.read()
        if self.cfg.upstream_model and request.path.endswith("/count_tokens"):
            body = with_model(body, self.cfg.upstream_model)  # counted for the real model, not the alias
        try:
            async with self.pool.request(request.method, self.target(request.path, request.query_string),
                                         body, headers) as up:
                data = scrub_bytes(await up.read(), self.cfg.alias, self.names)
                return web.Response(body=data, status=up.status, headers=downstream_headers(up.headers))
        except UpstreamError as e:
            return self.fail(self.cfg.dialect, 502, f"upstream unreachable: {type(e).__name__}", "api_error")

    # ------------------------------------------------------------------ model calls
    async def exchange(self, request: web.Request, dialect: Dialect, path: str) -> web.StreamResponse:
        """One model call: gate, forward, relay, then record and publish."""
        t0, m0 = time.time(), time.perf_counter()
        self.seq += 1
        self.state.requests += 1
        self.state.last_request_time = t0
        rec = new_record(self.seq, t0, dialect, path)
        asm = reassembler(dialect, self.cfg.alias)
        try:
            size = request.content_length
            if size is not None and size > self.cfg.max_request_bytes:
                return await self.too_large(request, rec, dialect, size)
            try:
                raw = await request.read()  # a chunked body is cut at the app's client_max_size
            except web.HTTPRequestEntityTooLarge:
                return await self.too_large(request, rec, dialect, None)
            rec["request_bytes"] = len(raw)
            try:
                body = loads(raw)
                if not isinstance(body, dict):
                    raise ValueError("not an object")
            except ValueError as e:
                return await self.refuse(request, rec, dialect, 400,
                                         f"request body is not a JSON object: {e}", "invalid_request_error")
            rec["stream"] = stream = bool(body.get("stream"))
            rec["request"] = body  # what the agent asked, nudges included; never headers, never keys
            if refused := await self.gate(request, rec, dialect, body, t0):
                return refused
            forwarded, hide_usage = body, False
            options = body.get("stream_options") or {}
            if stream and dialect == "openai" and not options.get("include_usage"):
                # streamed usage is how budgets are counted; the agent did not ask, so it won't see it
                forwarded = {**body, "stream_options": {**options, "include_usage": True}}
                hide_usage = True
            if self.cfg.upstream_model:
                forwarded = {**forwarded, "model": self.cfg.upstream_model}
            if edits := clamps(dialect, body, self.cfg.max_output) if self.cfg.max_output else []:
                rec["clamped"] = edits  # what the agent asked and what was sent
                self.state.count_clamps(edits)
            data = forwarded_bytes(raw if forwarded is body and not rec["interventions"] else None,
                                   body, forwarded, edits)
            return await self.forward(request, rec, asm, dialect, path, data, hide_usage, m0)
        finally:
            self.finish(rec, asm, m0)

    async def gate(self, request: web.Request, rec: Rec, dialect: Dialect, body: dict[str, Any],
                   now: float) -> web.StreamResponse | None:
        """Earlier stops (budget, interventions) and this request's interventions, before forwarding."""
        st = self.state
        if self.control is not None:
            self.control.poll()
        if st.stopped:
            return await self.refuse(request, rec, dialect, 429, *st.refusal())
        stop = self.policy.apply(now, st, rec, dialect, body, self.recorder.write)
        if stop is not None:
            msg = f"labctl meter: the run was stopped by intervention {stop.name!r}"
            msg += f": {stop.message}" if stop.message else ""
            return await self.refuse(request, rec, dialect, 429, msg, "run_stopped")
        if self.control is not None:
            self.control.inject(rec, dialect, body)
        return None

    async def refuse(self, request: web.Request, rec: Rec, dialect: Dialect, status: int, message: str,
                     kind: str) -> web.StreamResponse:
        self.state.refused += 1
        rec["status"], rec["error"] = status, {"type": kind, "message": message}
        return await self.send(request, self.fail(dialect, status, message, kind,
                                                  kind if dialect == "openai" else None))

    async def too_large(self, request: web.Request, rec: Rec, dialect: Dialect, size: int | None
                        ) -> web.StreamResponse:
        """413 from the meter itself: nothing that large is forwarded (or kept in memory)."""
        limit = self.cfg.max_request_bytes
        rec["request_bytes"] = size
        what = f"{size} bytes" if size is not None else "larger"
        msg = f"labctl meter: the request body is {what}, over the limit of {limit} bytes"
        self.state.refused += 1
        rec["status"], rec["error"] = 413, {"type": "request_too_large", "message": msg}
        kind = "request_too_large" if dialect == "anthropic" else "invalid_request_error"
        return await self.send(request, self.fail(dialect, 413, msg, kind, "request_too_large"))

    async def forward(self, request: web.Request, rec: Rec, asm: AnyReassembler, dialect: Dialect, path: str,
                      data: bytes, hide_usage: bool, m0: float) -> web.StreamResponse:
        assert self.pool is not None
        headers = upstream_headers(request.headers, self.cfg.dialect, self.key)
        rec["forwarded"] = True
        self.state.forwarded += 1
        try:  # (a pooled connection the upstream had closed while idle is retried by the pool)
            async with self.pool.request("POST", self.target(path), data, headers) as up:
                rec["ttfb_ms"] = round((time.perf_counter() - m0) * 1000, 3)
                rec["status"] = up.status
                if up.status >= 400:
                    return await self.upstream_failed(request, rec, dialect, up)
                if up.content_type == "text/event-stream":
                    return await self.relay_stream(request, rec, asm, dialect, up, hide_usage)
                return await self.relay_whole(request, asm, up)
        except asyncio.CancelledError:  # the agent hung up while the upstream was still working
            if rec["error"] is None:
                rec["error"] = {"type": "agent_disconnected", "message": "the agent left first"}
            raise
        except (UpstreamError, ConnectionResetError) as e:
            gone = request.transport is None or request.transport.is_closing()
            if gone or isinstance(e, ConnectionResetError):
                # the agent left (its write failed, or it gave up waiting): not the upstream's fault
                rec["error"] = {"type": "agent_disconnected", "message": "the agent left first"}
                return web.Response(status=499)
            return await self.broken(request, rec, dialect, f"upstream failed: {type(e).__name__}",
                                     detail=str(e))

    def mark_error(self, rec: Rec, kind: str, message: str, **more: Any) -> None:
        """Record an upstream failure and mark the run errored, so a runner does not mistake it for
        the model's own failure."""
        rec["error"] = {"type": kind, "message": message, **more}
        self.state.add_error(message)

    async def broken(self, request: web.Request, rec: Rec, dialect: Dialect, message: str,
                     **detail: Any) -> web.StreamResponse:
        """A 502 naming only the kind of failure (the error's own text names the upstream host)."""
        self.mark_error(rec, "upstream_unreachable", message, **detail)
        rec["status"] = 502
        resp = self.fail(dialect, 502, f"labctl meter: {message}", "api_error", "upstream_error")
        return await self.send(request, resp)

    async def upstream_failed(self, request: web.Request, rec: Rec, dialect: Dialect,
                              up: UpstreamResponse) -> web.StreamResponse:
        """5xx, or 401/403/404 (our key, URL or model is wrong): 502 to the agent, run errored.
        Other 4xx (context too long, rate limited) and a model's unparseable output are the agent's
        to see, passed through scrubbed."""
        data = await up.read()
        detail = {"upstream_status": up.status, "body": data[:4000].decode("utf-8", errors="replace")}
        if up.status >= 500 and _MODEL_FAULT.search(data):
            rec["error"] = {"type": "model_output_invalid", "message": f"HTTP {up.status}", **detail}
        elif up.status >= 500 or up.status in _INFRA:
            self.mark_error(rec, "upstream_status", f"upstream answered HTTP {up.status}", **detail)
            rec["status"] = 502
            resp = self.fail(dialect, 502, f"labctl meter: upstream error (HTTP {up.status})", "api_error",
                             "upstream_error")
            return await self.send(request, resp)
        else:
            rec["error"] = {"type": "upstream_status", "message": f"HTTP {up.status}", **detail}
        body = scrub_bytes(data, self.cfg.alias, self.names)
        return await self.send(request, web.Response(body=body, status=up.status,
                                                     headers=downstream_headers(up.headers)))

    async def relay_whole(self, request: web.Request, asm: AnyReassembler,
                          up: UpstreamResponse) -> web.StreamResponse:
        data = await up.read()
        try:
            obj = loads(data)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            asm.body(obj)
            self.names |= asm.upstream_models
            edited = rewrite_identity(data, obj, self.cfg.alias)
            if edited is None:
                scrub(obj, self.cfg.alias)
                edited = dump(obj).encode()
            data = edited
        else:
            data = scrub_bytes(data, self.cfg.alias, self.names)
        return await self.send(request, web.Response(body=data, status=up.status,
                                                     headers=downstream_headers(up.headers)))

    async def relay_stream(self, request: web.Request, rec: Rec, asm: AnyReassembler, dialect: Dialect,
                           up: UpstreamResponse, hide_usage: bool) -> web.StreamResponse:
        """Forward each upstream chunk as soon as its events are whole (never the whole response
        buffered; see labctl/meter/sserelay.py), and parse it for the transcript once the agent has its
        last byte. A stream that ends without its terminal event was dropped: the agent gets an
        error event in its dialect and the run is marked errored."""
        rec["stream"] = True
        resp = web.StreamResponse(status=up.status,
                                  headers={**downstream_headers(up.headers), "Cache-Control": "no-cache"})
        await resp.prepare(request)
        relay = StreamRelay(asm, dialect, self.cfg.alias, self.names, self.fingerprints, hide_usage)
        dropped: str | None = None
        try:
            try:
                async for chunk in up.iter_any():
                    if out := relay.feed(chunk):
                        await resp.write(out)
            except UpstreamError as e:
                dropped = f"upstream stream broke: {type(e).__name__}"
            if dropped is None and not relay.ended:
                dropped = "upstream closed the stream before its end"
            with contextlib.suppress(ConnectionResetError):
                if dropped is not None:
                    await resp.write(error_event(dialect, f"labctl meter: {dropped}"))
                await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError) as e:
            # the agent left mid-stream (a write failed, or its connection closed while the upstream
            # was silent): what came is kept; the upstream connection closes, so a server stops
            if not relay.ended:
                rec["error"] = {"type": "agent_disconnected", "message": "the agent left mid-stream"}
            if isinstance(e, asyncio.CancelledError):
                raise
        finally:
            relay.finish()  # the agent has everything (or is gone): now the parsing, off its clock
            if dropped is not None:
                self.mark_error(rec, "stream_dropped", dropped, events=asm.events)
        return resp

    def finish(self, rec: Rec, asm: AnyReassembler, m0: float) -> None:
        """Account, record and publish; runs after the agent has its response."""
        st = self.state
        rec["t_end"] = st.last_response_time = time.time()
        rec["latency_ms"] = round((time.perf_counter() - m0) * 1000, 3)
        if rec["forwarded"]:
            rec["response"] = response = asm.response()
            usage = asm.usage()
            if not asm.final_usage and rec["status"] in (None, 200):
                # cut before its closing usage: what the stream carried, marked partial (a local
                # run is reconciled with the server's own counters: labctl/round/tokens.py)
                usage = asm.partial_usage()
            rec["usage"] = usage
            rec["timings"] = asm.timings
            self.policy.observe(response, rec["request"])
            rec["cost_usd"] = cost = exchange_cost(rec["dialect"], usage, self.cfg.price)
            st.add_usage(usage, len(response["tool_calls"]), cost)
            if asm.error is not None and rec["error"] is None:
                self.mark_error(rec, "upstream_error_event", "the upstream sent an error event",
                                event=asm.error)
        self.recorder.write(rec)
        self.publish()
