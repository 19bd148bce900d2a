"""No usage record lost under concurrency (the claim benchmarks/proxy_latency.py measures at scale):
bursts of simultaneous agent calls, streamed and not, through one meter to a loopback upstream. The
expected figures come from the other side of the meter, not from the meter: what each client was
answered (the upstream's usage as the client received it)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tests.fake_upstream import Reply, serve_fake
from tests.helpers import meter_records as records
from tests.meter.test_meter import agent_headers, chat_body, metered

CALLS = 48  # per burst, half of them streamed
BURSTS = 2


async def one(client: httpx.AsyncClient, url: str, i: int) -> tuple[int, int]:
    """One agent call; (prompt_tokens, completion_tokens) as the client was answered. The texts
    differ in length, so every call has its own prompt size."""
    stream = i % 2 == 0
    body = chat_body("openai", stream=stream, text="x" * (8 * i + 1))
    if stream:
        body["stream_options"] = {"include_usage": True}
        usage: dict[str, Any] | None = None
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body,
                                 headers=agent_headers("openai")) as resp:
            assert resp.status_code == 200
            async for line in resp.aiter_lines():
                if line.startswith("data: {"):
                    usage = json.loads(line[6:]).get("usage") or usage
        assert usage is not None, i
    else:
        resp = await client.post(f"{url}/v1/chat/completions", json=body, headers=agent_headers("openai"))
        assert resp.status_code == 200
        usage = resp.json()["usage"]
    return usage["prompt_tokens"], usage["completion_tokens"]


def test_simultaneous_calls_each_get_one_record_with_their_own_usage(tmp_path: Path) -> None:
    with serve_fake() as fake:
        fake.default = Reply(text="Here is a longer answer, cut into many small events. " * 4)
        fake.delay_s = 0.05  # every call is still open while the others arrive
        with metered(tmp_path, fake) as meter:

            async def bursts() -> list[tuple[int, int]]:
                limits = httpx.Limits(max_connections=CALLS)
                async with httpx.AsyncClient(timeout=120, trust_env=False, limits=limits) as client:
                    seen: list[tuple[int, int]] = []
                    for b in range(BURSTS):
                        seen += await asyncio.gather(*(one(client, meter.url, b * CALLS + i)
                                                       for i in range(CALLS)))
                    return seen

            answered = asyncio.run(bursts())
            meter.drain()
        exchanges = records(tmp_path, CALLS * BURSTS)
    assert len(fake.received) == CALLS * BURSTS
    assert len(exchanges) == CALLS * BURSTS
    assert all(r["status"] == 200 and r["usage"] for r in exchanges)
    recorded = Counter((r["usage"]["prompt_tokens"], r["usage"]["completion_tokens"]) for r in exchanges)
    assert recorded == Counter(answered)  # each call's own figures, none lost, none doubled
    assert sum(r["stream"] for r in exchanges) == CALLS * BURSTS // 2
