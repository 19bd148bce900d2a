"""aider (PyPI `aider-chat`, command `aider`): OpenAI chat completions via litellm, through the meter.

Non-interactive (aider's options reference): `aider --message-file <task> --yes-always` answers every
question yes and exits after the message; `--model openai/<name> --openai-api-base <meter>/v1
--openai-api-key <placeholder>` reaches the meter only (the key is a command-line placeholder; the
meter holds any real key); `--no-analytics --no-check-update --no-show-release-notes
--no-show-model-warnings` and litellm's local price map keep it from calling home. Auto-commits stay
on (aider's default: its own git handling is part of the harness), `--no-gitignore` keeps it from
editing the task's .gitignore, and its history files go to the run's log directory instead of the
workspace. aider has no step limit of its own (one message, its own bounded reflections); the
meter's budgets stop it.
"""

from __future__ import annotations

from collections.abc import Sequence

from labctl.agents.base import AgentCommand, Invocation, Package, deadline_note
from labctl.agents.install import wheels_install

STATIC_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of litellm's price list at import
}

# $1 instruction file, $2 deadline note, $3 model, $4 api base, $5 log dir
_SCRIPT = ('{ cat "$1"; printf "%s" "$2"; } > "$5/aider-message.md" && '
           'exec aider --message-file "$5/aider-message.md" --yes-always --model "$3" --openai-api-base "$4" '
           '--openai-api-key labctl-proxy-placeholder --no-analytics --no-check-update '
           '--no-show-release-notes --no-show-model-warnings --no-pretty --no-gitignore --auto-commits '
           '--chat-history-file "$5/aider.chat.history.md" --input-history-file "$5/aider.input.history" '
           '--llm-history-file "$5/aider.llm.history"')


class Aider:
    name = "aider"
    needs_model = True

    def packages(self, version: str | None) -> list[Package]:
        if not version:
            raise ValueError("aider needs a pinned version (agent.version)")
        return [Package("pypi", "aider-chat", version)]

    def install_script(self, files: Sequence[str]) -> str:
        return wheels_install(self.name, {"aider": "aider"}, STATIC_ENV)

    def check_command(self) -> list[str]:
        return ["aider", "--version"]

    def command(self, inv: Invocation) -> AgentCommand:
        if not inv.model_base_url or not inv.model_name:
            raise ValueError("aider needs the model's base URL and name")
        base = inv.model_base_url.rstrip("/")
        argv = ["sh", "-c", _SCRIPT, "aider", inv.instruction_file, deadline_note(inv.deadline),
                f"openai/{inv.model_name}", f"{base}/v1", inv.log_dir]
        return AgentCommand(argv=argv, env=dict(STATIC_ENV), workdir=inv.workdir)


ADAPTER = Aider()
