"""Tests for the metering proxy (labctl.meter.proxy): transparency, transcript, keys, budget, faults,
blindness, interventions — against a loopback upstream speaking the real wire formats, and once
through a real llama-server with a tiny GGUF."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from labctl.meter.policy import InterventionPolicy
from labctl.meter.recorder import Recorder
from labctl.meter.server import MeterHandle, meter_in_thread
from labctl.meter.sse import SSESplitter, sse_fields
from labctl.meter.state import MeterConfig, MeterState
from labctl.meter.transcript import call_signature, inject_user_text
from labctl.spec.interventions import Interventions
from tests.fake_upstream import FINGERPRINT, MODEL, FakeUpstream, Reply, serve_fake
from tests.helpers import meter_records as records

ROOT = Path(__file__).resolve().parents[2]
ALIAS = "run-10"
REAL_KEY = "sk-real-4f9c1e0b7a6d5c3e2f1a0b9c8d7e6f5a"
DUMMY_KEY = "sk-dummy-agent-key"
PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
TOOLS = {"openai": [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}],
         "anthropic": [{"name": "bash", "input_schema": {"type": "object"}}]}
CALL = ("bash", {"command": "ls -la /app && cat \"README.md\"", "timeout": 30})


def agent_headers(dialect: str) -> dict[str, str]:
    if dialect == "openai":
        return {"Authorization": f"Bearer {DUMMY_KEY}"}
    return {"x-api-key": DUMMY_KEY, "anthropic-version": "2023-06-01"}


def chat_body(dialect: str, stream: bool = False, text: str = "List the files.",
              **extra: Any) -> dict[str, Any]:
    return {"model": ALIAS, "max_tokens": 256, "stream": stream, "tools": TOOLS[dialect],
            "messages": [{"role": "user", "content": text}], **extra}


@contextlib.contextmanager
def metered(tmp_path: Path, fake: FakeUpstream, dialect: str = "openai", **cfg: Any) -> Iterator[MeterHandle]:
    config = MeterConfig(upstream=fake.url, dialect=dialect, transcript=tmp_path / "transcript.jsonl",
                         alias=ALIAS, **cfg)
    with meter_in_thread(config) as handle:
        yield handle


def client() -> httpx.Client:
    return httpx.Client(timeout=20, trust_env=False)




def post(base: str, dialect: str, body: dict[str, Any]) -> httpx.Response:
    with client() as c:
        return c.post(base + PATHS[dialect], json=body, headers=agent_headers(dialect))


def stream(base: str, dialect: str, body: dict[str, Any]) -> tuple[httpx.Response, bytes]:
    with client() as c, c.stream("POST", base + PATHS[dialect], json=body,
                                 headers=agent_headers(dialect)) as r:
        return r, b"".join(r.iter_raw())


def events(raw: bytes) -> list[bytes]:
    return SSESplitter().feed(raw)


def event_json(ev: bytes) -> tuple[str | None, Any]:
    name, data = sse_fields(ev)
    return name, (data if data is None or data == b"[DONE]" else json.loads(data))


def neutral(obj: Any) -> Any:
    """An upstream body as the agent should get it: model → alias, no fingerprint, id ignored."""
    if isinstance(obj, dict):
        out = {k: neutral(v) for k, v in obj.items() if k not in ("system_fingerprint", "id")}
        if "model" in out:
            out["model"] = ALIAS
        return out
    return [neutral(x) for x in obj] if isinstance(obj, list) else obj


def assert_blind(resp: httpx.Response, raw: bytes) -> None:
    for k, v in resp.headers.items():
        assert MODEL not in v and "llama.cpp" not in v and "org-secret" not in v, (k, v)
    for k in ("x-upstream-model", "openai-organization", "anthropic-organization-id", "request-id",
              "x-request-id"):
        assert k not in resp.headers
    assert resp.headers["server"] == "labctl-meter"
    assert MODEL.encode() not in raw and FINGERPRINT.encode() not in raw and b"system_fingerprint" not in raw


# ------------------------------------------------------------------ transparency and transcript


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_non_streaming_with_tool_calls(tmp_path: Path, dialect: str) -> None:
    reply = Reply(text="I will look — ünïcode ✓.", tool_calls=[CALL], reasoning="think first")
    with serve_fake() as fake, metered(tmp_path, fake, dialect) as meter:
        fake.replies.extend([reply, reply])
        direct = post(fake.url, dialect, chat_body(dialect))
        proxied = post(meter.url, dialect, chat_body(dialect))
        assert proxied.status_code == 200
        assert neutral(proxied.json()) == neutral(direct.json())  # identical but for model/fingerprint/id
        assert proxied.json()["model"] == ALIAS
        assert_blind(proxied, proxied.content)
        [rec] = records(tmp_path, 1)
    assert rec["seq"] == 1 and rec["status"] == 200 and rec["error"] is None and rec["stream"] is False
    assert rec["dialect"] == dialect and rec["path"] == PATHS[dialect] and rec["forwarded"] is True
    assert rec["request"]["messages"] == chat_body(dialect)["messages"]
    assert rec["request"]["tools"] == TOOLS[dialect] and rec["request"]["max_tokens"] == 256
    r = rec["response"]
    assert r["content"] == reply.text and r["reasoning"] == "think first" and r["model"] == ALIAS
    assert [(c["name"], json.loads(c["arguments"])) for c in r["tool_calls"]] == [CALL]
    assert r["finish_reason"] == ("tool_calls" if dialect == "openai" else "tool_use")
    u = rec["usage"]
    assert u["cached_tokens"] == 3 and u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] > 3
    assert u["raw"] == direct.json()["usage"]
    predicted = (rec["timings"] or {}).get("predicted_n")
    assert predicted == (u["completion_tokens"] if dialect == "openai" else None)
    assert rec["latency_ms"] > 0 and rec["t_end"] >= rec["t_start"]


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_streaming_with_tool_calls_is_relayed_event_for_event(tmp_path: Path, dialect: str) -> None:
    reply = Reply(text="Running it now, step by step.", tool_calls=[CALL, ("read", {"path": "a/b.py"})])
    extra = {"stream_options": {"include_usage": True}} if dialect == "openai" else {}
    with serve_fake() as fake, metered(tmp_path, fake, dialect) as meter:
        fake.replies.extend([reply, reply])
        _, direct = stream(fake.url, dialect, chat_body(dialect, True, **extra))
        resp, proxied = stream(meter.url, dialect, chat_body(dialect, True, **extra))
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        assert_blind(resp, proxied)
        [rec] = records(tmp_path, 1)
    d_events, p_events = events(direct), events(proxied)
    assert len(p_events) == len(d_events) > 10
    for d, p in zip(d_events, p_events, strict=True):
        (dn, dj), (pn, pj) = event_json(d), event_json(p)
        assert pn == dn and neutral(pj) == neutral(dj)
        if b'"model"' not in d:
            assert p == d  # events that name no model pass byte for byte
    assert rec["stream"] is True and rec["status"] == 200 and rec["error"] is None
    r = rec["response"]
    assert r["content"] == reply.text
    calls = [(c["name"], json.loads(c["arguments"])) for c in r["tool_calls"]]
    assert calls == [CALL, ("read", {"path": "a/b.py"})]
    assert all(c["id"] for c in r["tool_calls"])
    assert rec["usage"]["completion_tokens"] > 0 and rec["usage"]["cached_tokens"] == 3
    if dialect == "openai":
        assert rec["timings"]["predicted_n"] == rec["usage"]["completion_tokens"]


def test_openai_stream_usage_is_asked_for_but_not_shown(tmp_path: Path) -> None:
    """The agent did not ask for the usage chunk: the meter asks upstream (budgets need it) and
    keeps the extra chunk to itself."""
    with serve_fake() as fake, metered(tmp_path, fake) as meter:
        _, raw = stream(meter.url, "openai", chat_body("openai", True))
        assert fake.received[-1].body["stream_options"] == {"include_usage": True}
        [rec] = records(tmp_path, 1)
    chunks = [event_json(e)[1] for e in events(raw)]
    assert chunks[-1] == b"[DONE]" and all(c == b"[DONE]" or c["choices"] for c in chunks)
    assert rec["usage"]["prompt_tokens"] > 0 and rec["timings"] is not None
    assert "stream_options" not in rec["request"]


# ------------------------------------------------------------------ keys


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_real_key_injected_dummy_never_forwarded_nothing_logged(
        tmp_path: Path, dialect: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABCTL_TEST_KEY", REAL_KEY)
    with serve_fake(require_key=REAL_KEY) as fake, \
            metered(tmp_path, fake, dialect, api_key_env="LABCTL_TEST_KEY") as meter:
        assert post(meter.url, dialect, chat_body(dialect)).status_code == 200
        assert stream(meter.url, dialect, chat_body(dialect, True))[0].status_code == 200
        records(tmp_path, 2)
        status = httpx.get(meter.url + "/_labctl/status", trust_env=False).text
    for got in fake.received:
        h = {k.lower(): v for k, v in got.headers.items()}
        if dialect == "openai":
            assert h["authorization"] == f"Bearer {REAL_KEY}"
        else:
            assert h["x-api-key"] == REAL_KEY
        assert not any(DUMMY_KEY in v for v in h.values())
        if dialect == "anthropic":
            assert h["anthropic-version"] == "2023-06-01" and "authorization" not in h
    for text in ((tmp_path / "transcript.jsonl").read_text(), (tmp_path / "status.json").read_text(), status):
        assert REAL_KEY not in text and DUMMY_KEY not in text


def test_a_client_expecting_100_continue_gets_its_answer(tmp_path: Path) -> None:
    """curl sends `Expect: 100-continue` with a body over 1 KiB: the meter answers the 100 itself
    and never forwards the Expect (the upstream would answer 100 to the meter too)."""
    body = chat_body("openai", text="x" * 4000)
    (tmp_path / "body.json").write_text(json.dumps(body))
    with serve_fake() as fake, metered(tmp_path, fake) as meter:
        done = subprocess.run(["curl", "-sS", "--noproxy", "*", "-H", "Content-Type: application/json",
                               "-H", "Expect: 100-continue", "--data-binary", f"@{tmp_path / 'body.json'}",
                               "-w", "\\n%{http_code}", meter.url + PATHS["openai"]],
                              capture_output=True, text=True, timeout=30)
        answer, code = done.stdout.rsplit("\n", 1)
        assert code == "200", done.stderr
        assert json.loads(answer)["model"] == ALIAS
        records(tmp_path, 1)
    assert not any("expect" in {k.lower() for k in got.headers} for got in fake.received)


def test_missing_key_env_fails_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABCTL_NO_SUCH_KEY", raising=False)
    with serve_fake() as fake, pytest.raises(ValueError, match="LABCTL_NO_SUCH_KEY"), \
            metered(tmp_path, fake, api_key_env="LABCTL_NO_SUCH_KEY"):
        pass


def test_transcript_redacts_secrets_and_model_names(tmp_path: Path) -> None:
    t = Recorder(tmp_path / "t.jsonl", tmp_path / "status.json", ALIAS, secrets=[REAL_KEY])
    t.names.add(MODEL)
    t.write({"kind": "x", "error": {"body": f"bad key {REAL_KEY} for {MODEL}"}})
    t.close()
    line = json.loads((tmp_path / "t.jsonl").read_text())
    assert line["error"]["body"] == f"bad key [REDACTED] for {ALIAS}"



def test_model_names_are_replaced_as_whole_words_only(tmp_path: Path) -> None:
    """An upstream named `m` (or `llama`) must not turn every "m" of the transcript into the alias;
    the longest of two overlapping names wins; bodies that are not JSON follow the same rule."""
    from labctl.meter.transcript import scrub_bytes
    t = Recorder(tmp_path / "t.jsonl", tmp_path / "status.json", ALIAS)
    t.names.update({"m", "llama", "tiny-llama"})
    t.write({"kind": "x", "text": "model m said: tiny-llama, llama; llamas and ollama stay"})
    t.close()
    line = json.loads((tmp_path / "t.jsonl").read_text())
    assert line["text"] == f"model m said: {ALIAS}, {ALIAS}; llamas and ollama stay"
    body = scrub_bytes(b"error: model tiny-llama (llama.cpp) is busy; m", ALIAS, {"m", "tiny-llama", "llama"})
    assert body == f"error: model {ALIAS} ({ALIAS}.cpp) is busy; m".encode()


# ------------------------------------------------------------------ budget


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_token_budget_refuses_after_it_is_spent(tmp_path: Path, dialect: str) -> None:
    with serve_fake() as fake, metered(tmp_path, fake, dialect, token_budget=20) as meter:
        assert post(meter.url, dialect, chat_body(dialect)).status_code == 200
        records(tmp_path, 1)
        assert meter.state.budget_exceeded and meter.state.stopped_reason == "token_budget"
        second = post(meter.url, dialect, chat_body(dialect))
        [first_rec, refused] = records(tmp_path, 2)
        meter.drain()
        state = json.loads((tmp_path / "status.json").read_text())
    assert second.status_code == 429
    err = second.json()["error"]
    assert "token budget" in err["message"]
    assert err["type"] == ("budget_exceeded" if dialect == "openai" else "budget_exceeded")
    if dialect == "anthropic":
        assert second.json()["type"] == "error"
    assert len(fake.received) == 1
    assert first_rec["usage"]["total_tokens"] >= 20
    assert refused["forwarded"] is False and refused["status"] == 429
    assert refused["error"]["type"] == "budget_exceeded"
    assert state["budget_exceeded"] and state["refused"] == 1 and state["requests"] == 2
    assert state["total_tokens"] == first_rec["usage"]["total_tokens"] and state["token_budget"] == 20


# ------------------------------------------------------------------ faults


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "stream"])
def test_upstream_500_is_a_502_and_an_errored_run(tmp_path: Path, dialect: str, streamed: bool) -> None:
    with serve_fake() as fake, metered(tmp_path, fake, dialect) as meter:
        fake.fail_status = 500
        resp = post(meter.url, dialect, chat_body(dialect, streamed))
        [rec] = records(tmp_path, 1)
        meter.drain()
        state = json.loads((tmp_path / "status.json").read_text())
    assert resp.status_code == 502
    body = resp.json()
    assert "upstream error" in body["error"]["message"]
    assert (body["type"] == "error") if dialect == "anthropic" else ("code" in body["error"])
    assert MODEL not in resp.text
    assert rec["error"]["type"] == "upstream_status" and rec["error"]["upstream_status"] == 500
    assert rec["status"] == 502
    assert state["errored"] and state["errors"] == 1 and "500" in state["last_error"]


def test_unparseable_model_output_is_the_models_failure_not_an_error(tmp_path: Path) -> None:
    """llama-server answers 500 when the model's output breaks its tool-call format: the agent
    sees that answer, and the run is graded like any model failure instead of marked errored."""
    with serve_fake() as fake, metered(tmp_path, fake, "openai") as meter:
        fake.fail_status = 500
        fake.fail_message = "The model produced output that does not match the expected peg-native format"
        resp = post(meter.url, "openai", chat_body("openai"))
        [rec] = records(tmp_path, 1)
        meter.drain()
    assert resp.status_code == 500 and "does not match the expected" in resp.json()["error"]["message"]
    assert MODEL not in resp.text
    assert rec["error"]["type"] == "model_output_invalid" and rec["error"]["upstream_status"] == 500
    assert not meter.state.errored and meter.state.errors == 0


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
@pytest.mark.parametrize("fault", ["drop_after", "end_after"])
def test_dropped_stream_ends_with_an_error_event(tmp_path: Path, dialect: str, fault: str) -> None:
    with serve_fake() as fake, metered(tmp_path, fake, dialect) as meter:
        fake.default = Reply(text="a fairly long answer that will be cut off " * 3)
        setattr(fake, fault, 5)
        resp, raw = stream(meter.url, dialect, chat_body(dialect, True))
        [rec] = records(tmp_path, 1)
        assert meter.state.errored and meter.state.errors == 1
    evs = events(raw)
    assert len(evs) == 6  # five relayed, then the error
    name, last = event_json(evs[-1])
    if dialect == "anthropic":
        assert name == "error" and last["type"] == "error" and last["error"]["type"] == "api_error"
    else:
        assert "error" in last and "stream" in last["error"]["message"]
    assert b"[DONE]" not in raw and b"message_stop" not in raw
    assert rec["error"]["type"] == "stream_dropped" and rec["status"] == 200 and rec["stream"] is True
    assert rec["response"]["content"]  # what arrived before the drop is kept


def test_unreachable_upstream_and_bad_json(tmp_path: Path) -> None:
    fake = FakeUpstream()
    fake.url = "http://127.0.0.1:9"  # discard port: nothing listens
    with metered(tmp_path, fake) as meter:
        resp = post(meter.url, "openai", chat_body("openai"))
        with client() as c:
            bad = c.post(meter.url + PATHS["openai"], content=b"{not json", headers=agent_headers("openai"))
        recs = records(tmp_path, 2)
    assert resp.status_code == 502 and resp.json()["error"]["code"] == "upstream_error"
    assert "127.0.0.1:9" not in resp.text and "127.0.0.1:9" not in (tmp_path / "transcript.jsonl").read_text()
    assert bad.status_code == 400 and recs[1]["forwarded"] is False
    assert recs[0]["error"]["type"] == "upstream_unreachable" and meter.state.errors == 1


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "stream"])
def test_agent_leaving_is_not_an_upstream_error(tmp_path: Path, streamed: bool) -> None:
    with serve_fake() as fake, metered(tmp_path, fake) as meter:
        if streamed:
            fake.default = Reply(text="x" * 40_000)  # 10k events: far more than one socket buffer
            body = chat_body("openai", True, max_tokens=20_000)
            with client() as c, c.stream("POST", meter.url + PATHS["openai"], json=body) as r:
                next(r.iter_raw())
        else:
            fake.delay_s = 0.5
            with pytest.raises(httpx.ReadTimeout), httpx.Client(timeout=0.1, trust_env=False) as c:
                c.post(meter.url + PATHS["openai"], json=chat_body("openai"))
        [rec] = records(tmp_path, 1)
        assert post(meter.url, "openai", chat_body("openai")).status_code == 200  # the meter carries on
        records(tmp_path, 2)
    assert rec["error"]["type"] == "agent_disconnected"
    assert not meter.state.errored and meter.state.errors == 0
    assert fake.client_left == (1 if streamed else 0)  # the upstream stops generating for nobody


# ------------------------------------------------------------------ blindness


def test_nothing_names_the_model(tmp_path: Path) -> None:
    with serve_fake() as fake, metered(tmp_path, fake) as meter, client() as c:
        models = c.get(meter.url + "/v1/models")
        assert models.json() == {"object": "list", "data": [{"id": ALIAS, "object": "model", "created": 0,
                                                             "owned_by": "labctl"}]}
        assert c.get(meter.url + f"/v1/models/{ALIAS}").json()["id"] == ALIAS
        health = c.get(meter.url + "/health")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        assert_blind(health, health.content)
        for path in ("/props", "/slots", "/metrics", "/v1/completions"):
            assert c.get(meter.url + path).status_code == 404
        resp = c.post(meter.url + PATHS["openai"], json=chat_body("openai"))
        assert_blind(resp, resp.content)
        resp, raw = stream(meter.url, "openai", chat_body("openai", True))
        assert_blind(resp, raw)
        status = c.get(meter.url + "/_labctl/status")
        records(tmp_path, 2)
    for text in (status.text, (tmp_path / "transcript.jsonl").read_text(),
                 (tmp_path / "status.json").read_text()):
        assert MODEL not in text and FINGERPRINT not in text


def test_upstream_model_override_is_sent_but_never_recorded(tmp_path: Path) -> None:
    with serve_fake() as fake, \
            metered(tmp_path, fake, "anthropic", upstream_model="claude-secret-4") as meter:
        post(meter.url, "anthropic", chat_body("anthropic"))
        stream(meter.url, "anthropic", chat_body("anthropic", True))
        recs = records(tmp_path, 2)
    assert [r.body["model"] for r in fake.received] == ["claude-secret-4"] * 2
    assert all(r["request"]["model"] == ALIAS for r in recs)
    assert "claude-secret-4" not in (tmp_path / "transcript.jsonl").read_text()


# ------------------------------------------------------------------ interventions


def test_repeated_tool_call_stop(tmp_path: Path) -> None:
    rules = Interventions.model_validate({"rules": [
        {"name": "loop", "action": "stop", "trigger": {"repeated_tool_call": 3},
         "message": "stuck in a loop"}]})
    with serve_fake() as fake, metered(tmp_path, fake, interventions=rules) as meter:
        fake.default = Reply(text="", tool_calls=[CALL])
        codes = [post(meter.url, "openai", chat_body("openai")).status_code for _ in range(3)]
        refused = post(meter.url, "openai", chat_body("openai"))
        after = post(meter.url, "openai", chat_body("openai"))
        recs = records(tmp_path, 5)
        [iv] = records(tmp_path, 5, kind="intervention")
    assert codes == [200, 200, 200] and refused.status_code == 429 and after.status_code == 429
    message = refused.json()["error"]["message"]
    assert "'loop'" in message and "stuck in a loop" in message
    assert len(fake.received) == 3
    st = meter.state
    assert st.stopped and st.stopped_reason == "intervention:loop"
    assert st.stops == 1 and st.interventions == {"loop": 1}
    assert iv["name"] == "loop" and iv["action"] == "stop" and iv["seq"] == 4 and iv["detail"]["repeats"] == 3
    assert recs[3]["interventions"] == ["loop"] and recs[3]["forwarded"] is False


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_idle_nudge(tmp_path: Path, dialect: str) -> None:
    """Wired through the meter without waiting: the trigger is an hour, so no request that follows
    an answer is idle however loaded the machine; backdating the last answer by an hour makes the
    next one idle. (The threshold itself: test_idle_trigger_uses_the_clock_it_is_given.)"""
    rules = Interventions.model_validate({"rules": [
        {"name": "wake", "action": "nudge", "trigger": {"idle": "1h"}, "message": "Keep going.",
         "max": 1}]})
    with serve_fake() as fake, metered(tmp_path, fake, dialect, interventions=rules) as meter:
        post(meter.url, dialect, chat_body(dialect))
        post(meter.url, dialect, chat_body(dialect))  # not idle: no nudge
        for n in (2, 3):
            records(tmp_path, n)  # recorded after the meter noted the answer's end
            meter.state.last_response_time -= 3600  # the agent idled an hour
            post(meter.url, dialect, chat_body(dialect))  # nudged; then max 1: no more
        recs = records(tmp_path, 4)
        ivs = records(tmp_path, 4, kind="intervention")
    sent = [r.body["messages"] for r in fake.received]
    assert sent[0] == sent[1] == sent[3] == chat_body(dialect)["messages"]
    assert sent[2] == [{"role": "user", "content": "List the files.\n\nKeep going."}]
    assert meter.state.nudges == 1 and meter.state.interventions == {"wake": 1}
    assert [i["seq"] for i in ivs] == [3] and ivs[0]["detail"]["idle_s"] >= 3600
    assert recs[2]["interventions"] == ["wake"] and recs[2]["request"]["messages"] == sent[2]


def test_idle_trigger_uses_the_clock_it_is_given() -> None:
    """The policy decides on the `now` the meter hands it: an idle trigger fires at its threshold
    and not a moment before, counts from the latest answer, never fires before any answer, and
    stops at its max."""
    rules = Interventions.model_validate({"rules": [
        {"name": "wake", "action": "nudge", "trigger": {"idle": "30s"}, "message": "Go on.", "max": 2}]})
    policy = InterventionPolicy(rules)
    state = MeterState(alias=ALIAS, dialect="openai", started_at=1000.0)
    assert policy.decide(1000.0 + 86400, state) == []  # no answer yet: nothing to be idle after
    state.last_response_time = 2000.0
    assert policy.decide(2029.9, state) == []
    assert [(f.rule.name, f.detail) for f in policy.decide(2030.0, state)] == [("wake", {"idle_s": 30.0})]
    state.last_response_time = 2100.0  # answered again: the gap starts over
    assert policy.decide(2129.0, state) == []
    assert [f.detail for f in policy.decide(2131.5, state)] == [{"idle_s": 31.5}]
    state.last_response_time = 3000.0
    assert policy.decide(9999.0, state) == []  # max 2 reached
    assert policy.nudges == 2 and policy.fired == {"wake": 2}


def test_inject_user_text_shapes() -> None:
    body: dict[str, Any] = {"messages": [{"role": "assistant", "content": "x"}]}
    inject_user_text("openai", body, "go")
    assert body["messages"][-1] == {"role": "user", "content": "go"}
    result = {"type": "tool_result", "tool_use_id": "t", "content": "ok"}
    body = {"messages": [{"role": "user", "content": [result]}]}
    inject_user_text("anthropic", body, "go")
    assert body["messages"] == [{"role": "user", "content": [result, {"type": "text", "text": "go"}]}]
    body = {"messages": [{"role": "assistant", "content": "x"}]}
    inject_user_text("anthropic", body, "go")
    assert body["messages"][-1] == {"role": "user", "content": [{"type": "text", "text": "go"}]}


def test_call_signature_sees_tool_calls_and_fenced_commands() -> None:
    a = {"tool_calls": [{"name": "bash", "arguments": '{"a": 1, "b": 2}'}]}
    b = {"tool_calls": [{"name": "bash", "arguments": '{"b":2,"a":1}'}]}
    assert call_signature(a) == call_signature(b)
    first = call_signature({"content": "Let me look.\n```bash\nls\n```"})
    assert first is not None and first == call_signature({"content": "Again\n```bash\nls \n```"})
    assert call_signature({"content": "done"}) is None


def test_sse_splitter_handles_any_boundaries() -> None:
    raw = b'event: a\ndata: {"x":1}\n\nevent: b\r\ndata: {"y":2}\r\n\r\ndata: [DONE]\n\n'
    for cut in range(1, len(raw)):
        s = SSESplitter()
        got = s.feed(raw[:cut]) + s.feed(raw[cut:])
        assert got == [b'event: a\ndata: {"x":1}\n\n', b'event: b\r\ndata: {"y":2}\r\n\r\n',
                       b"data: [DONE]\n\n"]
        assert s.pending == b""


# ------------------------------------------------------------------ CLI


def test_cli_runs_until_sigterm(tmp_path: Path) -> None:
    ivs = tmp_path / "interventions.json"
    ivs.write_text(json.dumps({"max_nudges": 2, "rules": []}))
    with serve_fake() as fake:
        proc = subprocess.Popen(
            [sys.executable, "-m", "labctl", "meter", "--upstream", fake.url, "--dialect", "openai",
             "--listen", "127.0.0.1:0", "--transcript", str(tmp_path / "transcript.jsonl"), "--alias", ALIAS,
             "--token-budget", "1000", "--interventions", str(ivs), "--json"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            assert proc.stdout is not None
            url = json.loads(proc.stdout.readline())["listening"]
            assert post(url, "openai", chat_body("openai")).json()["model"] == ALIAS
            records(tmp_path, 1)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    final = json.loads(out)
    assert final["ok"] and final["state"]["requests"] == 1 and final["state"]["token_budget"] == 1000


def test_cli_rejects_bad_listen(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "labctl", "meter", "--upstream", "http://x",
                           "--dialect", "openai", "--listen", "nowhere",
                           "--transcript", str(tmp_path / "t.jsonl")],
                          cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2 and "HOST:PORT" in done.stderr


# ------------------------------------------------------------------ real llama-server


@pytest.mark.llama
def test_through_real_llama_server(tmp_path: Path) -> None:
    from labctl.gguf.tiny import TinyModelParams, write_tiny_gguf
    from labctl.plan.llamaserver import ServerSettings, find_binary, serve, server_argv

    model = tmp_path / "tiny.gguf"
    write_tiny_gguf(model, TinyModelParams())
    argv = server_argv(find_binary(build=True), model, ServerSettings(context=512, max_output=16),
                       alias="secret-tiny-model")
    with serve(argv, tmp_path / "server.log") as base:
        fake = FakeUpstream()
        fake.url = base
        with metered(tmp_path, fake) as meter:
            body = {"model": ALIAS, "max_tokens": 8, "temperature": 0, "seed": 0,
                    "messages": [{"role": "user", "content": "Say hello."}]}
            whole = post(meter.url, "openai", body)
            resp, raw = stream(meter.url, "openai", {**body, "stream": True})
            msgs = post(meter.url, "anthropic", {**body, "stream": False})
            recs = records(tmp_path, 3)
            assert not meter.state.errored, meter.state.last_error
    assert whole.status_code == 200 and whole.json()["model"] == ALIAS and "timings" in whole.json()
    assert_blind(whole, whole.content)
    assert b"secret-tiny-model" not in raw and b"system_fingerprint" not in raw and b"[DONE]" in raw
    assert msgs.status_code == 200 and msgs.json()["model"] == ALIAS
    for rec in recs[:2]:
        u, t = rec["usage"], rec["timings"]
        assert u["prompt_tokens"] > 0 and 0 < u["completion_tokens"] <= 8, rec
        assert t["predicted_n"] == u["completion_tokens"]
        assert t["prompt_n"] + t["cache_n"] == u["prompt_tokens"]
        assert rec["response"]["finish_reason"] in ("length", "stop")
    assert recs[1]["stream"] is True and recs[1]["response"]["content"] is not None
    assert recs[2]["usage"]["prompt_tokens"] > 0 and recs[2]["usage"]["completion_tokens"] > 0
    assert "secret-tiny-model" not in (tmp_path / "transcript.jsonl").read_text()


@pytest.mark.llama
def test_real_llama_server_unparseable_tool_call_is_the_models_failure(tmp_path: Path) -> None:
    """llama-server's own 500 for output that breaks its tool-call format, not one written into a
    fake. The request ends with an assistant message, which llama-server continues (prefill) and
    parses as the start of the answer: a `<tool_call>` opened on something that is not JSON, so
    its final parse fails whatever the tiny model then generates (a cut-off call would not do: the
    parser is lenient at the end of the text). The meter passes the answer to the agent and records
    the model's failure; the run is not errored."""
    from labctl.gguf.tiny import TinyModelParams, write_tiny_gguf
    from labctl.plan.llamaserver import ServerSettings, find_binary, serve, server_argv

    model = tmp_path / "tiny.gguf"
    write_tiny_gguf(model, TinyModelParams())
    argv = server_argv(find_binary(build=True), model, ServerSettings(context=512),
                       alias="secret-tiny-model")
    params = {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}
    tools = [{"type": "function", "function": {"name": "bash", "description": "Run a command.",
                                               "parameters": params}}]
    messages = [{"role": "user", "content": "List the files."},
                {"role": "assistant", "content": "<tool_call>ls -la</tool_call>"}]  # a call, but not JSON
    with serve(argv, tmp_path / "server.log") as base:
        fake = FakeUpstream()
        fake.url = base
        with metered(tmp_path, fake) as meter:
            body = {"model": ALIAS, "max_tokens": 8, "temperature": 0, "seed": 0, "tools": tools,
                    "messages": messages}
            resp = post(meter.url, "openai", body)
            [rec] = records(tmp_path, 1)
            meter.drain()
    server_log = (tmp_path / "server.log").read_text()
    assert resp.status_code == 500, (resp.text, server_log[-2000:])
    assert "does not match the expected" in resp.json()["error"]["message"], resp.text
    assert "secret-tiny-model" not in resp.text
    assert rec["error"]["type"] == "model_output_invalid" and rec["error"]["upstream_status"] == 500, rec
    assert not meter.state.errored and meter.state.errors == 0, meter.state.last_error
