"""A loopback stand-in for a model server that speaks the real wire formats.

OpenAI chat completions (`POST /v1/chat/completions`), Anthropic messages (`POST /v1/messages`)
and a text-only OpenAI Responses API (`POST /v1/responses`), each as one JSON body or as SSE
with the real event names and shapes: OpenAI chunks with `delta.tool_calls[i].function.arguments`
fragments, the `stream_options.include_usage` chunk
(`choices: []`) and llama.cpp's `timings`; Anthropic's message_start / content_block_start /
ping / content_block_delta (text_delta, input_json_delta) / content_block_stop / message_delta /
message_stop. It names its model, fingerprint and engine everywhere a real server does (body,
`Server` and provider headers, /v1/models, /props) so tests can prove the meter hides them.

It records what it received (path, headers, body) to prove key injection, and has fault knobs:
`fail_status` (answer every call with that status), `drop_after` (abort the connection after N
SSE events), `end_after` (end the stream cleanly after N events, without its terminal event),
`require_key` (401 unless the real key arrives the provider's way), `delay_s` (think first).

    with serve_fake() as fake: fake.replies.append(Reply(text="hi")); ...   # in tests
    python tests/fake_upstream.py --port 0 --tokens 500                        # its own process
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MODEL = "secret-model-7b-q4_k_m"
FINGERPRINT = "b9660-0c1e5709"


@dataclass
class Reply:
    """One scripted model answer."""

    text: str = "Hello from the fake model."
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    reasoning: str | None = None
    cached_tokens: int = 3
    cache_write_tokens: int = 0
    """Anthropic's `cache_creation_input_tokens` (the other wires bill no cache write)."""

    def finish(self, dialect: str) -> str:
        if dialect == "openai":
            return "tool_calls" if self.tool_calls else "stop"
        return "tool_use" if self.tool_calls else "end_turn"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any


def pieces(text: str, size: int = 4) -> list[str]:
    """'Tokens': fixed-size slices, so the fragments cut words and JSON mid-way like real ones."""
    return [text[i:i + size] for i in range(0, len(text), size)]


def prompt_tokens(body: dict[str, Any]) -> int:
    return 10 + len(json.dumps(body.get("messages", body.get("input", [])))) // 4


def _stable(name: str, args: dict[str, Any]) -> str:
    """Tool-call ids derived from the call, so the same reply gives the same bytes twice."""
    return hashlib.sha1(f"{name}{json.dumps(args)}".encode()).hexdigest()[:12]


def _sse(data: Any, event: str | None = None) -> bytes:
    line = f"data: {json.dumps(data, separators=(',', ':'))}\n\n"
    return (f"event: {event}\n{line}" if event else line).encode()


class FakeUpstream:
    def __init__(self, model: str = MODEL, require_key: str | None = None, timings: bool = True) -> None:
        self.model = model
        self.require_key = require_key
        self.timings = timings
        self.replies: deque[Reply] = deque()
        self.default = Reply()
        self.fail_status: int | None = None
        self.fail_message: str | None = None
        """Error text of `fail_status` answers (default: the model is overloaded)."""
        self.drop_after: int | None = None
        self.end_after: int | None = None
        self.delay_s = 0.0
        self.client_left = 0
        """Streams the client abandoned (the meter must hang up when its agent does)."""
        self.received: list[Received] = []
        self.url = ""
        self.n = 0

    # ------------------------------------------------------------------ server
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/responses", self.responses)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/props", self.props)
        return app

    def headers(self, dialect: str) -> dict[str, str]:
        if dialect == "openai":
            return {"Server": "llama.cpp", "openai-organization": "org-secret", "x-request-id": "req_1",
                    "X-Upstream-Model": self.model}
        return {"Server": "cloudflare", "anthropic-organization-id": "org-secret", "request-id": "req_1",
                "X-Upstream-Model": self.model}

    async def _receive(self, request: web.Request, dialect: str
                       ) -> tuple[dict[str, Any], web.Response | None]:
        body = await request.json()
        self.received.append(Received(request.path, dict(request.headers), body))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.n += 1
        if self.require_key is not None:
            got = (request.headers.get("Authorization") if dialect == "openai"
                   else request.headers.get("x-api-key"))
            want = f"Bearer {self.require_key}" if dialect == "openai" else self.require_key
            if got != want:
                return body, self.error(dialect, 401, "invalid x-api-key / bearer", "authentication_error")
        if self.fail_status is not None:
            message = self.fail_message or f"{self.model} is overloaded"
            return body, self.error(dialect, self.fail_status, message, "server_error")
        return body, None

    def error(self, dialect: str, status: int, message: str, kind: str) -> web.Response:
        body = ({"error": {"message": message, "type": kind, "code": status}} if dialect == "openai"
                else {"type": "error", "error": {"type": kind, "message": message}})
        return web.json_response(body, status=status, headers=self.headers(dialect))

    def next_reply(self, body: dict[str, Any]) -> Reply:
        """The scripted reply, its text cut at the request's max_tokens like a real server's."""
        reply = self.replies.popleft() if self.replies else self.default
        limit = body.get("max_tokens")
        if isinstance(limit, int) and len(pieces(reply.text)) > limit:
            reply = Reply(text="".join(pieces(reply.text)[:limit]), tool_calls=reply.tool_calls,
                          reasoning=reply.reasoning, cached_tokens=reply.cached_tokens,
                          cache_write_tokens=reply.cache_write_tokens)
        return reply

    def usage_numbers(self, body: dict[str, Any], reply: Reply) -> tuple[int, int, int]:
        completion = len(pieces(reply.text)) + len(pieces(reply.reasoning or "")) + sum(
            len(pieces(json.dumps(a))) + 1 for _, a in reply.tool_calls)
        return prompt_tokens(body), completion, reply.cached_tokens

    def timings_obj(self, prompt: int, completion: int, cached: int) -> dict[str, Any]:
        return {"cache_n": cached, "prompt_n": prompt - cached, "prompt_ms": 1.5, "prompt_per_token_ms": 0.1,
                "prompt_per_second": 10000.0, "predicted_n": completion, "predicted_ms": 2.5,
                "predicted_per_token_ms": 0.1, "predicted_per_second": 10000.0}

    async def stream(self, request: web.Request, dialect: str, events: list[bytes]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={**self.headers(dialect), "Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
        await resp.prepare(request)
        for i, ev in enumerate(events):
            if self.drop_after is not None and i >= self.drop_after:
                assert request.transport is not None
                request.transport.abort()  # no terminating chunk: the client sees a broken payload
                return resp
            if self.end_after is not None and i >= self.end_after:
                break
            try:
                await resp.write(ev)
            except ConnectionResetError:  # the client hung up: a real server stops generating here
                self.client_left += 1
                return resp
        await resp.write_eof()
        return resp

    # ------------------------------------------------------------------ OpenAI
    async def chat(self, request: web.Request) -> web.StreamResponse:
        body, failed = await self._receive(request, "openai")
        if failed is not None:
            return failed
        reply = self.next_reply(body)
        p, c, k = self.usage_numbers(body, reply)
        usage = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
                 "prompt_tokens_details": {"cached_tokens": k}}
        timings = self.timings_obj(p, c, k) if self.timings else None
        ident = f"chatcmpl-fake{self.n:04d}"
        calls = [{"id": f"call_{i}_{_stable(name, args)}", "type": "function",
                  "function": {"name": name, "arguments": json.dumps(args)}}
                 for i, (name, args) in enumerate(reply.tool_calls)]
        if not body.get("stream"):
            msg: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
            if reply.reasoning:
                msg["reasoning_content"] = reply.reasoning
            if calls:
                msg["tool_calls"] = calls
            out = {"id": ident, "object": "chat.completion", "created": 1700000000, "model": self.model,
                   "system_fingerprint": FINGERPRINT,
                   "choices": [{"index": 0, "message": msg, "logprobs": None,
                                "finish_reason": reply.finish("openai")}], "usage": usage}
            if timings:
                out["timings"] = timings
            return web.json_response(out, headers=self.headers("openai"))

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            return _sse({"id": ident, "object": "chat.completion.chunk", "created": 1700000000,
                         "model": self.model, "system_fingerprint": FINGERPRINT,
                         "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                         **extra})

        events = [chunk({"role": "assistant", "content": None})]
        events += [chunk({"reasoning_content": p_}) for p_ in pieces(reply.reasoning or "")]
        events += [chunk({"content": p_}) for p_ in pieces(reply.text)]
        for i, call in enumerate(calls):
            head = {"index": i, "id": call["id"], "type": "function",
                    "function": {"name": call["function"]["name"], "arguments": ""}}
            events.append(chunk({"tool_calls": [head]}))
            events += [chunk({"tool_calls": [{"index": i, "function": {"arguments": frag}}]})
                       for frag in pieces(call["function"]["arguments"], 7)]
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        tail_extra = {"timings": timings} if timings and not include_usage else {}
        events.append(chunk({}, reply.finish("openai"), **tail_extra))
        if include_usage:
            extra: dict[str, Any] = {"usage": usage, **({"timings": timings} if timings else {})}
            events.append(_sse({"id": ident, "object": "chat.completion.chunk", "created": 1700000000,
                                "model": self.model, "system_fingerprint": FINGERPRINT, "choices": [],
                                **extra}))
        events.append(b"data: [DONE]\n\n")
        return await self.stream(request, "openai", events)

    # ------------------------------------------------------------------ Anthropic
    async def messages(self, request: web.Request) -> web.StreamResponse:
        body, failed = await self._receive(request, "anthropic")
        if failed is not None:
            return failed
        reply = self.next_reply(body)
        p, c, k = self.usage_numbers(body, reply)
        ident = f"msg_fake{self.n:04d}"
        blocks: list[dict[str, Any]] = []
        if reply.reasoning:
            blocks.append({"type": "thinking", "thinking": reply.reasoning, "signature": "sig"})
        if reply.text:
            blocks.append({"type": "text", "text": reply.text})
        blocks += [{"type": "tool_use", "id": f"toolu_{i}_{_stable(name, args)}", "name": name, "input": args}
                   for i, (name, args) in enumerate(reply.tool_calls)]
        w = reply.cache_write_tokens
        usage = {"input_tokens": p - k - w, "cache_creation_input_tokens": w, "cache_read_input_tokens": k,
                 "output_tokens": c}
        message = {"id": ident, "type": "message", "role": "assistant", "model": self.model,
                   "content": blocks, "stop_reason": reply.finish("anthropic"), "stop_sequence": None,
                   "usage": usage}
        if not body.get("stream"):
            return web.json_response(message, headers=self.headers("anthropic"))
        start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
        events = [_sse({"type": "message_start", "message": start}, "message_start")]
        for i, b in enumerate(blocks):
            empty = {"thinking": {"type": "thinking", "thinking": ""}, "text": {"type": "text", "text": ""},
                     "tool_use": {**b, "input": {}}}[b["type"]]
            events.append(_sse({"type": "content_block_start", "index": i, "content_block": empty},
                               "content_block_start"))
            if i == 0:
                events.append(_sse({"type": "ping"}, "ping"))
            if b["type"] == "thinking":
                deltas = [{"type": "thinking_delta", "thinking": x} for x in pieces(b["thinking"])]
                deltas.append({"type": "signature_delta", "signature": "sig"})
            elif b["type"] == "text":
                deltas = [{"type": "text_delta", "text": x} for x in pieces(b["text"])]
            else:
                deltas = [{"type": "input_json_delta", "partial_json": x}
                          for x in pieces(json.dumps(b["input"]), 7)]
            events += [_sse({"type": "content_block_delta", "index": i, "delta": d}, "content_block_delta")
                       for d in deltas]
            events.append(_sse({"type": "content_block_stop", "index": i}, "content_block_stop"))
        events.append(_sse({"type": "message_delta", "delta": {"stop_reason": reply.finish("anthropic"),
                                                               "stop_sequence": None},
                            "usage": {"output_tokens": c}}, "message_delta"))
        events.append(_sse({"type": "message_stop"}, "message_stop"))
        return await self.stream(request, "anthropic", events)

    # ------------------------------------------------------------------ OpenAI Responses
    async def responses(self, request: web.Request) -> web.StreamResponse:
        """Text answers only (tool calls: tests/scripted_model.py); usage as the API puts it, the
        cached tokens inside `input_tokens` (`input_tokens_details.cached_tokens`)."""
        body, failed = await self._receive(request, "openai")
        if failed is not None:
            return failed
        reply = self.next_reply(body)
        p, c, k = self.usage_numbers(body, reply)
        usage = {"input_tokens": p, "input_tokens_details": {"cached_tokens": k}, "output_tokens": c,
                 "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": p + c}
        message = {"type": "message", "id": f"msg_fake{self.n:04d}", "status": "completed",
                   "role": "assistant",
                   "content": [{"type": "output_text", "text": reply.text, "annotations": []}]}
        done = {"id": f"resp_fake{self.n:04d}", "object": "response", "created_at": 1700000000,
                "status": "completed", "model": self.model, "output": [message], "usage": usage,
                "error": None, "incomplete_details": None}
        if not body.get("stream"):
            return web.json_response(done, headers=self.headers("openai"))
        pending = {**done, "status": "in_progress", "output": [], "usage": None}
        events = [_sse({"type": "response.created", "sequence_number": 0, "response": pending},
                       "response.created")]
        events += [_sse({"type": "response.output_text.delta", "sequence_number": i, "item_id": message["id"],
                         "output_index": 0, "content_index": 0, "delta": x}, "response.output_text.delta")
                   for i, x in enumerate(pieces(reply.text), 1)]
        events.append(_sse({"type": "response.completed", "sequence_number": len(events), "response": done},
                           "response.completed"))
        return await self.stream(request, "openai", events)

    # ------------------------------------------------------------------ introspection
    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model",
                                                              "owned_by": "llamacpp"}]},
                                 headers=self.headers("openai"))

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"}, headers=self.headers("openai"))

    async def props(self, request: web.Request) -> web.Response:
        return web.json_response({"model_path": f"/models/{self.model}.gguf"}, headers=self.headers("openai"))


async def start_fake(fake: FakeUpstream, host: str = "127.0.0.1", port: int = 0) -> web.AppRunner:
    runner = web.AppRunner(fake.app(), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    fake.url = f"http://{host}:{runner.addresses[0][1]}"
    return runner


def serve_until_killed(start: Callable[[], Awaitable[web.AppRunner]], url: Callable[[], str]) -> None:
    """Serve the app `start()` sets up in the foreground, its URL as the first stdout line
    (`{"listening": url}`), until interrupted (the fake upstream's and the scripted model's command)."""
    async def run() -> None:
        runner = await start()
        print(json.dumps({"listening": url()}), flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


@contextlib.contextmanager
def serve_in_thread(start: Callable[[], Awaitable[web.AppRunner]], name: str) -> Iterator[None]:
    """Run the aiohttp app `start()` sets up on its own loop in a background thread, until the
    block ends (the fake upstream's and the scripted model's way to serve a test)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, web.AppRunner] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        box["runner"] = loop.run_until_complete(start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(box["runner"].cleanup())
        loop.close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    assert ready.wait(10), f"{name} did not start"
    try:
        yield
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@contextlib.contextmanager
def serve_fake(**kwargs: Any) -> Iterator[FakeUpstream]:
    """A FakeUpstream on its own loop in a background thread; `.url` is its base URL."""
    fake = FakeUpstream(**kwargs)
    with serve_in_thread(lambda: start_fake(fake), "fake-upstream"):
        yield fake


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--tokens", type=int, default=0, help="Default reply length in 4-character tokens.")
    args = ap.parse_args()
    fake = FakeUpstream()
    if args.tokens:
        fake.default = Reply(text=("lorem ipsum dolor sit amet " * (args.tokens // 6 + 1))[: args.tokens * 4])
    serve_until_killed(lambda: start_fake(fake, args.host, args.port), lambda: fake.url)


if __name__ == "__main__":
    main()
