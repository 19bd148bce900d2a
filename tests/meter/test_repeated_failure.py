"""The `repeated_failure` intervention in a real meter on loopback: the meter reads the tool results
each request carries for the previous answer (the same command failing with the same error) and
fires on the N-th; and the meter's loop detection counts only what the runtime executed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from labctl.meter.policy import InterventionPolicy
from labctl.meter.state import MeterState
from labctl.spec.interventions import Interventions
from tests.fake_upstream import Reply, serve_fake
from tests.helpers import meter_records as records
from tests.meter.test_meter import TOOLS, metered, post

BUILD = "cd /workspace && npm run build"
ERROR = ("> next build\n\nFailed to compile.\n./src/app/admin/tags/page.tsx\n"
         "Module not found: Can't resolve '../../../lib/tags'\nBuild failed after {t}s")


def conversation(results: list[tuple[int, str]], command: str = BUILD) -> dict[str, Any]:
    """An OpenAI tool-calling agent (mini-swe-agent 2.4.x's shapes) whose earlier answers each called
    bash(command) and got `results` back as `{"returncode", "output"}` tool messages."""
    msgs: list[dict[str, Any]] = [{"role": "system", "content": "You are a coder."},
                                  {"role": "user", "content": "Add the tags page."}]
    for i, (code, output) in enumerate(results):
        call = {"id": f"c{i}", "type": "function",
                "function": {"name": "bash", "arguments": json.dumps({"command": command})}}
        msgs += [{"role": "assistant", "content": "THOUGHT: rebuild.", "tool_calls": [call]},
                 {"role": "tool", "tool_call_id": f"c{i}",
                  "content": json.dumps({"returncode": code, "output": output})}]
    return {"model": "run-10", "max_tokens": 256, "tools": TOOLS["openai"], "messages": msgs}


def failing(n: int) -> list[tuple[int, str]]:
    """n failures of the build with one and the same error (only its timing differs)."""
    return [(1, ERROR.format(t=2.1 + i)) for i in range(n)]


def test_repeated_failure_nudges_on_the_second_and_stops_on_the_fourth(tmp_path: Path) -> None:
    rules = Interventions.model_validate({"rules": [
        {"name": "read-the-error", "action": "nudge", "trigger": {"repeated_failure": 2},
         "message": "That failed the same way twice: read the error.", "max": 1},
        {"name": "give-up", "action": "stop", "trigger": {"repeated_failure": 4}}]})
    with serve_fake() as fake, metered(tmp_path, fake, interventions=rules) as meter:
        fake.default = Reply(text="", tool_calls=[("bash", {"command": BUILD})])
        first = post(meter.url, "openai", conversation([]))
        once = post(meter.url, "openai", conversation(failing(1)))
        twice = post(meter.url, "openai", conversation(failing(2)))  # the second identical failure
        retried = post(meter.url, "openai", conversation(failing(2)))  # the same step again: no count
        thrice = post(meter.url, "openai", conversation(failing(3)))
        fourth = post(meter.url, "openai", conversation(failing(4)))
        recs = records(tmp_path, 6)
        ivs = records(tmp_path, 6, kind="intervention")
    assert [r.status_code for r in (first, once, twice, retried, thrice)] == [200] * 5
    assert fourth.status_code == 429 and "'give-up'" in fourth.json()["error"]["message"]
    sent = [r.body["messages"] for r in fake.received]
    assert len(sent) == 5
    assert sent[2][-1]["role"] == "user" and "read the error" in sent[2][-1]["content"]
    assert all(m[-1]["role"] != "user" or "read the error" not in m[-1]["content"]
               for i, m in enumerate(sent) if i != 2)
    assert [(i["name"], i["seq"]) for i in ivs] == [("read-the-error", 3), ("give-up", 6)]
    assert ivs[0]["detail"]["repeats"] == 2 and ivs[0]["detail"]["command"] == BUILD
    assert "Build failed after" in ivs[0]["detail"]["error"] and ivs[1]["detail"]["repeats"] == 4
    assert recs[2]["interventions"] == ["read-the-error"]
    assert meter.state.interventions == {"read-the-error": 1, "give-up": 1}
    assert meter.state.stopped_reason == "intervention:give-up"


def test_repeated_failure_counts_only_the_same_error_and_only_failures() -> None:
    """A different error starts the count again, a pass ends it; other commands between the
    failures do not (the rebuilds between edits of the published Hermes run)."""
    rules = Interventions.model_validate({"rules": [
        {"name": "rf", "action": "nudge", "trigger": {"repeated_failure": 2}, "message": "Read it."}]})
    policy = InterventionPolicy(rules)
    state = MeterState(alias="run-10", dialect="openai", started_at=0.0)

    steps: list[tuple[str, int, str]] = []

    def then(command: str, code: int, output: str) -> bool:
        """The agent's next request, carrying the result of one more step; did the rule fire?"""
        steps.append((command, code, output))
        body = conversation([(c, o) for _, c, o in steps])
        for msg, (cmd, _, _) in zip(body["messages"][2::2], steps, strict=True):
            msg["tool_calls"][0]["function"]["arguments"] = json.dumps({"command": cmd})
        policy.read_results(body)
        return bool(policy.decide(1.0, state))

    err = ERROR.format(t=1)
    assert not then(BUILD, 1, err)
    assert not then(BUILD, 1, "Type error: x is not assignable")  # another error: counts from 1
    assert not then(BUILD, 0, "Compiled successfully")  # passed: the count ends
    assert not then(BUILD, 1, err)
    assert not then("sed -i s/a/b/ f.ts", 0, "")  # an edit between the rebuilds
    assert then(BUILD, 1, ERROR.format(t=7))  # the second identical failure
    assert then(BUILD, 1, err)  # and the third (no max)
    assert not then("ls", 1, "ls: cannot access 'x'")


def test_loop_detection_ignores_prose_code_when_tools_were_declared(tmp_path: Path) -> None:
    """A model that writes ```bash blocks in its prose under a tool-calling runtime executed nothing:
    `repeated_tool_call` must not stop the run for it (it did, through the old fenced-code fallback)."""
    rules = Interventions.model_validate({"rules": [
        {"name": "loop", "action": "stop", "trigger": {"repeated_tool_call": 2}}]})
    prose = "The script file is `hello.txt`.\n\n```bash\ncat hello.txt\n```\n"
    with serve_fake() as fake, metered(tmp_path, fake, interventions=rules) as meter:
        fake.default = Reply(text=prose)
        codes = [post(meter.url, "openai", conversation([])).status_code for _ in range(3)]
        records(tmp_path, 3)
    assert codes == [200, 200, 200] and not meter.state.stopped and meter.state.tool_calls == 0
