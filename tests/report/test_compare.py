"""`labctl compare`: the exact tests against hand computations, the power approximation against a
number worked by hand, the paired bootstrap, and the command end to end on dataset rounds written to
disk here (sealed, verifier outputs and metrics written by hand, unsealed: no Docker).
"""

from __future__ import annotations

import json
from fractions import Fraction
from math import comb
from pathlib import Path

import pytest

from labctl.lock.lockfile import Lock, lock_path
from labctl.report.bootstrap import bootstrap_interval, seed_of
from labctl.report.compare import (
    CompareError,
    compare_contestants,
    compare_pair,
    compare_rounds,
    load_round,
)
from labctl.report.compare_text import render_text
from labctl.report.dataset import Cell, ContestantStats, DatasetReport, TaskRow
from labctl.report.paired import (
    binomial_two_sided,
    connor_n,
    mcnemar_exact,
    mcnemar_pairs_needed,
    min_discordant,
    ratio,
    ratio_difference_interval,
    ratio_interval,
    repeats_needed,
    sign_counts,
    sign_test,
)
from labctl.round.layout import RunResult, run_dir, write_json, write_manifest, write_result
from labctl.round.seal import load_envelope, seal_round, unseal_round
from labctl.round.verify import verify_round
from labctl.spec.load import load_lab
from tests.helpers import run_cli as cli
from tests.spec.test_dataset import TASKS, locked

# --- the exact tests ---------------------------------------------------------------------------------


def hand(b: int, c: int) -> float:
    """2·Σ_{k ≤ min} C(n, k) / 2^n, capped at 1, written out independently of the module."""
    n = b + c
    return min(1.0, 2 * sum(comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n)


@pytest.mark.parametrize(("b", "c", "p"), [
    (7, 1, 0.0703125),  # 2·(1 + 8)/256
    (1, 7, 0.0703125),  # symmetric
    (6, 0, 0.03125),  # 2/64: the fewest discordant pairs that can reach p < 0.05
    (5, 0, 0.0625),  # 2/32: five can never get there
    (8, 2, 0.109375),  # 2·(1 + 10 + 45)/1024
    (10, 0, 2 / 1024),
    (3, 3, 1.0),  # b = c: the doubled tail passes 1 and is capped
    (4, 5, 1.0),
    (0, 0, 1.0),  # no discordant pair at all
    (0, 1, 1.0),
])
def test_mcnemar_exact_against_hand_computation(b: int, c: int, p: float) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(p, abs=1e-15)
    assert mcnemar_exact(b, c) == pytest.approx(hand(b, c), abs=1e-15)


def test_binomial_is_exact_on_a_large_table() -> None:
    # 40 vs 15: the tail is a ratio of big integers; Fraction keeps it exact until the last step.
    exact = 2 * Fraction(sum(comb(55, k) for k in range(16)), 2 ** 55)
    assert binomial_two_sided(40, 15) == float(exact)
    assert 0.001 < binomial_two_sided(40, 15) < 0.00102
    with pytest.raises(ValueError):
        binomial_two_sided(-1, 2)
    assert min_discordant() == 6 and min_discordant(0.01) == 8  # 2/2^7 = 0.0156, 2/2^8 = 0.0078


def test_sign_test_over_tasks() -> None:
    diffs = [1 / 3, 2 / 3, 0.0, 1.0, -1 / 3, 0.0, 0.5]
    assert sign_counts(diffs) == (4, 1, 2)
    assert sign_test(diffs) == pytest.approx(2 * (1 + 5) / 32)  # ties dropped: 4 vs 1 of 5 → 0.375
    assert sign_test([0.5] * 6) == pytest.approx(2 / 64)
    assert sign_test([0.0, 0.0]) == 1.0
    assert sign_test([]) == 1.0


def test_connor_power_formula_against_a_hand_computed_number() -> None:
    # ψ = 0.3, δ = 0.1, α = 0.05, power 0.8: z = 1.959964, 0.841621;
    # [1.959964·√0.3 + 0.841621·√0.29]² / 0.01 = [1.073516 + 0.453227]² / 0.01 = 233.094
    assert connor_n(0.3, 0.1) == pytest.approx(233.094, abs=0.01)
    # 7 vs 1 of 12 pairs: ψ = 2/3, δ = 1/2: [1.959964·0.816497 + 0.841621·0.645497]² / 0.25 = 18.379
    assert connor_n(2 / 3, 0.5) == pytest.approx(18.379, abs=0.01)
    assert mcnemar_pairs_needed(7, 1, 12) == 19
    assert repeats_needed(19, 4) == 5 and repeats_needed(3, 4) == 1 and repeats_needed(None, 4) is None
    assert mcnemar_pairs_needed(3, 3, 12) is None and mcnemar_pairs_needed(0, 0, 12) is None
    # A larger difference needs fewer pairs; the same proportions need the same number whatever n.
    bigger = mcnemar_pairs_needed(9, 1, 12)
    assert bigger is not None and bigger < 19 and mcnemar_pairs_needed(14, 2, 24) == 19
    with pytest.raises(ValueError):
        connor_n(0.1, 0.5)  # δ² > ψ cannot be


def test_ratio_and_its_intervals() -> None:
    nums, dens = [100.0, 300.0, 0.0, 200.0], [1.0, 2.0, 0.0, 1.0]
    assert ratio(nums, dens) == 150.0 and ratio([1.0], [0.0]) is None
    iv = ratio_interval(nums, dens, seed=5)
    assert iv is not None and iv[0] <= 150.0 <= iv[1] and iv == ratio_interval(nums, dens, seed=5)
    d = ratio_difference_interval((nums, dens), ([50.0, 50.0, 50.0, 50.0], [1.0, 1.0, 1.0, 1.0]), seed=5)
    assert d is not None and d[0] <= 100.0 <= d[1]
    assert ratio_interval([0.0], [0.0], seed=1) is None


# --- the paired comparison on a round built in memory -----------------------------------------------


def report(outcomes: dict[str, dict[str, list[bool]]], rid: str = "r-mem") -> DatasetReport:
    """contestant → task → resolved per repeat; every run spends 1000 tokens and 10 s."""
    ids = list(outcomes)
    tasks = sorted(next(iter(outcomes.values())))
    stats = [ContestantStats(id=c, name=c, kind="cloud", tasks=0, runs=0, resolved_runs=0,
                             resolution_rate=None, ci95=None, pass_at_k={}, tokens_per_resolved=None,
                             wall_s_per_resolved=None)
             for c in ids]
    stats.append(stats[0].model_copy(update={"id": "oracle", "name": "oracle", "kind": "oracle"}))
    grid = [TaskRow(task=t, excluded=False, cells={c: [
        Cell(run=f"{c}-{t}-{k}", repeat=k + 1, status="done", outcome="Complete" if ok else "Failed",
             resolved=ok, total_tokens=1000, wall_s=10.0, link="runs/x/")
        for k, ok in enumerate(outcomes[c][t])] for c in ids}) for t in tasks]
    repeats = max(len(v) for v in outcomes[ids[0]].values())
    return DatasetReport(round=rid, lab="mem", title="mem", repeats=repeats, forced=False, tasks=tasks,
                         excluded={}, contestants=stats, grid=grid)


T, F = True, False


def test_a_clear_winner_is_separated() -> None:
    rep = report({"a": {f"t{i}": [T, T, T] for i in range(4)}, "b": {f"t{i}": [F, F, T] for i in range(4)}})
    c = compare_contestants(rep)
    assert c.not_compared == ["oracle"] and len(c.pairs) == 1
    p = c.pairs[0]
    assert (p.mcnemar.first_only, p.mcnemar.second_only, p.mcnemar.both, p.mcnemar.neither) == (8, 0, 4, 0)
    assert p.mcnemar.p_value == pytest.approx(2 / 256)
    assert p.difference == pytest.approx(2 / 3) and p.ci95 == pytest.approx((2 / 3, 2 / 3))
    assert p.separated and p.verdict.startswith("a resolves more than b: +67 pts")
    assert p.first.tokens_per_resolved == 1000.0 and p.second.tokens_per_resolved == 3000.0
    assert p.tokens_difference == -2000.0 and p.wall_s_difference == -20.0


def test_identical_contestants_cannot_be_separated_and_imply_no_repeats() -> None:
    same = {f"t{i}": [T, F] for i in range(3)}
    p = compare_contestants(report({"a": same, "b": same})).pairs[0]
    assert p.mcnemar.p_value == 1.0 and p.sign_test.p_value == 1.0 and p.difference == 0.0
    assert not p.separated and p.power.repeats_needed is None
    assert "cannot separate a and b" in p.verdict and "only 0 discordant pair(s)" in p.verdict
    assert "No run pair went differently" in p.verdict


def test_an_even_split_of_discordant_pairs() -> None:
    p = compare_contestants(report({"a": {"t1": [T, F], "t2": [F, T]},
                                    "b": {"t1": [F, T], "t2": [T, F]}})).pairs[0]
    assert (p.mcnemar.first_only, p.mcnemar.second_only) == (2, 2) and p.mcnemar.p_value == 1.0
    assert "split evenly" in p.verdict and p.power.pairs_needed is None


def test_the_paired_interval_is_the_bootstrap_of_per_task_differences() -> None:
    rep = report({"a": {"t1": [T, T], "t2": [T, F], "t3": [F, F], "t4": [T, T], "t5": [T, F]},
                  "b": {"t1": [F, F], "t2": [T, F], "t3": [T, F], "t4": [F, T], "t5": [F, F]}})
    seed = seed_of("r-mem:a:b:pair")
    p = compare_pair((rep, "a", "a"), (rep, "b", "b"), rep.tasks, seed)
    diffs = [1.0, 0.0, -0.5, 0.5, 0.5]
    assert p.difference == pytest.approx(sum(diffs) / 5)
    assert p.ci95 == bootstrap_interval(diffs, seed)  # the report's bootstrap, resampling tasks
    assert p.ci95 is not None and p.ci95[0] <= p.difference <= p.ci95[1]
    again = compare_pair((rep, "a", "a"), (rep, "b", "b"), rep.tasks, seed)
    assert again == p  # deterministic for the seed
    other = compare_pair((rep, "a", "a"), (rep, "b", "b"), rep.tasks, seed + 7)
    assert other.mcnemar == p.mcnemar and other.difference == p.difference


def test_one_contestant_is_refused_plainly() -> None:
    rep = report({"solo": {"t1": [T], "t2": [F]}})
    with pytest.raises(CompareError, match=r"has one contestant \(solo\) besides the controls"):
        compare_contestants(rep)
    with pytest.raises(CompareError, match="give two different rounds"):
        compare_rounds(rep, rep)


# --- `labctl compare` on rounds on disk -------------------------------------------------------------

LAB = f"""version: 1
lab: {{name: cmp}}
engine:
  llama_cpp: {{sdist: llama-cpp-python==0.3.36}}
profile: cpu
round: {{repeats: 3, first_number: 1}}
task:
  dataset: {TASKS}
agent: {{runtime: mini-swe-agent, version: 2.4.6}}
contestants:
  - {{id: oracle, kind: oracle}}
  - {{id: nop, kind: nop}}
  - {{id: alpha, kind: cloud, provider: anthropic, model: claude-x, api_key_env: NO_KEY_NEEDED}}
  - {{id: beta, kind: cloud, provider: openai, model: gpt-x, api_key_env: NO_KEY_NEEDED}}
"""
ROUND1 = {  # (task → repeats resolved); broken-oracle's oracle fails, so it is excluded for everyone
    "alpha": {"sum-numbers": {1, 2, 3}, "shout": {1, 2, 3}, "make-report": {1, 2}, "repo-note": {1, 2}},
    "beta": {"sum-numbers": {1, 2}, "shout": {1}, "make-report": {3}},
}
ROUND2 = {
    "alpha": {t: {1, 2, 3} for t in ("sum-numbers", "shout", "make-report", "repo-note")},
    "beta": {},
}
TOKENS = {"alpha": 1000, "beta": 2000}
WALL = {"alpha": 10.0, "beta": 30.0}


def lab_path(tmp: Path) -> Path:
    (tmp / "lab.yaml").write_text(LAB)
    return locked(tmp / "lab.yaml")


def make_round(lab: Path, wins: dict[str, dict[str, set[int]]], unseal: bool = True) -> Path:
    lock = Lock.model_validate_json(lock_path(lab).read_text())
    made = seal_round(load_lab(lab), lock, lab.parent / "rounds")
    rd, sealed = made.round_dir, made.record
    for rid, slot in load_envelope(sealed.round).mapping.items():
        assert slot.task is not None
        who = slot.contestant
        if who in ("oracle", "nop"):
            ok = who == "oracle" and slot.task != "broken-oracle"
        else:
            ok = slot.repeat in wins[who].get(slot.task, set())
        rules = sealed.rules_for(rid)
        assert rules is not None
        (run_dir(rd, rid) / "verifier").mkdir(parents=True)
        write_json(run_dir(rd, rid) / "verifier" / "reward.json",
                   {"reward": int(ok), **{check: int(ok) for check in rules.complete}})
        if who in TOKENS:
            write_json(run_dir(rd, rid) / "metrics.json",
                       {"total_tokens": TOKENS[who], "wall_time_s": WALL[who]})
        write_result(rd, RunResult(run_id=rid, status="done", task=slot.task,
                                   control=who if who in ("oracle", "nop") else None,
                                   outcome="Complete" if ok else "Failed"))
    write_manifest(rd)
    if unseal:
        unseal_round(rd)
    return rd


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LABCTL_ENVELOPES", str(tmp_path / "envelopes"))
    return lab_path(tmp_path)


def test_compare_a_round_text_and_json(lab: Path) -> None:
    rd = make_round(lab, ROUND1)
    code, out, err = cli("compare", rd)
    assert code == 0, err
    rid = load_round(rd).round
    assert f"Lab cmp, round {rid}: 4 task(s) × 3 repeat(s) compared; left out: oracle, nop (controls)." in out
    assert "Tasks not compared (controls failed, or not in every round): broken-oracle." in out
    assert "alpha vs beta" in out
    assert "12 run pairs: both 3, alpha only 7, beta only 1, neither 1 → p = 0.07031" in out
    assert "4 tasks: alpha better on 4, beta on 0, ties 0 → p = 0.125" in out
    assert "alpha 83% (95% CI" in out and "beta 33% (95% CI" in out
    assert "Difference         +50 pts (95% paired bootstrap CI" in out
    assert "The data cannot separate alpha and beta: McNemar p = 0.07031 ≥ 0.05." in out
    assert "about 5 repeats per task (2 more; 19 run pairs)" in out
    assert "alpha 1,200 (" in out and "beta 6,000 (" in out and "difference -4,800 (" in out

    code, js, err = cli("compare", rd, "--json")
    assert code == 0, err
    doc = json.loads(js)
    assert doc["format"] == "labctl.compare/1" and doc["kind"] == "contestants" and doc["rounds"] == [rid]
    assert doc["tasks"] == ["make-report", "repo-note", "shout", "sum-numbers"]
    assert doc["excluded"] == ["broken-oracle"] and doc["not_compared"] == ["oracle", "nop"]
    (pair,) = doc["pairs"]
    assert pair["first"]["contestant"] == "alpha" and pair["second"]["contestant"] == "beta"
    assert pair["mcnemar"] == {"pairs": 12, "both": 3, "first_only": 7, "second_only": 1, "neither": 1,
                               "p_value": 0.0703125}
    assert pair["sign_test"] == {"tasks": 4, "first_better": 4, "second_better": 0, "ties": 0,
                                 "p_value": 0.125}
    assert pair["difference"] == pytest.approx(0.5) and not pair["separated"]
    lo, hi = pair["ci95"]
    assert lo <= 0.5 <= hi
    assert pair["power"] == {"method": "Connor 1987", "alpha": 0.05, "power": 0.8, "pairs_needed": 19,
                             "repeats_needed": 5, "more_repeats": 2}
    assert pair["first"]["tokens_per_resolved"] == 1200.0 and pair["second"]["wall_s_per_resolved"] == 90.0
    assert cli("compare", rd, "--json")[1] == js  # stable, byte for byte

    # The dataset round's report carries the same comparison.
    code, _, err = cli("report", rd)
    assert code == 0, err
    md = (rd / "report.md").read_text()
    assert "## Paired comparison" in md and "| alpha vs beta | +50 pts |" in md
    assert "7 vs 1 of 12, p = 0.07031" in md and "The data cannot separate alpha and beta" in md
    assert md.index("## Paired comparison") < md.index("## Task × contestant")
    assert cli("report", rd, "--format", "json")[0] == 0
    assert json.loads((rd / "report.json").read_text())["comparison"] == doc
    assert cli("report", rd, "--format", "html")[0] == 0
    assert '<h2 id="comparison">Paired comparison</h2>' in (rd / "report.html").read_text()
    # The report rewrote the manifest: verify finds no problem but the broken task's controls.
    problems = verify_round(rd).problems
    assert problems and all("controls failed" in p.what for p in problems), [p.what for p in problems]


def test_compare_two_rounds_of_the_same_lab(lab: Path) -> None:
    r1, r2 = make_round(lab, ROUND1), make_round(lab, ROUND2)
    id1, id2 = load_round(r1).round, load_round(r2).round
    assert id1 != id2
    code, js, err = cli("compare", r1, r2, "--json")
    assert code == 0, err
    doc = json.loads(js)
    assert doc["kind"] == "rounds" and doc["rounds"] == [id1, id2] and doc["repeats"] == [3, 3]
    alpha, beta = doc["pairs"]
    assert alpha["first"]["label"] == "alpha (1)" and alpha["second"]["round"] == id2
    assert (alpha["mcnemar"]["first_only"], alpha["mcnemar"]["second_only"]) == (0, 2)
    assert alpha["mcnemar"]["p_value"] == 0.5 and alpha["difference"] == pytest.approx(-2 / 12)
    assert (beta["mcnemar"]["first_only"], beta["mcnemar"]["second_only"]) == (4, 0)
    assert beta["mcnemar"]["p_value"] == 0.125 and beta["second"]["tokens_per_resolved"] is None
    assert beta["tokens_difference"] is None
    code, out, _ = cli("compare", r1, r2)
    assert code == 0 and f"rounds {id1} (1) and {id2} (2): 4 task(s) × 3 / 3 repeat(s)" in out
    assert "alpha (1) vs alpha (2)" in out and "The data cannot separate beta (1) and beta (2)" in out
    # the interval is seeded from the round ids (random): read it back from the JSON document
    lo, hi = beta["first"]["tokens_ci95"]
    assert f"Tokens / resolved  beta (1) 6,000 ({lo:,.0f} – {hi:,.0f}); beta (2) —; difference —" in out
    assert "only 4 discordant pair(s) (no split of fewer than 6 can reach p < 0.05)" in out


def test_a_sealed_round_is_refused(lab: Path) -> None:
    rd = make_round(lab, ROUND1, unseal=False)
    code, out, err = cli("compare", rd)
    assert code == 1 and out == ""
    assert f"{rd} is still sealed" in err and f"labctl unseal {rd}" in err
    code, out, _ = cli("compare", rd, "--json")
    assert code == 1 and "still sealed" in json.loads(out)["error"]
    code, _, err = cli("compare", lab.parent / "nowhere")
    assert code == 1 and "not a round directory" in err


def test_render_text_names_every_pair() -> None:
    rep = report({"a": {"t1": [T]}, "b": {"t1": [F]}, "c": {"t1": [T]}})
    text = render_text(compare_contestants(rep))
    assert [line for line in text.splitlines() if " vs " in line] == ["a vs b", "a vs c", "b vs c"]
