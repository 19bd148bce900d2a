"""Run a task's tests/test.sh: in the agent's own live container (Harbor's way, the default), or in a
fresh container of the committed agent filesystem (`verifier: {container: fresh}`, and repository
tasks).

Live (`run_live_verifier`): once the agent's session has ended, what the solution started (a server
it daemonized, nginx) is still up, and the tests probe it as Harbor's do. The agent runtime's own
process tree was stopped (`STOP_SESSIONS`, only when it had to be stopped: an agent that exited left
behind what Harbor leaves behind), the container keeps running (its `sleep` covers the verifier:
`labctl.run.session`), /tests is copied in (it never exists while the agent runs: no agent reads the
checks it is graded by; anything the agent put at /tests or /logs/verifier is removed first), test.sh
runs via `docker exec` as the task image's user (or `[verifier] user`) with the container's own
network — the run's network policy — and `[verifier] env`; /logs/verifier is copied out afterwards
(not a bind mount: the agent could have written a reward into one).

Fresh (`run_verifier`): the stopped agent container committed to a throw-away image, test.sh in a new
container of it (no network unless the caller passes the run's network flags); a process the agent
planted cannot run, and a service it started is gone. Bind mounts are not part of a commit, so a
repository task gets a copy of its final workspace and its origin (read-only) where the agent had
them.

Either way every word is kept (`OUTPUT_FILES`): test.sh's stdout and stderr apart, and its exit
status, in the run's verifier/ directory — also when test.sh exits 0 after writing reward 0, as
Terminal-Bench 2's do.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from labctl.engine.container import Engine, EngineError
from labctl.engine.names import ROUND_LABEL, RUN_LABEL, object_name, run_labels
from labctl.engine.spec import Access, ContainerSpec, Mount
from labctl.engine.timings import span
from labctl.round.grading import Reward, read_reward
from labctl.round.layout import VERIFIER_EXIT, VERIFIER_STDERR, VERIFIER_STDOUT
from labctl.run.parts import ORIGIN, WORKSPACE, Workspace, task_limits
from labctl.spec.task import Task, read_task

STDOUT, STDERR, EXIT_CODE = VERIFIER_STDOUT, VERIFIER_STDERR, VERIFIER_EXIT
OUTPUT_FILES = (STDOUT, STDERR, EXIT_CODE)
"""labctl's own record of test.sh under verifier/: its stdout, its stderr, its exit status (a number,
or `timeout`). Written after /logs/verifier is copied out, so a test.sh file of the same name never
replaces them."""
VERIFIER_GRACE_S = 30
"""The verifier's own deadline is the task's verifier timeout plus this: a fresh verifier container
ends by itself even when labctl is killed (`timeout` is its first process), and a live agent
container's `sleep` outlives the verifier by it."""
COMMIT_TIMEOUT_S = 900
"""The most a `docker commit` of the agent's container (a fresh verifier's image) may take."""
VERIFY_SCRIPT = 'git config --global --add safe.directory "*" 2>/dev/null; exec bash /tests/test.sh'
"""A repository task's workspace and origin belong to the agent's uid and the verifier runs as the
task image's user (root): git refuses such repositories (also in the upload-pack of a local fetch,
which ignores GIT_CONFIG_COUNT) unless the global config says they are safe. A plain task's live
verifier runs test.sh alone: nothing is written into the graded filesystem but what test.sh writes."""
LIVE_SCRIPT = "exec bash /tests/test.sh"
STOP_SESSIONS = r"""
self=$$
procs() {
  for st in /proc/[0-9]*/stat; do
    read -r line < "$st" 2>/dev/null || continue
    rest=${line##*) }
    set -- $rest
    echo "${line%% *} $2 $4"
  done
}
# `docker exec` starts each command as a session leader whose parent is outside the container
# (ppid 0); PID 1 is the container's sleep, and this script is one of them too.
sessions=$(procs | while read -r pid ppid sid; do
  [ "$ppid" = 0 ] && [ "$pid" != 1 ] && [ "$sid" != "$self" ] && echo "$sid"
done)
[ -n "$sessions" ] || exit 0
for sig in TERM KILL KILL KILL; do
  procs | while read -r pid ppid sid; do
    for s in $sessions; do [ "$sid" = "$s" ] && kill -"$sig" "$pid" 2>/dev/null; done
  done
  [ "$sig" = TERM ] && sleep 2
done
exit 0
"""
"""Stop every process in the session of a command `docker exec` started (the agent runtime, or a
verifier past its time-out): the runtime and everything still in its session, its background jobs
included. A daemon the solution started (nginx, `setsid …`) made its own session and lives on, as
under Harbor. POSIX sh and /proc only: any image has them."""
_CLEAN = "rm -rf /tests /logs/verifier && mkdir -p /logs/verifier && chmod 777 /logs/verifier"


def stop_sessions(docker: Engine, container: str) -> None:
    """Run `STOP_SESSIONS` in `container` as root (it must reach every user's processes)."""
    docker("exec", "-u", "0", container, "sh", "-c", STOP_SESSIONS, check=False, timeout=60)


def _record(vdir: Path, out: Path, err: Path, status: str) -> None:
    for src, name in ((out, STDOUT), (err, STDERR)):
        (vdir / name).unlink(missing_ok=True)
        shutil.move(src, vdir / name)
    (vdir / EXIT_CODE).write_text(status + "\n", encoding="utf-8")


def _only_files(vdir: Path) -> None:
    """What came out of the container is data: no link may point the grader at a host file."""
    for p in sorted(vdir.rglob("*"), reverse=True):
        if p.is_symlink() or not (p.is_file() or p.is_dir()):
            p.unlink()


def _note(status: str, err: Path, timeout: float) -> str:
    if status == "timeout":
        return f"verifier timed out after {timeout:.0f}s"
    tail = err.read_text(encoding="utf-8", errors="replace").strip()[-300:] if err.is_file() else ""
    return f"verifier exited {status}" + (f": {tail}" if tail else "")


def _result(run_dir: Path, status: str, note: str) -> tuple[Reward | None, str]:
    try:
        reward, _ = read_reward(run_dir)
    except (OSError, ValueError) as e:
        return None, f"unreadable verifier output: {e}"
    return reward, "" if reward is not None else (note if status != "0" else "")


def run_live_verifier(docker: Engine, *, container: str, user: str, workdir: str, task_dir: Path,
                      run_dir: Path, scratch: Path, task: Task | None = None) -> tuple[Reward | None, str]:
    """tests/test.sh in the running agent `container`, as `user` in `workdir`; returns (reward, note),
    the note saying what went wrong when there is no reward."""
    task = task or read_task(task_dir)  # the run's RunPlan read it already
    timeout = float(task.verifier.timeout_sec)
    vdir = run_dir / "verifier"
    vdir.mkdir(parents=True, exist_ok=True)
    try:
        docker("exec", "-u", "0", container, "sh", "-c", _CLEAN, timeout=60)
        docker("cp", f"{(task_dir / 'tests').resolve()}/.", f"{container}:/tests", timeout=300)
        docker("exec", "-u", "0", container, "chmod", "-R", "a+rX", "/tests", timeout=60)
    except EngineError as e:  # e.g. the container is gone: its deadline passed, or it was killed
        return None, f"the tests could not be put in the agent's container: {e}"
    who = str(task.verifier.user) if task.verifier.user is not None else user
    argv = docker.exec_argv(container, ["bash", "-c", LIVE_SCRIPT], user=who, workdir=workdir,
                            env=task.verifier.env)
    out, err = scratch / "verifier.stdout", scratch / "verifier.stderr"
    with open(out, "wb") as o, open(err, "wb") as ef:
        try:
            done = subprocess.run(argv, stdout=o, stderr=ef, stdin=subprocess.DEVNULL, timeout=timeout)
            status = str(done.returncode)
        except subprocess.TimeoutExpired:
            status = "timeout"
            with contextlib.suppress(EngineError):  # what it wrote is kept whether or not this works
                stop_sessions(docker, container)
    with contextlib.suppress(EngineError):  # a hung engine: stdout, stderr and the status still kept
        docker("cp", f"{container}:/logs/verifier/.", str(vdir), check=False, timeout=300)
    _only_files(vdir)
    note = _note(status, err, timeout)
    _record(vdir, out, err, status)
    return _result(run_dir, status, note)


def commit_agent(docker: Engine, container: str, labels: dict[str, str]) -> str:
    """`docker commit` of the stopped agent container: its whole filesystem as a throw-away image.
    The image carries the run's labels (cleanup and `labctl down` find it); returns its id."""
    changes: list[str] = []
    for k, v in labels.items():
        changes += ["--change", f"LABEL {k}={v}"]
    with span("commit"):
        done = docker("commit", *changes, container, timeout=COMMIT_TIMEOUT_S)
    return done.stdout.strip()


def run_verifier(docker: Engine, *, image: str, user: str, workdir: str, task_dir: Path,
                 ws: Workspace | None, run_dir: Path, round_id: str, run_id: str,
                 scratch: Path, access: Access | None = None,
                 task: Task | None = None) -> tuple[Reward | None, str]:
    """Run tests/test.sh in a fresh container of `image` (the committed agent filesystem) as `user`,
    in `workdir`; a repository task (`ws`) also gets a copy of its final workspace and its origin.

    Writes verifier/{reward.json|reward.txt, stdout.txt, stderr.txt, exit_code.txt} under `run_dir`;
    returns (reward, note) where note says what went wrong when there is no reward. `access`: the
    container's way out (the run's policy); no network by default.
    """
    vdir = run_dir / "verifier"
    vdir.mkdir(parents=True, exist_ok=True)
    vdir.chmod(0o777)  # the task image's user (any uid) writes its reward here
    copy = scratch / "graded-workspace"
    mounts: tuple[Mount, ...] = ()
    if ws is not None:
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(ws.clone, copy, symlinks=True)
        mounts = (Mount(copy, WORKSPACE), Mount(ws.origin, ORIGIN, read_only=True))
        workdir = WORKSPACE
    name = object_name(round_id, run_id, "verifier")
    task = task or read_task(task_dir)  # the run's RunPlan read it already
    timeout = float(task.verifier.timeout_sec)
    who = str(task.verifier.user) if task.verifier.user is not None else user
    spec = ContainerSpec(
        image, (f"{timeout + VERIFIER_GRACE_S:.0f}", "bash", "-c", VERIFY_SCRIPT), name=name,
        entrypoint="timeout", user=who, workdir=workdir, labels=run_labels(round_id, run_id, "verifier"),
        limits=task_limits(task),
        env={"LABCTL_WORKSPACE": workdir, **dict(sorted(task.verifier.env.items()))},
        mounts=(*mounts, Mount((task_dir / "tests").resolve(), "/tests", read_only=True),
                Mount(vdir.resolve(), "/logs/verifier"))).with_access(access or Access())
    argv = docker.run_argv(spec)
    out, err = scratch / "verifier.stdout", scratch / "verifier.stderr"
    try:
        with open(out, "wb") as o, open(err, "wb") as e:
            try:
                with span("verifier container", run_id):
                    done = subprocess.run(argv, stdout=o, stderr=e, stdin=subprocess.DEVNULL, timeout=timeout)
                status = str(done.returncode)
            except subprocess.TimeoutExpired:  # the verifier outlived its time-out
                status = "timeout"
    finally:
        docker("rm", "-f", name, check=False)
        shutil.rmtree(copy, ignore_errors=True)
    _only_files(vdir)
    note = _note(status, err, timeout)
    _record(vdir, out, err, status)
    return _result(run_dir, status, note)


def run_tests(docker: Engine, *, live: bool, agent: str, user: str, workdir: str, task_dir: Path,
              ws: Workspace | None, run_dir: Path, labels: Mapping[str, str], scratch: Path,
              access: Access | None = None, task: Task | None = None) -> tuple[Reward | None, str]:
    """The run's verifier: live in the `agent` container (on its own networks), or fresh from its
    commit (removed after), with `access` (no network by default)."""
    if live:
        return run_live_verifier(docker, container=agent, user=user, workdir=workdir, task_dir=task_dir,
                                 run_dir=run_dir, scratch=scratch, task=task)
    image = commit_agent(docker, agent, {**labels, "labctl.role": "graded"})
    try:
        return run_verifier(docker, image=image, user=user, workdir=workdir, task_dir=task_dir, ws=ws,
                            run_dir=run_dir, round_id=labels[ROUND_LABEL], run_id=labels[RUN_LABEL],
                            scratch=scratch, access=access, task=task)
    finally:
        docker("image", "rm", "-f", image, check=False)
