"""Datasets of Harbor tasks without Docker: choosing the tasks (a directory, a list, a glob; names,
tags, a seeded sample) with located errors; the lock's per-task pins and what `lock --offline` says
when one task changes; the seal (contestants × tasks × repeats, interleaved, the public run → task
map under the commitment); one image per distinct environment; and the dataset report's numbers
(rates, bootstrap interval over tasks, pass@k, the grid, the excluded task) on a round whose runs'
verifier outputs are written here and graded by the real grading rule.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from labctl.images.specs import lab_images
from labctl.lock.lockfile import ImageLock, Lock, PackageLock, SourceLock, TaskLock, lock_path, write_lock
from labctl.lock.resolve import drift, spec_sha256, task_locks
from labctl.report.bootstrap import bootstrap_interval, pass_at_k
from labctl.report.dataset import load_dataset_report, render_markdown
from labctl.round.layout import RunResult, read_sealed, run_dir, write_json, write_manifest, write_result
from labctl.round.seal import check_envelope, load_envelope, seal_round, unseal_round
from labctl.round.verify import verify_round
from labctl.run.dataset import task_images
from labctl.spec.dataset import combined_tree_sha256, image_groups, task_trees
from labctl.spec.load import load_lab
from labctl.spec.located import SpecError

ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "tests" / "dataset_tasks"
NAMES = ["broken-oracle", "make-report", "repo-note", "shout", "sum-numbers"]
LAB = """version: 1
lab: {{name: ds}}
engine:
  llama_cpp: {{sdist: llama-cpp-python==0.3.36}}
profile: cpu
round: {{repeats: {repeats}, first_number: 1}}
task:
{task}
contestants:
  - {{id: oracle, kind: oracle}}
  - {{id: nop, kind: nop}}
"""
MODEL = """agent: {runtime: mini-swe-agent, version: 2.4.6}
contestants:
  - {id: model, kind: cloud, provider: anthropic, model: claude-x, api_key_env: NO_KEY_NEEDED}
"""


def lab_file(tmp: Path, task: str, repeats: int = 1, model: bool = False) -> Path:
    """A dataset lab of oracle and nop (and, with `model`, a cloud contestant never called here)."""
    path = tmp / "lab.yaml"
    text = LAB.format(task=task, repeats=repeats)
    if model:
        text = text.replace("contestants:\n", MODEL)
    path.write_text(text)
    return path


def locked(lab: Path) -> Path:
    """A lock as `labctl lock` would write it, but with the registry facts made up (no network)."""
    loaded = load_lab(lab)
    lock = Lock(lab=loaded.lab.lab.name, spec_sha256=spec_sha256(loaded),
                llama_cpp=SourceLock(sdist="llama-cpp-python==0.3.36", sdist_file="x.tar.gz",
                                     sdist_sha256="0" * 64, subdir="vendor/llama.cpp"),
                images={"debian:bookworm-slim": ImageLock(digest="sha256:" + "1" * 64, source="local")},
                agent=PackageLock(registry="builtin", name="none", version="0"),
                task=TaskLock(path="dataset", tree_sha256=loaded.tree_sha256()), tasks=task_locks(loaded))
    write_lock(lock_path(lab), lock)
    return lab


# --- choosing the tasks ----------------------------------------------------------------------------


def test_dataset_directory_paths_and_glob_find_the_same_tasks(tmp_path: Path) -> None:
    by_dir = load_lab(lab_file(tmp_path, f"  dataset: {TASKS}"))
    assert sorted(by_dir.tasks) == NAMES and by_dir.is_dataset
    paths = "\n".join(f"    - {TASKS / n}" for n in NAMES)
    assert load_lab(lab_file(tmp_path, f"  paths:\n{paths}")).tasks == by_dir.tasks
    assert load_lab(lab_file(tmp_path, f"  glob: '{TASKS}/*'")).tasks == by_dir.tasks
    one = load_lab(lab_file(tmp_path, f"  path: {TASKS / 'shout'}"))
    assert not one.is_dataset and list(one.tasks) == ["shout"] and one.task_dir == TASKS / "shout"
    with pytest.raises(ValueError, match="dataset of 5 tasks"):
        _ = by_dir.task_dir
    assert by_dir.for_task("shout").task_dir == TASKS / "shout"


def test_select_by_names_tags_and_a_seeded_sample(tmp_path: Path) -> None:
    def chosen(select: str) -> list[str]:
        return sorted(load_lab(lab_file(tmp_path, f"  dataset: {TASKS}\n  select: {select}")).tasks)

    assert chosen("{names: [shout, repo-note]}") == ["repo-note", "shout"]
    assert chosen("{tags: [text]}") == ["make-report", "shout"]
    assert chosen("{tags: [repository, arithmetic]}") == ["repo-note", "sum-numbers"]
    first = chosen("{sample: {n: 3, seed: 7}}")
    assert len(first) == 3 and chosen("{sample: {n: 3, seed: 7}}") == first  # same seed, same tasks
    seeds = {tuple(chosen(f"{{sample: {{n: 2, seed: {s}}}}}")) for s in range(6)}
    assert len(seeds) > 1  # the seed matters
    assert chosen("{tags: [files], sample: {n: 2, seed: 1}}") in (
        [a, b] for a in NAMES for b in NAMES if a < b and "repo-note" not in (a, b))


def test_bad_task_sections_are_located_errors(tmp_path: Path) -> None:
    def errors(task: str) -> str:
        with pytest.raises(SpecError) as e:
            load_lab(lab_file(tmp_path, task))
        return str(e.value)

    text = errors(f"  dataset: {TASKS}\n  select: {{names: [shout, nope]}}")
    assert "lab.yaml:9:" in text and "task.select.names[1]: no task named 'nope'" in text
    assert "task.select.sample.n: cannot sample 9 of 5" in errors(
        f"  dataset: {TASKS}\n  select: {{sample: {{n: 9}}}}")
    assert "give exactly one of" in errors(f"  path: {TASKS / 'shout'}\n  dataset: {TASKS}")
    assert "select applies to a dataset" in errors(f"  path: {TASKS / 'shout'}\n  select: {{tags: [x]}}")
    assert "task.dataset: dataset directory does not exist" in errors(f"  dataset: {tmp_path / 'none'}")
    twin = tmp_path / "other" / "shout"
    shutil.copytree(TASKS / "shout", twin)
    text = errors(f"  paths:\n    - {TASKS / 'shout'}\n    - {twin}")
    assert "task.paths[1]: two tasks are named 'shout'" in text
    (twin / "instruction.md").unlink()
    assert "task.paths[0]:" in errors(f"  paths:\n    - {twin}") and "instruction.md is missing" in errors(
        f"  paths:\n    - {twin}")


# --- the lock --------------------------------------------------------------------------------------


def test_lock_pins_every_task_and_names_the_one_that_changed(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    shutil.copytree(TASKS, tasks)
    lab = locked(lab_file(tmp_path, f"  dataset: {tasks}"))
    loaded = load_lab(lab)
    before = Lock.model_validate_json(lock_path(lab).read_text())
    assert sorted(before.tasks or {}) == NAMES
    assert before.task.tree_sha256 == combined_tree_sha256(task_trees(loaded.tasks))
    (tasks / "shout" / "instruction.md").write_text("Shout louder.\n")
    after = before.model_copy(update={"tasks": task_locks(load_lab(lab)),
                                      "task": before.task.model_copy(
                                          update={"tree_sha256": load_lab(lab).tree_sha256()})})
    changed = drift(before, after)
    assert [c.split(":")[0] for c in changed] == ["task.tree_sha256", "tasks.shout.tree_sha256"]
    offline = subprocess.run([sys.executable, "-m", "labctl", "lock", str(lab), "--offline", "--json"],
                             capture_output=True, text=True, timeout=120)
    assert offline.returncode != 0
    report = json.loads(offline.stdout)
    tasks_drifted = [d for d in report["drifted"] if d.startswith("task")]
    assert tasks_drifted == ["task: task directory content changed",
                             "tasks.shout: task directory content changed"]
    assert {f"tasks.{n}" for n in NAMES if n != "shout"} <= set(report["verified"])
    # A one-task lab's lock has no `tasks` at all: its bytes (and hash) are what they always were.
    (tmp_path / "one").mkdir()
    single = locked(lab_file(tmp_path / "one", f"  path: {TASKS / 'shout'}"))
    assert "tasks" not in json.loads(lock_path(single).read_text())


# --- the seal and the images -----------------------------------------------------------------------


def test_seal_draws_contestants_by_tasks_by_repeats_interleaved(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABCTL_ENVELOPES", str(tmp_path / "envelopes"))
    lab = locked(lab_file(tmp_path, f"  dataset: {TASKS}", repeats=2))
    lock = Lock.model_validate_json(lock_path(lab).read_text())
    made = seal_round(load_lab(lab), lock, tmp_path / "rounds")
    sealed = read_sealed(made.round_dir)
    assert len(sealed.run_ids) == 2 * 5 * 2 and sorted(sealed.tasks or {}) == NAMES
    env = load_envelope(sealed.round)
    slots = sorted((s.contestant, s.task, s.repeat) for s in env.mapping.values())
    assert slots == sorted((c, t, k) for c in ("oracle", "nop") for t in NAMES for k in (1, 2))
    assert {r: s.task for r, s in env.mapping.items()} == sealed.run_tasks
    assert check_envelope(env, sealed) == []
    # Interleaved: blocks of one task (one run per contestant), repeat 1 before repeat 2, so no
    # contestant ever runs two runs in a row.
    blocks = [sealed.order[i:i + 2] for i in range(0, 20, 2)]
    for block in blocks:
        assert len({env.mapping[r].task for r in block}) == 1
        assert {env.mapping[r].contestant for r in block} == {"oracle", "nop"}
    assert [env.mapping[b[0]].repeat for b in blocks] == [1] * 5 + [2] * 5
    # The public run → task map is under the commitment: changing it is caught.
    first = sealed.run_ids[0]
    other = next(t for t in NAMES if t != env.mapping[first].task)
    forged = sealed.model_copy(update={"run_tasks": {**(sealed.run_tasks or {}), first: other}})
    assert any("run_tasks" in p for p in check_envelope(env, forged))


def test_one_image_per_distinct_environment(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    shutil.copytree(TASKS, tasks)
    lab = locked(lab_file(tmp_path, f"  dataset: {tasks}"))
    loaded = load_lab(lab)
    lock = Lock.model_validate_json(lock_path(lab).read_text())
    names = [s.name for s in lab_images(loaded, lock)]
    assert names == ["task-broken-oracle", "agent-oracle.broken-oracle", "agent-nop.broken-oracle", "labctl",
                     "egress-gateway"]
    (tasks / "shout" / "environment" / "files" / "greeting.txt").write_text("a different file\n")
    lab = locked(lab)
    loaded = load_lab(lab)
    lock = Lock.model_validate_json(lock_path(lab).read_text())
    specs = {s.name: s.tag for s in lab_images(loaded, lock)}
    assert sorted(n for n in specs if n.startswith("task-")) == ["task-broken-oracle", "task-shout"]
    assert image_groups(loaded.tasks) == {**{n: "broken-oracle" for n in NAMES}, "shout": "shout"}
    view = task_images(specs, loaded, "shout")
    assert view["task-shout"] == specs["task-shout"] and view["agent-oracle"] == specs["agent-oracle.shout"]
    assert not any(k.startswith("task-") and k != "task-shout" for k in view)
    assert task_images(specs, loaded, "repo-note")["agent-nop"] == specs["agent-nop.broken-oracle"]


# --- the report ------------------------------------------------------------------------------------


def test_bootstrap_and_pass_at_k() -> None:
    assert pass_at_k(4, 0, 2) == 0.0 and pass_at_k(4, 4, 1) == 1.0
    assert pass_at_k(2, 1, 1) == 0.5 and pass_at_k(2, 1, 2) == 1.0
    assert abs(pass_at_k(5, 2, 2) - 0.7) < 1e-12  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    lo, hi = bootstrap_interval([1, 0, 1, 1, 0, 1, 0, 1], seed=1)
    assert 0 <= lo < 5 / 8 < hi <= 1
    assert bootstrap_interval([1, 0, 1], seed=3) == bootstrap_interval([1, 0, 1], seed=3)
    assert bootstrap_interval([0.5], seed=1) == (0.5, 0.5)


def test_dataset_report_rates_grid_and_excluded_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sealed 3 × 5 × 2 round whose verifier outputs are written here, graded by the real rule: the
    oracle resolves every task but the broken one; the nop resolves nothing but (a check too weak)
    one repeat of make-report; the model resolves sum-numbers twice, shout once, repo-note never.
    Both tasks with failed controls are excluded from every aggregate, and named."""
    monkeypatch.setenv("LABCTL_ENVELOPES", str(tmp_path / "envelopes"))
    lab = locked(lab_file(tmp_path, f"  dataset: {TASKS}", repeats=2, model=True))
    lock = Lock.model_validate_json(lock_path(lab).read_text())
    made = seal_round(load_lab(lab), lock, tmp_path / "rounds")
    rd, sealed = made.round_dir, made.record
    model_wins = {("sum-numbers", 1), ("sum-numbers", 2), ("shout", 1), ("make-report", 1)}
    for rid, slot in load_envelope(sealed.round).mapping.items():
        assert slot.task is not None
        ok = {"oracle": slot.task != "broken-oracle",
              "nop": (slot.task, slot.repeat) == ("make-report", 1),
              "model": (slot.task, slot.repeat) in model_wins}[slot.contestant]
        rules = sealed.rules_for(rid)
        assert rules is not None
        reward = {"reward": int(ok), **{check: int(ok) for check in rules.complete}}
        (run_dir(rd, rid) / "verifier").mkdir(parents=True)
        write_json(run_dir(rd, rid) / "verifier" / "reward.json", reward)
        write_json(run_dir(rd, rid) / "metrics.json", {"total_tokens": 100, "wall_time_s": 10.0})
        control = slot.contestant if slot.contestant in ("oracle", "nop") else None
        write_result(rd, RunResult(run_id=rid, status="done", task=slot.task, control=control,
                                   outcome="Complete" if ok else "Failed"))  # by hand: all checks or none
    write_manifest(rd)
    unseal_round(rd)
    rep = load_dataset_report(rd)
    assert sorted(rep.excluded) == ["broken-oracle", "make-report"]
    assert "(nop, task make-report) is Complete" in rep.excluded["make-report"][0]
    stats = {s.id: s for s in rep.contestants}
    model = stats["model"]
    assert (model.tasks, model.runs, model.resolved_runs) == (3, 6, 3)  # make-report's win not counted
    assert model.resolution_rate == pytest.approx(0.5)  # (0 + 0.5 + 1) / 3
    assert model.pass_at_k == {1: pytest.approx(0.5), 2: pytest.approx(2 / 3)}
    assert model.ci95 is not None and model.ci95[0] < 0.5 < model.ci95[1]
    assert model.tokens_per_resolved == pytest.approx(600 / 3) and model.wall_s_per_resolved == 20.0
    assert stats["oracle"].resolution_rate == 1.0 and stats["oracle"].ci95 == (1.0, 1.0)
    assert stats["nop"].resolution_rate == 0.0 and stats["nop"].tokens_per_resolved is None
    md = render_markdown(rep)
    assert "## Excluded tasks (2)" in md and "~~make-report~~ (excluded)" in md
    assert "| pass@1 | pass@2 |" in md and "## Resolution rate over 3 tasks" in md
    row = next(r for r in rep.grid if r.task == "shout")
    assert [c.outcome for c in row.cells["model"]] == ["Complete", "Failed"]
    assert f"[Complete]({row.cells['model'][0].link}) [Failed]({row.cells['model'][1].link})" in md
    # `labctl verify` re-grades every run with its own task's rules: only the controls are problems.
    v = verify_round(rd)
    assert v.problems and all("controls failed" in p.what for p in v.problems), [p.what for p in v.problems]


def test_a_dataset_lab_bundles_with_every_task_it_could_select(tmp_path: Path) -> None:
    """`labctl bundle LAB` carries the dataset (all its tasks, so a seeded sample picks the same ones
    from the bundle) and the unbundled lab selects the same tasks with the same tree hashes."""
    src = tmp_path / "src"
    shutil.copytree(TASKS, src / "tasks")
    lab = locked(lab_file(src, "  dataset: tasks\n  select: {sample: {n: 2, seed: 3}}"))
    made = subprocess.run([sys.executable, "-m", "labctl", "bundle", str(lab), "-o",
                           str(tmp_path / "lab.tar")], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stdout + made.stderr
    out = subprocess.run([sys.executable, "-m", "labctl", "unbundle", str(tmp_path / "lab.tar"),
                          str(tmp_path / "dst")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    again = load_lab(tmp_path / "dst" / "lab.yaml")
    assert sorted(p.name for p in (tmp_path / "dst" / "tasks").iterdir()) == NAMES
    assert list(again.tasks) == list(load_lab(lab).tasks) and len(again.tasks) == 2
    assert again.tree_sha256() == load_lab(lab).tree_sha256()
