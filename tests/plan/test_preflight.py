"""The preflight and the served context, against the real llama-server (marked `llama`): a tiny model
whose chat template drops tools, one whose template renders them, a context above the training
context with and without YaRN, and the plan's first-prompt fit warning."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from labctl.gguf.read import read_local
from labctl.gguf.store import Store
from labctl.gguf.template import has_tool_section, local_tool_section, template_note
from labctl.gguf.tiny import CHAT_TEMPLATE, TinyModelParams, write_tiny_gguf
from labctl.lock.lockfile import FileLock, Lock, ModelLock, SourceLock, TaskLock
from labctl.plan import llamaserver as ls
from labctl.plan.firstprompt import FirstPrompt, fit_warning
from labctl.plan.planner import plan_lab
from labctl.plan.preflight import host_backend, preflight_lab
from labctl.run.served import served_mismatch
from labctl.spec.load import load_lab
from tests.helpers import ROOT

# A ChatML-style template of our own that, like SmolLM2's, never reads `tools`.
NO_TOOLS_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}"
)


def _lab(tmp: Path, *, template: str = CHAT_TEMPLATE, train: int = 4096, serve: str = "context: 1024",
         agent: str = "{runtime: mini-swe-agent, version: 2.4.6}") -> tuple[Path, Lock]:
    """A lab of one local contestant (a tiny GGUF on disk) and its lock, written as `labctl lock` would."""
    model = tmp / "tiny.gguf"
    sha = write_tiny_gguf(model, TinyModelParams(seed=3, context_length=train), chat_template=template)
    (tmp / "lab.yaml").write_text(f"""version: 1
lab: {{name: probe}}
engine: {{llama_cpp: {{sdist: llama-cpp-python==0.3.36}}, cpu_image: debian:bookworm-slim}}
profile: cpu
serve: {{flash_attention: "off", max_output: 64, {serve}}}
agent: {agent}
task: {{path: {ROOT / 'tasks' / 'smoke-hello'}}}
contestants:
  - {{id: tiny, kind: local, model: {{path: tiny.gguf}}}}
  - {{id: nop, kind: nop}}
""")
    lock = Lock(lab="probe", spec_sha256="1" * 64, llama_cpp=SourceLock(sdist="llama-cpp-python==0.3.36"),
                task=TaskLock(path="tasks/smoke-hello", tree_sha256="0" * 64),
                models={"tiny": ModelLock(source="path", path="tiny.gguf", gguf=read_local([model]), files=[
                    FileLock(name="tiny.gguf", sha256=sha, size=model.stat().st_size)])})
    return tmp / "lab.yaml", lock


# ------------------------------------------------------------------ no server


def test_template_tool_section_is_read_from_the_header(tmp_path: Path) -> None:
    with_tools, without = tmp_path / "a.gguf", tmp_path / "b.gguf"
    write_tiny_gguf(with_tools, TinyModelParams())
    write_tiny_gguf(without, TinyModelParams(), chat_template=NO_TOOLS_TEMPLATE)
    assert local_tool_section(with_tools) is True
    assert local_tool_section(without) is False
    assert template_note(NO_TOOLS_TEMPLATE) and "no tool section" in template_note(NO_TOOLS_TEMPLATE)
    assert template_note(CHAT_TEMPLATE) is None
    # "tools" said in a string or a comment is not a tool section
    assert has_tool_section("{# tools #}{{ 'no tools here' }}{% for m in messages %}{% endfor %}") is False


def test_lock_notes_a_gguf_whose_template_has_no_tool_section(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from labctl.cli.lock import template_notes
    from labctl.gguf import headers

    monkeypatch.setenv("LABCTL_HEADER_CACHE", str(tmp_path / "headers"))
    notes = {}
    for name, template in (("plain", NO_TOOLS_TEMPLATE), ("tools", CHAT_TEMPLATE)):
        (tmp_path / name).mkdir()
        _, lock = _lab(tmp_path / name, template=template)
        raw = (tmp_path / name / "tiny.gguf").read_bytes()
        f = lock.models["tiny"].files[0].model_copy(update={"header_sha256": headers.put(raw),
                                                             "header_size": len(raw)})
        lock.models["tiny"] = lock.models["tiny"].model_copy(update={"files": [f]})
        notes[name] = template_notes(lock)
    assert notes["tools"] == []
    assert len(notes["plain"]) == 1 and notes["plain"][0].startswith(
        "contestant tiny: the GGUF's chat template has no tool section")


def test_plan_warns_when_the_first_prompt_and_max_output_do_not_fit(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no figure recorded by earlier runs
    qwen = "{runtime: qwen-code, version: 0.24.4}"  # its first prompt: ~9.3k tokens (issue #25)
    lab, lock = _lab(tmp_path, train=32768, serve="context: 8192", agent=qwen)
    row = next(c for c in plan_lab(load_lab(lab), lock).contestants if c.id == "tiny")
    assert row.status == "planned" and len(row.warnings) == 1
    assert "qwen-code 0.24.4's first prompt is ~9,322 tokens" in row.warnings[0]
    assert "the plan gives 8,192" in row.warnings[0]
    lab, lock = _lab(tmp_path, train=32768, serve="context: 16384", agent=qwen)
    assert next(c for c in plan_lab(load_lab(lab), lock).contestants if c.id == "tiny").warnings == []
    # a figure in bytes only: bytes / 4, plus the margin
    fp = FirstPrompt(runtime="x", version="1", request_bytes=12_000, source="run")
    assert fp.tokens() == 3000
    assert fit_warning(4096, 1024, fp) is not None and fit_warning(4096, 64, fp) is None


def test_rope_scaling_plans_yarn_flags(tmp_path: Path) -> None:
    lab, lock = _lab(tmp_path, train=512, serve="context: 1024, allow_rope_scaling: true")
    row = next(c for c in plan_lab(load_lab(lab), lock).contestants if c.id == "tiny")
    assert row.slot_context == 1024
    assert row.llama_args[row.llama_args.index("--rope-scaling"):][:6] == [
        "--rope-scaling", "yarn", "--rope-scale", "2", "--yarn-orig-ctx", "512"]
    assert ls.yarn_context(8192, ls.yarn_scale(12288, 8192)) >= 12288  # float32 truncation covered


def test_a_served_context_other_than_planned_is_an_error(tmp_path: Path) -> None:
    lab, lock = _lab(tmp_path)
    row = next(c for c in plan_lab(load_lab(lab), lock).contestants if c.id == "tiny")
    ok = json.dumps({"default_generation_settings": {"n_ctx": 1024}, "total_slots": 1})
    assert served_mismatch(row, ok) is None
    capped = json.dumps({"default_generation_settings": {"n_ctx": 512}, "total_slots": 1})
    assert "the plan says a context of 1,024 tokens per slot, llama-server serves 512" in (
        served_mismatch(row, capped) or "")
    assert "could not read" in (served_mismatch(row, "") or "")


# ------------------------------------------------------------------ the real llama-server


def _preflight(lab: Path, lock: Lock, server: Path, tmp: Path):  # -> Preflight
    loaded = load_lab(lab)
    llama_cpp, backend = host_backend(server, tmp)
    pre = preflight_lab(plan_lab(loaded, lock), lock, Store(tmp / "store"), loaded.base_dir,
                        llama_cpp=llama_cpp, server=backend, use_cache=False)
    return pre.contestants["tiny"]


@pytest.mark.llama
def test_probe_names_a_template_that_drops_tools(tmp_path: Path, llama_server: Path) -> None:
    lab, lock = _lab(tmp_path, template=NO_TOOLS_TEMPLATE)
    got = _preflight(lab, lock, llama_server, tmp_path)
    assert got.error is None and got.template_tool_section is False
    assert got.carries_tools is False
    assert not got.structured_call
    assert got.verdict() == "tool calling: not supported by the chat template (tools never reach the model)"
    assert got.served_context == got.planned_context == 1024


@pytest.mark.llama
def test_probe_sees_a_template_that_carries_tools(tmp_path: Path, llama_server: Path) -> None:
    lab, lock = _lab(tmp_path)
    got = _preflight(lab, lock, llama_server, tmp_path)
    assert got.error is None and got.template_tool_section is True
    assert got.carries_tools is True
    assert [c.tool_choice for c in got.calls] == ["auto", "required"]
    # random weights: prose (gibberish) with auto; with required llama.cpp's grammar cannot even be
    # set up over the tiny vocabulary (a 400): either way no structured call
    assert not got.structured_call and got.calls[0].status == 200
    assert got.verdict() == "tool calling: the template carries tools, but no structured call came back"


@pytest.mark.llama
def test_probe_results_are_cached_per_model_build_and_flags(tmp_path: Path, llama_server: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    lab, lock = _lab(tmp_path, template=NO_TOOLS_TEMPLATE)
    loaded = load_lab(lab)
    llama_cpp, backend = host_backend(llama_server, tmp_path)
    said: list[str] = []
    for _ in range(2):
        preflight_lab(plan_lab(loaded, lock), lock, Store(tmp_path / "store"), loaded.base_dir,
                      llama_cpp=llama_cpp, server=backend, say=said.append)
    assert said[0].startswith("preflight tiny: tool calling: not supported") and "(cached)" not in said[0]
    assert said[1].endswith("(cached)")
    key = hashlib.sha256  # the cache is one file per (model, llama.cpp, flags)
    assert len(list((tmp_path / "cache" / "labctl" / "preflight").glob("*.json"))) == 1, key


@pytest.mark.llama
def test_rope_scaling_serves_the_planned_context(tmp_path: Path, llama_server: Path) -> None:
    """Above the training context llama-server caps the slot — unless the YaRN flags are passed."""
    lab, lock = _lab(tmp_path, train=512, serve="context: 1024, allow_rope_scaling: true")
    row = next(c for c in plan_lab(load_lab(lab), lock).contestants if c.id == "tiny")
    model = tmp_path / "tiny.gguf"
    bare = row.server.model_copy(update={"rope_scale": None, "yarn_orig_ctx": None})
    with ls.serve(ls.server_argv(llama_server, model, bare), tmp_path / "bare.log") as url:
        status, props = ls.http_json("GET", url + "/props")
    assert status == 200
    problem = served_mismatch(row, json.dumps(props))
    assert problem and "serves 512 (capped at the model's training context 512" in problem
    assert "capping" in (tmp_path / "bare.log").read_text()
    with ls.serve(ls.server_argv(llama_server, model, row), tmp_path / "yarn.log") as url:
        status, props = ls.http_json("GET", url + "/props")
    assert status == 200 and props["default_generation_settings"]["n_ctx"] == 1024
    assert served_mismatch(row, json.dumps(props)) is None


@pytest.mark.llama
def test_a_first_request_refused_for_its_length_is_a_configuration_error(
        tmp_path: Path, llama_server: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """llama-server's own 400 for a first prompt over the context, through the real meter: the run's
    reason says configuration (the grader then marks it errored, not a Total failure), and the size
    llama.cpp counted is recorded for the plan's fit warning."""
    import httpx

    from labctl.meter.readback import transcript_records
    from labctl.meter.server import meter_in_thread
    from labctl.meter.state import MeterConfig
    from labctl.plan.firstprompt import harvest, lookup
    from labctl.run.served import first_request_overflow

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = tmp_path / "tiny.gguf"
    write_tiny_gguf(model, TinyModelParams())
    argv = ls.server_argv(llama_server, model, ls.ServerSettings(context=256, max_output=8), alias="m")
    small = {"role": "user", "content": "Say hello."}
    big = {"role": "user", "content": "hello world " * 400}
    reply = {"role": "assistant", "content": "Hello."}
    # "beside": a small side request first (opencode asks for a session title), then the runtime's
    # first prompt; "later": the long prompt comes after the model's own turn
    cases = (("first", [[big], [small]]), ("beside", [[small], [big]]),
             ("later", [[small], [small, reply, big]]))
    with ls.serve(argv, tmp_path / "server.log") as base:
        for name, conversations in cases:
            run = tmp_path / name
            run.mkdir()
            config = MeterConfig(upstream=base, dialect="openai", transcript=run / "transcript.jsonl",
                                 alias="run-1")
            with meter_in_thread(config) as meter, httpx.Client(timeout=60, trust_env=False) as c:
                got = [c.post(meter.url + "/v1/chat/completions", json={
                    "model": "run-1", "max_tokens": 8, "messages": m}).status_code for m in conversations]
            assert sorted(got) == [200, 400]
            reason = first_request_overflow(run)
            if name == "later":  # an overflow later in a conversation is the agent's doing: graded as usual
                assert reason is None
                continue
            assert reason and reason.startswith("configuration: context overflow on the first request"), name
            assert "exceeds the available context size" in reason
            if name == "first":
                # at unseal, the size llama.cpp counted in its refusal is kept for the plan's warning
                records = transcript_records(run / "transcript.jsonl")
                assert harvest(records, "mini-swe-agent", "0.0-test", "a" * 64)
                fp = lookup("mini-swe-agent", "0.0-test", "a" * 64)
                assert fp and fp.prompt_tokens and fp.prompt_tokens > 256 and fp.request_bytes
                other = lookup("mini-swe-agent", "0.0-test", "b" * 64)  # another model: bytes / 4
                assert other and other.prompt_tokens is None and other.tokens() == -(-fp.request_bytes // 4)


@pytest.mark.llama
@pytest.mark.parametrize("serve", ["context: 1000", "context: 1000, parallel: 2",
                                   "context: 4096, parallel: 3"])
def test_the_planned_slot_context_is_what_llama_server_serves(tmp_path: Path, llama_server: Path,
                                                              serve: str) -> None:
    """The number every run checks (`/props` n_ctx per slot): padded to 256 and split over slots as
    llama.cpp does, so a correct plan never errors a run."""
    lab, lock = _lab(tmp_path, serve=serve)
    row = next(c for c in plan_lab(load_lab(lab), lock).contestants if c.id == "tiny")
    with ls.serve(ls.server_argv(llama_server, tmp_path / "tiny.gguf", row), tmp_path / "s.log") as url:
        status, props = ls.http_json("GET", url + "/props")
    assert status == 200 and props["default_generation_settings"]["n_ctx"] == row.slot_context
    assert served_mismatch(row, json.dumps(props)) is None


def _user(content: object) -> dict[str, object]:
    return {"role": "user", "content": content}


@pytest.mark.parametrize(("request_body", "opens"), [
    ({"messages": [{"role": "system", "content": "s"}, _user("u")]}, True),
    ({"messages": [_user("u"), {"role": "assistant", "content": "a"}, _user("u2")]}, False),
    ({"messages": [_user("u"), {"role": "tool", "content": "out"}]}, False),
    # Anthropic Messages: a tool result sits in a user message's content blocks
    ({"messages": [_user([{"type": "tool_result", "tool_use_id": "t", "content": "x"}])]}, False),
    ({"messages": [_user([{"type": "text", "text": "hi"}])]}, True),
    # Responses: `input` as text, as messages, or with the model's own items
    ({"input": "hi"}, True),
    ({"input": [{"type": "message", **_user([{"type": "input_text", "text": "hi"}])}]}, True),
    ({"input": [{"type": "message", **_user("hi")},
                {"type": "function_call", "call_id": "c", "name": "sh", "arguments": "{}"}]}, False),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]}, False),
    ({"$blob": "0" * 64, "bytes": 10}, False),  # an unresolved blob says nothing
    (None, False),
])
def test_a_request_opens_a_conversation_only_before_the_models_first_turn(request_body: object,
                                                                          opens: bool) -> None:
    from labctl.plan.firstprompt import opens_a_conversation
    assert opens_a_conversation(request_body) is opens


def test_the_first_prompt_is_the_largest_opening_request_not_the_first_record() -> None:
    """opencode asks for a session title beside its first prompt, in either order: the title's small
    request must not stand for the runtime's first prompt; a request after the model's first answer
    that continues a conversation is no first prompt, however large."""
    from labctl.plan.firstprompt import first_prompt
    title = {"kind": "exchange", "request_bytes": 900, "status": 200, "response": {"content": "A title"},
             "request": {"messages": [_user("t")]}}
    agent = {"kind": "exchange", "request_bytes": 90_000, "status": 400,
             "request": {"messages": [{"role": "system", "content": "s"}, _user("task")]}}
    later = {"kind": "exchange", "request_bytes": 200_000, "status": 200, "response": {"content": "x"},
             "request": {"messages": [_user("task"), {"role": "assistant", "content": "a"}, _user("x")]}}
    assert first_prompt([title, agent, later]) is agent
    assert first_prompt([agent, title, later]) is agent
    assert first_prompt([title, later]) is title
    assert first_prompt([later, {"kind": "status"}]) is later  # sent before any answer: the first prompt
    # aider's first prompt carries example turns of its edit format: first sent, so the first prompt
    examples = {"kind": "exchange", "request_bytes": 30_000, "status": 400, "request": {"messages": [
        {"role": "system", "content": "s"}, _user("example"), {"role": "assistant", "content": "example"},
        _user("task")]}}
    assert first_prompt([examples, title]) is examples
