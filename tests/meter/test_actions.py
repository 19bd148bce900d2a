"""One definition of an executed action and of its result, over every wire's shapes."""

from __future__ import annotations

from labctl.meter.actions import actions, last_step, signature

TOOLS = [{"name": "Bash", "input_schema": {"type": "object"}}]


def test_actions_depend_on_what_the_request_declared() -> None:
    prose = {"content": "Run this:\n```bash\nnpm test\n```\nor\n```python\nprint(1)\n```", "tool_calls": []}
    assert signature({"tools": TOOLS}, prose) is None  # tool-calling runtime: prose code never runs
    assert [a.command for a in actions({"messages": []}, prose)] == ["npm test"]  # text runtime
    call = {"content": "```bash\nls\n```", "tool_calls": [{"name": "Bash", "arguments": '{"command": "ls"}'}]}
    assert [a.key for a in actions({"tools": TOOLS}, call)] == ['Bash({"command":"ls"})']
    codex = {"tool_calls": [{"name": "shell", "arguments": '{"command": ["bash", "-lc", "make"]}'}]}
    assert [a.command for a in actions({"tools": TOOLS}, codex)] == ["make"]


def test_results_of_every_wire() -> None:
    anthropic = {"tools": TOOLS, "messages": [
        {"role": "user", "content": "task"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "two"},
            {"type": "tool_use", "id": "a", "name": "Bash", "input": {"command": "x"}},
            {"type": "tool_use", "id": "b", "name": "Bash", "input": {"command": "y"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "a", "is_error": True,
             "content": "Exit code 2\nx: not found"},
            {"type": "tool_result", "tool_use_id": "b", "content": [{"type": "text", "text": "fine"}]}]}]}
    turn, results = last_step(anthropic)
    assert turn is not None and [a.command for a in actions(anthropic, turn)] == ["x", "y"]
    assert [(r.code, r.failed) for r in results] == [(2, True), (None, False)]
    codex = {"tools": TOOLS, "input": [
        {"type": "function_call", "call_id": "c", "name": "shell",
         "arguments": '{"command": ["bash", "-lc", "t"]}'},
        {"type": "function_call_output", "call_id": "c",
         "output": "Exit code: 1\nWall time: 0.2s\nOutput:\nboom"}]}
    turn, results = last_step(codex)
    assert turn is not None and [a.command for a in actions(codex, turn)] == ["t"]
    assert [r.code for r in results] == [1]
    qwen = {"tools": TOOLS, "messages": [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "q", "type": "function", "function": {"name": "run_shell_command",
                                                         "arguments": '{"command": "npm run build"}'}}]},
        {"role": "tool", "tool_call_id": "q",
         "content": "Command: npm run build\nOutput: failed\nExit Code: 1"},
        {"role": "user", "content": "Keep going."}]}  # a plain user turn is no observation
    _, results = last_step(qwen)
    assert [r.code for r in results] == [1]
    assert last_step({"messages": [{"role": "user", "content": "exit code 1"}]}) == (None, [])
