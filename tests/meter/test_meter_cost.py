"""Cost per exchange at the declared price, through a real meter on loopback in front of a cloud
stand-in (tests/fake_upstream.py) speaking Anthropic Messages, OpenAI chat completions and the
Responses API with cache usage: each record's `cost_usd` equals the hand computation from that
wire's own fields, the state keeps the running total, and `cost_budget` stops the run at the
exchange that crosses it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import httpx
import pytest

from labctl.meter.cost import billed, exchange_cost
from labctl.meter.server import meter_in_thread
from labctl.meter.state import MeterConfig
from labctl.spec.price import Price
from tests.fake_upstream import Reply, serve_fake
from tests.helpers import meter_records

PRICE = Price(input=3, output=15, cache_read=0.3, cache_write=3.75, as_of=dt.date(2026, 6, 1),
              source="https://example.com/pricing")
PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages", "responses": "/v1/responses"}
PROVIDER = {"openai": "openai", "anthropic": "anthropic", "responses": "openai"}
LONG = "Refactor the tag manager; keep the tests green. " * 20  # ~250 prompt tokens at the stand-in


def request(wire: str, stream: bool) -> dict[str, object]:
    turn = [{"role": "user", "content": LONG}]
    if wire == "responses":
        return {"model": "run-1", "stream": stream, "input": turn, "max_output_tokens": 64}
    return {"model": "run-1", "stream": stream, "max_tokens": 64, "messages": turn}


def post(base: str, wire: str, body: dict[str, object]) -> httpx.Response:
    headers = {"x-api-key": "dummy", "anthropic-version": "2023-06-01", "Authorization": "Bearer dummy"}
    with httpx.Client(timeout=30, trust_env=False) as c:
        return c.post(base + PATHS[wire], json=body, headers=headers)


def by_hand(wire: str, usage: dict[str, int]) -> float:
    """The bill, written out per wire from the provider's documented usage fields."""
    if wire == "anthropic":  # input_tokens excludes both cache kinds
        return (usage["input_tokens"] * 3 + usage["output_tokens"] * 15
                + usage["cache_read_input_tokens"] * 0.3 + usage["cache_creation_input_tokens"] * 3.75) / 1e6
    if wire == "openai":  # prompt_tokens includes the cached ones
        cached = usage["prompt_tokens_details"]["cached_tokens"]  # type: ignore[index]
        return ((usage["prompt_tokens"] - cached) * 3 + usage["completion_tokens"] * 15 + cached * 0.3) / 1e6
    cached = usage["input_tokens_details"]["cached_tokens"]  # type: ignore[index]
    return ((usage["input_tokens"] - cached) * 3 + usage["output_tokens"] * 15 + cached * 0.3) / 1e6


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("wire", ["anthropic", "openai", "responses"])
def test_each_exchange_costs_what_its_wire_says(tmp_path: Path, wire: str, stream: bool) -> None:
    reply = Reply(text="Done: the tags are sorted now.", cached_tokens=120,
                  cache_write_tokens=40 if wire == "anthropic" else 0)
    cfg = MeterConfig.model_validate({"upstream": "", "dialect": PROVIDER[wire], "alias": "run-1",
                                      "transcript": tmp_path / "transcript.jsonl", "price": PRICE})
    with serve_fake() as fake:
        fake.replies.extend([reply, reply])
        with meter_in_thread(cfg.model_copy(update={"upstream": fake.url})) as meter:
            for _ in range(2):
                assert post(meter.url, wire, request(wire, stream)).status_code == 200
            recs = meter_records(tmp_path, 2)
            meter.drain()
            state = meter.state
    for rec in recs:
        raw = rec["usage"]["raw"]
        assert rec["dialect"] == wire and raw  # the wire's own usage object, as the stand-in sent it
        assert rec["cost_usd"] == pytest.approx(by_hand(wire, raw), rel=1e-12), raw
        total_priced = rec["usage"]["prompt_tokens"] * 3e-6 + rec["usage"]["completion_tokens"] * 15e-6
        assert rec["cost_usd"] < total_priced * 0.8  # the cached tokens were billed as cached
    assert state.cost_usd == pytest.approx(sum(r["cost_usd"] for r in recs), rel=1e-12)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["cost_usd"] == pytest.approx(state.cost_usd, rel=1e-12)


def test_cost_budget_stops_at_the_exchange_that_crosses_it(tmp_path: Path) -> None:
    """Each call costs about $0.0007; a $0.001 budget: calls 1 and 2 are answered (2 crosses it),
    call 3 is refused with 429 before it reaches the model, and the run stops by cost_budget."""
    cfg = MeterConfig(upstream="", dialect="anthropic", transcript=tmp_path / "transcript.jsonl",
                      alias="run-1", price=PRICE, cost_budget=0.001)
    with serve_fake() as fake:
        fake.default = Reply(text="x" * 40, cached_tokens=100, cache_write_tokens=50)
        with meter_in_thread(cfg.model_copy(update={"upstream": fake.url})) as meter:
            got = [post(meter.url, "anthropic", request("anthropic", False)) for _ in range(3)]
            meter.drain()
            state = meter.state
            recs = meter_records(tmp_path, 3)
    assert [r.status_code for r in got] == [200, 200, 429], [r.text for r in got]
    assert "cost budget is spent" in got[2].json()["error"]["message"]
    assert len(fake.received) == 2
    first = recs[0]["cost_usd"]
    assert first < 0.001 < first + recs[1]["cost_usd"]  # the second call is the one that crossed it
    assert state.stopped and state.stopped_reason == "cost_budget" and state.budget_exceeded
    assert recs[2]["forwarded"] is False and recs[2]["cost_usd"] is None
    assert state.cost_usd == pytest.approx(first + recs[1]["cost_usd"], rel=1e-12)


def test_an_unpriced_meter_records_no_cost(tmp_path: Path) -> None:
    """Not priced is None everywhere, never a 0 that would read as free."""
    cfg = MeterConfig(upstream="", dialect="openai", transcript=tmp_path / "transcript.jsonl", alias="run-1")
    with serve_fake() as fake, meter_in_thread(cfg.model_copy(update={"upstream": fake.url})) as meter:
        assert post(meter.url, "openai", request("openai", False)).status_code == 200
        [rec] = meter_records(tmp_path, 1)
        meter.drain()
        assert rec["cost_usd"] is None and meter.state.cost_usd is None


def test_billed_splits_each_wire_and_bounds_a_cut_answer() -> None:
    anthropic = {"raw": {"input_tokens": 5, "output_tokens": 7, "cache_read_input_tokens": 100,
                         "cache_creation_input_tokens": 20}}
    assert billed("anthropic", anthropic) == (5, 7, 100, 20)
    chat = {"raw": {"prompt_tokens": 125, "completion_tokens": 7,
                    "prompt_tokens_details": {"cached_tokens": 100}}}
    assert billed("openai", chat) == (25, 7, 100, 0)
    resp = {"raw": {"input_tokens": 125, "output_tokens": 7, "input_tokens_details": {"cached_tokens": 100}}}
    assert billed("responses", resp) == (25, 7, 100, 0)
    # a stream cut after message_start: its prompt counted, at least one token per delta seen
    cut = {"raw": {"input_tokens": 5, "output_tokens": 1}, "completion_tokens": 9, "partial": True}
    assert billed("anthropic", cut) == (5, 9, 0, 0)
    hand = (25 * 3 + 7 * 15 + 100 * 0.3) / 1e6
    assert exchange_cost("openai", chat, PRICE) == pytest.approx(hand, rel=1e-12)
    assert exchange_cost("openai", chat, None) is None and exchange_cost("openai", None, PRICE) == 0.0
