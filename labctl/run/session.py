"""One run's containers, networks and scratch, created step by step and always removed: the model
server (local) or an egress network (cloud), the meter, the agent container, then collection and the
verifier. `labctl.run.runner` drives a session per run; see its docstring for the network picture.

Two execution models, chosen by the task:
* a plain Harbor task (no `[labctl.repository]`): the agent works in the task image's WORKDIR, as the
  task image's user (root unless its Dockerfile says USER), on the files the image holds — what Harbor
  and Terminal-Bench do, so their tasks run unchanged;
* a repository task: a fresh clone of the base commit at /workspace, branch `run-NN`, its own origin,
  as the agent image's non-root user.
Either way the verifier grades the agent's whole filesystem (`labctl.run.grade`).

Containers that end on their own: every container's first process carries its own deadline (the
longest the run may legitimately need it), so a labctl killed with -9 leaves nothing running for
longer than that: the agent's `sleep`, the meter's and the server's `timeout`, the verifier's
`timeout` (`labctl.run.grade`). Removal of the stopped containers waits for the next `labctl run` or
`labctl down`, which find them by label.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from labctl.agents import Invocation, adapter
from labctl.engine.commands import exec_env_flags, label_flags, object_name, run_labels
from labctl.engine.fence import Fence, Netfilter
from labctl.lock.fetch import model_files
from labctl.lock.hub import HubError
from labctl.meter.state import read_status
from labctl.plan.llamaserver import classify_failure, server_argv
from labctl.plan.planner import plan_lab
from labctl.round.layout import RunResult, run_dir
from labctl.round.records import write_metrics
from labctl.round.seal import run_label
from labctl.run.context import RoundContext, signals_deferred
from labctl.run.grade import commit_agent, outcome, run_metrics, run_verifier
from labctl.run.parts import (
    ORIGIN,
    WORKSPACE,
    RunError,
    Workspace,
    bundle,
    make_workspace,
    redact_server_log,
    resource_flags,
    work_root,
)
from labctl.spec.lab import CloudContestant, LocalContestant
from labctl.spec.task import read_task

PORT = 8080
INSTRUCTION = "/labctl/instruction.md"
MODEL_PATH = "/models/model.gguf"
PROVIDER_URLS = {"anthropic": "https://api.anthropic.com", "openai": "https://api.openai.com"}
SERVER_HEALTH_TIMEOUT_S = float(os.environ.get("LABCTL_SERVER_TIMEOUT", "600"))
KILL_GRACE_S = 3
SETUP_TIMEOUT_S = 600
"""The task's workspace setup command (`[labctl.repository] setup`) must finish within this."""
METER_START_S = 60
"""The meter must answer within this after its start."""
DEADLINE_GRACE_S = 30
"""Added to every container's own deadline: the seconds labctl itself needs between the steps."""
METER_CPUS = 1.0
METER_MEMORY = "512m"
"""The meter's limits: a proxy that streams and appends a transcript needs little, and a runaway one
must not starve the model server or the agent (CPUs capped at the host's count)."""
Say = Callable[[str], None]


class RunSession:
    """One run's containers and scratch, created step by step and always removed by `cleanup`.

    Tests drive the steps one by one (e.g. to probe the agent container's network)."""

    def __init__(self, ctx: RoundContext, run_id: str, say: Say = lambda s: None,
                 gpus: list[int] | None = None) -> None:
        self.ctx, self.run_id, self.say = ctx, run_id, say
        self.gpus = gpus
        """The GPU indices this run's model server gets (`labctl.run.gpualloc`); None: every GPU the
        profile has (one run at a time)."""
        self.docker = ctx.docker
        rid = ctx.sealed.round
        self.labels = run_labels(rid, run_id)
        self.dir = run_dir(ctx.round_dir, run_id)
        self.work = work_root() / rid / run_id
        cid = ctx.mapping[run_id]
        self.contestant = next(c for c in ctx.loaded.lab.contestants if c.id == cid)
        kind = self.contestant.kind
        agent = ctx.loaded.lab.agent_for(self.contestant)
        self.runtime = kind if kind in ("oracle", "nop") else (agent.runtime if agent else "")
        self.adapter = adapter(self.runtime)
        self.ws: Workspace | None = None
        self.names = {role: object_name(rid, run_id, role)
                      for role in ("agent", "meter", "server", "net-agent", "net-model", "net-egress")}
        self.stopped_by: str | None = None
        self.agent_wall_s = 0.0
        self.task = read_task(ctx.loaded.task_dir)
        self.repository = self.task.repository_dir is not None
        self.setup_s = SETUP_TIMEOUT_S if self.task.labctl.repository.setup else 0
        self.wall_s = float(ctx.loaded.lab.budgets.wall_time)
        if self.repository:  # the agent image's own user, in the clone
            self.user, self.workdir = "", WORKSPACE
        else:  # Harbor's model: the task image's user and WORKDIR
            task_image = ctx.images[_task_image(ctx.images)]
            self.user = self.docker.image_user(task_image) or "0"
            self.workdir = self.docker.image_workdir(task_image)
        self.fence = Fence(Netfilter(self.docker, ctx.images.get("labctl"), self.labels), rid, run_id)

    def _lifetime(self, *before_agent: float) -> str:
        """A container's own deadline in seconds from its start: the phases it must outlive before the
        agent starts (`before_agent`), the agent's wall time and a grace for labctl's own steps."""
        return f"{sum(before_agent) + self.wall_s + DEADLINE_GRACE_S:.0f}"

    # --- setup -----------------------------------------------------------------------------------

    def _net(self, role: str, internal: bool) -> str:
        name = self.names[f"net-{role}"]
        made = self.docker("network", "create", *(["--internal"] if internal else []),
                           *label_flags({**self.labels, "labctl.role": f"net-{role}"}), name)
        if internal:  # before any container joins: nothing on it may reach the host (labctl.engine.fence)
            self.fence.add(made.stdout.strip())
        return name

    def setup(self) -> None:
        """Scratch, workspace, networks, model server, meter and agent container, all running."""
        self.docker.remove_labelled(self.labels)  # leftovers of an interrupted attempt
        self.fence.clear()
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.iterdir():  # files of an interrupted attempt: this one starts from scratch
            if old.name == "result.json":
                continue
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
        if self.repository:
            self.ws = make_workspace(self.ctx.loaded.task_dir, self.work, run_label(self.run_id))
        agent_net = self._net("agent", internal=True)
        if self.adapter.needs_model:
            upstream, extra_nets, extra_args, env_flags = self._start_model()
            self._start_meter(agent_net, upstream, extra_nets, extra_args, env_flags)
        self._start_agent(agent_net)

    def _start_model(self) -> tuple[str, list[str], list[str], list[str]]:
        """Local: llama-server on the model network, healthy. Cloud: an egress network for the meter.
        Returns (upstream URL, meter's extra networks, meter args, meter env flags)."""
        c = self.contestant
        if isinstance(c, CloudContestant):
            egress = self._net("egress", internal=False)
            args = ["--api-key-env", c.api_key_env, "--upstream-model", c.model]
            if not os.environ.get(c.api_key_env):
                raise RunError(f"the API key variable {c.api_key_env} is not set on this host")
            # `-e NAME` without a value: docker copies it from this process's environment, so the
            # key is in no command line; only the meter container ever holds it.
            return c.base_url or PROVIDER_URLS[c.provider], [egress], args, ["-e", c.api_key_env]
        assert isinstance(c, LocalContestant)
        row = next(r for r in plan_lab(self.ctx.loaded, self.ctx.lock).contestants if r.id == c.id)
        if row.status != "planned" or row.server is None:
            raise RunError(f"{self.run_id}: the model cannot be served on profile "
                           f"{self.ctx.loaded.profile.name}: {row.error or row.status}")
        try:
            files = model_files(self.ctx.lock.models[c.id], self.ctx.store, contestant=run_label(self.run_id),
                                base_dir=self.ctx.loaded.base_dir)
        except HubError as e:
            raise RunError(str(e)) from None
        if len(files) != 1:
            raise RunError(f"{self.run_id}: split GGUFs ({len(files)} files) are not served yet")
        model_net = self._net("model", internal=True)
        argv = server_argv("llama-server", MODEL_PATH, row.server, "0.0.0.0", PORT, alias=self.run_id)[1:]
        name = self.names["server"]
        from labctl.run.gpualloc import device_flags
        profile = self.ctx.loaded.profile
        gpu = (device_flags(self.gpus) if self.gpus is not None and profile.is_gpu
               else self.docker.gpu_run_args(profile))
        life = self._lifetime(SERVER_HEALTH_TIMEOUT_S, METER_START_S, self.setup_s)
        self.docker("create", "--name", name, "--network", model_net, "--network-alias", "server",
                    *label_flags({**self.labels, "labctl.role": "server"}), *gpu,
                    "-v", f"{files[0].resolve()}:{MODEL_PATH}:ro", "--entrypoint", "timeout",
                    self.ctx.images["llama-server"], life, "llama-server", *argv)
        self.docker("start", name)
        self.say(f"{self.run_id}: llama-server starting ({' '.join(row.llama_args)})")
        self._wait_server(name)
        return f"http://server:{PORT}", [model_net], [], []

    def _wait_server(self, name: str) -> None:
        deadline = time.monotonic() + SERVER_HEALTH_TIMEOUT_S
        while True:
            if not self.docker.running(name):
                logs = self.docker("logs", name, check=False)
                log = logs.stdout + logs.stderr
                kind, line = classify_failure(log)
                raise RunError(f"llama-server failed to start ({kind}): {line}")
            if self.docker.ok("exec", name, "curl", "-fsS", "-m", "2", f"http://127.0.0.1:{PORT}/health"):
                return
            if time.monotonic() > deadline:
                raise RunError(f"llama-server failed to start (timeout): not healthy after "
                               f"{SERVER_HEALTH_TIMEOUT_S:.0f}s")
            time.sleep(0.5)

    def _start_meter(self, agent_net: str, upstream: str, extra_nets: list[str], extra_args: list[str],
                     env_flags: list[str]) -> None:
        mdir = self.work / "meter"
        mdir.mkdir()
        mdir.chmod(0o777)  # the meter runs as the labctl image's own user
        lab = self.ctx.loaded.lab
        args = ["meter", "--upstream", upstream, "--dialect", self._dialect(), "--listen", f"0.0.0.0:{PORT}",
                "--transcript", "/meter/transcript.jsonl", "--alias", self.run_id, *extra_args]
        if lab.budgets.tokens:
            args += ["--token-budget", str(int(lab.budgets.tokens))]
        if lab.budgets.steps and not self.adapter.limits_steps:  # no turn limit of its own: count calls
            args += ["--request-budget", str(lab.budgets.steps)]
        if lab.interventions is not None and lab.interventions.rules:
            (mdir / "interventions.json").write_text(lab.interventions.model_dump_json(exclude_none=True))
            args += ["--interventions", "/meter/interventions.json"]
        name = self.names["meter"]
        # `timeout` passes docker stop's SIGTERM on to the meter, which then flushes its files.
        self.docker("create", "--name", name, "--network", agent_net, "--network-alias", "meter",
                    *label_flags({**self.labels, "labctl.role": "meter"}), *env_flags,
                    "--cpus", f"{min(METER_CPUS, float(os.cpu_count() or 1)):g}", "--memory", METER_MEMORY,
                    "-v", f"{mdir}:/meter", "--entrypoint", "timeout", self.ctx.images["labctl"],
                    self._lifetime(METER_START_S, self.setup_s), "labctl", *args)
        for net in extra_nets:
            self.docker("network", "connect", net, name)
        self.docker("start", name)
        probe = (f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{PORT}/_labctl/status', "
                 "timeout=2)")
        deadline = time.monotonic() + 60
        while not self.docker.ok("exec", name, "python3", "-c", probe):
            if not self.docker.running(name) or time.monotonic() > deadline:
                logs = self.docker("logs", name, check=False)
                raise RunError(f"meter did not start: {(logs.stderr or logs.stdout).strip()[-300:]}")
            time.sleep(0.3)

    def _dialect(self) -> str:
        return self.contestant.provider if isinstance(self.contestant, CloudContestant) else "openai"

    def _start_agent(self, agent_net: str) -> None:
        image = self.ctx.images[f"agent-{self.runtime}"]
        task = self.ctx.loaded.task_dir
        mounts = ["-v", f"{(task / 'instruction.md').resolve()}:{INSTRUCTION}:ro"]
        if self.ws is not None:
            self.user = self.docker.image_user(image) or "agent"
            mounts += ["-v", f"{self.ws.clone}:{WORKSPACE}", "-v", f"{self.ws.origin}:{ORIGIN}"]
        if self.runtime == "oracle":  # the solution is the oracle's alone
            mounts += ["-v", f"{(task / 'solution').resolve()}:/solution:ro"]
        name = self.names["agent"]
        # The first process is a `sleep` with the run's own deadline, not `sleep infinity`: a labctl
        # killed with -9 leaves no agent running past it. The hostname is the run id, so nothing the
        # agent reads (its prompt, `hostname`) names the machine.
        self.docker("create", "--name", name, "--hostname", self.run_id, "--network", agent_net,
                    "--user", self.user, *label_flags({**self.labels, "labctl.role": "agent"}), *mounts,
                    *resource_flags(self.task), "--entrypoint", "sleep", image, self._lifetime(self.setup_s))
        self.docker("start", name)
        if self.ws is None:
            # The agent image's log directories belong to its own user; the task's user writes them.
            if self.user not in ("0", "root", "0:0"):
                self.docker("exec", "-u", "0", name, "chown", "-R", self.user, "/logs/agent",
                            "/logs/artifacts")
            return
        # The clone was made by the host's user; the agent must own it to commit and push.
        self.docker("exec", "-u", "0", name, "chown", "-R", f"{self.user}:", WORKSPACE, ORIGIN)
        if setup := self.task.labctl.repository.setup:
            done = self.docker("exec", "-u", self.user, "-w", WORKSPACE, name, "sh", "-c", setup,
                               check=False, timeout=SETUP_TIMEOUT_S)
            if done.returncode != 0:
                raise RunError(f"the task's workspace setup failed (exit {done.returncode}): "
                               f"{(done.stderr or done.stdout).strip()[-300:]}")

    # --- the agent -------------------------------------------------------------------------------

    def run_agent(self) -> None:
        """Run the adapter's command until it exits, the wall-time deadline, or the meter's stop."""
        lab = self.ctx.loaded.lab
        wall = self.wall_s
        deadline_at = datetime.now(UTC) + timedelta(seconds=wall)
        cmd = self.adapter.command(Invocation(
            instruction_file=INSTRUCTION,
            model_base_url=f"http://meter:{PORT}" if self.adapter.needs_model else None,
            model_name=self.run_id if self.adapter.needs_model else None,
            api="anthropic" if self._dialect() == "anthropic" else "openai",
            step_limit=lab.budgets.steps, deadline=deadline_at, workdir=self.workdir))
        argv = [*self.docker.cli, "exec", "-u", self.user, "-w", cmd.workdir, *exec_env_flags(cmd.env),
                self.names["agent"], *cmd.argv]
        t0 = time.monotonic()
        deadline = t0 + wall
        status = self.work / "meter" / "status.json"
        with open(self.dir / "agent.log", "wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                while proc.poll() is None:
                    if time.monotonic() >= deadline:
                        self.stopped_by = "wall_time"
                        break
                    state = read_status(status) if self.adapter.needs_model else None
                    if state and state.stopped:
                        self.stopped_by = state.stopped_reason or "meter"
                        break
                    if state and state.errored:
                        # The run is errored whatever follows (`--retry-errored` runs it again): don't let the
                        # agent's retries burn the wall-time budget against a failing upstream.
                        self.stopped_by = "upstream_error"
                        break
                    time.sleep(0.25)
            finally:
                if proc.poll() is None:
                    self.say(f"{self.run_id}: stopping the agent ({self.stopped_by or 'interrupted'})")
                    self.docker("stop", "-t", str(KILL_GRACE_S), self.names["agent"], check=False)
                    try:
                        proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
        self.agent_wall_s = time.monotonic() - t0
        self.agent_exit = proc.returncode
        if self.stopped_by is None and self.adapter.needs_model:
            # The agent may exit on the meter's refusal before the next poll saw the stop: a budget
            # stopped it all the same.
            state = read_status(status)
            if state and state.stopped and state.stopped_reason in ("token_budget", "request_budget"):
                self.stopped_by = state.stopped_reason

    # --- afterwards ------------------------------------------------------------------------------

    def collect(self) -> None:
        """Logs, trajectory, transcript and the pushed branch into the run directory."""
        d = self.docker
        d("stop", "-t", str(KILL_GRACE_S), self.names["agent"], check=False)
        art = self.dir / "artifacts" / "agent"
        art.mkdir(parents=True, exist_ok=True)
        d("cp", f"{self.names['agent']}:/logs/agent/.", str(art), check=False)
        if not any(art.iterdir()):
            shutil.rmtree(self.dir / "artifacts")
        if self.adapter.needs_model:
            d("stop", "-t", "10", self.names["meter"], check=False)  # flushes transcript and status
            for f in ("transcript.jsonl", "status.json"):
                src = self.work / "meter" / f
                if src.is_file():
                    shutil.copyfile(src, self.dir / ("meter-status.json" if f == "status.json" else f))
            if (blobs := self.work / "meter" / "transcript.blobs").is_dir():  # large request bodies
                shutil.copytree(blobs, self.dir / "transcript.blobs", dirs_exist_ok=True)
            if isinstance(self.contestant, LocalContestant):
                logs = d("logs", self.names["server"], check=False)
                (self.dir / "server.log").write_text(redact_server_log(logs.stdout + logs.stderr))
        if self.ws is not None:
            bundle(self.ws, self.dir / "workspace.bundle")

    def grade(self, result: RunResult) -> RunResult:
        ctx = self.ctx
        # The verifier runs as the task image's user (Harbor runs tests/test.sh in the task's own
        # container, whose user that is), also for repository tasks, whose agent was another user.
        task_image = ctx.images[_task_image(ctx.images)]
        user = self.docker.image_user(task_image) or "0"
        image = commit_agent(self.docker, self.names["agent"], {**self.labels, "labctl.role": "graded"})
        t0 = time.monotonic()
        try:
            reward, note = run_verifier(self.docker, image=image, user=user, workdir=self.workdir,
                                        task_dir=ctx.loaded.task_dir, ws=self.ws, run_dir=self.dir,
                                        round_id=ctx.sealed.round, run_id=self.run_id, scratch=self.work)
        finally:
            self.docker("image", "rm", "-f", image, check=False)
        verifier_s = time.monotonic() - t0
        state = read_status(self.dir / "meter-status.json") if self.adapter.needs_model else None
        metrics = run_metrics(meter_state=state, transcript=self.dir / "transcript.jsonl", ws=self.ws,
                              reward=reward, wall_s=self.agent_wall_s, needs_model=self.adapter.needs_model,
                              stopped_by=self.stopped_by, columns=self.task.report_columns(),
                              verifier_s=verifier_s)
        write_metrics(self.dir / "metrics.json", metrics)
        result.outcome = outcome(reward, metrics, ctx.sealed.outcome_rules)
        if state and state.errored:
            result.status, result.reason = "errored", f"upstream error: {state.last_error}"
        elif reward is None:
            result.status, result.reason = "errored", note or "the verifier wrote no reward"
        elif self.stopped_by:
            result.status, result.reason = "killed", f"stopped by {self.stopped_by} budget"
        else:
            result.status = "done"
        return result

    def cleanup(self) -> None:
        """Remove every container, network and volume of this run, its scratch and its firewall rules."""
        with signals_deferred():
            self.docker.remove_labelled(self.labels)
            shutil.rmtree(self.work, ignore_errors=True)
            self.fence.clear()


def _task_image(images: dict[str, str]) -> str:
    return next(n for n in images if n.startswith("task-"))
