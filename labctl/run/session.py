"""One run's containers, networks and scratch, created step by step and always removed: the model
server (local) or an egress network (cloud), the meter, the agent container, then collection and the
verifier. `labctl.run.runner` drives a session per run; see its docstring for the network picture.

Two execution models, chosen by the task:
* a plain Harbor task (no `[labctl.repository]`): the agent works in the task image's WORKDIR, as the
  task image's user (root unless its Dockerfile says USER), on the files the image holds — what Harbor
  and Terminal-Bench do, so their tasks run unchanged;
* a repository task: a fresh clone of the base commit at /workspace, branch `run-NN`, its own origin,
  as the agent image's non-root user.
Either way the verifier grades the agent's whole filesystem (`labctl.run.verifier`): a plain task's
live, in the agent's own container (unless `verifier: {container: fresh}`); a repository task's fresh.

Containers that end on their own: every container's first process carries its own deadline (the
longest the run may legitimately need it), so a labctl killed with -9 leaves nothing running for
longer than that: the agent's `sleep` (which also covers a live verifier), the meter's and the
server's `timeout`, a fresh verifier's `timeout` (`labctl.run.verifier`). Removal of the stopped
containers waits for the next `labctl run` or `labctl down`, which find them by label.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from labctl.agents import Invocation, adapter
from labctl.engine.fence import Fence, Netfilter
from labctl.engine.names import ROLE_LABEL, object_name, run_labels
from labctl.engine.spec import ContainerSpec, Limits, Mount
from labctl.engine.timings import span, timed
from labctl.lock.fetch import model_files
from labctl.lock.hub import HubError
from labctl.meter.control import CONTROL_DIR
from labctl.meter.state import MeterConfig, read_status
from labctl.plan.llamaserver import classify_failure, server_argv
from labctl.round import tokens
from labctl.round.layout import RunResult, run_dir
from labctl.round.operator import clear_live, write_live
from labctl.round.records import write_metrics
from labctl.round.seal import run_label
from labctl.run.context import RoundContext, signals_deferred
from labctl.run.drive import drive
from labctl.run.egress import Egress, policy_for
from labctl.run.ending import run_ending
from labctl.run.grade import outcome, run_metrics
from labctl.run.parts import (
    ORIGIN,
    WORKSPACE,
    RunError,
    Workspace,
    bundle,
    make_workspace,
    redact_server_log,
    task_limits,
    work_root,
)
from labctl.run.runplan import RunPlan, cost_fields, plan_run
from labctl.run.served import first_request_overflow, read_props, served_mismatch
from labctl.run.verifier import COMMIT_TIMEOUT_S, VERIFIER_GRACE_S, run_tests, stop_sessions
from labctl.spec.lab import CloudContestant, LocalContestant

PORT = 8080
INSTRUCTION = "/labctl/instruction.md"
MODEL_PATH = "/models/model.gguf"
PROVIDER_URLS = {"anthropic": "https://api.anthropic.com", "openai": "https://api.openai.com"}
SERVER_HEALTH_TIMEOUT_S = float(os.environ.get("LABCTL_SERVER_TIMEOUT", "600"))
KILL_GRACE_S = 0  # the agent container's PID 1 is `sleep`: it ignores SIGTERM, a grace only waits
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

    def __init__(self, ctx: RoundContext, run: RunPlan | str, say: Say = lambda s: None,
                 gpus: list[int] | None = None) -> None:
        plan = run if isinstance(run, RunPlan) else plan_run(ctx, run)  # tests pass a run id
        self.plan = plan
        self.ctx, self.run_id, self.say = plan.ctx, plan.run_id, say
        ctx = plan.ctx
        run_id = plan.run_id
        self.gpus = gpus
        """The GPU indices this run's model server gets (`labctl.run.gpualloc`); None: every GPU the
        profile has (one run at a time)."""
        self.docker = ctx.docker
        rid = ctx.sealed.round
        self.labels = run_labels(rid, run_id)
        self.dir = run_dir(ctx.round_dir, run_id)
        self.work = work_root() / rid / run_id
        self.contestant = plan.contestant
        self.runtime = plan.runtime
        self.adapter = adapter(self.runtime)
        self.ws: Workspace | None = None
        self.names = {role: object_name(rid, run_id, role)
                      for role in ("agent", "meter", "server", "net-agent", "net-model", "net-egress")}
        self.stopped_by: str | None = None
        self.server_counters: tokens.ServerCounters | None = None  # read by `collect`
        self.agent_wall_s = 0.0
        self.agent_exit: int | None = None
        self.task = plan.task
        self.repository = plan.repository
        self.live = not self.repository and ctx.loaded.lab.verifier.container == "live"
        self.live_s = float(self.task.verifier.timeout_sec) + VERIFIER_GRACE_S if self.live else 0.0
        self.setup_s = SETUP_TIMEOUT_S if self.task.labctl.repository.setup else 0
        self.wall_s = float(ctx.loaded.lab.budgets.wall_time)
        self.user, self.workdir = plan.user, plan.workdir
        self.fence = Fence(Netfilter(self.docker, ctx.images.get("labctl"), self.labels), rid, run_id)
        self.egress = Egress(self.docker, policy_for(ctx.loaded.lab, self.task), rid, run_id, self.fence,
                             images=ctx.images, scratch=self.work)  # the way out: labctl.run.egress

    def _lifetime(self, *before_agent: float) -> str:
        """A container's own deadline in seconds from its start: the phases it must outlive besides the
        agent (`before_agent`; a live verifier: `live_s`), the agent's wall time and a grace."""
        return f"{sum(before_agent) + self.wall_s + DEADLINE_GRACE_S:.0f}"

    # --- setup -----------------------------------------------------------------------------------

    @timed("network")
    def _net(self, role: str, internal: bool) -> str:
        name = self.names[f"net-{role}"]
        made = self.docker.create_network(name, {**self.labels, ROLE_LABEL: f"net-{role}"}, internal=internal)
        if internal:  # before any container joins: nothing on it may reach the host (labctl.engine.fence)
            self.fence.add(made, created=True)
        return name

    @timed("setup")
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
            self.ws = make_workspace(self.ctx.loaded.task_dir, self.work, run_label(self.run_id), self.task)
        agent_net = self._net("agent", internal=True)
        if self.adapter.needs_model:
            upstream, extra_nets, meter, pass_env = self._start_model()
            self._start_meter(agent_net, upstream, extra_nets, meter, pass_env)
        # The gateway serves the verifier too: its deadline covers the verifier's time and, for a
        # fresh verifier, the commit before it (a kill -9 safety net: generous, never in the way).
        self.egress.setup(agent_net, self._lifetime(self.setup_s, self.task.verifier.timeout_sec,
                                                    VERIFIER_GRACE_S, 0 if self.live else COMMIT_TIMEOUT_S))
        self._start_agent(agent_net)

    @timed("model server")
    def _start_model(self) -> tuple[str, list[str], dict[str, object], tuple[str, ...]]:
        """Local: llama-server on the model network, healthy. Cloud: an egress network for the meter.
        Returns (upstream URL, meter's extra networks, its config fields, variables it copies from here)."""
        c = self.contestant
        if isinstance(c, CloudContestant):
            egress = self._net("egress", internal=False)
            meter: dict[str, object] = {"api_key_env": c.api_key_env, "upstream_model": c.model,
                                        "max_output": c.max_output, **cost_fields(self.ctx.loaded.lab, c)}
            if not os.environ.get(c.api_key_env):
                raise RunError(f"the API key variable {c.api_key_env} is not set on this host")
            # By name only: docker copies it from here, so the key is in no command line (only the meter's).
            return c.base_url or PROVIDER_URLS[c.provider], [egress], meter, (c.api_key_env,)
        assert isinstance(c, LocalContestant)
        row = self.plan.row  # the round's plan, computed once when the round was opened
        assert row is not None
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
        self.docker.create(ContainerSpec(
            self.ctx.images["llama-server"], (life, "llama-server", *argv), name=name, entrypoint="timeout",
            network=model_net, aliases=("server",), labels={**self.labels, "labctl.role": "server"},
            devices=tuple(gpu), mounts=(Mount(files[0].resolve(), MODEL_PATH, read_only=True),)))
        self.docker.start(name)
        self.say(f"{self.run_id}: llama-server starting")  # not its flags: they would tell the model
        self._wait_server(name)
        if problem := served_mismatch(row, read_props(self.docker, name, PORT)):  # the planned context
            raise RunError(problem)
        return f"http://server:{PORT}", [model_net], {"max_output": row.server.max_output}, ()

    @timed("server health")
    def _wait_server(self, name: str) -> None:
        if self.docker.wait_ready(name, ["curl", "-fsS", "-m", "2", f"http://127.0.0.1:{PORT}/health"],
                                  SERVER_HEALTH_TIMEOUT_S):
            return
        if not self.docker.running(name):
            logs = self.docker("logs", name, check=False)
            kind, line = classify_failure(logs.stdout + logs.stderr)
            raise RunError(f"llama-server failed to start ({kind}): {line}")
        raise RunError(f"llama-server failed to start (timeout): not healthy after "
                       f"{SERVER_HEALTH_TIMEOUT_S:.0f}s")

    @timed("meter")
    def _start_meter(self, agent_net: str, upstream: str, extra_nets: list[str], meter: dict[str, object],
                     pass_env: tuple[str, ...]) -> None:
        mdir = self.work / "meter"
        mdir.mkdir()
        mdir.chmod(0o777)  # the meter runs as the labctl image's own user
        (mdir / CONTROL_DIR).mkdir()  # the operator's channel, never a route: labctl/meter/control.py
        (mdir / CONTROL_DIR).chmod(0o777)
        lab = self.ctx.loaded.lab
        rules = lab.interventions if lab.interventions is not None and lab.interventions.rules else None
        held = meter.pop("max_output")  # a limit of 0 or none: requests as they are
        steps = lab.budgets.steps if not self.adapter.limits_steps else None  # no turn limit of its own
        cfg = MeterConfig.model_validate({
            "upstream": upstream, "dialect": self._dialect(), "host": "0.0.0.0", "port": PORT,
            "transcript": "/meter/transcript.jsonl", "alias": self.run_id, **meter,
            "max_output": int(held) if isinstance(held, int | float) and held > 0 else None,
            "token_budget": int(lab.budgets.tokens) if lab.budgets.tokens else None,
            "request_budget": steps or None, **({"interventions": rules} if rules else {}),
            "control_dir": f"/meter/{CONTROL_DIR}" if lab.interventions.operator else None})
        if rules:
            (mdir / "interventions.json").write_text(rules.model_dump_json(exclude_none=True))
        name = self.names["meter"]
        # `timeout` passes docker stop's SIGTERM on to the meter, which then flushes its files.
        self.docker.create(ContainerSpec(
            self.ctx.images["labctl"],
            (self._lifetime(METER_START_S, self.setup_s), "labctl", "meter",
             *cfg.to_argv("/meter/interventions.json" if rules else None)),
            name=name, entrypoint="timeout", network=agent_net, aliases=("meter",),
            more_networks=tuple(extra_nets), labels={**self.labels, ROLE_LABEL: "meter"}, pass_env=pass_env,
            limits=Limits(cpus=min(METER_CPUS, float(os.cpu_count() or 1)), memory=METER_MEMORY),
            mounts=(Mount(mdir, "/meter"),)))
        self.docker.start(name)
        probe = (f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{PORT}/_labctl/status', "
                 "timeout=2)")
        with span("meter wait", self.run_id):
            if not self.docker.wait_ready(name, ["python3", "-c", probe], METER_START_S):
                logs = self.docker("logs", name, check=False)
                raise RunError(f"meter did not start: {(logs.stderr or logs.stdout).strip()[-300:]}")
        write_live(self.dir, mdir)  # `labctl watch`, `nudge` and `stop` find the live files by it

    def _dialect(self) -> str:
        return self.plan.dialect

    @timed("agent start")
    def _start_agent(self, agent_net: str) -> None:
        image = self.ctx.images[f"agent-{self.runtime}"]
        task = self.ctx.loaded.task_dir
        mounts = [Mount((task / "instruction.md").resolve(), INSTRUCTION, read_only=True)]
        if self.ws is not None:  # the agent image's user (`RunPlan.user`) works in the clone
            mounts += [Mount(self.ws.clone, WORKSPACE), Mount(self.ws.origin, ORIGIN)]
        if self.runtime == "oracle":  # the solution is the oracle's alone
            mounts += [Mount((task / "solution").resolve(), "/solution", read_only=True)]
        name = self.names["agent"]
        # The first process is a `sleep` with the run's own deadline, not `sleep infinity`: a labctl
        # killed with -9 leaves no agent running past it. The hostname is the run id, so nothing the
        # agent reads (its prompt, `hostname`) names the machine.
        self.docker.create(ContainerSpec(
            image, (self._lifetime(self.setup_s, self.live_s),), name=name, entrypoint="sleep",
            hostname=self.run_id, user=self.user, labels={**self.labels, "labctl.role": "agent"},
            limits=task_limits(self.task), mounts=tuple(mounts)).with_access(self.egress.task_access()))
        self.egress.start_task(name)
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

    @timed("agent")
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
        argv = self.docker.exec_argv(self.names["agent"], cmd.argv, user=self.user, workdir=cmd.workdir,
                                     env=cmd.env)
        status = self.work / "meter" / "status.json" if self.adapter.needs_model else None
        done = drive(argv, self.dir / "agent.log", wall, status, self._stop_agent)
        self.stopped_by, self.agent_wall_s, self.agent_exit = done.stopped_by, done.wall_s, done.exit_code

    def _stop_agent(self, reason: str | None) -> None:
        self.say(f"{self.run_id}: stopping the agent ({reason or 'interrupted'})")
        if self.live:  # the runtime's own session only: what the solution daemonized stays up
            stop_sessions(self.docker, self.names["agent"])
        else:
            self.docker("stop", "-t", str(KILL_GRACE_S), self.names["agent"], check=False)

    # --- afterwards ------------------------------------------------------------------------------

    @timed("collect")
    def collect(self) -> None:
        """Logs, trajectory, transcript and the pushed branch into the run directory."""
        d = self.docker
        if not self.live:  # graded live, the container (and what the solution started) keeps running
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
            if isinstance(self.contestant, LocalContestant):  # the meter is gone: nothing new comes
                self.server_counters = tokens.server_counters(d, self.names["server"], PORT)
                logs = d("logs", self.names["server"], check=False)
                (self.dir / "server.log").write_text(redact_server_log(logs.stdout + logs.stderr))
        if self.ws is not None:
            bundle(self.ws, self.dir / "workspace.bundle")

    @timed("grading")
    def grade(self, result: RunResult) -> RunResult:
        ctx = self.ctx
        # The verifier runs as the task image's user (Harbor runs tests/test.sh in the task's own
        # container, whose user that is), also for repository tasks, whose agent was another user.
        user = self.plan.verifier_user
        t0 = time.monotonic()
        reward, note = run_tests(self.docker, live=self.live, agent=self.names["agent"], user=user,
                                 workdir=self.workdir, task_dir=ctx.loaded.task_dir, ws=self.ws,
                                 run_dir=self.dir, labels=self.labels, scratch=self.work,
                                 access=self.egress.verifier_access(), task=self.task)
        verifier_s = time.monotonic() - t0
        state = read_status(self.dir / "meter-status.json") if self.adapter.needs_model else None
        metrics = run_metrics(meter_state=state, transcript=self.dir / "transcript.jsonl", ws=self.ws,
                              reward=reward, wall_s=self.agent_wall_s, needs_model=self.adapter.needs_model,
                              stopped_by=self.stopped_by, columns=self.task.report_columns(),
                              verifier_s=verifier_s, thresholds=ctx.loaded.lab.pathology)
        tokens.reconcile(metrics, self.server_counters, state)  # made whole with the server's counters
        metrics.ended = run_ending(self.adapter, self.dir, stopped_by=self.stopped_by,
                                   exit_code=self.agent_exit, meter_state=state)
        write_metrics(self.dir / "metrics.json", metrics)
        result.outcome = outcome(reward, metrics, ctx.sealed.outcome_rules)
        if state and state.errored:
            result.status, result.reason = "errored", f"upstream error: {state.last_error}"
        elif overflow := first_request_overflow(self.dir):
            result.status, result.reason = "errored", overflow
        elif reward is None:
            result.status, result.reason = "errored", note or "the verifier wrote no reward"
        elif self.stopped_by:
            by = "the operator" if self.stopped_by == "operator" else f"{self.stopped_by} budget"
            result.status, result.reason = "killed", f"stopped by {by}"
        else:
            result.status = "done"
        return result

    @timed("cleanup")
    def cleanup(self) -> None:
        """Remove every container, network and volume of this run, its scratch and its firewall rules."""
        with signals_deferred():
            self.egress.collect(self.dir, self.say)  # what went out, also for an errored run
            self.docker.remove_labelled(self.labels)
            clear_live(self.dir)
            shutil.rmtree(self.work, ignore_errors=True)
            self.fence.clear()

