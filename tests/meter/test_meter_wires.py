"""The meter on each wire an agent runtime speaks — chat completions, Anthropic Messages and
OpenAI's Responses API, streamed and not — against the scripted model (tests/scripted_model.py)
as a cloud upstream, and against the real llama-server (tiny model) as a local one: the agent
gets the upstream's answer with the model hidden, the transcript records tool calls, usage and
llama.cpp timings, the run's state counts requests, tool calls and tokens, budgets apply."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from labctl.meter.server import MeterHandle, meter_in_thread
from labctl.meter.sse import SSESplitter, sse_fields
from labctl.meter.sserelay import parse_events
from labctl.meter.state import MeterConfig
from labctl.meter.transcript import inject_user_text, reassembler
from tests.helpers import meter_records as records
from tests.scripted_model import MODEL, Plan, serve_scripted, shell_arguments, shell_tool, tool_schemas

ALIAS = "run-7"
PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages", "responses": "/v1/responses"}
PROVIDER = {"openai": "openai", "anthropic": "anthropic", "responses": "openai"}
SCHEMA = {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}
TOOLS = {"openai": [{"type": "function", "function": {"name": "bash", "parameters": SCHEMA}}],
         "anthropic": [{"name": "Bash", "description": "Run a command.", "input_schema": SCHEMA}],
         "responses": [{"type": "function", "name": "shell", "parameters": SCHEMA}]}
WIRES = [(d, s) for d in PATHS for s in (False, True)]


@contextmanager
def metered(tmp_path: Path, upstream: str, provider: str, **cfg: Any) -> Iterator[MeterHandle]:
    config = MeterConfig(upstream=upstream, dialect=provider, transcript=tmp_path / "transcript.jsonl",
                         alias=ALIAS, **cfg)
    with meter_in_thread(config) as handle:
        yield handle


def call(base: str, dialect: str, body: dict[str, Any]) -> tuple[httpx.Response, bytes]:
    headers = {"x-api-key": "dummy", "anthropic-version": "2023-06-01", "Authorization": "Bearer dummy"}
    with httpx.Client(timeout=30, trust_env=False) as c, c.stream(
            "POST", base + PATHS[dialect], json=body, headers=headers) as r:
        return r, b"".join(r.iter_raw())


def answer(dialect: str, resp: httpx.Response, raw: bytes) -> dict[str, Any]:
    """What the agent got, reassembled the way the meter reassembles for its transcript."""
    asm = reassembler(dialect, ALIAS)
    if resp.headers["content-type"].startswith("text/event-stream"):
        for name, obj in parse_events(raw):
            asm.event(name, obj)
    else:
        asm.body(json.loads(raw))
    assert asm.done or raw.endswith(b"data: [DONE]\n\n"), raw[-300:]  # chat streams end in [DONE]
    return {**asm.response(), "models": asm.upstream_models}




def first_request(dialect: str, stream: bool, text: str = "Make hello.txt.") -> dict[str, Any]:
    body: dict[str, Any] = {"model": ALIAS, "stream": stream, "tools": TOOLS[dialect]}
    if dialect == "responses":
        return {**body, "input": [{"role": "user", "content": text}], "max_output_tokens": 64}
    return {**body, "max_tokens": 64, "messages": [{"role": "user", "content": text}]}


def follow_up(dialect: str, body: dict[str, Any], got: dict[str, Any], output: str) -> dict[str, Any]:
    """The agent's next request: its call and the command's output appended, in the dialect's shape."""
    [tc] = got["tool_calls"]
    if dialect == "responses":
        items = [{"type": "function_call", "call_id": tc["id"], "name": tc["name"],
                  "arguments": tc["arguments"]},
                 {"type": "function_call_output", "call_id": tc["id"], "output": output}]
        return {**body, "input": [*body["input"], *items]}
    if dialect == "openai":
        turns = [{"role": "assistant", "content": got["content"],
                  "tool_calls": [{"id": tc["id"], "type": "function",
                                  "function": {"name": tc["name"], "arguments": tc["arguments"]}}]},
                 {"role": "tool", "tool_call_id": tc["id"], "content": output}]
    else:
        turns = [{"role": "assistant", "content": [
                     {"type": "text", "text": got["content"]},
                     {"type": "tool_use", "id": tc["id"], "name": tc["name"],
                      "input": json.loads(tc["arguments"])}]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tc["id"],
                                               "content": output}]}]
    return {**body, "messages": [*body["messages"], *turns]}


@pytest.mark.parametrize(("dialect", "stream"), WIRES)
def test_scripted_model_through_the_meter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dialect: str,
                                          stream: bool) -> None:
    """Two turns of an agent on each wire: the scripted model calls the declared shell tool with
    the plan's command, then finishes; the agent sees the alias only, the transcript has both
    exchanges with their tool call and usage, the state counts 2 requests, 1 tool call, tokens."""
    plan = Plan(commands=["ls -la"], final="All done.")
    monkeypatch.setenv("SCRIPTED_KEY", "sk-real")
    with serve_scripted(plan, require_key="sk-real") as model, \
            metered(tmp_path, model.url, PROVIDER[dialect], api_key_env="SCRIPTED_KEY") as meter:
        body = first_request(dialect, stream)
        resp, raw = call(meter.url, dialect, body)
        assert resp.status_code == 200, raw
        got = answer(dialect, resp, raw)
        resp2, raw2 = call(meter.url, dialect, follow_up(dialect, body, got, "hello.txt\n"))
        assert resp2.status_code == 200, raw2
        done = answer(dialect, resp2, raw2)
        recs = records(tmp_path, 2)
        meter.drain()
        state = meter.state
    name = TOOLS[dialect][0].get("name") or TOOLS[dialect][0]["function"]["name"]
    calls = [(c["name"], json.loads(c["arguments"])) for c in got["tool_calls"]]
    assert calls == [(name, {"command": "ls -la"})]
    assert done["tool_calls"] == [] and done["content"] == "All done."
    for raw_bytes in (raw, raw2):
        assert MODEL.encode() not in raw_bytes and b"sk-real" not in raw_bytes
    assert not got["models"] and not done["models"]  # only the alias reached the agent
    assert [r["path"] for r in model.received] == [PATHS[dialect]] * 2
    assert all(r["body"]["model"] == ALIAS for r in model.received)

    assert [r["dialect"] for r in recs] == [dialect] * 2 and [r["stream"] for r in recs] == [stream] * 2
    assert recs[0]["response"]["tool_calls"] == got["tool_calls"]
    assert recs[0]["response"]["finish_reason"] == ("tool_use" if dialect == "anthropic" else "tool_calls")
    assert recs[1]["response"]["content"] == "All done." and recs[1]["response"]["tool_calls"] == []
    for r in recs:
        assert r["status"] == 200 and r["error"] is None, r
        assert r["usage"]["prompt_tokens"] > 0 and r["usage"]["completion_tokens"] > 0, r["usage"]
    assert recs[1]["usage"]["prompt_tokens"] > recs[0]["usage"]["prompt_tokens"]  # the history grew
    assert (state.requests, state.forwarded, state.tool_calls) == (2, 2, 1)
    assert state.total_tokens == sum(r["usage"]["total_tokens"] for r in recs) and not state.errored
    text = (tmp_path / "transcript.jsonl").read_text()
    assert MODEL not in text and "sk-real" not in text


@pytest.mark.parametrize("dialect", ["anthropic", "responses"])
def test_token_budget_refuses_in_the_agents_dialect(tmp_path: Path, dialect: str) -> None:
    """The budget counts Messages and Responses usage like chat usage: the call that crosses it
    completes, the next is a 429 shaped for the agent's SDK and never reaches the model."""
    with serve_scripted(Plan(commands=["true"] * 5)) as model, \
            metered(tmp_path, model.url, PROVIDER[dialect], token_budget=20) as meter:
        first, _ = call(meter.url, dialect, first_request(dialect, True))
        second, raw = call(meter.url, dialect, first_request(dialect, True))
        meter.drain()
    assert first.status_code == 200 and second.status_code == 429
    err = json.loads(raw)
    kind = err["error"]["type"]
    assert kind == "budget_exceeded" and (("type" in err) == (dialect == "anthropic")), err
    assert len(model.received) == 1 and meter.state.budget_exceeded and meter.state.refused == 1


def test_dropped_responses_stream_ends_with_an_error_event(tmp_path: Path) -> None:
    """A Responses stream cut before `response.completed`: the agent gets `event: error` (codex
    stops on it) and the run is errored, not mistaken for the model's own failure."""
    with serve_scripted() as model, metered(tmp_path, model.url, "openai") as meter:
        model.end_after = 5
        resp, raw = call(meter.url, "responses", first_request("responses", True))
        [rec] = records(tmp_path, 1)
        meter.drain()
    evs = SSESplitter().feed(raw)
    name, data = sse_fields(evs[-1])
    assert name == "error" and b"labctl meter" in (data or b""), raw
    assert MODEL.encode() not in raw
    assert rec["error"]["type"] == "stream_dropped" and meter.state.errored


def test_responses_nudge_is_one_more_user_item() -> None:
    body: dict[str, Any] = {"input": "Do the task."}
    inject_user_text("responses", body, "Keep going.")
    assert body["input"] == [{"role": "user", "content": "Do the task."},
                             {"type": "message", "role": "user",
                              "content": [{"type": "input_text", "text": "Keep going."}]}]


def test_shell_tool_found_by_name_and_filled_by_its_schema() -> None:
    """Each runtime's shell tool, as it declares it: found by name, the command put where and how
    its schema wants it (codex's `shell` takes an argv array), required parameters filled."""
    codex = [{"type": "function", "name": "update_plan", "parameters": {}},
             {"type": "function", "name": "shell", "parameters": {
                 "type": "object", "required": ["command"],
                 "properties": {"command": {"type": "array", "items": {"type": "string"}},
                                "timeout_ms": {"type": "number"}}}}]
    qwen = [{"type": "function", "function": {"name": "read_file", "parameters": {}}},
            {"type": "function", "function": {"name": "run_shell_command", "parameters": {
                "type": "object", "required": ["command", "is_background"],
                "properties": {"command": {"type": "string"}, "is_background": {"type": "boolean"}}}}}]
    claude = [{"name": "Read", "input_schema": {}}, {"name": "Bash", "input_schema": SCHEMA}]
    found = [shell_tool(tool_schemas("responses", {"tools": codex})),
             shell_tool(tool_schemas("openai", {"tools": qwen})),
             shell_tool(tool_schemas("anthropic", {"tools": claude}))]
    assert [f[0] for f in found if f] == ["shell", "run_shell_command", "Bash"]
    assert shell_arguments(found[0][1], "ls") == {"command": ["bash", "-lc", "ls"]}  # type: ignore[index]
    assert shell_arguments(found[1][1], "ls") == {"command": "ls", "is_background": False}  # type: ignore[index]
    assert shell_tool(tool_schemas("openai", {"tools": [TOOLS["openai"][0], *qwen][1:2]})) is None


# ------------------------------------------------------------------ real llama-server


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One llama-server (the pinned build, tiny model) for this module's llama tests."""
    from labctl.gguf.tiny import TinyModelParams, write_tiny_gguf
    from labctl.plan.llamaserver import ServerSettings, find_binary, serve, server_argv

    tmp = tmp_path_factory.mktemp("llama")
    model = tmp / "tiny.gguf"
    write_tiny_gguf(model, TinyModelParams())
    argv = server_argv(find_binary(build=True), model, ServerSettings(context=1024, max_output=16),
                       alias="secret-tiny-model")
    with serve(argv, tmp / "server.log") as base:
        yield base


@pytest.mark.llama
@pytest.mark.parametrize(("dialect", "stream"),
                         [("anthropic", True), ("responses", False), ("responses", True)])
def test_local_messages_and_responses_through_real_llama_server(
        tmp_path: Path, llama: str, dialect: str, stream: bool) -> None:
    """llama-server's own /v1/messages and /v1/responses behind the meter (a local contestant):
    the answer reaches the agent under the alias only, and the transcript has usage and — where
    llama.cpp sends them — timings that agree with it."""
    body: dict[str, Any] = {"model": ALIAS, "stream": stream, "temperature": 0, "seed": 0}
    if dialect == "responses":
        # a second turn as codex sends it: its shell call and the call's output as input items
        turn = [{"type": "function_call", "call_id": "call_1", "name": "shell",
                 "arguments": json.dumps({"command": ["bash", "-lc", "ls"]})},
                {"type": "function_call_output", "call_id": "call_1", "output": "hello.txt"}]
        body |= {"input": [{"role": "user", "content": "Say hello."}, *turn], "max_output_tokens": 8,
                 "tools": TOOLS["responses"]}
    else:  # Claude Code's shape: tools with input_schema, a system prompt as text blocks
        body |= {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8,
                 "system": [{"type": "text", "text": "You are a coding agent."}], "tools": TOOLS["anthropic"]}
    with metered(tmp_path, llama, "openai") as meter:
        resp, raw = call(meter.url, dialect, body)
        [rec] = records(tmp_path, 1)
        meter.drain()
        state = meter.state
    assert resp.status_code == 200, raw
    got = answer(dialect, resp, raw)
    assert b"secret-tiny-model" not in raw and not got["models"], raw[-500:]
    assert rec["error"] is None and rec["stream"] is stream and not state.errored, (rec, state.last_error)
    u = rec["usage"]
    assert u["prompt_tokens"] > 0 and 0 < u["completion_tokens"] <= 8, rec
    assert rec["response"]["finish_reason"] in ("length", "stop", "max_tokens", "end_turn"), rec["response"]
    assert state.total_tokens == u["total_tokens"] and state.requests == 1
    if dialect == "responses" and stream:
        # the pinned llama.cpp puts its timings on a Responses stream's last event only; its
        # /v1/messages answers and whole Responses bodies carry usage but no timings
        t = rec["timings"]
        assert t["predicted_n"] == u["completion_tokens"], (t, u)
        assert t["prompt_n"] + t["cache_n"] == u["prompt_tokens"], (t, u)
    assert "secret-tiny-model" not in (tmp_path / "transcript.jsonl").read_text()


def test_responses_requests_read_like_chat_for_metrics() -> None:
    """A recorded Responses request's `input` reads as chat turns: the command's output (a
    function_call_output) is the observation pathology reads return codes from."""
    from labctl.meter.wire_responses import request_turns
    from labctl.run.pathology import observation_codes

    request = {"input": [{"role": "user", "content": [{"type": "input_text", "text": "Fix it."}]},
                         {"type": "function_call", "call_id": "c1", "name": "shell", "arguments": "{}"},
                         {"type": "function_call_output", "call_id": "c1", "output": "returncode: 2\nno"}]}
    turns = request_turns(request)
    assert [t["role"] for t in turns or []] == ["user", "assistant", "tool"]
    assert observation_codes(request) == [2]
    assert request_turns({"input": "hi"}) == [{"role": "user", "content": "hi"}]


def test_scripted_model_without_tools_writes_fenced_commands() -> None:
    """A client that declares no tools (aider) gets each command as a fenced block, one per
    assistant turn of its own so far (few-shot example turns are not steps), then the final text."""
    from tests.scripted_model import decide

    plan = Plan(commands=["ls", "git push"], final="Done.")
    user = {"role": "user", "content": "Do it."}
    example = {"role": "assistant", "content": "Ok, I will:\n\nshow_greeting.py\n```\nprint('Hey')\n```"}
    first = decide(plan, "openai", {"messages": [user, example, user]})
    answered = {"role": "assistant", "content": [{"type": "text", "text": first.text}]}
    second = decide(plan, "anthropic", {"messages": [user, example, user, answered, user]})
    again = {"role": "assistant", "content": second.text}
    last = decide(plan, "openai", {"messages": [user, {"role": "assistant", "content": first.text}, user,
                                                again, user]})
    assert first.call is None and first.text.endswith("```bash\nls\n```")
    assert second.text.endswith("```bash\ngit push\n```") and last.text == "Done." and last.call is None


def test_count_tokens_names_the_cloud_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Claude Code's `/v1/messages/count_tokens` is passed through with the real key and the
    contestant's model in place of the alias (the provider counts for a model it knows)."""
    monkeypatch.setenv("SCRIPTED_KEY", "sk-real")
    cfg = {"api_key_env": "SCRIPTED_KEY", "upstream_model": "claude-x"}
    with serve_scripted(require_key="sk-real") as model, \
            metered(tmp_path, model.url, "anthropic", **cfg) as meter, \
            httpx.Client(timeout=30, trust_env=False) as c:
        resp = c.post(meter.url + "/v1/messages/count_tokens", headers={"x-api-key": "dummy"},
                      json={"model": ALIAS, "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 200 and resp.json()["input_tokens"] > 0, resp.text
    [seen] = model.received
    assert seen["body"]["model"] == "claude-x" and seen["headers"]["x-api-key"] == "sk-real"


def test_request_budget_stops_a_runtime_without_a_turn_limit(tmp_path: Path) -> None:
    """`request_budget` 2: the second call completes and stops the run, the third is a 429 that
    never reaches the model (a runner polling status.json stops the agent at the stop)."""
    with serve_scripted(Plan(commands=["true"] * 5)) as model, \
            metered(tmp_path, model.url, "openai", request_budget=2) as meter:
        got = [call(meter.url, "responses", first_request("responses", False)) for _ in range(3)]
        meter.drain()
    status = json.loads((tmp_path / "status.json").read_text())
    assert [r.status_code for r, _ in got] == [200, 200, 429], got
    assert "request budget is spent" in json.loads(got[2][1])["error"]["message"]
    assert len(model.received) == 2 and status["stopped_reason"] == "request_budget" and status["stopped"]


def test_llama_cpp_shaped_responses_stream_reassembles() -> None:
    """A function call as the pinned llama.cpp streams it (server-task.cpp): no output_index or
    sequence numbers, argument deltas named by item_id only, the whole call again at the end, its
    timings on the data of the last event, no `[DONE]`."""
    evs = [("response.created", {"response": {"id": "r", "object": "response", "status": "in_progress"}}),
           ("response.output_item.added", {"item": {"id": "fc_abc", "arguments": "", "call_id": "call_abc",
                                                    "name": "shell", "type": "function_call",
                                                    "status": "in_progress"}}),
           ("response.function_call_arguments.delta", {"delta": '{"command":', "item_id": "fc_abc"}),
           ("response.function_call_arguments.delta", {"delta": ' "ls"}', "item_id": "fc_abc"}),
           ("response.output_item.done", {"item": {"id": "fc_abc", "type": "function_call",
                                                   "status": "completed", "arguments": '{"command": "ls"}',
                                                   "call_id": "call_abc", "name": "shell"}}),
           ("response.completed", {"response": {"id": "r", "status": "completed", "model": "secret-tiny",
                                                "usage": {"input_tokens": 30, "output_tokens": 9,
                                                          "input_tokens_details": {"cached_tokens": 4}}},
                                   "timings": {"prompt_n": 26, "cache_n": 4, "predicted_n": 9}})]
    raw = b"".join(f"event: {k}\ndata: {json.dumps({'type': k, **v})}\n\n".encode() for k, v in evs)
    asm = reassembler("responses", ALIAS)
    for name, obj in parse_events(raw):
        asm.event(name, obj)
    assert asm.done and asm.upstream_models == {"secret-tiny"} and asm.timings == evs[-1][1]["timings"]
    call_ = {"id": "call_abc", "name": "shell", "arguments": '{"command": "ls"}'}
    assert asm.response()["tool_calls"] == [call_]
    assert asm.response()["finish_reason"] == "tool_calls"
    assert asm.usage() == {"prompt_tokens": 30, "completion_tokens": 9, "cached_tokens": 4,
                           "total_tokens": 39, "raw": evs[-1][1]["response"]["usage"]}


def test_idle_nudge_on_responses_and_repeated_call_stop(tmp_path: Path) -> None:
    """Interventions on the Responses wire: an idle nudge reaches the model as one more user input
    item; the same function call three turns running stops the run (a Responses 429)."""
    from labctl.spec.lab import Interventions

    rules = Interventions.model_validate({"rules": [
        {"name": "wake", "action": "nudge", "trigger": {"idle": "1h"}, "message": "Keep going.", "max": 1},
        {"name": "loop", "action": "stop", "trigger": {"repeated_tool_call": 3}}]})
    body = first_request("responses", True)
    with serve_scripted(Plan(commands=["ls"] * 9)) as model, \
            metered(tmp_path, model.url, "openai", interventions=rules) as meter:
        call(meter.url, "responses", body)
        records(tmp_path, 1)
        meter.state.last_response_time -= 3600  # the agent idled an hour
        got = [call(meter.url, "responses", body) for _ in range(3)]
        meter.drain()
    nudged = model.received[1]["body"]["input"]
    nudge = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Keep going."}]}
    assert nudged[-1] == nudge
    assert nudged[:-1] == body["input"] and model.received[2]["body"]["input"] == body["input"]
    assert [r.status_code for r, _ in got] == [200, 200, 429] and len(model.received) == 3
    assert meter.state.stopped_reason == "intervention:loop" and meter.state.nudges == 1
