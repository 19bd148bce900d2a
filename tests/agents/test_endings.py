"""Each runtime's own word on how its session ended, read by its adapter (`AgentAdapter.ending`) from
what real sessions of the pinned runtimes left (tests/agents/endings/README.md says how they were
made): mini-swe-agent's exit status, Claude Code's result event, Codex's and opencode's last event,
qwen-code's last stderr line, aider's last litellm error; and the generic last-error-line reader
the others fall back on."""

from __future__ import annotations

from pathlib import Path

import pytest

from labctl.agents import adapter
from labctl.agents.endings import last_error_line

ENDINGS = Path(__file__).parent / "endings"

EXPECTED = {
    ("mini-swe-agent", "submitted"): "Submitted — submitted its work",
    ("mini-swe-agent", "limits"): "LimitsExceeded — its step limit (agent.step_limit) was reached",
    ("mini-swe-agent", "formaterror"): "RepeatedFormatError — answers it could not parse, several in a row",
    ("mini-swe-agent", "overflow"): "litellm.ContextWindowExceededError: litellm.BadRequestError: "
                                    "ContextWindowExceededError: Hosted_vllmException - ",
    ("mini-swe-agent", "servererror"): "litellm.InternalServerError: InternalServerError: "
                                       'Hosted_vllmException - {"error": {"code": 500, "message": '
                                       '"upstream failed", "type": "server_error"}}',
    ("qwen-code", "answered"): None,
    ("qwen-code", "turns"): "Reached max session turns for this session. Increase the number of turns by "
                            "specifying maxSessionTurns in settings.json.",
    ("qwen-code", "overflow"): "[API Error: 400 the request exceeds the available context size, try "
                               "increasing it]",
    ("qwen-code", "cancelled"): "Operation cancelled.",
    ("claude-code", "answered"): "completed",
    ("claude-code", "turns"): "max_turns: Reached maximum number of turns (1)",
    ("claude-code", "overflow"): "prompt_too_long: Prompt is too long · the provider said: the request "
                                 "exceeds the available context size, try increasing it",
    ("claude-code", "auth"): "retrying the model (8/10): authentication_failed (HTTP 401)",
    ("codex", "answered"): "turn completed",
    ("codex", "overflow"): "turn failed: the request exceeds the available context size, try increasing it",
    ("codex", "auth"): "turn failed: unexpected status 401 Unauthorized: Invalid API Key, "
                       "url: http://127.0.0.1:18771/v1/responses",
    ("opencode", "answered"): "step finished: stop",
    ("opencode", "overflow"): "ContextOverflowError: the request exceeds the available context size, try "
                              "increasing it",
    ("opencode", "auth"): "APIError: Invalid API Key",
    # aider exits 0 whatever happened: litellm's last error, with no answered call after it, says why
    ("aider", "answered"): None,
    ("aider", "overflow"): "litellm.BadRequestError: OpenAIException - the request exceeds the available "
                           "context size, try increasing it",
    ("aider", "auth"): "litellm.AuthenticationError: AuthenticationError: OpenAIException - Invalid API Key "
                       "The API provider is not able to authenticate you. Check your API key.",
}


def _ending(runtime: str, case: str) -> str | None:
    d = ENDINGS / runtime / case
    log = (d / "agent.log").read_text(encoding="utf-8", errors="replace")
    return adapter(runtime).ending(log, d / "artifacts", int((d / "exit_code").read_text()))


def test_every_recorded_session_is_expected() -> None:
    assert {(r.name, c.name) for r in ENDINGS.iterdir() if r.is_dir() for c in r.iterdir()} == set(EXPECTED)


@pytest.mark.parametrize(("runtime", "case"), sorted(EXPECTED))
def test_the_runtime_says_how_it_ended(runtime: str, case: str) -> None:
    got, want = _ending(runtime, case), EXPECTED[runtime, case]
    if want is None or not want.endswith(" - "):
        assert got == want
    else:  # cut at MAX_DETAIL: the start is the runtime's own message
        assert got is not None and got.startswith(want) and got.endswith("…") and len(got) == 240


def test_without_its_own_record_a_runtime_falls_back_on_its_log(tmp_path: Path) -> None:
    """A session killed before mini wrote its trajectory, or a runtime whose event log is missing,
    is told by the log's last error line; one that exited 0 said nothing more than its answer."""
    log = (ENDINGS / "mini-swe-agent" / "overflow" / "agent.log").read_text()
    got = adapter("mini-swe-agent").ending(log, tmp_path, 1)
    # rich wraps the message at 80 columns: the last line that reports the error is its second
    assert got == "litellm.BadRequestError: ContextWindowExceededError: Hosted_vllmException -"
    for runtime in ("claude-code", "codex", "opencode", "aider", "oracle", "nop"):
        assert adapter(runtime).ending("npm ERR! code EACCES\n", tmp_path, 1) == "npm ERR! code EACCES"
        assert adapter(runtime).ending("Warning: something failed on the way\n", tmp_path, 0) is None


def test_last_error_line_skips_frames_and_colours() -> None:
    log = ("starting\n\x1b[31mError: ENOENT: no such file or directory, lstat '/home/agent'\x1b[0m\n"
           "    at Module.realpathSync (node:fs:2741:29)\n    at loadSettings (file:///x.js:1823:27)\n")
    assert last_error_line(log) == "Error: ENOENT: no such file or directory, lstat '/home/agent'"
    assert last_error_line("all good\ndone\n") is None
