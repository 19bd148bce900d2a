"""The seed round's failure patterns as flags, on transcripts shaped like the published Round 7 runs
(/work/shared/round7: Gemma's 26 repeated sentences, Hermes' 13 identical failing rebuilds, Devstral's
text tool calls, Qwen 3.6's passing build never committed, Qwen3-Coder's lost working directory),
and the one definition of an action behind tool_calls and zero_tool_calls."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from labctl.meter.state import MeterState
from labctl.run.grade import run_metrics
from labctl.run.parts import GIT_IDENTITY, Workspace, make_workspace, pushed_commits
from labctl.run.pathology import flags, pathology
from labctl.spec.pathology import PathologyThresholds
from tests.run.test_pathology import call, exchange

ROOT = Path(__file__).resolve().parents[2]
TOOLS = [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}]
BUILD = r"\b(npm run build|npx next build|next build)\b"
Rec = dict[str, Any]


def agent(steps: list[tuple[str, int, str]], tools: bool = True) -> list[Rec]:
    """A tool-calling agent (mini-swe-agent 2.4.x's shapes): step i calls bash(command) and the next
    request carries `{"returncode", "output"}`; the last request is answered with a final text."""
    msgs: list[Rec] = [{"role": "system", "content": "sys"}, {"role": "user", "content": "task"}]
    out = []
    for i, (cmd, code, output) in enumerate(steps):
        tc = call("bash", {"command": cmd}, cid=f"c{i}")
        out.append(exchange(i, messages=list(msgs), tool_calls=[tc]))
        msgs = msgs + [{"role": "assistant", "content": None, "tool_calls": [tc]},
                       {"role": "tool", "tool_call_id": f"c{i}",
                        "content": json.dumps({"returncode": code, "output": output})}]
    out.append(exchange(len(steps), messages=msgs, content="Done."))
    if tools:
        for r in out:
            r["request"]["tools"] = TOOLS
    return out


def fired(recs: list[Rec], **kw: Any) -> list[str]:
    return flags(pathology(recs, **kw))


# --- repetition inside one answer -----------------------------------------------------------------


def test_gemma_26_repeated_sentences_in_one_answer() -> None:
    loop = "\n".join(["I'll also make sure src/lib/tags.ts is correct."] * 26)
    recs = agent([("ls", 0, "src")]) + [exchange(9, content="Let me fix the page.\n" + loop)]
    p = pathology(recs)
    assert p["repeated_line"] == {"count": 26, "text": "I'll also make sure src/lib/tags.ts is correct.",
                                  "step": 3, "steps": [3]}
    [flag] = [f for f in flags(p) if f.startswith("repeated line")]
    assert "x26 at step 3" in flag and "src/lib/tags.ts is correct" in flag


def test_smollm2_sentences_repeated_on_one_line() -> None:
    """SmolLM2's loop ran on without line breaks: sentences are the repeated unit."""
    recs = [exchange(0, content="The script file is `hello.txt`. This is the script. " * 9)]
    p = pathology(recs)
    assert p["repeated_line"]["count"] == 9
    assert p["repeated_line"]["text"] == "The script file is `hello.txt`."
    assert any(f.startswith("repeated line in one answer (x9") for f in flags(p))
    # the lab's threshold decides
    assert not any(f.startswith("repeated line") for f in flags(p, PathologyThresholds(repeated_line=10)))


def test_code_and_short_lines_are_not_repetition() -> None:
    code = "```ts\n" + "  return null;\n" * 12 + "```\n"
    prose = "- ok\n" * 8 + "Done, I think.\nDone, I think."
    recs = [exchange(0, content="Here is the file:\n" + code + prose)]
    p = pathology(recs)
    assert p["repeated_line"]["count"] == 2 and p["repeated_line"]["steps"] == []
    assert not any(f.startswith("repeated line") for f in flags(p))


# --- the same failing command with the same error -------------------------------------------------


HERMES_ERROR = ("Failed to compile.\n./src/app/admin/tags/page.tsx\n"
                "Module not found: Can't resolve '../../../lib/tags'\n> Build error occurred after {t}ms")


def hermes() -> list[Rec]:
    """13 rebuilds failing with the same error (its timing varies), an edit between each two."""
    steps: list[tuple[str, int, str]] = [("cat src/app/admin/tags/page.tsx", 0, "import …")]
    for i in range(13):
        steps.append(("cd /workspace && npm run build", 1, HERMES_ERROR.format(t=1800 + 37 * i)))
        steps.append((f"sed -i 's/x{i}/y{i}/' src/app/admin/tags/page.tsx", 0, ""))
    return agent(steps)


def test_hermes_13_identical_failing_rebuilds() -> None:
    p = pathology(hermes())
    rf = p["repeated_failure"]
    assert rf["count"] == 13 and rf["command"] == "cd /workspace && npm run build"
    assert rf["error"].startswith("> Build error occurred after") and rf["steps"] == list(range(2, 28, 2))
    assert p["longest_failing_command_streak"] == 1  # not consecutive: the old streak never saw it
    [flag] = [f for f in flags(p) if f.startswith("same command failing with the same error")]
    assert "x13" in flag and "steps 2, 4, 6, 8, 10, 12, …" in flag


def test_a_different_error_or_a_pass_starts_over() -> None:
    steps = [("npm run build", 1, "Module not found: a"), ("npm run build", 1, "Module not found: a"),
             ("npm run build", 1, "Type error: b"), ("npm run build", 1, "Type error: b"),
             ("npm run build", 0, "Compiled"), ("npm run build", 1, "Type error: b")]
    rf = pathology(agent(steps))["repeated_failure"]
    assert rf["count"] == 2 and rf["steps"] == [1, 2]
    assert not any("same error" in f for f in fired(agent(steps)))
    low = PathologyThresholds(repeated_failure=2)
    assert any("same error (x2" in f for f in flags(pathology(agent(steps)), low))


# --- tool calls written as text -------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    '[TOOL_CALLS]bash[ARGS]{"command": "ls -la"}',
    'I will list the files.\n<tool_call>\n{"name": "bash", "arguments": {"command": "ls"}}\n</tool_call>',
    'Calling:\n```json\n{"name": "bash", "arguments": {"command": "npm run build"}}\n```',
])
def test_devstral_text_tool_calls(text: str) -> None:
    recs = [exchange(i, content=text) for i in range(3)]
    for r in recs:
        r["request"]["tools"] = TOOLS
    p = pathology(recs)
    assert p["text_tool_calls"]["count"] == 3 and p["text_tool_calls"]["steps"] == [1, 2, 3]
    assert p["zero_tool_calls"] is True
    assert any(f.startswith("tool calls written as text (3 answers, steps 1, 2, 3)") for f in flags(p))
    for r in recs:  # a text runtime declares no tools: its text is how it speaks, not a pathology
        del r["request"]["tools"]
    assert pathology(recs)["text_tool_calls"]["count"] == 0


# --- one definition of an action ------------------------------------------------------------------


def test_prose_code_under_declared_tools_is_no_action(tmp_path: Path) -> None:
    """The mini-swe-agent run with SmolLM2: tools declared, answers with ```bash blocks in prose
    (which mini never executes): tool_calls 0 and zero_tool_calls true — the two agree."""
    prose = "The script file is `hello.txt`.\n\n```bash\necho hi > hello.txt\n```\n"
    recs = [exchange(i, content=prose) for i in range(4)]
    for r in recs:
        r["request"]["tools"] = TOOLS
    t = tmp_path / "transcript.jsonl"
    t.write_text("".join(json.dumps(r) + "\n" for r in recs))
    state = MeterState(alias="run-1", dialect="openai", started_at=0.0, tool_calls=0)
    m = run_metrics(meter_state=state, transcript=t, ws=None, reward=None, wall_s=1.0,
                    needs_model=True, stopped_by=None)
    assert m.tool_calls == 0 and m.pathology is not None and m.pathology["zero_tool_calls"] is True
    assert m.pathology["longest_identical_tool_call_streak"] == 0
    assert m.flags is not None and "zero tool calls" in m.flags
    for r in recs:  # aider / text templates: the same blocks are executed, so they are actions
        del r["request"]["tools"]
    t.write_text("".join(json.dumps(r) + "\n" for r in recs))
    m = run_metrics(meter_state=state, transcript=t, ws=None, reward=None, wall_s=1.0,
                    needs_model=True, stopped_by=None)
    assert m.tool_calls == 4 and m.pathology is not None and m.pathology["zero_tool_calls"] is False


def test_aider_edit_blocks_are_actions() -> None:
    edit = ("src/lib/tags.ts\n```typescript\n<<<<<<< SEARCH\nexport const a = 1;\n=======\n"
            "export const a = 2;\n>>>>>>> REPLACE\n```\n")
    assert pathology([exchange(0, content=edit)])["zero_tool_calls"] is False


# --- build passed, never committed (with a real git origin) ---------------------------------------


def workspace(tmp_path: Path) -> Workspace:
    return make_workspace(ROOT / "tasks" / "smoke-hello", tmp_path / "ws", "run-13")


def git(ws: Workspace, *args: str) -> None:
    subprocess.run(["git", *args], cwd=ws.clone, check=True, capture_output=True,
                   env={**os.environ, **GIT_IDENTITY})


def metrics(tmp_path: Path, ws: Workspace, recs: list[Rec]) -> Any:
    t = tmp_path / "transcript.jsonl"
    t.write_text("".join(json.dumps(r) + "\n" for r in recs))
    state = MeterState(alias="run-13", dialect="openai", started_at=0.0, tool_calls=len(recs) - 1)
    reward = {"reward": 0, "checks": {"build": True}}
    columns = {"build_check": "build", "build_command": BUILD}
    return run_metrics(meter_state=state, transcript=t, ws=ws, reward=reward, wall_s=1.0,
                       needs_model=True, stopped_by=None, columns=columns)


SHOT = "npx playwright screenshot http://localhost:3000/admin/tags s.png"
QWEN36 = [("npm run build", 1, "Type error"), ("sed -i s/a/b/ x.ts", 0, ""), ("npm run build", 0, "Compiled"),
          *[(SHOT, 1, "browserType.launch: Executable doesn't exist")] * 5]


def test_qwen36_build_passed_never_committed(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    m = metrics(tmp_path, ws, agent(QWEN36))
    assert m.commits_pushed == 0 and m.build.attempt == 2
    assert m.pathology["build_without_commit"] == {"build_step": 3, "commit_steps": [], "commits_pushed": 0,
                                                   "uncommitted": True}
    assert "build passed (step 3) but nothing committed afterwards" in m.flags


def test_commit_after_the_build_is_no_flag(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    commit = ("git add -A && git commit -m 'feat: tags page' && git push origin HEAD", 0, "1 file changed")
    m = metrics(tmp_path, ws, agent([*QWEN36[:3], commit]))
    assert m.pathology["build_without_commit"]["commit_steps"] == [4]
    assert not any("nothing committed" in f for f in m.flags)
    # a commit before the passing build only is still nothing committed afterwards
    m = metrics(tmp_path, ws, agent([commit, *QWEN36[:3]]))
    assert any("nothing committed" in f for f in m.flags)


def test_a_runtime_that_commits_by_itself_is_judged_by_the_origin(tmp_path: Path) -> None:
    """aider auto-commits (no git command in the transcript): the origin's pushed commits decide."""
    ws = workspace(tmp_path)
    recs = agent(QWEN36[:3])
    assert any("nothing committed" in f for f in metrics(tmp_path, ws, recs).flags)
    (ws.clone / "tags.ts").write_text("export {}\n")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "aider: add tags.ts")
    git(ws, "push", "-q", str(ws.origin), f"HEAD:refs/heads/{ws.branch}")
    assert pushed_commits(ws) == 1
    m = metrics(tmp_path, ws, recs)
    assert m.commits_pushed == 1 and m.pathology["build_without_commit"]["uncommitted"] is False
    assert not any("nothing committed" in f for f in m.flags)


# --- working-directory amnesia --------------------------------------------------------------------


def test_qwen3_coder_cwd_amnesia() -> None:
    enoent = ("npm error code ENOENT\nnpm error syscall open\nnpm error path /home/agent/package.json\n"
              "npm error enoent Could not read package.json: Error: ENOENT: no such file or directory")
    steps = [("npm run build", 254, enoent), ("cd /workspace && npm run build", 0, "Compiled"),
             ("ls src/app/admin", 2, "ls: cannot access 'src/app/admin': No such file or directory"),
             ("pwd", 0, "/home/agent"), ("cd /workspace && ls src/app/admin", 0, "page.tsx"),
             ("cat nothere.txt", 1, "cat: nothere.txt: No such file or directory"),
             ("cd /workspace && cat other.txt", 0, "x")]  # another command: no amnesia
    p = pathology(agent(steps))
    assert p["cwd_amnesia"] == {"count": 2, "steps": [[1, 2], [3, 5]], "dir": "/workspace"}
    assert any(f == "working-directory amnesia (x2, steps 1→2, 3→5)" for f in flags(p))
    assert not any("amnesia" in f for f in flags(p, PathologyThresholds(cwd_amnesia=3)))
