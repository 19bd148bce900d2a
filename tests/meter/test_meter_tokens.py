"""The meter's figures hold where the numbers go wrong with real runtimes and real stops: every
output-length field of every wire is clamped to the contestant's max_output (and set where a
request names none), and a call cut before its closing usage (the agent stopped at its wall time
mid-stream) is recorded with what the stream carried, marked partial — never as 0 tokens.

Upstreams: the scripted model (tests/scripted_model.py, every wire, streamed or not) and a cloud
stand-in built on its wire writers that goes silent mid-answer, as a model still generating."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from labctl.meter.limits import clamps, set_number
from labctl.meter.server import meter_in_thread
from labctl.meter.state import MeterConfig
from tests.fake_upstream import serve_in_thread
from tests.helpers import meter_records as records
from tests.scripted_model import Plan, decide, serve_scripted
from tests.scripted_wires import WIRES

ALIAS = "run-3"
PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages", "responses": "/v1/responses"}
PROVIDER = {"openai": "openai", "anthropic": "anthropic", "responses": "openai"}
FIELD = {"openai": "max_tokens", "anthropic": "max_tokens", "responses": "max_output_tokens"}
WIRE_IDS = [(d, s) for d in PATHS for s in (False, True)]
LIMIT = 48


@contextlib.contextmanager
def metered(tmp_path: Path, upstream: str, provider: str, **cfg: Any) -> Iterator[Any]:
    config = MeterConfig(upstream=upstream, dialect=provider, transcript=tmp_path / "transcript.jsonl",
                         alias=ALIAS, **cfg)
    with meter_in_thread(config) as handle:
        yield handle


def request(dialect: str, stream: bool, **limits: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": ALIAS, "stream": stream, **limits}
    if dialect == "responses":
        return {**body, "input": [{"role": "user", "content": "Say hello."}]}
    return {**body, "messages": [{"role": "user", "content": "Say hello."}]}


def post(base: str, dialect: str, body: dict[str, Any] | bytes) -> httpx.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "x-api-key": "dummy", "anthropic-version": "2023-06-01"}
    with httpx.Client(timeout=30, trust_env=False) as c:
        return c.post(base + PATHS[dialect], content=data, headers=headers)




# ------------------------------------------------------------------ max_output held


@pytest.mark.parametrize(("dialect", "stream"), WIRE_IDS)
def test_output_limit_above_max_output_reaches_the_upstream_clamped(tmp_path: Path, dialect: str,
                                                                    stream: bool) -> None:
    """qwen-code's `max_tokens: 32000` (Responses: max_output_tokens) arrives upstream as the
    contestant's max_output; the record says what was asked and what was sent; the state counts it."""
    with serve_scripted(Plan(final="Hello there.")) as model, \
            metered(tmp_path, model.url, PROVIDER[dialect], max_output=LIMIT) as meter:
        resp = post(meter.url, dialect, request(dialect, stream, **{FIELD[dialect]: 32000}))
        [rec] = records(tmp_path, 1)
        state = meter.state
    assert resp.status_code == 200, resp.text
    [got] = model.received
    assert got["body"][FIELD[dialect]] == LIMIT, got["body"]
    assert rec["clamped"] == [{"field": FIELD[dialect], "asked": 32000, "sent": LIMIT}]
    assert rec["request"][FIELD[dialect]] == 32000  # the transcript keeps what the agent asked
    assert state.clamped == 1 and state.limit_added == 0 and state.max_output == LIMIT
    assert rec["usage"] and not rec["usage"].get("partial") and state.partial_exchanges == 0


@pytest.mark.parametrize("dialect", list(PATHS))
def test_absent_limit_is_set_and_a_lower_one_left_alone(tmp_path: Path, dialect: str) -> None:
    """A request naming no limit gets max_output (chat: max_completion_tokens, which OpenAI and
    llama.cpp read); one asking for less reaches the upstream byte for byte."""
    below = json.dumps(request(dialect, False, **{FIELD[dialect]: 7}), indent=1).encode()
    with serve_scripted(Plan(final="Hi.")) as model, \
            metered(tmp_path, model.url, PROVIDER[dialect], max_output=LIMIT) as meter:
        assert post(meter.url, dialect, request(dialect, False)).status_code == 200
        assert post(meter.url, dialect, below).status_code == 200
        first, second = records(tmp_path, 2)
        state = meter.state
    added = {"openai": "max_completion_tokens", "anthropic": "max_tokens",
             "responses": "max_output_tokens"}[dialect]
    assert model.received[0]["body"][added] == LIMIT
    assert first["clamped"] == [{"field": added, "asked": None, "sent": LIMIT}]
    assert model.received[1]["body"] == json.loads(below) and second["clamped"] is None
    assert state.limit_added == 1 and state.clamped == 0


def test_every_chat_field_is_clamped_and_nested_lookalikes_are_not(tmp_path: Path) -> None:
    """max_tokens, max_completion_tokens and llama.cpp's own n_predict are all held; a field of
    the same name inside a message (a tool's arguments) is the agent's text and stays."""
    body = request("openai", True, max_tokens=9000, max_completion_tokens=32000, n_predict=-1)
    body["messages"].append({"role": "user", "content": [{"type": "text", "text": "x"}],
                             "metadata": {"max_tokens": 9000}})
    with serve_scripted(Plan(final="Hi.")) as model, \
            metered(tmp_path, model.url, "openai", max_output=LIMIT) as meter:
        assert post(meter.url, "openai", body).status_code == 200
        [rec] = records(tmp_path, 1)
    sent = model.received[0]["body"]
    assert (sent["max_tokens"], sent["max_completion_tokens"], sent["n_predict"]) == (LIMIT, LIMIT, -1)
    assert sent["messages"][-1]["metadata"] == {"max_tokens": 9000}
    assert {e["field"] for e in rec["clamped"]} == {"max_tokens", "max_completion_tokens"}


def test_no_max_output_leaves_requests_untouched(tmp_path: Path) -> None:
    with serve_scripted(Plan(final="Hi.")) as model, metered(tmp_path, model.url, "openai") as meter:
        assert post(meter.url, "openai", request("openai", False, max_tokens=32000)).status_code == 200
        [rec] = records(tmp_path, 1)
    assert model.received[0]["body"]["max_tokens"] == 32000 and rec["clamped"] is None
    assert meter.state.clamped == 0


def test_byte_edit_hits_only_the_top_level_field() -> None:
    raw = (b'{ "messages": [{"role": "user", "content": "set \\"max_tokens\\": 9 please"}],\n'
           b' "max_tokens" :  32000 }')
    obj = json.loads(raw)
    edited = set_number(raw, obj, "max_tokens", 64)
    assert edited is not None and json.loads(edited) == {**obj, "max_tokens": 64}
    assert edited == raw.replace(b"32000", b"64")  # nothing else moved, spacing kept
    twice = b'{"max_tokens":32000,"tools":[{"max_tokens":32000}]}'
    assert set_number(twice, json.loads(twice), "max_tokens", 64) is None  # not provable: rewritten whole
    absent = b'  {"model":"m"}'
    assert json.loads(set_number(absent, json.loads(absent), "max_tokens", 64) or b"") == \
        {"model": "m", "max_tokens": 64}
    assert clamps("anthropic", {"max_tokens": "lots"}, 64) == []  # not a number: the upstream says so


# ------------------------------------------------------------------ a call cut mid-answer


class SilentMidAnswer:
    """A cloud upstream on the real wire (the scripted model's events) that sends the first
    `events` events of each answer and then goes silent, as a model still thinking; it notes when
    its client (the meter) hangs up."""

    def __init__(self, events: int) -> None:
        self.events = events
        self.sent: list[bytes] = []
        self.hung_up = asyncio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        dialect = next(d for d, p in PATHS.items() if p == request.path)
        body = await request.json()
        _, events = WIRES[dialect](decide(Plan(final="word " * 200), dialect, body), body)
        self.sent = events[:self.events]
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"".join(self.sent))
        while request.transport is not None and not request.transport.is_closing():
            await asyncio.sleep(0.02)
        self.hung_up.set()
        return resp

    async def start(self) -> web.AppRunner:
        app = web.Application()
        for path in PATHS.values():
            app.router.add_post(path, self.handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        return runner


def _text_deltas(dialect: str, events: list[bytes]) -> int:
    kinds = {"openai": b'"content":"', "anthropic": b'"text_delta"', "responses": b"output_text.delta"}
    return sum(1 for ev in events if kinds[dialect] in ev and b'"content":""' not in ev)


@pytest.mark.parametrize("dialect", list(PATHS))
def test_stream_cut_by_the_agent_counts_what_it_carried(tmp_path: Path, dialect: str) -> None:
    """The agent is stopped mid-stream while the model is silent (what a wall-time stop does):
    the meter ends the call at once, hangs up on the upstream, and records the call with the
    tokens its stream carried — Anthropic's message_start prompt, one token per output delta —
    marked partial, and the run's state says how many calls are partial."""
    up = SilentMidAnswer(events=8)
    with serve_in_thread(up.start, "silent-upstream"), \
            metered(tmp_path, up.url, PROVIDER[dialect]) as meter:
        body = request(dialect, True, **{FIELD[dialect]: 4000})
        with httpx.Client(timeout=30, trust_env=False) as c, c.stream(
                "POST", meter.url + PATHS[dialect], json=body,
                headers={"x-api-key": "dummy", "anthropic-version": "2023-06-01"}) as r:
            got = b""
            for chunk in r.iter_raw():  # every event the upstream sent reached the agent: now leave
                got += chunk
                if got.count(b"\n\n") >= len(up.sent):
                    break
        [rec] = records(tmp_path, 1)
        meter.drain()
        state = meter.state
        deadline = time.monotonic() + 5
        while not up.hung_up.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
    deltas = _text_deltas(dialect, up.sent)
    assert deltas >= 3, up.sent
    u = rec["usage"]
    assert rec["error"]["type"] == "agent_disconnected" and not state.errored
    assert u["partial"] is True and u["completion_tokens"] >= deltas, (u, deltas)
    if dialect == "anthropic":  # message_start carried the prompt's size
        start = json.loads(up.sent[0].split(b"data: ", 1)[1])
        assert u["prompt_tokens"] == start["message"]["usage"]["input_tokens"] > 0
    assert state.partial_exchanges == 1 and state.total_tokens == u["total_tokens"] > 0
    assert up.hung_up.is_set()  # the meter hung up on the upstream when its agent left
