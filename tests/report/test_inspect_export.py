"""`labctl export ROUND --format inspect`: a synthetic round written as an Inspect AI eval log and read
back with Inspect's own reader.

No Docker, no model: the smoke lab is sealed with a constructed lock (tests/round/test_seal.py's
`make_lab`), its runs are written as the runner leaves them (result.json with the controls marked,
metrics.json, reward.json, and for the model a transcript with a tool call and its result), then
unsealed or left sealed.
"""

from __future__ import annotations

import json
import sys
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("inspect_ai")

from inspect_ai.log import EvalLog, list_eval_logs, read_eval_log  # noqa: E402
from inspect_ai.model import ChatMessageAssistant, ChatMessageTool  # noqa: E402

from labctl.report.inspect_export import INSTALL_HINT, chat_messages  # noqa: E402
from labctl.round.grading import derive_outcome  # noqa: E402
from labctl.round.layout import RunResult, read_sealed, run_dir, write_result  # noqa: E402
from labctl.round.seal import load_envelope, seal_round, unseal_round  # noqa: E402
from tests.helpers import run_cli as cli  # noqa: E402
from tests.round.test_seal import CHECKS, LOCAL, NOP, ORACLE, envelopes, make_lab  # noqa: E402, F401

COMMAND = "echo hello > greeting.txt"
CALL = {"id": "call_7", "type": "function", "function": {"name": "bash",
                                                        "arguments": json.dumps({"command": COMMAND})}}
TOOL_OUTPUT = "returncode: 0\nwrote greeting.txt"
USAGE = ({"prompt_tokens": 100, "completion_tokens": 20, "cached_tokens": 0, "total_tokens": 120},
         {"prompt_tokens": 150, "completion_tokens": 12, "cached_tokens": 100, "total_tokens": 162})
TOKENS = {"prompt_tokens": 250, "completion_tokens": 32, "cached_tokens": 100, "total_tokens": 282}
EXPECTED = {ORACLE: "Complete", NOP: "Failed", LOCAL: "Partial"}
NAMES = ("Reference solution", "Does nothing", "Tiny llama (random weights)", "tiny-7.gguf")
"""The smoke lab's contestant names and the model's file: a sealed export must hold none of them."""


def model_transcript() -> list[dict[str, Any]]:
    """Two model calls on the chat wire: a tool call, then the answer after its result."""
    task = [{"role": "system", "content": "You are a coding agent."},
            {"role": "user", "content": "Write greeting.txt"}]
    first = {"kind": "exchange", "seq": 0, "latency_ms": 800, "status": 200, "error": None,
             "request": {"messages": task, "tools": [{"type": "function", "function": {"name": "bash"}}]},
             "response": {"content": "", "tool_calls": [{"id": "call_7", "name": "bash",
                                                         "arguments": json.dumps({"command": COMMAND})}],
                          "finish_reason": "tool_calls"}, "usage": USAGE[0]}
    second = {"kind": "exchange", "seq": 1, "latency_ms": 400, "status": 200, "error": None,
              "request": {"messages": [*task, {"role": "assistant", "content": None, "tool_calls": [CALL]},
                                       {"role": "tool", "tool_call_id": "call_7", "content": TOOL_OUTPUT}],
                          "tools": [{"type": "function", "function": {"name": "bash"}}]},
              "response": {"content": "Done: greeting.txt written.", "tool_calls": [],
                           "finish_reason": "stop"}, "usage": USAGE[1]}
    return [first, {"kind": "intervention", "seq": 1, "t": 1.0, "name": "keep-going", "action": "nudge"},
            second]


def play(contestant: str) -> tuple[tuple[str, ...], dict[str, Any], list[dict[str, Any]]]:
    """(checks passed, metrics.json, transcript records) of one run."""
    if contestant == ORACLE:
        return CHECKS, {"tool_calls": None, "total_tokens": 0, "wall_time_s": 3.0}, []
    if contestant == NOP:
        return (), {"tool_calls": None, "total_tokens": 0, "wall_time_s": 1.0}, []
    return ("greeting_file",), {"tool_calls": 1, "requests": 2, "messages": 4, "wall_time_s": 9.0,
                                **TOKENS}, model_transcript()


def make_round(tmp: Path, *, unseal: bool) -> Path:
    from labctl.lock.resolve import require_lock
    from labctl.spec.load import load_lab

    loaded = load_lab(make_lab(tmp / "lab"))
    rd = seal_round(loaded, require_lock(loaded), tmp / "rounds").round_dir
    sealed = read_sealed(rd)
    for rid, slot in load_envelope(rd.name).mapping.items():
        passed, metrics, records = play(slot.contestant)
        d = run_dir(rd, rid)
        (d / "verifier").mkdir(parents=True)
        reward = {"reward": int(passed == CHECKS), "checks": {c: c in passed for c in CHECKS},
                  "notes": {c: f"{c}: not there" for c in CHECKS if c not in passed}}
        (d / "verifier" / "reward.json").write_text(json.dumps(reward) + "\n")
        (d / "metrics.json").write_text(json.dumps(metrics) + "\n")
        (d / "transcript.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        started = datetime(2026, 6, 18, 12, 0, tzinfo=UTC)
        control = {ORACLE: "oracle", NOP: "nop"}.get(slot.contestant)  # as the runner marks them
        write_result(rd, RunResult(run_id=rid, status="done", attempts=1, started=started,
                                   outcome=derive_outcome(reward, metrics, sealed.outcome_rules),
                                   ended=started + timedelta(seconds=30), control=control))
    if unseal:
        unseal_round(rd)
    return rd


def export(rd: Path, out: Path) -> EvalLog:
    code, stdout, stderr = cli("export", rd, "--format", "inspect", "-o", out, "--json")
    assert code == 0, stderr
    told = json.loads(stdout)
    assert told["file"] == str(out) and told["samples"] == len(read_sealed(rd).run_ids)
    return read_eval_log(str(out))


def test_unsealed_round_as_inspect_log(tmp_path: Path, envelopes: Path) -> None:  # noqa: F811
    rd = make_round(tmp_path, unseal=True)
    mapping = load_envelope(rd.name).mapping
    log = export(rd, tmp_path / "out" / "round.eval")
    assert zipfile.is_zipfile(tmp_path / "out" / "round.eval")  # Inspect's default .eval format
    # what `inspect view --log-dir out` lists
    assert [Path(i.name).name for i in list_eval_logs(str(tmp_path / "out"))] == ["round.eval"]
    sealed = read_sealed(rd)
    assert log.eval.metadata is not None and log.eval.metadata["sealed"] is False
    assert log.eval.metadata["lock_sha256"] == sealed.lock_sha256
    assert log.eval.metadata["commitment"] == sealed.commitment
    assert {c["id"]: c["kind"] for c in log.eval.metadata["contestants"]} \
        == {LOCAL: "local", ORACLE: "oracle", NOP: "nop"}
    assert len(log.eval.metadata["lab_file_sha256"]) == 64
    samples = {str(s.id): s for s in log.samples or []}
    assert sorted(samples) == sorted(sealed.run_ids)
    for rid, s in samples.items():
        who = mapping[rid].contestant
        assert s.scores is not None and s.scores["outcome"].value == EXPECTED[who]
        assert s.metadata["contestant"] == who
        assert s.metadata.get("control") == {ORACLE: "oracle", NOP: "nop"}.get(who)
        assert s.scores["checks"].value == {c: c in play(who)[0] for c in CHECKS}
        if who != LOCAL:
            assert s.model_usage == {} and s.events == []
    (model,) = [s for rid, s in samples.items() if mapping[rid].contestant == LOCAL]
    usage = model.model_usage[f"labctl/{LOCAL}"]
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens, usage.input_tokens_cache_read) \
        == (TOKENS["prompt_tokens"], TOKENS["completion_tokens"], TOKENS["total_tokens"],
            TOKENS["cached_tokens"])
    assert log.stats.model_usage[f"labctl/{LOCAL}"].total_tokens == TOKENS["total_tokens"]
    assert model.input == "Write greeting.txt"
    assert [m.role for m in model.messages] == ["system", "user", "assistant", "tool", "assistant"]
    call = model.messages[2]
    assert isinstance(call, ChatMessageAssistant) and call.tool_calls is not None
    assert (call.tool_calls[0].id, call.tool_calls[0].function, call.tool_calls[0].arguments) \
        == ("call_7", "bash", {"command": COMMAND})
    result = model.messages[3]
    assert isinstance(result, ChatMessageTool)
    assert (result.tool_call_id, result.function, result.text) == ("call_7", "bash", TOOL_OUTPUT)
    assert model.messages[-1].text == "Done: greeting.txt written."
    assert model.output.completion == "Done: greeting.txt written."
    events = [e for e in model.events if e.event == "model"]
    assert len(events) == 2 and events[0].output.message.tool_calls[0].function == "bash"  # type: ignore[index]
    outcome = next(sc for sc in (log.results.scores if log.results else []) if sc.name == "outcome")
    assert {k: m.value for k, m in outcome.metrics.items()}["Partial"] == 1
    assert outcome.metrics["complete"].value == 0  # the one model run is Partial; controls left out


def test_sealed_round_exports_run_ids_only(tmp_path: Path, envelopes: Path) -> None:  # noqa: F811
    rd = make_round(tmp_path, unseal=False)
    sealed = read_sealed(rd)
    for out in (tmp_path / "sealed.json", tmp_path / "sealed.eval"):
        log = export(rd, out)
        assert log.eval.metadata is not None and log.eval.metadata["sealed"] is True
        samples = log.samples or []
        assert sorted(str(s.id) for s in samples) == sorted(sealed.run_ids)
        assert sorted(str(s.metadata.get("control")) for s in samples) == ["None", "nop", "oracle"]
        assert all("contestant" not in s.metadata for s in samples)
        (model,) = [s for s in samples if s.model_usage]
        assert list(model.model_usage) == [f"labctl/{model.id}"]
        assert any(isinstance(m, ChatMessageTool) and m.text == TOOL_OUTPUT for m in model.messages)
        if out.suffix == ".json":
            texts = [out.read_bytes()]
        else:
            with zipfile.ZipFile(out) as z:
                texts = [z.read(n) for n in z.namelist()]
        assert texts and any(rid.encode() in t for t in texts for rid in sealed.run_ids)
        for secret in (LOCAL, ORACLE, NOP, "zqx-", *NAMES):
            assert not any(secret.encode() in t for t in texts), secret


def test_an_unsealed_export_names_contestants(tmp_path: Path, envelopes: Path) -> None:  # noqa: F811
    """The other side of the blind test: the same grep finds identities once the round is unsealed."""
    rd = make_round(tmp_path, unseal=True)
    export(rd, tmp_path / "open.json")
    data = (tmp_path / "open.json").read_bytes()
    assert all(c.encode() in data for c in (LOCAL, ORACLE, NOP))


def test_missing_round_is_a_clear_error(tmp_path: Path) -> None:
    code, stdout, stderr = cli("export", tmp_path / "no-such-round", "-o", tmp_path / "x.eval", "--json")
    assert code == 1
    assert "is not a round directory (no sealed.json)" in stderr
    assert json.loads(stdout)["ok"] is False
    assert not (tmp_path / "x.eval").exists()


def test_no_export_into_the_round(tmp_path: Path, envelopes: Path) -> None:  # noqa: F811
    rd = make_round(tmp_path, unseal=True)
    code, _, stderr = cli("export", rd, "-o", rd / "round.eval")
    assert code == 1 and "inside the round" in stderr and not (rd / "round.eval").exists()


def test_missing_extra_names_the_install(tmp_path: Path, envelopes: Path,  # noqa: F811
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    rd = make_round(tmp_path, unseal=True)
    monkeypatch.setitem(sys.modules, "inspect_ai.log", None)  # `import inspect_ai.log` raises ImportError
    code, _, stderr = cli("export", rd, "-o", tmp_path / "x.eval")
    assert code == 1 and INSTALL_HINT in stderr, stderr


def test_other_wires_tool_calls_and_results() -> None:
    """Anthropic's tool_use / tool_result blocks and the Responses API's function_call items."""
    anthropic = {"system": [{"type": "text", "text": "be brief"}], "messages": [
        {"role": "user", "content": "fix it"},
        {"role": "assistant", "content": [{"type": "text", "text": "looking"},
                                          {"type": "tool_use", "id": "tu_1", "name": "Bash",
                                           "input": {"command": "make"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu_1", "is_error": True,
                                      "content": [{"type": "text", "text": "Exit code 2"}]}]}]}
    msgs = chat_messages(anthropic)
    assert [m.role for m in msgs] == ["system", "user", "assistant", "tool"]
    assert msgs[0].text == "be brief" and msgs[2].text == "looking"
    assert isinstance(msgs[2], ChatMessageAssistant) and msgs[2].tool_calls is not None
    assert msgs[2].tool_calls[0].arguments == {"command": "make"}
    assert isinstance(msgs[3], ChatMessageTool) and msgs[3].error is not None
    assert (msgs[3].tool_call_id, msgs[3].function, msgs[3].text) == ("tu_1", "Bash", "Exit code 2")

    responses = {"instructions": "you are codex", "input": [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go"}]},
        {"type": "function_call", "id": "fc_1", "call_id": "c_1", "name": "shell",
         "arguments": json.dumps({"command": ["bash", "-lc", "ls"]})},
        {"type": "function_call_output", "call_id": "c_1", "output": "Exit code: 0\nREADME.md"}]}
    msgs = chat_messages(responses)
    assert [m.role for m in msgs] == ["system", "user", "assistant", "tool"]
    assert isinstance(msgs[2], ChatMessageAssistant) and msgs[2].tool_calls is not None
    assert msgs[2].tool_calls[0].id == "c_1"
    assert isinstance(msgs[3], ChatMessageTool)
    assert (msgs[3].tool_call_id, msgs[3].function) == ("c_1", "shell") and "README.md" in msgs[3].text
