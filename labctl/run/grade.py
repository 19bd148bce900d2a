"""Grade one run: the task's tests in a fresh container, then metrics, then the outcome.

What the verifier sees is what the agent left, as Harbor grades it: the agent's whole filesystem.
The stopped agent container is committed to a throw-away image (labelled for the run, removed right
after and by every label cleanup); tests/test.sh runs in a fresh container of it, with no network, as
the task image's user, /tests mounted read-only (the only place the tests ever are: no agent reads the
checks it is graded by) and /logs/verifier mounted from the run directory. The agent's processes are
gone; a process it planted cannot run. Bind mounts are not part of a commit, so a repository task
gets a copy of its final workspace and its origin (read-only) mounted where the agent had them.

The outcome comes from `labctl.round.verify.derive_outcome`, the same function `labctl verify` re-runs, so
the grade in result.json can only differ from the re-derived one when a file was changed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from labctl.engine.commands import Docker, label_flags, object_name, run_labels
from labctl.engine.container import EngineError
from labctl.meter.state import MeterState
from labctl.meter.wire_responses import request_turns
from labctl.round.records import BuildFigures, RunMetrics, check_passed
from labctl.round.verify import Reward, derive_outcome, named_checks, read_reward
from labctl.run.parts import (
    ORIGIN,
    WORKSPACE,
    Workspace,
    pushed_commits,
    resource_flags,
    transcript_records,
)
from labctl.run.pathology import command_results, flags, pathology, text_actions
from labctl.spec.lab import Outcome
from labctl.spec.task import OutcomeRules, read_task

DEFAULT_VERIFIER_TIMEOUT_S = 600.0
VERIFY_SCRIPT = 'git config --global --add safe.directory "*" 2>/dev/null; exec bash /tests/test.sh'
"""The workspace and origin belong to the agent's uid and the verifier runs as the task image's user
(root): git refuses such repositories (also in the upload-pack of a local fetch, which ignores
GIT_CONFIG_COUNT) unless the global config says they are safe; the task image has no labctl config."""


VERIFIER_GRACE_S = 30
"""The verifier container's own deadline is the task's verifier timeout plus this: it ends by itself
even when labctl is killed (`timeout` is its first process)."""


def commit_agent(docker: Docker, container: str, labels: dict[str, str]) -> str:
    """`docker commit` of the stopped agent container: its whole filesystem as a throw-away image.
    The image carries the run's labels (cleanup and `labctl down` find it); returns its id."""
    changes: list[str] = []
    for k, v in labels.items():
        changes += ["--change", f"LABEL {k}={v}"]
    done = docker("commit", *changes, container, timeout=900)
    return done.stdout.strip()


def run_verifier(docker: Docker, *, image: str, user: str, workdir: str, task_dir: Path,
                 ws: Workspace | None, run_dir: Path, round_id: str, run_id: str,
                 scratch: Path) -> tuple[Reward | None, str]:
    """Run tests/test.sh in a fresh container of `image` (the committed agent filesystem) as `user`,
    in `workdir`; a repository task (`ws`) also gets a copy of its final workspace and its origin.

    Writes verifier/{reward.json|reward.txt, stdout.txt} under `run_dir`; returns (reward, note)
    where note says what went wrong when there is no reward.
    """
    vdir = run_dir / "verifier"
    vdir.mkdir(parents=True, exist_ok=True)
    vdir.chmod(0o777)  # the task image's user (any uid) writes its reward here
    copy = scratch / "graded-workspace"
    mounts: list[str] = []
    if ws is not None:
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(ws.clone, copy, symlinks=True)
        mounts = ["-v", f"{copy}:{WORKSPACE}", "-v", f"{ws.origin}:{ORIGIN}:ro"]
        workdir = WORKSPACE
    name = object_name(round_id, run_id, "verifier")
    task = read_task(task_dir)
    timeout = float(task.verifier.timeout_sec)
    labels = label_flags(run_labels(round_id, run_id, "verifier"))
    argv = ["run", "--name", name, "--network", "none", "--user", user, *labels, *resource_flags(task),
            *mounts, "-v", f"{(task_dir / 'tests').resolve()}:/tests:ro",
            "-v", f"{vdir.resolve()}:/logs/verifier", "-w", workdir, "-e", f"LABCTL_WORKSPACE={workdir}",
            "--entrypoint", "timeout", image, f"{timeout + VERIFIER_GRACE_S:.0f}",
            "bash", "-c", VERIFY_SCRIPT]
    note = ""
    with open(vdir / "stdout.txt", "w", encoding="utf-8") as log:
        try:
            done = docker(*argv, check=False, timeout=timeout, stdout=log)
            if done.returncode != 0:
                note = f"verifier exited {done.returncode}: {done.stderr.strip()[-300:]}"
                log.write(done.stderr)
        except EngineError:  # the verifier outlived its time-out
            note = f"verifier timed out after {timeout:.0f}s"
        finally:
            docker("rm", "-f", name, check=False)
            shutil.rmtree(copy, ignore_errors=True)
    try:
        reward, _ = read_reward(run_dir)
    except (OSError, ValueError) as e:
        return None, f"unreadable verifier output: {e}"
    return reward, note if reward is None else ""


def checks_summary(reward: Reward | None) -> tuple[int | None, int | None]:
    checks = named_checks(reward)
    if checks is None:
        return None, None
    return sum(1 for v in checks.values() if check_passed(v)), len(checks)


def _check(reward: Reward | None, name: str | None) -> bool | None:
    """A named check as a column: passed or not (`check_passed`: a check written as anything else
    than true or a number ≥ 1 failed); None when the verifier did not write it."""
    checks = named_checks(reward)
    if checks is None or not name or name not in checks:
        return None
    return check_passed(checks[name])


def run_metrics(*, meter_state: MeterState | None, transcript: Path, ws: Workspace | None,
                reward: Reward | None, wall_s: float, needs_model: bool, stopped_by: str | None,
                columns: dict[str, str] | None = None, verifier_s: float | None = None) -> RunMetrics:
    """metrics.json. `tool_calls` is present only for contestants with a model: for oracle and nop it
    would be a fiction, and a 0 would grade them Total failure (`derive_outcome` rule 1). The same goes
    for "pathology" (`labctl.run.pathology`) and its "flags": model contestants only. `columns` is
    `report_columns` of the task: "build" and "screenshot" come from the verifier's checks, the
    build's attempt number from the agent's own commands in the transcript. `wall_s` is the agent's
    phase, `verifier_s` the verifier's (the run's total is result.json's started → ended)."""
    columns = columns or {}
    passed, total = checks_summary(reward)
    m = RunMetrics(wall_time_s=round(wall_s, 3), commits_pushed=None if ws is None else pushed_commits(ws),
                   checks_passed=passed, checks_total=total, stopped_by=stopped_by)
    if verifier_s is not None:
        m.verifier_wall_s = round(verifier_s, 3)
    if (shot := _check(reward, columns.get("screenshot_check"))) is not None:
        m.screenshot = shot
    if (built := _check(reward, columns.get("build_check"))) is not None:
        m.build = BuildFigures(passed=built)
    if not needs_model:
        return m
    recs = transcript_records(transcript)
    if m.build is not None and columns.get("build_command"):
        runs = command_results(recs, columns["build_command"])
        m.build.agent_runs = len(runs)
        m.build.attempt = next((i for i, c in enumerate(runs, 1) if c == 0), None)
    exchanges = [r for r in recs if r.get("kind") == "exchange"]
    requests = [r["request"] for r in exchanges if isinstance(r.get("request"), dict)]
    last_req = requests[-1] if requests else None
    prompt_n = prompt_ms = gen_n = gen_ms = 0.0
    for r in exchanges:
        t = r.get("timings")
        if isinstance(t, dict):
            prompt_n += float(t.get("prompt_n") or 0)
            prompt_ms += float(t.get("prompt_ms") or 0)
            gen_n += float(t.get("predicted_n") or 0)
            gen_ms += float(t.get("predicted_ms") or 0)
    # No status.json (the meter never published): every counter is 0, as a meter that saw nothing
    # would say; the requests fall back to the transcript's exchanges.
    s = meter_state
    m.tool_calls = (s.tool_calls if s else 0) or text_actions(recs)  # API tool calls, else fenced blocks
    m.requests = s.requests if s else len(exchanges)
    m.messages = len(request_turns(last_req) or []) if last_req else 0
    m.prompt_tokens = s.prompt_tokens if s else 0
    m.completion_tokens = s.completion_tokens if s else 0
    m.cached_tokens = s.cached_tokens if s else 0
    m.total_tokens = s.total_tokens if s else 0
    m.prompt_tokens_per_s = round(prompt_n * 1000 / prompt_ms, 2) if prompt_ms else None
    m.gen_tokens_per_s = round(gen_n * 1000 / gen_ms, 2) if gen_ms else None
    m.interventions = dict(s.interventions) if s else {}
    m.nudges = s.nudges if s else 0
    m.upstream_errors = s.errors if s else 0
    m.upstream_errored = s.errored if s else False
    m.pathology = pathology(recs)
    m.flags = flags(m.pathology)
    return m


def outcome(reward: Reward | None, metrics: RunMetrics, rules: OutcomeRules | None) -> Outcome | None:
    """The grade; a reward the rules cannot read is no grade (None) rather than a crash mid-round."""
    try:
        return derive_outcome(reward, metrics, rules)
    except ValueError:
        return None

