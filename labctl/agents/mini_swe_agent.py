"""mini-swe-agent (PyPI `mini-swe-agent`, command `mini`): a bash-only agent, driven through litellm.

Non-interactive form (see the project's facts notes): `mini -y --exit-immediately -m <model>
-c mini.yaml -c model.model_kwargs.api_base=<url> -c model.cost_tracking=ignore_errors
-c agent.step_limit=<n> -t <task> -o <trajectory>`. `-c` replaces the default config, so the
built-in mini.yaml comes first. litellm cannot price a local model, so cost limits never fire:
the step limit is what stops a looping agent — it is always set.
"""

from __future__ import annotations

from pathlib import Path

from labctl.agents.base import (
    AgentCommand,
    Invocation,
    deadline_note,
)
from labctl.agents.endings import clean, last_error_line, read_json
from labctl.agents.runtime import PinnedRuntime

DEFAULT_STEP_LIMIT = 250
"""Used when the lab sets no `budgets.steps` (cost limits cannot stop a local model)."""

STATIC_ENV = {
    "MSWEA_CONFIGURED": "true",  # skip the first-run setup wizard
    "MSWEA_SILENT_STARTUP": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no network fetch of litellm's price list at import
}

HOST_NEUTRAL = {"release": "(withheld)", "version": "(withheld)"}
"""mini's prompt shows `{{system}} {{release}} {{version}} {{machine}}` from `platform.uname()`; in a
container that is the host's kernel build string. Its template variables take the process environment
last (`LocalEnvironment.get_template_vars`: uname, then os.environ), so these variables replace the
kernel's release and version in the prompt. The hostname (uname's node) is the run id: the agent
container is created with `--hostname <run id>` (labctl.run.session)."""

TRAJECTORY = "trajectory.json"
"""Written by mini after every step (`DefaultAgent.save`): `info.exit_status` is how it ended, the
last message (role `exit`) carries it too, with `extra.exception_str` when an exception ended it."""
EXIT_STATUSES = {
    "Submitted": "submitted its work",
    "LimitsExceeded": "its step limit (agent.step_limit) was reached",
    "TimeExceeded": "its own time limit was reached",
    "RepeatedFormatError": "answers it could not parse, several in a row",
    "UserInterruption": "interrupted",
}
"""mini-swe-agent 2.4's own exit statuses (minisweagent/agents/default.py, exceptions.py), in words.
Any other status is the name of the exception that ended it (litellm's `ContextWindowExceededError`,
`InternalServerError`, …), told with its message."""

# $1 model, $2 api base, $3 steps, $4 instruction file, $5 trajectory, $6 deadline note, $7 extra -c
_SCRIPT = ('exec mini -y --exit-immediately -m "$1" -c mini.yaml -c "model.model_kwargs.api_base=$2" '
           '-c model.cost_tracking=ignore_errors -c "agent.step_limit=$3" $7 '
           '-t "$(cat "$4")$6" -o "$5"')


class MiniSweAgent(PinnedRuntime, name="mini-swe-agent", registry="pypi", package="mini-swe-agent",
                   binary="mini", check_flag="--help", env=STATIC_ENV, limits_steps=True):
    def command(self, inv: Invocation) -> AgentCommand:
        base_url, model_name = self.model(inv)
        base = base_url.rstrip("/")
        if inv.api == "anthropic":
            model, api_base = f"anthropic/{model_name}", base
            # litellm refuses Anthropic without a key; the proxy ignores this placeholder.
            extra = "-c model.model_kwargs.api_key=labctl-proxy-placeholder"
        else:
            model, api_base, extra = f"hosted_vllm/{model_name}", f"{base}/v1", ""
        steps = inv.step_limit or DEFAULT_STEP_LIMIT
        trajectory = f"{inv.log_dir}/trajectory.json"
        argv = ["sh", "-c", _SCRIPT, "mini", model, api_base, str(steps), inv.instruction_file,
                trajectory, deadline_note(inv.deadline), extra]
        return AgentCommand(argv=argv, env={**STATIC_ENV, **HOST_NEUTRAL}, workdir=inv.workdir)

    def ending(self, agent_log: str, artifacts: Path, exit_code: int | None) -> str | None:
        """The trajectory's `exit_status` (`Submitted — submitted its work`), or the exception's
        message; without a trajectory (killed before its first save) the log's last error line."""
        traj = read_json(artifacts / TRAJECTORY)
        info = traj.get("info") if isinstance(traj, dict) else None
        status = info.get("exit_status") if isinstance(info, dict) else None
        if not isinstance(status, str) or not status:
            return last_error_line(agent_log) if exit_code else None
        if status in EXIT_STATUSES:
            return f"{status} — {EXIT_STATUSES[status]}"
        messages = traj.get("messages") if isinstance(traj, dict) else None
        last = messages[-1] if isinstance(messages, list) and messages else None
        extra = last.get("extra") if isinstance(last, dict) else None
        error = extra.get("exception_str") if isinstance(extra, dict) else None
        if not isinstance(error, str) or not error.strip():
            return status
        return clean(error if status in error else f"{status}: {error}")


ADAPTER = MiniSweAgent()
