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

from labctl.agents.base import AgentCommand, Invocation, deadline_note
from labctl.agents.runtime import PinnedRuntime

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


class Aider(PinnedRuntime, name="aider", registry="pypi", package="aider-chat", binary="aider",
            env=STATIC_ENV):
    def command(self, inv: Invocation) -> AgentCommand:
        self.model(inv)
        base = inv.model_base_url.rstrip("/")
        argv = ["sh", "-c", _SCRIPT, "aider", inv.instruction_file, deadline_note(inv.deadline),
                f"openai/{inv.model_name}", f"{base}/v1", inv.log_dir]
        return AgentCommand(argv=argv, env=dict(STATIC_ENV), workdir=inv.workdir)


ADAPTER = Aider()
