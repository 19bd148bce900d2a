"""Tests for the meter's fast stream relay (labctl/meter/sserelay.py), request blobs (meter/blobs.py) and
its own 413 — against the loopback upstream speaking the real wire formats. Performance is not
asserted here: benchmarks/proxy_latency.py measures it."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest

from labctl.meter import blobs
from labctl.meter.readback import transcript_records
from labctl.meter.sserelay import StreamRelay, parse_events
from labctl.meter.transcript import Reassembler, rewrite_identity
from labctl.report.data import transcript_summary
from labctl.round.verify import verify_round
from tests.fake_upstream import FINGERPRINT, MODEL, Reply, serve_fake
from tests.helpers import meter_records as records
from tests.meter.test_meter import (
    ALIAS,
    CALL,
    PATHS,
    agent_headers,
    assert_blind,
    chat_body,
    client,
    event_json,
    events,
    metered,
    neutral,
    post,
    stream,
)

# ------------------------------------------------------------------ the stream relay


def upstream_stream(dialect: str, reply: Reply, include_usage: bool) -> bytes:
    """The fake upstream's raw SSE bytes for one reply, as the meter would receive them."""
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    with serve_fake() as fake:
        fake.replies.append(reply)
        return stream(fake.url, dialect, chat_body(dialect, True, **extra))[1]


def relay_in_cuts(raw: bytes, dialect: str, cuts: list[int], names: set[str], hide_usage: bool
                  ) -> tuple[bytes, StreamRelay]:
    relay = StreamRelay(Reassembler(dialect, ALIAS), dialect, ALIAS, names, set(), hide_usage)  # type: ignore[arg-type]
    out, at = [], 0
    for n in cuts:
        out.append(relay.feed(raw[at:at + n]))
        at += n
    out.append(relay.feed(raw[at:]))
    relay.finish()
    return b"".join(out), relay


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_relay_gives_the_same_bytes_and_record_whatever_the_chunking(dialect: str) -> None:
    """Byte edits over whole chunks and the careful per-event path must agree: the agent gets the
    same events and the transcript the same response, however the upstream's bytes were cut, and
    whether the model's name was known before (fast path) or learned from the stream."""
    reply = Reply(text="Let me look — ünïcode ✓ and \"quotes\".", tool_calls=[CALL], reasoning="think")
    hide = dialect == "openai"
    raw = upstream_stream(dialect, reply, include_usage=hide)
    rng = random.Random(7)
    results = []
    for cuts, names in (([len(raw)], set()), ([1] * len(raw), set()), ([len(raw)], {MODEL}),
                        ([rng.randint(1, 90) for _ in range(len(raw) // 40)], {MODEL}),
                        ([rng.randint(1, 400) for _ in range(len(raw) // 200)], set())):
        out, relay = relay_in_cuts(raw, dialect, cuts, set(names), hide)
        assert relay.ended and MODEL.encode() not in out and FINGERPRINT.encode() not in out
        results.append((out, relay.asm.response(), relay.asm.usage(), relay.asm.timings, relay.asm.events))
    first = results[0]
    for other in results[1:]:
        assert other == first
    out, response, usage, timings, _ = first
    assert [neutral(event_json(e)[1]) for e in events(out) if event_json(e)[1] != b"[DONE]"] == \
        [neutral(event_json(e)[1]) for e in events(raw) if event_json(e)[1] != b"[DONE]"
         and not (hide and event_json(e)[1].get("choices") == [])]
    assert response["content"] == reply.text and response["reasoning"] == "think"
    assert [(c["name"], json.loads(c["arguments"])) for c in response["tool_calls"]] == [CALL]
    assert usage is not None and usage["cached_tokens"] == 3 and usage["completion_tokens"] > 0
    assert (timings is not None) == (dialect == "openai")


def test_relay_fast_path_refuses_what_it_cannot_vouch_for() -> None:
    """A model name the byte edits do not know, or another JSON spacing, goes the careful way."""
    names: set[str] = {"known-model"}
    relay = StreamRelay(Reassembler("openai", ALIAS), "openai", ALIAS, names, {"fp1"}, False)
    spaced = b'data: {"model": "other-model", "system_fingerprint": "fp2", "choices": []}\n\n'
    compact = b'data: {"model":"known-model","system_fingerprint":"fp1","choices":[]}\n\n'
    out = relay.feed(compact + spaced + compact)
    assert b"other-model" not in out and b"known-model" not in out and b"fingerprint" not in out
    assert out.count(b'"model":"' + ALIAS.encode() + b'"') == 3
    assert relay.slow_chunks == 1 and "other-model" in names  # learned, so redacted everywhere
    relay.finish()
    assert relay.asm.upstream_models >= {"known-model"} and relay.asm.events == 3


def test_identity_edits_keep_an_apis_own_spacing() -> None:
    """A pretty-printed body (cloud APIs indent theirs) is edited in place, not re-serialised; a
    pair that is not there exactly once sends it the careful way (None)."""
    body = {"id": "c1", "model": "gpt-x", "system_fingerprint": "fp_9", "choices": [{"index": 0}]}
    for raw in (json.dumps(body, indent=2).encode(), json.dumps(body).encode()):
        out = rewrite_identity(raw, body, ALIAS)
        assert out is not None and b"gpt-x" not in out and b"fp_9" not in out
        assert json.loads(out) == {"id": "c1", "model": ALIAS, "choices": [{"index": 0}]}
        assert (b'\n  "id": "c1"' in out) == (b"\n" in raw)  # the rest untouched
    twice = json.dumps({"model": "gpt-x", "echo": {"model": "gpt-x"}}, indent=1).encode()
    assert rewrite_identity(twice, json.loads(twice), ALIAS) is None


def test_parse_events_batch_matches_event_by_event() -> None:
    raw = (b'data: {"a":1}\n\ndata: {"b":"x\\ny"}\n\n: keep-alive\n\nevent: ping\ndata: {"type":"ping"}\n\n'
           b'data: [DONE]\n\n')
    assert parse_events(raw) == [(None, {"a": 1}), (None, {"b": "x\ny"}), ("ping", {"type": "ping"})]
    assert parse_events(b'data: {"a":1}\n\ndata: [DONE]\n\n') == [(None, {"a": 1})]
    assert parse_events(b'data: {"a":1}\n\ndata: not json\n\n') == [(None, {"a": 1})]


def test_relay_uses_what_it_learns_within_the_stream() -> None:
    """The byte edits are prepared once per stream and again when a name or fingerprint is learnt:
    after the careful path has seen a new name, the next chunk naming it takes the fast path."""
    names: set[str] = set()
    relay = StreamRelay(Reassembler("openai", ALIAS), "openai", ALIAS, names, set(), False)
    first = relay.feed(b'data: {"model":"m-1","system_fingerprint":"fp-1","choices":[]}\n\n')
    assert relay.slow_chunks == 1 and names == {"m-1"}
    later = relay.feed(b'data: {"id":"x","model":"m-1","system_fingerprint":"fp-1","choices":[]}\n\n' * 3)
    assert relay.slow_chunks == 1  # no second careful pass
    for out in (first, later):
        assert b"m-1" not in out and b"fp-1" not in out and b'"model":"' + ALIAS.encode() + b'"' in out


@pytest.mark.parametrize(("dialect", "raw", "ended"), [
    ("openai", b'data: {"c":"data: [DONE]"}\n\n', False),  # the model wrote it: text, not the end
    ("openai", b'data: {"c":"x"}\n\ndata: [DONE]\n\n', True),
    ("openai", b'data: {"c":"x"}\r\n\r\ndata: [DONE]\r\n\r\n', True),
    ("openai", b'data: [DONE]\n\ndata: {"c":"[DONE]"}\n\n', True),
    ("anthropic", b'event: content_block_delta\ndata: {"type":"content_block_delta",'
                  b'"delta":{"type":"text_delta","text":"\\"type\\":\\"message_stop\\""}}\n\n', False),
    ("anthropic", b'event: message_stop\ndata: {"type":"message_stop"}\n\n', True),
    ("anthropic", b'data: {"type":"message_stop"}\n\n', True),
])
def test_relay_sees_the_terminal_event_only_where_it_is_one(dialect: str, raw: bytes, ended: bool) -> None:
    """A stream without its terminal event was dropped (the run is marked errored): the check
    looks at whole lines, so the terminal's words inside the model's text do not count."""
    relay = StreamRelay(Reassembler(dialect, ALIAS), dialect, ALIAS, set(), set(), False)  # type: ignore[arg-type]
    relay.feed(raw)
    assert relay.ended is ended


def test_parse_events_reads_what_python_json_reads() -> None:
    """The fast parser (orjson) refuses NaN and integers past 64 bits; Python's json takes them,
    and so the meter still does."""
    raw = b'data: {"a":NaN,"b":123456789012345678901234567890}\n\ndata: {"c":1}\n\n'
    got = parse_events(raw)
    assert got[0][1]["b"] == 123456789012345678901234567890 and got[0][1]["a"] != got[0][1]["a"]
    assert got[1] == (None, {"c": 1})


# ------------------------------------------------------------------ metering after the change


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_repeated_streams_meter_usage_tool_calls_and_stop_at_the_budget(tmp_path: Path, dialect: str) -> None:
    """From the second stream on the model's name is known and chunks take the fast path: every
    stream must still be counted (usage, tool calls), and the one that crosses the budget stops
    the run, so the next call is refused without reaching the upstream."""
    reply = Reply(text="Checking the files in the repository now.", tool_calls=[CALL])
    with serve_fake() as fake, metered(tmp_path, fake, dialect, token_budget=400) as meter:
        fake.default = reply
        seen = []
        while not meter.state.stopped and len(seen) < 20:
            resp, raw = stream(meter.url, dialect, chat_body(dialect, True))
            assert resp.status_code == 200
            assert_blind(resp, raw)
            seen.append(raw)
            records(tmp_path, len(seen))
        refused = post(meter.url, dialect, chat_body(dialect, True))
        recs = records(tmp_path, len(seen) + 1)
        meter.drain()
        status = json.loads((tmp_path / "status.json").read_text())
    assert len(seen) >= 2 and refused.status_code == 429 and len(fake.received) == len(seen)
    streamed = recs[:-1]
    assert all(r["usage"]["total_tokens"] > 0 and r["error"] is None for r in streamed)
    assert all([(c["name"], json.loads(c["arguments"])) for c in r["response"]["tool_calls"]] == [CALL]
               for r in streamed)
    total = sum(r["usage"]["total_tokens"] for r in streamed)
    assert total >= 400 and total - streamed[-1]["usage"]["total_tokens"] < 400
    assert status["total_tokens"] == total and status["tool_calls"] == len(seen)
    assert status["stopped_reason"] == "token_budget" and recs[-1]["error"]["type"] == "budget_exceeded"


# ------------------------------------------------------------------ blobs


def test_large_request_body_is_a_blob_the_readers_read_back(tmp_path: Path) -> None:
    big = "x = 1  # a long file the agent pasted\n" * 2000  # ~76 KB
    body = chat_body("openai", text=big)
    with serve_fake() as fake, metered(tmp_path, fake, blob_bytes=16 << 10) as meter:
        assert post(meter.url, "openai", body).status_code == 200
        assert post(meter.url, "openai", chat_body("openai")).status_code == 200
        records(tmp_path, 2)
    transcript = tmp_path / "transcript.jsonl"
    lines = transcript.read_text().splitlines()
    assert len(lines[0]) < 4000  # the record, not the body
    rec, small = json.loads(lines[0]), json.loads(lines[1])
    digest = blobs.ref_digest(rec["request"])
    assert digest is not None and rec["request_bytes"] > 16 << 10 and small["request"]["messages"]
    blob = (tmp_path / "transcript.blobs" / digest).read_bytes()
    assert hashlib.sha256(blob).hexdigest() == digest and rec["request"]["bytes"] == len(blob)
    assert json.loads(blob) == body
    assert rec["response"]["content"] and rec["usage"]["total_tokens"] > 0  # the rest stays inline
    assert [r["request"] for r in transcript_records(transcript)] == [body, chat_body("openai")]
    assert transcript_summary(transcript)["requests"] == 2
    first_only = tmp_path / "first" / "transcript.jsonl"  # the report counts the last request's messages
    first_only.parent.mkdir()
    first_only.write_text(lines[0] + "\n")
    (first_only.parent / "transcript.blobs").mkdir()
    (first_only.parent / "transcript.blobs" / digest).write_bytes(blob)
    assert transcript_summary(first_only)["messages"] == 1
    assert blobs.check(transcript) == []


def test_verify_catches_a_missing_or_changed_blob(tmp_path: Path) -> None:
    run = tmp_path / "round" / "runs" / "run-10"
    with serve_fake() as fake, metered(run, fake, blob_bytes=1024) as meter:
        post(meter.url, "openai", chat_body("openai", text="y" * 5000))
        records(run, 1)
    [blob] = (run / "transcript.blobs").iterdir()

    def blob_problems() -> list[str]:
        return [p.what for p in verify_round(tmp_path / "round").problems if "transcript.blobs" in p.where]

    assert blob_problems() == []
    blob.write_bytes(blob.read_bytes().replace(b"yyyy", b"yyyz", 1))
    assert any("changed" in w for w in blob_problems())
    blob.unlink()
    assert any("missing" in w for w in blob_problems())


# ------------------------------------------------------------------ 413


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_oversized_request_is_answered_413_by_the_meter(tmp_path: Path, dialect: str, chunked: bool) -> None:
    body = json.dumps(chat_body(dialect, text="z" * 20_000)).encode()
    content: Any = iter([body[:5000], body[5000:]]) if chunked else body
    with serve_fake() as fake, metered(tmp_path, fake, dialect, max_request_bytes=8192) as meter:
        with client() as c:
            resp = c.post(meter.url + PATHS[dialect], content=content,
                          headers={**agent_headers(dialect), "Content-Type": "application/json"})
        after = post(meter.url, dialect, chat_body(dialect))
        recs = records(tmp_path, 2)
    assert resp.status_code == 413 and after.status_code == 200
    err = resp.json()
    if dialect == "anthropic":
        assert err["type"] == "error" and err["error"]["type"] == "request_too_large"
    else:
        assert err["error"]["code"] == "request_too_large" and err["error"]["type"] == "invalid_request_error"
    assert "8192" in err["error"]["message"]
    assert len(fake.received) == 1  # only the second call reached the upstream
    assert recs[0]["status"] == 413 and recs[0]["forwarded"] is False
    assert recs[0]["error"]["type"] == "request_too_large" and recs[0]["request"] is None
    assert recs[0]["request_bytes"] == (None if chunked else len(body))
    assert meter.state.refused == 1 and not meter.state.errored


def test_blob_threshold_off_keeps_bodies_inline(tmp_path: Path) -> None:
    with serve_fake() as fake, metered(tmp_path, fake, blob_bytes=None) as meter:
        post(meter.url, "openai", chat_body("openai", text="w" * 50_000))
        [rec] = records(tmp_path, 1)
    assert rec["request"]["messages"][0]["content"] == "w" * 50_000
    assert not (tmp_path / "transcript.blobs").exists()
