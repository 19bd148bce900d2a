"""Codex (npm `@openai/codex`, command `codex`): OpenAI's Responses API via the meter.

The package's `codex` is a small node launcher; the Rust binary comes from its platform optional
dependency (`@openai/codex-linux-x64`, an alias of a `-linux-x64` build of the same version), which
the locked tree pins like any package — no install script runs.

Configured by a `config.toml` in a private CODEX_HOME (under the run's log directory, so Codex's
own session files are kept with the run), written at run time since it names the run's model:
a custom model provider at the meter's `/v1` with `wire_api = "responses"` (the only wire current
Codex speaks) and no websockets, `approval_policy = "never"` and `codex exec
--dangerously-bypass-approvals-and-sandbox` (the container is the sandbox; Codex's own would need
privileges it lacks), `check_for_update_on_startup = false` and `[analytics] enabled = false`.
The provider's `env_key` names a placeholder variable: the meter holds any real key. Codex has no
turn limit of its own: the meter's request budget (`budgets.steps` model calls), its token budget
and the wall time stop it.
"""

from __future__ import annotations

import json
from pathlib import Path

from labctl.agents.base import AgentCommand, Invocation, deadline_note
from labctl.agents.endings import clean, json_lines, last_error_line, message_of
from labctl.agents.runtime import PinnedRuntime

PACKAGE = "@openai/codex"
KEY_VAR = "LABCTL_MODEL_PLACEHOLDER"

EVENTS = "codex-events.jsonl"
"""`codex exec --json`: one event a line; a turn ends `{"type": "turn.completed", "usage"}` or
`{"type": "turn.failed", "error": {"message"}}`, and `{"type": "error", "message"}` events come
before (`Reconnecting... 5/5 (unexpected status 401 …)`)."""

# $1 instruction file, $2 deadline note, $3 config.toml, $4 CODEX_HOME, $5 event log
_SCRIPT = ('mkdir -p "$4" && printf "%s" "$3" > "$4/config.toml" && CODEX_HOME="$4" '
           'exec codex exec --dangerously-bypass-approvals-and-sandbox --skip-git-repo-check --json '
           '"$(cat "$1")$2" > "$5"')


def _toml(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def config_toml(base_url: str, model: str) -> str:
    return "\n".join([
        f"model = {_toml(model)}",
        'model_provider = "labctl"',
        'approval_policy = "never"',
        'sandbox_mode = "danger-full-access"',
        "check_for_update_on_startup = false",
        "",
        "[analytics]",
        "enabled = false",
        "",
        "[model_providers.labctl]",
        'name = "labctl meter"',
        f"base_url = {_toml(base_url + '/v1')}",
        'wire_api = "responses"',
        f"env_key = {_toml(KEY_VAR)}",
        "supports_websockets = false",
        "",
    ])


class Codex(PinnedRuntime, name="codex", registry="npm", package=PACKAGE, binary="codex"):
    def command(self, inv: Invocation) -> AgentCommand:
        base_url, model_name = self.model(inv)
        conf = config_toml(base_url.rstrip("/"), model_name)
        argv = ["sh", "-c", _SCRIPT, "codex", inv.instruction_file, deadline_note(inv.deadline), conf,
                f"{inv.log_dir}/codex-home", f"{inv.log_dir}/codex-events.jsonl"]
        return AgentCommand(argv=argv, env={KEY_VAR: "labctl-proxy-placeholder"}, workdir=inv.workdir)

    def ending(self, agent_log: str, artifacts: Path, exit_code: int | None) -> str | None:
        last: str | None = None
        for event in json_lines(artifacts / EVENTS):
            kind = event.get("type")
            if kind == "turn.completed":
                last = "turn completed"
            elif kind == "turn.failed":
                last = f"turn failed: {message_of(event.get('error')) or 'no message'}"
            elif kind == "error":
                last = f"error: {message_of(event.get('message')) or 'no message'}"
        if last is not None:
            return clean(last)
        return last_error_line(agent_log) if exit_code else None


ADAPTER = Codex()
