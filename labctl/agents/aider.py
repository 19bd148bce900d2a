"""aider (PyPI `aider-chat`, command `aider`): OpenAI chat completions via litellm, through the meter.

Non-interactive: `aider --message-file <task>` sends the one message and exits. Every question it
asks is answered yes on its standard input (`yes | aider --no-fancy-input`), not by `--yes-always`:
aider's `--yes-always` declines the shell commands the model proposes (they need an explicit yes,
aider/coders/base_coder.py `handle_shell_commands`), so under it aider could edit files but never run
the task's tests or push. `--edit-format diff` (SEARCH/REPLACE blocks, aider's format for most strong
models) because it is the format in which aider reads ```bash blocks as commands to run; the `whole`
format it picks for a model it does not know reads every fenced block as a file listing.
`--no-detect-urls` keeps it from offering to scrape URLs it sees in the task (the network is fenced
anyway); `--model-metadata-file` names the run's model so aider does not fetch litellm's price
list. `--model openai/<name> --openai-api-base <meter>/v1
--openai-api-key <placeholder>` reaches the meter only (the key is a command-line placeholder; the
meter holds any real key); `--no-analytics --no-check-update --no-show-release-notes
--no-show-model-warnings` and litellm's local price map keep it from calling home. Auto-commits stay
on (aider's default: its own git handling is part of the harness), `--no-gitignore` keeps it from
editing the task's .gitignore, and its history files go to the run's log directory instead of the
workspace. aider has no step limit of its own (one message, at most three reflections on edits it
could not apply); the meter's request budget (`budgets.steps`) and token budget stop it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from labctl.agents.base import AgentCommand, Invocation, deadline_note
from labctl.agents.endings import ANSI, clean, last_error_line
from labctl.agents.runtime import PinnedRuntime

STATIC_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of litellm's price list at import
}

LITELLM_ERROR = re.compile(r"^litellm\.\w+: ")
"""aider exits 0 whatever happened; a model call that failed for good is told by litellm's error,
`litellm.BadRequestError: OpenAIException - …` (wrapped at the terminal's width), with no model call
after it (each answered call prints its `Tokens: … sent, … received.`)."""
ANSWERED = re.compile(r"^Tokens: .* sent, .* received")

# $1 instruction file, $2 deadline note, $3 model, $4 api base, $5 log dir, $6 model metadata JSON
_SCRIPT = ('{ cat "$1"; printf "%s" "$2"; } > "$5/aider-message.md" && '
           'printf "%s" "$6" > "$5/aider-model-metadata.json" && '
           'yes | aider --message-file "$5/aider-message.md" --no-fancy-input --edit-format diff '
           '--no-detect-urls --model "$3" --openai-api-base "$4" '
           '--model-metadata-file "$5/aider-model-metadata.json" '
           '--openai-api-key labctl-proxy-placeholder --no-analytics --no-check-update '
           '--no-show-release-notes --no-show-model-warnings --no-pretty --no-gitignore --auto-commits '
           '--chat-history-file "$5/aider.chat.history.md" --input-history-file "$5/aider.input.history" '
           '--llm-history-file "$5/aider.llm.history"')


class Aider(PinnedRuntime, name="aider", registry="pypi", package="aider-chat", binary="aider",
            env=STATIC_ENV):
    def command(self, inv: Invocation) -> AgentCommand:
        base_url, model_name = self.model(inv)
        base = base_url.rstrip("/")
        model = f"openai/{model_name}"
        # aider looks a model up in its metadata before anything else; one it does not know there it
        # fetches litellm's price list for from GitHub (aider/models.py ModelInfoManager). Known, it
        # asks nothing: the run's model costs nothing here (the meter counts the tokens).
        metadata = {model: {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 0.0,
                            "output_cost_per_token": 0.0}}
        argv = ["sh", "-c", _SCRIPT, "aider", inv.instruction_file, deadline_note(inv.deadline),
                model, f"{base}/v1", inv.log_dir, json.dumps(metadata, sort_keys=True)]
        return AgentCommand(argv=argv, env=dict(STATIC_ENV), workdir=inv.workdir)

    def ending(self, agent_log: str, artifacts: Path, exit_code: int | None) -> str | None:
        lines = ANSI.sub("", agent_log).splitlines()
        for i in range(len(lines) - 1, -1, -1):
            if ANSWERED.match(lines[i]):
                break  # the model answered after any earlier error: that error did not end it
            if LITELLM_ERROR.match(lines[i]):
                para = [lines[i]]
                for nxt in lines[i + 1:]:
                    if not nxt.strip():
                        break
                    para.append(nxt)
                return clean(" ".join(para))
        return last_error_line(agent_log) if exit_code else None


ADAPTER = Aider()
