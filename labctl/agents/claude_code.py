"""Claude Code (npm `@anthropic-ai/claude-code`, command `claude`): Anthropic Messages via the meter.

Since 2.x the package's `claude` is a native binary shipped in a per-platform optional dependency
(`@anthropic-ai/claude-code-linux-x64`, …), put in place by the package's own offline postinstall
(`install.cjs`): the only install script the image runs.

Non-interactive form: `claude -p <prompt> --dangerously-skip-permissions --max-turns <n>
--output-format stream-json --verbose --model <name> --settings <json>`. The model is reached at
ANTHROPIC_BASE_URL (the meter, which holds any real key); the key Claude Code insists on comes from
the settings' `apiKeyHelper` (a command printing a placeholder), so no variable named like a secret
is ever set. Every model slot (the background "haiku" calls included) names the run's model, the
only one the meter serves. Telemetry, error reports, the auto-updater and every other non-essential
request are off by environment.
"""

from __future__ import annotations

import json
from pathlib import Path

from labctl.agents.base import AgentCommand, Invocation, deadline_note
from labctl.agents.endings import clean, json_lines, last_error_line
from labctl.agents.runtime import PinnedRuntime

PACKAGE = "@anthropic-ai/claude-code"
DEFAULT_TURNS = 250
"""Used when the lab sets no `budgets.steps`."""

STATIC_ENV = {
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_NON_ESSENTIAL_MODEL_CALLS": "1",
    # --dangerously-skip-permissions refuses to run as root unless told it is in a sandbox; a plain
    # Harbor task's agent runs as the image's user, often root, inside labctl's container.
    "IS_SANDBOX": "1",
}

STREAM = "claude-stream.jsonl"
"""`--output-format stream-json`: its last event, `{"type": "result"}`, says how the session ended:
`terminal_reason` (`completed`, `max_turns`, `prompt_too_long`, …), `subtype` (`success`,
`error_max_turns`, …), `is_error`, and `errors` or `result` (the text). A session killed before its
result leaves `{"type": "system", "subtype": "api_retry", "error": …}` events while it retries."""

# $1 instruction file, $2 deadline note, $3 turns, $4 model, $5 settings JSON, $6 transcript
_SCRIPT = ('exec claude -p "$(cat "$1")$2" --dangerously-skip-permissions --max-turns "$3" '
           '--model "$4" --settings "$5" --output-format stream-json --verbose > "$6"')


class ClaudeCode(PinnedRuntime, name="claude-code", registry="npm", package=PACKAGE,
                 binary="claude", env=STATIC_ENV, run_scripts=True, limits_steps=True):
    def command(self, inv: Invocation) -> AgentCommand:
        base_url, model = self.model(inv)
        settings = {"apiKeyHelper": "echo labctl-proxy-placeholder"}
        env = {**STATIC_ENV, "ANTHROPIC_BASE_URL": base_url.rstrip("/"), "ANTHROPIC_MODEL": model,
               "ANTHROPIC_DEFAULT_OPUS_MODEL": model, "ANTHROPIC_DEFAULT_SONNET_MODEL": model,
               "ANTHROPIC_DEFAULT_HAIKU_MODEL": model, "ANTHROPIC_SMALL_FAST_MODEL": model}
        turns = inv.step_limit or DEFAULT_TURNS
        argv = ["sh", "-c", _SCRIPT, "claude", inv.instruction_file, deadline_note(inv.deadline), str(turns),
                model, json.dumps(settings, sort_keys=True), f"{inv.log_dir}/claude-stream.jsonl"]
        return AgentCommand(argv=argv, env=env, workdir=inv.workdir)

    def ending(self, agent_log: str, artifacts: Path, exit_code: int | None) -> str | None:
        result = retry = None
        for event in json_lines(artifacts / STREAM):
            if event.get("type") == "result":
                result = event
            elif event.get("type") == "system" and event.get("subtype") == "api_retry":
                retry = event
        if result is not None:
            reason = result.get("terminal_reason") or result.get("subtype") or "result"
            if not result.get("is_error"):
                return str(reason)
            errors = result.get("errors")
            text = errors[-1] if isinstance(errors, list) and errors else result.get("result")
            return clean(f"{reason}: {text}" if text else str(reason))
        if retry is not None:
            return clean(f"retrying the model ({retry.get('attempt')}/{retry.get('max_retries')}): "
                         f"{retry.get('error')} (HTTP {retry.get('error_status')})")
        return last_error_line(agent_log) if exit_code else None


ADAPTER = ClaudeCode()
