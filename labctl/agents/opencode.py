"""opencode (npm `opencode-ai`, command `opencode`): OpenAI chat completions via the meter.

The package's `opencode` is a placeholder until its own offline postinstall links the binary of the
platform optional dependency (`opencode-linux-x64`, …): the only install script the image runs.

Configured by OPENCODE_CONFIG_CONTENT (inline JSON config, written per run since it names the model):
one provider on `@ai-sdk/openai-compatible` — in opencode's bundled provider table, so nothing is
installed at run time — at the meter's `/v1` with a placeholder `apiKey`; that model as both `model`
and `small_model` (the meter serves no other); `permission` allowing edits and shell commands and
denying web fetches; `autoupdate: false`, `share: disabled`. The environment switches off the model
catalogue fetch, auto-update, default plugins (installed from npm otherwise) and project config (a
task's own opencode.json cannot change any of this). opencode has no step limit of its own: the
meter's request budget (`budgets.steps` model calls) and token budget stop it.
"""

from __future__ import annotations

import json
from pathlib import Path

from labctl.agents.base import AgentCommand, Invocation, deadline_note
from labctl.agents.endings import clean, json_lines, last_error_line, message_of
from labctl.agents.runtime import PinnedRuntime

PACKAGE = "opencode-ai"
PROVIDER = "labctl"

STATIC_ENV = {
    "OPENCODE_DISABLE_MODELS_FETCH": "true",
    "OPENCODE_DISABLE_AUTOUPDATE": "true",
    "OPENCODE_DISABLE_DEFAULT_PLUGINS": "true",
    "OPENCODE_DISABLE_PROJECT_CONFIG": "true",
}

EVENTS = "opencode-events.jsonl"
"""`opencode run --format json`: one event a line; a model step ends `{"type": "step_finish",
"part": {"reason": "stop" | "tool-calls" | "length" …}}`, a failure is `{"type": "error", "error":
{"name": "ContextOverflowError" | "APIError" …, "data": {"message"}}}`."""

# $1 instruction file, $2 deadline note, $3 model ref, $4 event log
_SCRIPT = 'exec opencode run --model "$3" --format json "$(cat "$1")$2" > "$4"'


def config(base_url: str, model: str) -> dict[str, object]:
    return {
        "provider": {PROVIDER: {
            "npm": "@ai-sdk/openai-compatible", "name": "labctl meter",
            "options": {"baseURL": f"{base_url}/v1", "apiKey": "labctl-proxy-placeholder"},
            "models": {model: {"name": model, "tool_call": True}}}},
        "model": f"{PROVIDER}/{model}",
        "small_model": f"{PROVIDER}/{model}",
        "permission": {"edit": "allow", "bash": "allow", "webfetch": "deny"},
        "autoupdate": False,
        "share": "disabled",
    }


class OpenCode(PinnedRuntime, name="opencode", registry="npm", package=PACKAGE, binary="opencode",
               env=STATIC_ENV, run_scripts=True):
    def command(self, inv: Invocation) -> AgentCommand:
        base_url, model_name = self.model(inv)
        conf = json.dumps(config(base_url.rstrip("/"), model_name), sort_keys=True)
        argv = ["sh", "-c", _SCRIPT, "opencode", inv.instruction_file, deadline_note(inv.deadline),
                f"{PROVIDER}/{model_name}", f"{inv.log_dir}/opencode-events.jsonl"]
        env = {**STATIC_ENV, "OPENCODE_CONFIG_CONTENT": conf}
        return AgentCommand(argv=argv, env=env, workdir=inv.workdir)

    def ending(self, agent_log: str, artifacts: Path, exit_code: int | None) -> str | None:
        last: str | None = None
        for event in json_lines(artifacts / EVENTS):
            kind = event.get("type")
            if kind == "error":
                last = message_of(event.get("error")) or "error"
            elif kind == "step_finish":
                part = event.get("part")
                reason = part.get("reason") if isinstance(part, dict) else None
                last = f"step finished: {reason}" if reason else "step finished"
        if last is not None:
            return clean(last)
        return last_error_line(agent_log) if exit_code else None


ADAPTER = OpenCode()
