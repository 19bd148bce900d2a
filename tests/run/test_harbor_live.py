"""Harbor's execution model for grading, and task.toml as Harbor reads it today.

tests/harbor_tasks/service-up is written the way Terminal-Bench 2 writes tasks: its solution starts a
service (detached, its own session) that the tests probe once the agent's session has ended; its
test.sh exits 0 after writing reward 0 and gives its reason on stderr; `memory = "1G"`, a
`docker_image` beside its Dockerfile and a key no schema knows.

Docker: one round graded live (the default: oracle Complete, nop Failed, every word of the verifier in
the run directory and in the manifest, the report quoting the nop's reason), one with
`verifier: {container: fresh}` (the oracle's service is gone: Failed, the controls fail). Fast: the
task.toml reader, the lock's image references, the resource flags, and `task check --lab` on a dataset
lab.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from labctl.lock.registry import dockerfile_bases, image_references
from labctl.run.parts import resource_flags
from labctl.spec.load import load_lab
from labctl.spec.task import TaskError, read_task, size_mb, task_warnings
from tests.run.test_harbor import NOTHING, TASKS, cli, run_round, task_lab
from tests.run.test_runner import SMOKE, build, derived_lab, labelled_now, runner_env

__all__ = ["runner_env"]  # test_runner's module fixture: envelopes, scratch, labs/smoke.lock
SERVICE = TASKS / "service-up"


# --- fast: task.toml as Harbor reads it ----------------------------------------------------------


def test_task_toml_reads_harbors_forms_and_reports_what_it_ignores(tmp_path: Path) -> None:
    """`memory = "1G"` / `storage` are Harbor's size strings (1G = 1024 MiB), `allow_internet`
    defaults to true, `version` at the top is Harbor's schema_version; unknown keys are reported, never
    fatal; a malformed size names the key."""
    task = read_task(SERVICE)
    env = task.environment
    assert (env.memory_mb, env.storage_mb, env.allow_internet) == (1024, 2048, True)
    assert resource_flags(task) == ["--cpus", "1", "--memory", "1024m"]
    assert [size_mb(s) for s in ("2G", "512M", "1.5G", "4096K", "10g")] == [2048, 512, 1536, 4, 10240]
    warnings = task_warnings(SERVICE)
    assert warnings == [f"{SERVICE / 'task.toml'}: [environment] warm_start: unknown key, ignored"]

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "task.toml").write_text('[environment]\nmemory = "lots"\nmemory_mb = 512\nallow_internet = "no"\n'
                                   '[verifier]\nenv = {A = "1"}\nuser = "tester"\n[agent]\nuser = "x"\n'
                                   '[solution]\nenv = {}\nfuture = 1\n')
    with pytest.raises(TaskError) as e:
        read_task(bad)
    assert "[environment] memory: 'lots' is not a size like '2G'" in str(e.value)
    assert "[environment] allow_internet must be true or false" in str(e.value)
    (bad / "task.toml").write_text('[environment]\nmemory = "2G"\nmemory_mb = 512\n[verifier]\n'
                                   'env = {A = "1"}\nuser = "tester"\n[agent]\nuser = "x"\nfuture = 1\n')
    got = read_task(bad)
    assert got.environment.memory_mb == 512  # memory_mb wins, as in Harbor's own precedence
    assert (got.verifier.env, got.verifier.user) == ({"A": "1"}, "tester")
    assert task_warnings(bad) == [f"{bad / 'task.toml'}: [agent] user: Harbor's key, not acted on by labctl",
                                  f"{bad / 'task.toml'}: [agent] future: unknown key, ignored"]


def _lab_on(task: Path, tmp: Path) -> Path:
    lab = tmp / "lab.yaml"
    lab.write_text(SMOKE.read_text().replace("path: ../tasks/smoke-hello", f"path: {task}"))
    return lab


def test_docker_image_beside_a_dockerfile_is_not_pinned(tmp_path: Path) -> None:
    """Terminal-Bench 2 names a prebuilt `docker_image` beside the Dockerfile labctl builds: the lock
    pins the Dockerfile's bases, not an image nothing is built from; without a Dockerfile the
    docker_image is the task's image and is pinned."""
    lab = _lab_on(SERVICE, tmp_path)
    refs = image_references(load_lab(lab))
    said = cli("validate", lab, cwd=tmp_path)  # the unknown key: a warning, not an error
    assert said.returncode == 0 and "[environment] warm_start: unknown key, ignored" in said.stderr, said
    assert "debian:bookworm-slim" in refs
    assert not [r for r in refs if "registry.invalid" in r], refs
    prebuilt = tmp_path / "prebuilt"
    (prebuilt / "tests").mkdir(parents=True)
    (prebuilt / "task.toml").write_text('[environment]\ndocker_image = "registry.invalid/x/y:1"\n')
    (prebuilt / "instruction.md").write_text("nothing\n")
    (tmp_path / "two").mkdir()
    assert "registry.invalid/x/y:1" in image_references(load_lab(_lab_on(prebuilt, tmp_path / "two")))


def test_a_lab_that_prefers_prebuilt_images_pins_the_docker_image(tmp_path: Path) -> None:
    """`build: {task_image: prebuilt}`: the task's image comes from its `[environment] docker_image`
    (pinned like every base), and nothing of its Dockerfile is pinned or built."""
    lab = _lab_on(SERVICE, tmp_path)
    prefer = "\nbuild: {task_image: prebuilt}\ncontestants:"
    lab.write_text(lab.read_text().replace("\ncontestants:", prefer, 1))
    loaded = load_lab(lab)
    assert loaded.lab.build.task_image == "prebuilt"
    image = read_task(SERVICE).environment.docker_image
    assert image and image in image_references(loaded)
    bases = dockerfile_bases(SERVICE / "environment" / "Dockerfile")
    assert image not in bases
    (tmp_path / "default").mkdir()
    default = image_references(load_lab(_lab_on(SERVICE, tmp_path / "default")))
    assert image not in default and set(bases) <= set(default)


def test_task_check_takes_a_dataset_lab(tmp_path: Path) -> None:
    """`task check TASK --lab LAB` where LAB runs a dataset: the check's throw-away lab is that lab on
    the one task (its dataset, select and repeats dropped) and its lock pins that task alone."""
    from labctl.lock.lockfile import TaskLock, lock_path, read_lock
    from labctl.lock.resolve import spec_sha256, task_locks
    from labctl.run.taskcheck import control_lab
    from labctl.spec.dataset import dataset_label
    from tests.run.test_dataset_round import DATASET

    loaded = load_lab(DATASET)
    base = read_lock(lock_path(SMOKE))
    lock = base.model_copy(update={
        "lab": loaded.lab.lab.name, "spec_sha256": spec_sha256(loaded),
        "task": TaskLock(path=dataset_label(loaded.lab.task), tree_sha256=loaded.tree_sha256()),
        "tasks": task_locks(loaded)})
    lab = control_lab(loaded, lock, SERVICE, tmp_path / "check")
    checked = load_lab(lab, base_dir=loaded.base_dir)
    assert not checked.is_dataset and checked.task_dir == SERVICE.resolve()
    assert checked.lab.round.repeats == 1 and [c.kind for c in checked.lab.contestants] == ["oracle", "nop"]
    written = read_lock(lock_path(lab))
    assert written.tasks is None and written.task.path == str(SERVICE.resolve())


# --- docker: graded live, and fresh ----------------------------------------------------------------


@pytest.mark.docker
def test_service_task_is_graded_live_and_every_word_kept(tmp_path: Path) -> None:
    """The oracle's service is still up when the tests probe it (live: Complete), the nop's tests say
    why on stderr while exiting 0 (Failed); stdout, stderr and the exit status are in the run directory
    and the manifest; the report quotes the nop's reason; the memory limit is the task's 1G."""
    lab = task_lab(tmp_path, SERVICE)
    build(lab)
    done, data = run_round(lab, tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {r["contestant"]: r for r in data["runs"]}
    assert rows["oracle"]["outcome"] == "Complete", (rows, done.stderr)
    assert rows["nop"]["outcome"] == "Failed", rows
    rd = Path(data["round_dir"])
    oracle, nop = (rd / "runs" / rows[c]["run"] / "verifier" for c in ("oracle", "nop"))
    assert "PASSED: the service answers GET /status with ok" in (oracle / "stdout.txt").read_text()
    assert "memory limit: 1073741824" in (oracle / "stdout.txt").read_text()
    assert (nop / "stderr.txt").read_text() == "FAILED: nothing listens on port 8080 (connection refused)\n"
    assert (nop / "exit_code.txt").read_text() == "0\n" and (nop / "reward.txt").read_text().strip() == "0"
    listed = json.loads((rd / "manifest.json").read_text())["files"]
    for name in ("stdout.txt", "stderr.txt", "exit_code.txt", "reward.txt"):
        assert f"runs/{rows['nop']['run']}/verifier/{name}" in listed
    rep = cli("report", rd, "--format", "md", cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    why = (rd / "report.md").read_text().split(f"### {rows['nop']['run']}", 1)[1]
    assert re.search(r"Verifier said: stderr: FAILED: nothing listens on port 8080 .*exit 0", why), why[:800]
    check = cli("verify", rd, cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert labelled_now(data["round"]) == NOTHING


@pytest.mark.docker
def test_fresh_verifier_loses_what_the_solution_started(tmp_path: Path) -> None:
    """`verifier: {container: fresh}`: the tests run in a new container of the committed filesystem,
    so the service the oracle started is gone — the trade-off README documents: the oracle is Failed
    and the controls say so, with the verifier's reason kept."""
    lab = task_lab(tmp_path, SERVICE)
    lab.write_text(lab.read_text().replace("contestants:\n", "verifier: {container: fresh}\ncontestants:\n"))
    _relock(lab)  # the spec hash covers `verifier:`
    build(lab)
    done, data = run_round(lab, tmp_path)
    assert done.returncode == 1, done.stderr
    oracle = next(r for r in data["runs"] if r["contestant"] == "oracle")
    assert oracle["outcome"] == "Failed" and data["controls_failed"]
    stderr = (Path(data["round_dir"]) / "runs" / oracle["run"] / "verifier" / "stderr.txt").read_text()
    assert "nothing listens on port 8080" in stderr
    assert labelled_now(data["round"]) == NOTHING


def _relock(lab: Path) -> None:
    from labctl.lock.lockfile import lock_path, read_lock, write_lock
    from labctl.lock.resolve import spec_sha256

    path = lock_path(lab)
    write_lock(path, read_lock(path).model_copy(update={"spec_sha256": spec_sha256(load_lab(lab))}))



@pytest.mark.docker
def test_a_stopped_agent_loses_its_session_not_its_daemons(tmp_path: Path) -> None:
    """An agent stopped by the wall time: its runtime's session is stopped (the foreground command and
    a background job of it are gone when the tests run), while the service it daemonized in a
    session of its own still answers — and the container outlived the agent for the verifier."""
    task = tmp_path / "task"
    shutil.copytree(SERVICE, task)
    solve = task / "solution" / "solve.sh"
    up = '    echo "service up"\n'
    stay = f"{up}    sleep 1001 &\n    exec sleep 1002\n"  # a background job, then the foreground
    solve.write_text(solve.read_text().replace(f"{up}    exit 0\n", stay))
    test = task / "tests" / "test.sh"
    test.write_text(test.read_text().replace("echo 1 > /logs/verifier/reward.txt\n", (
        'for c in /proc/[0-9]*/cmdline; do\n'
        '  case "$(tr "\\0" " " < "$c" 2>/dev/null)" in "sleep 100"[12]*) fail "the agent\'s session '
        'still runs: $(tr "\\0" " " < "$c")";; esac\n'
        'done\n'
        'echo 1 > /logs/verifier/reward.txt\n')))
    lab = derived_lab(tmp_path, "  - id: oracle\n    kind: oracle\n", wall="20s", task=task)
    build(lab)
    done, data = run_round(lab, tmp_path)
    [run] = data["runs"]
    vdir = Path(data["round_dir"]) / "runs" / run["run"] / "verifier"
    result = json.loads((Path(data["round_dir"]) / "runs" / run["run"] / "result.json").read_text())
    assert result["status"] == "killed" and "wall_time" in result["reason"], result
    assert (vdir / "reward.txt").read_text().strip() == "1", (vdir / "stderr.txt").read_text()
    assert "PASSED" in (vdir / "stdout.txt").read_text()
    assert labelled_now(data["round"]) == NOTHING
