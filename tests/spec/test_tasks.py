"""The tasks shipped with labctl, as files: Harbor's layout, labctl's tables, pins that must agree.

Fast and offline; the tasks are run for real by test_runner.py (smoke-hello) and test_tag_manager.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from labctl.round.grading import derive_outcome
from labctl.run.parts import resource_flags
from labctl.spec.task import TaskError, read_task

ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "tasks"
TAG = TASKS / "tag-manager"


@pytest.mark.parametrize("name", ["smoke-hello", "tag-manager"])
def test_harbor_layout_and_labctl_tables(name: str) -> None:
    task = TASKS / name
    for f in ("task.toml", "instruction.md", "environment/Dockerfile", "tests/test.sh", "solution/solve.sh"):
        assert (task / f).is_file(), f
    data = tomllib.loads((task / "task.toml").read_text())
    assert data["schema_version"] == "1.0" and data["task"]["name"] == f"labctl/{name}"
    rules = read_task(task).labctl.outcome
    assert rules is not None and set(rules.partial) <= set(rules.complete)
    repo = read_task(task).repository_dir
    assert repo is not None and repo.is_dir()
    # Every check the outcome rules name is one the grader writes.
    grader = "\n".join(p.read_text() for p in (task / "tests").rglob("*") if p.is_file())
    for check in rules.complete:
        assert re.search(rf"\b{check}\b", grader), check


REQUIREMENTS = {1: "tags_lib", 2: "api_route", 3: "admin_page", 4: "admin_nav", 5: "client_mutations",
                6: "build", 7: "screenshot", 8: "logical_commits", 9: "pushed", 10: "no_pr"}
"""instruction.md's numbered requirements and the one named check that grades each."""


def test_tag_manager_checks_match_the_requirements_one_to_one() -> None:
    text = (TAG / "instruction.md").read_text()
    assert [int(n) for n in re.findall(r"^(\d+)\. ", text, flags=re.M)] == list(REQUIREMENTS)
    for path in ("src/lib/tags.ts", "src/app/api/admin/tags/route.ts", "src/app/admin/tags/page.tsx"):
        assert path in text
        assert not (TAG / "repo" / path).exists(), f"{path} is the agent's to write"
    # "Commit in logical chunks" and "push" are two requirements, so two checks.
    assert re.search(r"^8\. Commit .*at least two commits", text, flags=re.M)
    assert re.search(r"^9\. Push ", text, flags=re.M)
    # The grader writes exactly these checks, in requirement order, and Complete needs every one.
    script = (TAG / "tests" / "test.sh").read_text()
    declared = re.search(r"^CHECKS=\(([^)]*)\)", script, flags=re.M | re.S)
    assert declared is not None and declared.group(1).split() == list(REQUIREMENTS.values())
    assert read_task(TAG).labctl.outcome.complete == list(REQUIREMENTS.values())


def test_tag_manager_dependencies_are_locked_once() -> None:
    """The image installs exactly the repository's lockfile (a copy, so the environment's build context
    stays self-contained); every package is pinned by a sha512 integrity; nothing installed is in git."""
    env, repo = TAG / "environment", TAG / "repo"
    for f in ("package.json", "package-lock.json"):
        assert (env / f).read_bytes() == (repo / f).read_bytes(), f"environment/{f} differs from repo/{f}"
    for lock in (repo / "package-lock.json", env / "tools" / "package-lock.json"):
        packages = json.loads(lock.read_text())["packages"]
        deps = {k: v for k, v in packages.items() if k}
        assert deps and all(v.get("integrity", "").startswith("sha512-") for v in deps.values()), lock
    manifest = json.loads((repo / "package.json").read_text())
    for section in ("dependencies", "devDependencies"):
        for name, spec in manifest[section].items():
            assert re.fullmatch(r"\d+\.\d+\.\d+", spec), f"{name}@{spec} is not an exact version"
    tracked = subprocess.run(["git", "ls-files", str(TAG)], cwd=ROOT, capture_output=True, text=True).stdout
    assert not re.search(r"(^|/)(node_modules|\.next)/", tracked, flags=re.M)


def test_tag_manager_dockerfile_pins_node_and_npm_by_integrity() -> None:
    text = (TAG / "environment" / "Dockerfile").read_text()
    for tool in ("NODE", "NPM"):
        assert re.search(rf"^ARG {tool}_VERSION=\d+\.\d+\.\d+$", text, flags=re.M), tool
        assert re.search(rf"^ARG {tool}_INTEGRITY=sha512-[A-Za-z0-9+/]{{86}}==$", text, flags=re.M), tool


def test_fetch_npm_tarball_refuses_a_wrong_hash(tmp_path: Path) -> None:
    """The Dockerfile's downloader checks the integrity before anything is unpacked (served over a
    loopback file:// registry: curl reads it like the real one)."""
    reg = tmp_path / "registry" / "pkg" / "-"
    reg.mkdir(parents=True)
    (reg / "pkg-1.0.0.tgz").write_bytes(b"tarball bytes")
    good = "sha512-" + subprocess.run(["sh", "-c", f"openssl dgst -sha512 -binary {reg / 'pkg-1.0.0.tgz'}"
                                       " | base64 -w0"], capture_output=True, text=True).stdout
    script = TAG / "environment" / "fetch-npm-tarball.sh"
    env = {"PATH": "/usr/bin:/bin", "NPM_CONFIG_REGISTRY": f"file://{tmp_path / 'registry'}/"}
    ok = subprocess.run(["sh", str(script), "pkg", "1.0.0", good, str(tmp_path / "ok.tgz")], env=env,
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "ok.tgz").read_bytes() == b"tarball bytes"
    wrong = "sha512-" + "A" * 86 + "=="
    bad = subprocess.run(["sh", str(script), "pkg", "1.0.0", wrong, str(tmp_path / "b.tgz")], env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "does not match the pinned" in bad.stderr
    assert not (tmp_path / "b.tgz").exists()


def test_repository_setup_is_read_from_task_toml(tmp_path: Path) -> None:
    assert read_task(TASKS / "smoke-hello").labctl.repository.setup is None
    assert read_task(TAG).labctl.repository.setup == "cp -a /opt/quillpost/node_modules node_modules"
    (tmp_path / "task.toml").write_text('[labctl.repository]\npath = "repo"\nsetup = ["npm", "ci"]\n')
    with pytest.raises(TaskError, match=r"\[labctl.repository\] setup must be a string"):
        read_task(tmp_path)


def test_tag_manager_outcome_rules_reproduce_the_published_classes() -> None:
    """Complete: every requirement. Partial: working code shipped: the tags library, the build, and
    at least one pushed commit (Qwen3-Coder: one commit, no screenshot). Failed: built but never
    committed (Qwen 3.6), or a failed build (Gemma 4, Hermes 4), or nothing. Total failure: no tool
    call at all (Devstral). tests/run/test_tag_manager.py reproduces these from real workspaces."""
    rules = read_task(TAG).labctl.outcome
    names = rules.complete
    assert rules.partial == ["tags_lib", "build", "pushed"]

    def grade(passing: set[str], tool_calls: int | None = 12) -> str | None:
        reward = {"reward": int(passing == set(names)), "checks": {c: c in passing for c in names}}
        return derive_outcome(reward, {"tool_calls": tool_calls}, rules)

    assert grade(set(names)) == "Complete"
    assert grade(set(names) - {"screenshot", "logical_commits"}) == "Partial"  # one commit, pushed
    assert grade({"tags_lib", "build", "pushed", "no_pr"}) == "Partial"
    assert grade(set(names) - {"pushed"}) == "Failed"  # committed in chunks, never pushed
    assert grade(set(names) - {"logical_commits", "pushed", "screenshot"}) == "Failed"  # never committed
    assert grade(set(names) - {"build"}) == "Failed"
    assert grade({"build", "no_pr"}) == "Failed"  # nop
    assert grade({"build", "no_pr"}, tool_calls=0) == "Total failure"


def test_resource_limits_come_from_the_environment_table(tmp_path: Path) -> None:
    import os

    cpus = f"{min(2.0, float(os.cpu_count() or 1)):g}"
    assert resource_flags(read_task(TAG)) == ["--cpus", cpus, "--memory", "4096m"]
    assert resource_flags(read_task(TASKS / "smoke-hello")) == ["--cpus", "1", "--memory", "1024m"]
    (tmp_path / "task.toml").write_text("[environment]\n")
    assert resource_flags(read_task(tmp_path)) == []
    (tmp_path / "task.toml").write_text('[environment]\nmemory_mb = "lots"\n')
    with pytest.raises(TaskError, match=r"\[environment\] memory_mb must be a positive number"):
        read_task(tmp_path)


def test_validate_reports_a_broken_task_toml_before_any_run(tmp_path: Path) -> None:
    """Mistakes in labctl's tables or the resource limits of task.toml are found by `labctl validate`
    (exit 2, located at the lab's task.path), not by an errored run an hour later."""
    from tests.helpers import run_cli

    task = tmp_path / "task"
    shutil.copytree(TASKS / "smoke-hello", task)
    toml = task / "task.toml"
    toml.write_text(toml.read_text().replace("memory_mb = 1024", 'memory_mb = "1 GB"')
                    .replace('path = "repo"', 'path = "nope"') + 'setup = ["make"]\n')
    lab = tmp_path / "lab.yaml"
    lab.write_text((ROOT / "labs" / "smoke.yaml").read_text().replace("path: ../tasks/smoke-hello",
                                                                      f"path: {task}"))
    code, _, err = run_cli("validate", lab)
    assert code == 2
    lines = err.strip().splitlines()
    located = rf"{re.escape(str(lab))}:\d+:\d+: task.path: {re.escape(str(toml))}: "
    assert lines and all(re.match(located, x) for x in lines), lines
    assert any("memory_mb must be a positive number" in x for x in lines)
    assert any("setup must be a string" in x for x in lines)
    assert any("[labctl.repository] path: no such directory" in x for x in lines)
