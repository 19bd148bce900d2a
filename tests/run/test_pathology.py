"""Pathology flags over synthetic transcripts: OpenAI-style tool calls and text-fenced bash both."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from labctl.meter.state import MeterState
from labctl.round.records import BuildFigures
from labctl.run.grade import run_metrics
from labctl.run.parts import Workspace, pushed_commits
from labctl.run.pathology import (
    actions,
    command_results,
    context_overflow_rejections,
    failing_command_streak,
    flags,
    identical_tool_call_streak,
    pathology,
    repeated_text_streak,
    text_actions,
    zero_tool_calls,
)
from labctl.spec.task import read_task

Rec = dict[str, Any]


def exchange(seq: int, *, messages: list[Rec] | None = None, content: str | None = None,
             tool_calls: list[Rec] | None = None, status: int | None = 200, error: Any = None,
             answered: bool = True) -> Rec:
    response = {"content": content, "reasoning": None, "tool_calls": tool_calls or [],
                "finish_reason": "tool_calls" if tool_calls else "stop", "model": "r1"} if answered else None
    return {"kind": "exchange", "seq": seq, "request": {"model": "r1", "messages": messages or []},
            "response": response, "usage": None, "timings": None, "status": status, "error": error}


def call(name: str, args: Rec, cid: str = "c") -> Rec:
    return {"id": cid, "name": name, "arguments": json.dumps(args)}


def bash(cmd: str, prose: str = "THOUGHT: let me try.") -> str:
    return f"{prose}\n\n```bash\n{cmd}\n```\n"


def tool_transcript(cmds: list[str], codes: list[int]) -> list[Rec]:
    """An OpenAI tool-calling agent: step i calls bash(cmds[i]); request i+1 carries its result as a
    tool message in mini-swe-agent 2.x's JSON observation form."""
    msgs: list[Rec] = [{"role": "system", "content": "sys"}, {"role": "user", "content": "task"}]
    out = []
    for i, cmd in enumerate(cmds):
        tc = call("bash", {"command": cmd}, cid=f"c{i}")
        out.append(exchange(i, messages=list(msgs), tool_calls=[tc]))
        msgs = msgs + [{"role": "assistant", "content": None, "tool_calls": [tc]},
                       {"role": "tool", "tool_call_id": f"c{i}",
                        "content": json.dumps({"returncode": codes[i], "output": "…"})}]
    out.append(exchange(len(cmds), messages=msgs, content="done"))
    return out


def text_transcript(cmds: list[str], codes: list[int], prose: str | None = None) -> list[Rec]:
    """A text agent (mini-swe-agent text mode): fenced bash blocks, observations as user messages
    with `<returncode>N</returncode>`."""
    msgs: list[Rec] = [{"role": "system", "content": "sys"}, {"role": "user", "content": "task"}]
    out = []
    for i, cmd in enumerate(cmds):
        content = bash(cmd, prose if prose is not None else f"THOUGHT: attempt {i}")
        out.append(exchange(i, messages=list(msgs), content=content))
        observation = f"<returncode>{codes[i]}</returncode>\n<output>\nx\n</output>"
        msgs = msgs + [{"role": "assistant", "content": content}, {"role": "user", "content": observation}]
    out.append(exchange(len(cmds), messages=msgs, content=bash("echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT")))
    return out


# --- identical tool call streak ------------------------------------------------------------------


def test_identical_tool_calls_openai() -> None:
    recs = tool_transcript(["ls", "cat a", "cat a", "cat a", "cat a", "ls"], [0] * 6)
    assert identical_tool_call_streak(recs) == 4
    # canonical arguments: key order and whitespace do not matter
    a = exchange(0, tool_calls=[{"id": "1", "name": "bash", "arguments": '{"command": "ls", "cwd": "/"}'}])
    b = exchange(1, tool_calls=[{"id": "2", "name": "bash", "arguments": '{"cwd":"/","command":"ls"}'}])
    c = exchange(2, tool_calls=[{"id": "3", "name": "edit", "arguments": '{"cwd":"/","command":"ls"}'}])
    assert identical_tool_call_streak([a, b, c]) == 2
    assert "flags" not in pathology([a, b, c]) and flags(pathology([a, b, c])) == []


def test_identical_tool_calls_text_bash() -> None:
    recs = text_transcript(["make", "make", "make", "git status"], [0, 0, 0, 0])
    assert identical_tool_call_streak(recs) == 3  # prose differs each time; the command does not
    assert repeated_text_streak(recs) == 1
    assert any("identical tool call (x3)" in f for f in flags(pathology(recs)))


def test_failed_requests_do_not_break_a_streak() -> None:
    recs = tool_transcript(["ls", "ls"], [0, 0])
    recs.insert(1, exchange(9, status=502, error={"type": "upstream_status"}, answered=False))
    assert identical_tool_call_streak(recs) == 2


def test_intervention_records_are_ignored() -> None:
    recs = tool_transcript(["ls", "ls", "ls"], [0, 0, 0])
    recs.insert(2, {"kind": "intervention", "seq": 2, "rule": "nudge"})
    assert identical_tool_call_streak(recs) == 3


# --- repeated assistant text -------------------------------------------------------------------------


def test_repeated_assistant_text() -> None:
    recs = [exchange(i, content="I will now fix the bug.") for i in range(5)] + [exchange(5, content="ok")]
    assert repeated_text_streak(recs) == 5
    assert zero_tool_calls(recs)
    fired = flags(pathology(recs))
    assert any(f.startswith("degenerate loop") for f in fired) and "zero tool calls" in fired
    # the same bash block with the same prose is both an identical call and identical text
    same = text_transcript(["ls"] * 3, [0] * 3, prose="THOUGHT: again")
    assert repeated_text_streak(same) == 3 and identical_tool_call_streak(same) == 3
    # tool-calling responses with empty content are not "identical text"
    assert repeated_text_streak(tool_transcript(["a", "b", "c"], [0, 0, 0])) == 1


# --- failing command streak ------------------------------------------------------------------------


def test_failing_command_streak_tool_calls() -> None:
    recs = tool_transcript(["pytest", "pytest", "pytest", "pytest", "ls"], [1, 1, 2, 0, 0])
    assert failing_command_streak(recs) == 3  # the fourth pytest passed
    assert identical_tool_call_streak(recs) == 4
    assert any("failing repeatedly (x3)" in f for f in flags(pathology(recs)))


def test_failing_command_streak_text_returncode() -> None:
    recs = text_transcript(["cargo build", "cargo build", "cargo build", "cargo build"], [101, 101, 0, 101])
    assert failing_command_streak(recs) == 2
    recs = text_transcript(["x", "y", "x"], [1, 1, 1])
    assert failing_command_streak(recs) == 1  # different commands failing is no streak
    recs = text_transcript(["false"] * 4, [1] * 4)
    assert failing_command_streak(recs) == 4


def test_failing_command_without_a_next_request_is_unknown() -> None:
    recs = tool_transcript(["false", "false", "false"], [1, 1, 1])[:-1]  # the run ended after step 3
    assert failing_command_streak(recs) == 2


# --- zero tool calls -------------------------------------------------------------------------------


def test_zero_tool_calls() -> None:
    assert zero_tool_calls([])
    assert zero_tool_calls([exchange(0, content="I cannot do that.")])
    assert not zero_tool_calls(text_transcript(["ls"], [0]))
    assert not zero_tool_calls(tool_transcript(["ls"], [0]))
    assert actions({"content": "```\nls -la\n```"}) == ["ls -la"]
    assert actions({"content": "```python\nprint(1)\n```"}) == []


def test_text_agent_actions_count_as_tool_calls(tmp_path: Path) -> None:
    """aider (and any agent that declares no tools) acts through fenced blocks the harness runs:
    they are its tool calls in metrics.json, so a run that did the task is not graded Total failure
    for "never acting". An agent that declared tools and only wrote a fenced block did not act."""
    ws = pushed(tmp_path, 1)
    text = text_transcript(["ls", "git push"], [0, 0])  # two commands, then the submit block
    assert text_actions(text) == 3
    tooled = [exchange(0, content=bash("rm -rf /"))]
    tooled[0]["request"]["tools"] = [{"type": "function", "function": {"name": "bash"}}]
    assert text_actions(tooled) == 0 and text_actions(tool_transcript(["ls"], [0])) == 0
    t = tmp_path / "transcript.jsonl"
    for recs, meter_calls, want in ((text, 0, 3), (tooled, 0, 0), (tool_transcript(["ls"], [0]), 1, 1)):
        t.write_text("".join(json.dumps(r) + "\n" for r in recs))
        m = run_metrics(meter_state=_meter(meter_calls), transcript=t, ws=ws,
                        reward=None, wall_s=1.0, needs_model=True, stopped_by=None)
        assert m.tool_calls == want


# --- context overflow ------------------------------------------------------------------------------


def test_context_overflow_rejections() -> None:
    llama = {"type": "upstream_status", "message": "HTTP 400", "upstream_status": 400,
             "body": '{"error":{"code":400,"message":"the request exceeds the available context size, '
                     'try increasing it","type":"exceed_context_size_error"}}'}
    openai = {"type": "upstream_status", "message": "HTTP 400", "upstream_status": 400,
              "body": '{"error":{"message":"This model\'s maximum context length is 8192 tokens",'
                      '"code":"context_length_exceeded"}}'}
    rate = {"type": "upstream_status", "message": "HTTP 429", "upstream_status": 429, "body": "context"}
    other400 = {"type": "upstream_status", "message": "HTTP 400", "upstream_status": 400,
                "body": '{"error":"max_tokens must be positive"}'}
    recs = [exchange(0, content="hi"),
            exchange(1, status=400, error=llama, answered=False),
            exchange(2, status=400, error=openai, answered=False),
            exchange(3, status=400, error="Input is too long: prompt exceeds the model's context window",
                     answered=False),
            exchange(4, status=429, error=rate, answered=False),
            exchange(5, status=400, error=other400, answered=False),
            exchange(6, status=500, error="the request exceeds the available context size", answered=False)]
    assert context_overflow_rejections(recs) == 4
    assert "context overflow rejections (4)" in flags(pathology(recs))


# --- metrics.json ------------------------------------------------------------------------------------


def _meter(tool_calls: int) -> MeterState:
    return MeterState(alias="run-1", dialect="openai", started_at=0.0, tool_calls=tool_calls)


def pushed(tmp: Path, n: int) -> Workspace:
    """A real run workspace (clone + bare origin) with `n` commits pushed to the run's branch: what
    the grader counts is what git says, not a stand-in."""
    from tests.run.test_patterns import git, workspace  # it imports this module's helpers

    ws = workspace(tmp)
    for i in range(n):
        (ws.clone / f"file-{i}.txt").write_text(f"{i}\n")
        git(ws, "add", "-A")
        git(ws, "commit", "-qm", f"commit {i}")
    if n:
        git(ws, "push", "-q", str(ws.origin), f"HEAD:refs/heads/{ws.branch}")
    assert pushed_commits(ws) == n
    return ws


def test_metrics_carry_pathology(tmp_path: Path) -> None:
    ws = pushed(tmp_path, 0)
    t = tmp_path / "transcript.jsonl"
    t.write_text("".join(json.dumps(r) + "\n" for r in text_transcript(["false"] * 3, [1] * 3)))
    m = run_metrics(meter_state=_meter(0), transcript=t, ws=ws,
                    reward=None, wall_s=1.0, needs_model=True, stopped_by=None)
    assert m.pathology is not None and m.tool_calls == 4
    old = ("longest_identical_tool_call_streak", "repeated_assistant_text_streak",
           "longest_failing_command_streak", "zero_tool_calls", "context_overflow_rejections")
    old_keys = {k: m.pathology[k] for k in old}
    assert old_keys == {"longest_identical_tool_call_streak": 3, "repeated_assistant_text_streak": 1,
                        "longest_failing_command_streak": 3, "zero_tool_calls": False,
                        "context_overflow_rejections": 0}
    assert m.pathology["repeated_failure"]["count"] == 3
    assert m.pathology["thresholds"]["repeated_failure"] == 3
    assert m.flags is not None and len(m.flags) == 3  # identical call, failing streak, same error
    m = run_metrics(meter_state=None, transcript=t, ws=ws,
                    reward=None, wall_s=1.0, needs_model=False, stopped_by=None)
    assert m.pathology is None and m.flags is None and m.tool_calls is None  # oracle and nop: no fiction
    assert {"pathology", "flags", "tool_calls"}.isdisjoint(m.model_dump(exclude_unset=True))


def test_build_attempts_and_screenshot_from_checks(tmp_path: Path) -> None:
    """The report's Build column: the verifier's build check, and which of the agent's own builds
    first passed (tool calls and text bash alike); Screenshot: the verifier's check."""
    ws = pushed(tmp_path, 2)
    columns = read_task(Path(__file__).resolve().parents[2] / "tasks" / "tag-manager").report_columns()
    assert columns == {"build_check": "build", "screenshot_check": "screenshot",
                       "build_command": r"\b(npm run build|npx next build|next build)\b"}
    cmds = ["ls", "npm run build", "vim x", "cd /workspace && npm run build 2>&1 | tail", "git push"]
    codes = [0, 1, 0, 0, 0]
    assert command_results(tool_transcript(cmds, codes), columns["build_command"]) == [1, 0]
    assert command_results(text_transcript(cmds, codes), columns["build_command"]) == [1, 0]
    assert command_results(tool_transcript(["npm run build"], [0])[:1], columns["build_command"]) == [None]
    t = tmp_path / "transcript.jsonl"
    t.write_text("".join(json.dumps(r) + "\n" for r in tool_transcript(cmds, codes)))
    reward = {"reward": 0, "checks": {"build": True, "screenshot": False}}
    m = run_metrics(meter_state=_meter(5), transcript=t, ws=ws,
                    reward=reward, wall_s=1.0, needs_model=True, stopped_by=None, columns=columns)
    assert m.build == BuildFigures(passed=True, agent_runs=2, attempt=2) and m.screenshot is False
    m = run_metrics(meter_state=None, transcript=t, ws=ws,
                    reward=reward, wall_s=1.0, needs_model=False, stopped_by=None, columns=columns)
    assert m.build == BuildFigures(passed=True) and m.screenshot is False  # the oracle: checks only
    m = run_metrics(meter_state=None, transcript=t, ws=ws,
                    reward=reward, wall_s=1.0, needs_model=False, stopped_by=None)
    assert m.build is None and m.screenshot is None  # a task without [labctl.report]
