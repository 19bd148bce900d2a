"""Against the real llama-server (built from the pinned source, the tiny GGUF), behind the meter:
max_output holds whatever a request asks, and a run's tokens equal the server's own counters —
also when an answer is cut mid-stream, where the meter alone would have no usage at all."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from labctl.meter.server import meter_in_thread
from labctl.meter.state import MeterConfig
from labctl.round.records import RunMetrics, ServerCounters
from labctl.round.tokens import parse_metrics, reconcile

ALIAS = "run-4"


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A llama-server as a run starts it (--metrics, -n from the plan), tiny model, big context."""
    from labctl.gguf.tiny import TinyModelParams, write_tiny_gguf
    from labctl.plan.llamaserver import ServerSettings, find_binary, serve, server_argv

    tmp = tmp_path_factory.mktemp("llama-tokens")
    model = tmp / "tiny.gguf"
    write_tiny_gguf(model, TinyModelParams())
    argv = server_argv(find_binary(build=True), model, ServerSettings(context=4096, max_output=256),
                       alias="secret-tiny-model")
    with serve(argv, tmp / "server.log") as base:
        yield base


def counters(base: str) -> ServerCounters:
    """The server's counters once no slot is working (a cut answer is counted at its release)."""
    deadline = time.monotonic() + 15
    while True:
        got = parse_metrics(httpx.get(base + "/metrics", timeout=10).text)
        assert got is not None, "llama-server has no token counters: --metrics missing?"
        if not got.busy or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def chat(text: str, **kw: Any) -> dict[str, Any]:
    return {"model": ALIAS, "messages": [{"role": "user", "content": text}], "temperature": 1.0,
            "seed": 1, **kw}


def records(path: Path, n: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while True:
        got = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
        got = [r for r in got if r["kind"] == "exchange"]
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.02)


@pytest.mark.llama
def test_requests_max_tokens_cannot_beat_max_output(tmp_path: Path, llama: str) -> None:
    """llama.cpp honours a request's max_tokens over -n (here 256): asked for 32000 directly, the
    server generates past max_output; through the meter (max_output 12) no answer is longer,
    streamed or not, on chat completions and on Anthropic Messages."""
    with httpx.Client(timeout=120, trust_env=False) as c:
        direct = c.post(llama + "/v1/chat/completions", json=chat("Go on.", max_tokens=40)).json()
    assert direct["timings"]["predicted_n"] > 12  # nothing but the request's own limit held it
    cfg = MeterConfig(upstream=llama, dialect="openai", transcript=tmp_path / "t.jsonl", alias=ALIAS,
                      max_output=12)
    with meter_in_thread(cfg) as meter, httpx.Client(timeout=120, trust_env=False) as c:
        for stream in (False, True):
            body = chat("Go on.", max_tokens=32000, stream=stream)
            r = c.post(meter.url + "/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
        r = c.post(meter.url + "/v1/messages", json={**chat("Go on.", max_tokens=32000), "stream": True})
        assert r.status_code == 200, r.text
        recs = records(tmp_path / "t.jsonl", 3)
        state = meter.state
    for rec in recs:
        assert rec["clamped"] == [{"field": "max_tokens", "asked": 32000, "sent": 12}], rec["clamped"]
        assert 0 < rec["usage"]["completion_tokens"] <= 12, rec["usage"]
    assert [r["timings"]["predicted_n"] <= 12 for r in recs[:2]] == [True, True], recs[:2]
    assert state.clamped == 3


@pytest.mark.llama
def test_run_tokens_equal_the_servers_counters_also_for_a_cut_stream(tmp_path: Path, llama: str) -> None:
    """One whole answer, then one cut mid-stream (the agent stopped at its wall time): the meter
    alone knows the first answer's usage and a lower bound of the second; the server's counters
    have both whole, and the reconciled figures equal them exactly."""
    before = counters(llama)
    transcript = tmp_path / "t.jsonl"
    cfg = MeterConfig(upstream=llama, dialect="openai", transcript=transcript, alias=ALIAS)
    cut = chat("Tell me a long story about a lab.", max_tokens=3000, stream=True)
    with meter_in_thread(cfg) as meter:
        with httpx.Client(timeout=120, trust_env=False) as c:
            whole = c.post(meter.url + "/v1/chat/completions", json=chat("Hello.", max_tokens=20)).json()
            with c.stream("POST", meter.url + "/v1/chat/completions", json=cut) as r:
                seen = b""
                for chunk in r.iter_raw():  # a few tokens of a long answer, then the agent is gone
                    seen += chunk
                    if seen.count(b'"content":"') >= 5:
                        break
        first, second = records(transcript, 2)
        meter.drain()
        state = meter.state
    after = counters(llama)
    server = ServerCounters(prompt_processed=after.prompt_processed - before.prompt_processed,
                            prompt_cached=after.prompt_cached - before.prompt_cached,
                            predicted=after.predicted - before.predicted)
    with httpx.Client(timeout=120, trust_env=False) as c:  # the cut prompt's size, asked again
        cut_prompt = c.post(llama + "/v1/chat/completions",
                            json={**cut, "stream": False, "max_tokens": 1}).json()["usage"]["prompt_tokens"]

    assert first["usage"]["completion_tokens"] == whole["usage"]["completion_tokens"] > 0
    assert second["error"]["type"] == "agent_disconnected" and second["usage"]["partial"] is True
    assert state.partial_exchanges == 1 and second["usage"]["completion_tokens"] >= 5
    # the server counted the whole prompts (evaluated + cached) and every generated token
    assert server.prompt == whole["usage"]["prompt_tokens"] + cut_prompt, (server, whole["usage"], cut_prompt)
    assert server.predicted >= whole["usage"]["completion_tokens"] + second["usage"]["completion_tokens"]
    m = RunMetrics(prompt_tokens=state.prompt_tokens, completion_tokens=state.completion_tokens,
                   cached_tokens=state.cached_tokens, total_tokens=state.total_tokens)
    reconcile(m, server, state)
    assert (m.prompt_tokens, m.completion_tokens) == (server.prompt, server.predicted)
    assert m.total_tokens == server.prompt + server.predicted > state.total_tokens
    assert m.tokens_source == "server" and m.tokens_partial is False and m.partial_calls == 1
    assert m.meter_tokens is not None and m.meter_tokens.total_tokens == state.total_tokens
