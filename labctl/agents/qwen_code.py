"""Qwen Code (npm `@qwen-code/qwen-code`, command `qwen`): OpenAI chat completions via the meter.

Configured entirely by a system settings file (`QWEN_CODE_SYSTEM_SETTINGS_PATH`; system settings
override user and project ones, so a task's own `.qwen/settings.json` cannot turn prompts or
telemetry back on), written at run time because it names the run's model and step limit. Keys, from
the project's docs/users/configuration (settings.md, auth.md):

* `modelProviders.openai[]` — the one model: `id` (the run's model), `baseUrl` (the meter's /v1),
  `envKey` naming a variable whose value is set by the settings' own `env` (a placeholder: the
  meter holds any real key, and no variable named like a secret enters the agent's environment);
  `security.auth.selectedType: openai` and `model.name` select it without the interactive /auth;
* `tools.approvalMode: yolo` — every tool call runs without asking;
* `model.maxSessionTurns` — the step limit;
* `privacy.usageStatisticsEnabled: false`, `telemetry.enabled: false`,
  `general.enableAutoUpdate: false` — no call home.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from labctl.agents.base import AgentCommand, Invocation, deadline_note
from labctl.agents.endings import ANSI, FRAME, clean
from labctl.agents.runtime import PinnedRuntime

PACKAGE = "@qwen-code/qwen-code"
DEFAULT_TURNS = 250
KEY_VAR = "LABCTL_MODEL_PLACEHOLDER"
"""The provider's `envKey`; its value comes from the settings' `env` (a placeholder)."""

# $1 instruction file, $2 deadline note, $3 settings JSON, $4 settings path, $5 transcript
_SCRIPT = ('printf "%s" "$3" > "$4" && QWEN_CODE_SYSTEM_SETTINGS_PATH="$4" '
           'exec qwen -p "$(cat "$1")$2" > "$5"')


NOISE = re.compile(r"^(?:Warning: |Ripgrep not available|An unexpected critical error occurred:?$)")
"""Lines of qwen's stderr that are not how it ended: its start-up warnings (yolo without a sandbox,
the ripgrep fallback) and the header above a critical error."""
ENDED_WELL = {0}
"""`qwen -p` exits 0 after its answer (in qwen-output.txt); otherwise its last stderr line says why:
`Reached max session turns …` (exit 53), `[API Error: 400 …]` (exit 1), `Error: …` (a critical error),
`Operation cancelled.` (a signal: labctl's stop)."""


def settings(base_url: str, model: str, turns: int) -> dict[str, object]:
    return {
        "modelProviders": {"openai": [{"id": model, "name": model, "baseUrl": f"{base_url}/v1",
                                       "envKey": KEY_VAR}]},
        "env": {KEY_VAR: "labctl-proxy-placeholder"},
        "security": {"auth": {"selectedType": "openai"}},
        "model": {"name": model, "maxSessionTurns": turns},
        "tools": {"approvalMode": "yolo"},
        "privacy": {"usageStatisticsEnabled": False},
        "telemetry": {"enabled": False},
        "general": {"enableAutoUpdate": False},
    }


class QwenCode(PinnedRuntime, name="qwen-code", registry="npm", package=PACKAGE, binary="qwen",
              limits_steps=True):
    def command(self, inv: Invocation) -> AgentCommand:
        base_url, model_name = self.model(inv)
        turns = inv.step_limit or DEFAULT_TURNS
        conf = json.dumps(settings(base_url.rstrip("/"), model_name, turns), sort_keys=True)
        argv = ["sh", "-c", _SCRIPT, "qwen", inv.instruction_file, deadline_note(inv.deadline), conf,
                f"{inv.log_dir}/qwen-settings.json", f"{inv.log_dir}/qwen-output.txt"]
        return AgentCommand(argv=argv, workdir=inv.workdir)

    def ending(self, agent_log: str, artifacts: Path, exit_code: int | None) -> str | None:
        if exit_code in ENDED_WELL:
            return None
        for raw in reversed(ANSI.sub("", agent_log).splitlines()):
            line = raw.strip()
            if line and not FRAME.match(raw) and not NOISE.match(line):
                return clean(line)
        return None


ADAPTER = QwenCode()
