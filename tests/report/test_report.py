"""`labctl report`: the published round's tables computed from a synthetic unsealed round.

No Docker, no model: the smoke lab is sealed with a constructed lock (tests/round/test_seal.py's
`make_lab`), runs are written as the runner would leave them (metrics.json with some keys missing,
a transcript with llama.cpp timings), then unsealed. The browser test renders the HTML page in a
real headless Chromium and checks the tables are in its DOM.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from labctl.lock.lockfile import lock_path, read_lock, write_lock
from labctl.round.grading import derive_outcome
from labctl.round.layout import RunResult, read_sealed, run_dir, write_result
from labctl.round.seal import load_envelope, seal_round, unseal_round
from labctl.spec.lab import Lab
from labctl.spec.located import load_yaml, validate
from tests.conftest import in_ci
from tests.helpers import run_cli as cli
from tests.round.test_seal import CHECKS, LOCAL, NOP, ORACLE, ROOT, envelopes, make_lab  # noqa: F401

CHROMIUM = Path("/usr/bin/chromium")




LIMITS = "LimitsExceeded — its step limit (agent.step_limit) was reached"
"""mini-swe-agent's own word for its step limit, as its adapter tells it."""


def play(contestant: str, repeat: int) -> tuple[tuple[str, ...], dict[str, Any], list[dict[str, Any]]]:
    """(checks passed, metrics.json, transcript records) of one synthetic run.

    oracle: Complete (repeat 2 forgets to commit: Partial); nop: Failed; tiny model: Total failure
    (answered 3 requests, never called a tool). The tiny model's metrics.json lacks build,
    screenshot and speeds: the report must fill speeds from the transcript and dash the rest. The
    verifier's time is in metrics.json (runs written before it was recorded lack it: the oracle's).
    """
    if contestant == ORACLE:
        passed = CHECKS if repeat == 1 else ("greeting_file", "greeting_text")
        return passed, {"tool_calls": None, "requests": 0, "messages": 0, "total_tokens": 0,
                        "commits_pushed": 2 - repeat, "build": {"passed": True, "attempt": repeat},
                        "screenshot": True, "wall_time_s": 4.0 + repeat, "interventions": {},
                        "prompt_tokens_per_s": None, "gen_tokens_per_s": None, "errored": False}, []
    if contestant == NOP:
        return (), {"tool_calls": None, "total_tokens": 0, "commits_pushed": 0, "build": {"passed": False,
                    "attempt": None}, "screenshot": False, "wall_time_s": 1.0, "verifier_wall_s": 40.0,
                    "interventions": {}, "ended": {"by": "agent", "exit_code": 0}}, []
    predicted = 20 if repeat == 1 else 30  # in 500 ms: 40 and 60 tokens/s
    records: list[dict[str, Any]] = [{
        "seq": i, "t_start": i, "t_end": i + 1, "latency_ms": 1000, "status": 200, "error": None,
        "request": {"messages": [{"role": "user", "content": "hi"}] * (2 * i + 1)},
        "response": {"content": "gibberish", "tool_calls": [], "finish_reason": "stop"},
        "usage": {"prompt_tokens": 400 + 100 * repeat, "completion_tokens": 100, "cached_tokens": 0,
                  "total_tokens": 500 + 100 * repeat},
        "timings": {"prompt_n": 100, "prompt_ms": 400.0, "prompt_per_second": 250.0,
                    "predicted_n": predicted, "predicted_ms": 500.0},
    } for i in range(3)] + [{"kind": "intervention", "seq": 2, "t": 2.5, "name": "keep-going",
                             "action": "nudge"}]
    total = 3 * (500 + 100 * repeat)
    return (), {"tool_calls": 0, "requests": 3, "messages": 5, "prompt_tokens": total - 300,
                "completion_tokens": 300, "total_tokens": total, "commits_pushed": 0, "wall_time_s": 95.0,
                "verifier_wall_s": 30.5, "interventions": {"keep-going": 1}, "nudges": 1,
                "flags": ["zero tool calls"],
                "ended": {"by": "agent", "exit_code": 0, "cut_answers": 2, "detail": LIMITS}}, records


def fake_runs(rd: Path) -> None:
    sealed = read_sealed(rd)
    for rid, slot in load_envelope(rd.name).mapping.items():
        passed, metrics, records = play(slot.contestant, slot.repeat)
        d = run_dir(rd, rid)
        (d / "verifier").mkdir(parents=True)
        reward = {"reward": int(passed == CHECKS), "checks": {c: c in passed for c in CHECKS},
                  "notes": {c: f"{c}: not there ({slot.contestant})" for c in CHECKS if c not in passed}}
        (d / "verifier" / "reward.json").write_text(json.dumps(reward) + "\n")
        (d / "metrics.json").write_text(json.dumps(metrics) + "\n")
        (d / "transcript.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        outcome = derive_outcome(reward, metrics, sealed.outcome_rules)
        started = datetime(2026, 6, 18, 12, 0, tzinfo=UTC)
        total = metrics["wall_time_s"] + metrics.get("verifier_wall_s", 0) + 20
        write_result(rd, RunResult(run_id=rid, status="done", outcome=outcome, attempts=1, started=started,
                                   ended=started + timedelta(seconds=total)))


PUBLISHED_FROM = {ORACLE: "claude-sonnet-4", NOP: "devstral-24b", LOCAL: "qwen3-coder-30b-a3b"}
"""Which Round 7 contestant's published figures each smoke contestant borrows."""


def add_published(lab: Path) -> None:
    """Give each contestant a copy of a lab.yaml contestant's `published:` block (not part of the
    lock's spec hash, so the lock stays current), and the tiny model's lock a GGUF header."""
    r7 = {c.id: c for c in validate(Lab, load_yaml(ROOT / "lab.yaml")).contestants}
    text = lab.read_text(encoding="utf-8")
    for ours, theirs in PUBLISHED_FROM.items():
        pub = json.dumps(r7[theirs].published.model_dump(mode="json", exclude_none=True))  # type: ignore[union-attr]
        text, n = re.subn(rf"(- id: {ours}\n(?:    .*\n)*)", rf"\1    published: {pub}\n", text)
        assert n == 1, ours
    lab.write_text(text, encoding="utf-8")


def add_gguf(lab: Path) -> None:
    """The header metadata `labctl lock` would record for the smoke lab's generated model."""
    from labctl.gguf.read import read_local
    from labctl.gguf.tiny import TinyModelParams, write_tiny_gguf

    model = lab.parent / "tiny.gguf"
    write_tiny_gguf(model, TinyModelParams(seed=7))
    lock = read_lock(lock_path(lab))
    lock.models[LOCAL].gguf = read_local([model])
    write_lock(lock_path(lab), lock)


def make_round(tmp: Path, *, repeats: int = 1, published: bool = False, unseal: bool = True) -> Path:
    from labctl.lock.resolve import require_lock
    from labctl.spec.load import load_lab

    lab = make_lab(tmp / "lab", repeats=str(repeats))
    add_gguf(lab)
    if published:
        add_published(lab)
    loaded = load_lab(lab)
    rd = seal_round(loaded, require_lock(loaded), tmp / "rounds").round_dir
    fake_runs(rd)
    if unseal:
        unseal_round(rd)
    return rd


def table(md: str, title: str, run_column: bool = False) -> dict[str, list[str]]:
    """{model: cells after the model} of one Markdown table; its Run column (run ids are shuffled
    by the seal) left out unless `run_column`."""
    lines = md.split(f"## {title}\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    rows = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]
    skip = rows[0].index("Run") if "Run" in rows[0] and not run_column and rows[0][0] != "Run" else None
    return {r[0]: [c for i, c in enumerate(r[1:], 1) if i != skip] for r in rows[2:]}


NAMES = {ORACLE: "Reference solution", NOP: "Does nothing", LOCAL: "Tiny llama (random weights)"}


@pytest.fixture
def one(tmp_path: Path, envelopes: Path) -> Path:  # noqa: F811
    return make_round(tmp_path)


def test_report_tables(one: Path) -> None:
    code, stdout, stderr = cli("report", one)
    assert code == 0, stderr
    assert "report.md" in stdout and "report.png" in stdout
    md = (one / "report.md").read_text()
    o, n, t = NAMES[ORACLE], NAMES[NOP], NAMES[LOCAL]
    assert table(md, "Results") == {
        o: ["—", "0", "0", "1", "pass (attempt 1)", "yes", "—", "—", "Complete"],
        n: ["—", "0", "—", "0", "fail", "no", "—", "—", "Failed"],
        t: ["0", "1,800", "5", "0", "—", "—", "1", "0", "Total failure"],
    }
    assert table(md, "Token efficiency") == {
        o: ["0", "Complete", "3/3", "0"], n: ["0", "Failed", "0/3", "—"],
        t: ["1,800", "Total failure", "0/3", "—"]}
    assert table(md, "The Numbers") == {
        o: ["Oracle", "—", "0", "—", "0", "1", "pass (attempt 1)", "yes", "0", "5s", "Complete"],
        n: ["Nop", "—", "0", "—", "—", "0", "fail", "no", "0", "1s", "Failed"],
        t: ["Local dense", "140K", "1,800", "0", "5", "0", "—", "—", "1", "1m35s", "Total failure"],
    }
    # Speeds come from the transcript's llama.cpp timings (metrics.json lacks them).
    # Agent / verifier / total time: metrics.json and result.json (the oracle's run has no verifier time).
    assert table(md, "Speed") == {o: ["—", "—", "5s", "—", "25s"], n: ["—", "—", "1s", "40s", "1m1s"],
                                  t: ["250.0", "40.0", "1m35s", "30s", "2m26s"]}
    assert "## Repeats" not in md and "/ pub" not in md
    assert (one / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_with_repeats(tmp_path: Path, envelopes: Path) -> None:  # noqa: F811
    rd = make_round(tmp_path, repeats=2)
    assert cli("report", rd)[0] == 0
    md = (rd / "report.md").read_text()
    o, t = NAMES[ORACLE], NAMES[LOCAL]
    results = table(md, "Results")
    assert results[o] == ["—", "0", "0", "0.5 (0–1)", "2/2 pass (attempt 1–2)", "2/2 yes", "—", "—",
                          "1× Complete, 1× Partial"]
    assert results[t] == ["0", "1,950 (1,800–2,100)", "5", "0", "—", "—", "1", "0",
                          "2× Total failure"]
    assert table(md, "Speed")[t] == ["250.0", "50.0 (40.0–60.0)", "1m35s", "30s", "2m26s"]
    assert table(md, "Repeats") == {o: ["2", "1", "50%", "100%"], NAMES[NOP]: ["2", "0", "0%", "0%"],
                                    t: ["2", "0", "0%", "0%"]}
    assert "mean (min–max)" in md
    assert len(table(md, "Runs")) == 6


def test_published_figures_side_by_side(tmp_path: Path, envelopes: Path) -> None:  # noqa: F811
    rd = make_round(tmp_path, published=True)
    assert cli("report", rd)[0] == 0
    md = (rd / "report.md").read_text()
    o, n, t = NAMES[ORACLE], NAMES[NOP], NAMES[LOCAL]
    results = table(md, "Results")
    # Every figure lab.yaml carries: Claude Sonnet 4 (run-14) 88 tool calls, 19,237 tokens, 4 commits,
    # built on the 1st try, a screenshot, Complete; Devstral (run-10) 0 tool calls, Total failure;
    # Qwen3-Coder (run-15) 60 tool calls, 1 commit, 3rd try, Partial.
    built = "pass (attempt 1) / pub pass (attempt 1)"
    assert results[o] == ["— / pub 88", "0 / pub 19,237", "0 / pub 183", "1 / pub 4", built, "yes / pub yes",
                          "—", "— / pub 0", "Complete / pub Complete"]
    assert results[n] == ["— / pub 0", "0 / pub 14,447", "— / pub 9", "0 / pub 0", "fail", "no / pub no",
                          "—", "— / pub 1", "Failed / pub Total failure"]
    assert results[t] == ["0 / pub 60", "1,800 / pub 2,059,519", "5 / pub 127", "0 / pub 1",
                          "— / pub pass (attempt 3)", "— / pub no", "1", "0 / pub 0",
                          "Total failure / pub Partial"]
    for title in ("Results", "Token efficiency", "The Numbers"):
        runs = table(md, title, run_column=True)
        for who, pub_run in ((o, "run-14"), (n, "run-10"), (t, "run-15")):
            assert re.fullmatch(rf"run-\d+ / pub {pub_run}", runs[who][0]), (title, runs[who])
    efficiency = table(md, "Token efficiency")
    assert efficiency[t][:2] == ["1,800 / pub 2,059,519", "Total failure / pub Partial"]
    numbers = table(md, "The Numbers")
    assert numbers[o][:2] == ["Oracle / pub Cloud (control)", "— / pub Unknown"]
    assert numbers[o][4:] == ["0 / pub 183", "1 / pub 4", "pass (attempt 1) / pub pass (attempt 1)",
                              "yes / pub yes", "0 / pub 0", "5s / pub 10m", "Complete / pub Complete"]
    assert numbers[n][-1] == "Failed / pub Failed"  # Devstral is Failed in the article's Numbers table
    assert numbers[t][:2] == ["Local dense / pub Local MoE", "140K / pub 30B (3B active)"]
    assert numbers[t][4] == "5 / pub 127" and numbers[t][8] == "1 / pub 0"
    assert table(md, "Speed")[o][2] == "5s / pub 10m"


def test_published_notation() -> None:
    """The publication's own terms for builds and human help, from lab.yaml's facts."""
    from labctl.report.published import pub_build, pub_nudges
    from labctl.spec.published import BuildResult

    assert pub_build(BuildResult(passed=True, attempt=3)) == "pass (attempt 3)"
    assert pub_build(BuildResult(passed=False, attempts=13)) == "fail (0/13)"
    r7 = {c.id: c.published for c in validate(Lab, load_yaml(ROOT / "lab.yaml")).contestants}
    assert {k: pub_nudges(p) for k, p in r7.items() if p} == {
        "qwen3.6-35b-a3b": "3", "gemma-4-12b": "2 + stop", "hermes-4-14b": "stop", "qwen3-coder-30b-a3b": "0",
        "devstral-24b": "1", "claude-sonnet-4": "0"}
    with pytest.raises(ValueError, match="never passed has no passing `attempt`"):
        BuildResult(passed=False, attempt=2)


def test_report_refuses_a_sealed_round(tmp_path: Path, envelopes: Path) -> None:  # noqa: F811
    rd = make_round(tmp_path, unseal=False)
    before = sorted(p.name for p in rd.iterdir())
    code, stdout, stderr = cli("report", rd, "--json")
    assert code == 1 and "not unsealed" in stderr and f"labctl unseal {rd}" in stderr
    assert json.loads(stdout)["ok"] is False
    assert sorted(p.name for p in rd.iterdir()) == before
    code, _, stderr = cli("report", tmp_path)
    assert code == 1 and "not a round directory" in stderr


@pytest.mark.parametrize("fmt", ["md", "json", "html"])
def test_verify_passes_after_report(one: Path, fmt: str) -> None:
    code, stdout, stderr = cli("report", one, "--format", fmt, "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["files"] == [str(one / f"report.{fmt}"), str(one / "report.png")]
    code, _, stderr = cli("verify", one)
    assert code == 0, stderr
    manifest = json.loads((one / "manifest.json").read_text())["files"]
    assert f"report.{fmt}" in manifest and "report.png" in manifest
    if fmt == "json":
        data = json.loads((one / "report.json").read_text())
        by_id = {c["id"]: c for c in data["contestants"]}
        assert by_id[ORACLE]["pass_at_1"] == 1.0 and by_id[LOCAL]["type"] == "Local dense"
        assert by_id[LOCAL]["runs"][0]["metrics"]["gen_tokens_per_s"] == 40.0
        assert [t["title"] for t in data["tables"]][:3] == ["Results", "Token efficiency", "The Numbers"]


def artifacts_dir() -> Path:
    return Path(os.environ.get("LABCTL_TEST_ARTIFACTS") or "/tmp/labctl-test-artifacts")


@pytest.mark.browser
def test_html_renders_in_chromium(tmp_path: Path, envelopes: Path) -> None:  # noqa: F811
    if not CHROMIUM.exists():
        if in_ci():
            pytest.fail(f"{CHROMIUM} missing: .ci/run must install Debian's chromium package")
        pytest.skip(f"{CHROMIUM} missing (apt-get install -y chromium)")
    rd = make_round(tmp_path, repeats=2, published=True)
    assert cli("report", rd, "--format", "html")[0] == 0
    page = rd / "report.html"
    html = page.read_text()
    assert "<script" not in html and "http" not in html.split("<body>", 1)[1].replace(
        "https://vibescoder.dev", "")  # self-contained: nothing to fetch but the source link text
    profile, shot = tmp_path / "chromium-profile", tmp_path / "shot.png"
    base = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={profile}"]
    url = page.resolve().as_uri()
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for slug in ("results", "token-efficiency", "the-numbers", "speed", "repeats", "runs"):
        assert f'<table id="{slug}">' in dom.stdout
    assert "0.5 (0–1) / pub 4" in dom.stdout and "1× Complete, 1× Partial" in dom.stdout
    # The failed runs' section: each failed check with the verifier's reason, in the rendered DOM.
    assert '<section id="why">' in dom.stdout
    nop_runs = re.findall(r'<article class="run Failed" id="why-(run-\d+)">(.*?)</article>', dom.stdout, re.S)
    assert len(nop_runs) == 2, dom.stdout[-3000:]
    for _, art in nop_runs:
        assert "Does nothing · Failed" in art and "3 of 3 checks failed:" in art
        assert f"<td><code>greeting_text</code></td><td>greeting_text: not there ({NOP})</td>" in art
    assert 'src="data:image/png;base64,' in dom.stdout
    done = subprocess.run([*base, f"--screenshot={shot}", "--window-size=1280,2000", url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.is_file() and shot.stat().st_size > 10_000, done.stderr[-2000:]
    keep = artifacts_dir()
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / "report.png")
    shutil.copy(rd / "report.png", keep / "report-chart.png")
    code, _, stderr = cli("verify", rd)  # the synthetic oracle's 2nd repeat is Partial: controls failed
    assert code == 1 and "controls failed" in stderr and "(oracle) is Partial" in stderr, stderr


def test_runner_metrics_are_read_under_their_own_names(tmp_path: Path) -> None:
    """The report reads metrics.json as the runner's record: one name per figure (no renaming), the
    interventions per rule summed for the Nudges column; an old round's bare count still reads."""
    from labctl.report.data import ReportMetrics
    from labctl.round.records import RunMetrics, read_metrics, write_metrics

    written = RunMetrics(commits_pushed=2, gen_tokens_per_s=41.5, prompt_tokens_per_s=900.0,
                         interventions={"keep-going": 2, "loop-stop": 1}, tool_calls=7)
    write_metrics(tmp_path / "metrics.json", written)
    got = ReportMetrics.model_validate(read_metrics(tmp_path / "metrics.json").model_dump())  # type: ignore[union-attr]
    assert (got.commits_pushed, got.gen_tokens_per_s, got.prompt_tokens_per_s) == (2, 41.5, 900.0)
    assert got.tool_calls == 7
    assert got.interventions == {"keep-going": 2, "loop-stop": 1} and got.interventions_fired == 3
    old = RunMetrics.model_validate({"interventions": 3, "tool_calls": 7, "a_key_from_elsewhere": 1})
    assert old.interventions == {"(rule not recorded)": 3} and old.interventions_fired == 3
    assert RunMetrics.model_validate({"interventions": 0}).interventions_fired == 0


def test_report_says_why_each_run_ended(one: Path) -> None:
    """Per run: the failed checks with the verifier's own notes, the build, the pathology flags and
    interventions that fired, and agent / verifier / total time; Markdown and JSON alike."""
    assert cli("report", one)[0] == 0
    md = (one / "report.md").read_text()
    why = md.split("## Why each run ended as it did\n", 1)[1]
    runs = dict(re.findall(r"^### (run-\d+) · (.*)$", why, flags=re.M))
    assert sorted(runs.values()) == ["Does nothing · Failed", "Reference solution · Complete",
                                     "Tiny llama (random weights) · Total failure"]
    nop = why.split("· Does nothing · Failed\n", 1)[1].split("\n### ", 1)[0]
    assert "3 of 3 checks failed:" in nop
    for check in CHECKS:
        assert f"| `{check}` | {check}: not there ({NOP}) |" in nop
    assert "- Build: fails in the verifier" in nop and "- Time: agent 1s, verifier 40s, total 1m1s" in nop
    tiny = why.split("· Tiny llama (random weights) · Total failure\n", 1)[1].split("\n### ", 1)[0]
    assert "- Pathology flags: zero tool calls" in tiny and "- Interventions: keep-going ×1" in tiny
    assert ("- Ended: the agent ended by itself: LimitsExceeded — its step limit (agent.step_limit) was "
            "reached (exit 0); 2 answers cut at max_output") in tiny
    assert "- Ended: the agent ended by itself (exit 0)" in nop
    oracle = why.split("· Reference solution · Complete\n", 1)[1].split("\n### ", 1)[0]
    assert "All 3 checks passed." in oracle and "| Check |" not in oracle
    assert "- Time: agent 5s, verifier —, total 25s" in oracle
    assert "- Ended: not recorded (the round predates it)" in oracle  # its metrics.json has no `ended`
    assert cli("report", one, "--format", "json")[0] == 0
    data = json.loads((one / "report.json").read_text())
    failed = next(w for w in data["why"] if w["outcome"] == "Failed")
    assert [f["check"] for f in failed["failed_checks"]] == list(CHECKS)


def test_intro_plurals(one: Path) -> None:
    from dataclasses import replace

    from labctl.report.data import load_report
    from labctl.report.render import render_markdown

    rep = load_report(one)
    assert "3 contestants, 1 run each." in render_markdown(rep, chart=None)
    alone = render_markdown(replace(rep, contestants=rep.contestants[:1]), chart=None)
    assert "1 contestant, 1 run." in alone and "(s)" not in alone


def test_chart_says_plainly_when_no_run_used_a_model(one: Path) -> None:
    from dataclasses import replace

    from labctl.report.charts import NO_MODEL, NO_TIMINGS, chart_figure
    from labctl.report.data import load_report

    rep = load_report(one)
    with_model = chart_figure(rep)
    assert len(with_model.axes) == 2 and all(ax.axison for ax in with_model.axes)
    controls = replace(rep, contestants=[c for c in rep.contestants if c.contestant.kind != "local"])
    fig = chart_figure(controls)
    assert fig.axes == [] and NO_MODEL in [t.get_text() for t in fig.texts]
    # A model but no llama.cpp timings (a cloud run, say): the speed panel says so instead of a 0–1 axis.
    for cd in rep.contestants:
        for r in cd.runs:
            r.metrics.gen_tokens_per_s = None
    tokens_only = chart_figure(rep)
    assert [ax.axison for ax in tokens_only.axes] == [True, False]
    assert NO_TIMINGS in [t.get_text() for t in tokens_only.axes[1].texts]


def round7_as_published() -> Any:
    """A RoundReport of lab.yaml whose measured runs are the published figures (its own data: the
    report reads them as measured)."""
    from labctl.report.data import ContestantData, ReportMetrics, RoundReport, RunData

    lab = validate(Lab, load_yaml(ROOT / "lab.yaml"))
    cds = []
    for c in lab.contestants:
        p = c.published
        assert p is not None and p.run and p.outcome
        run = RunData(p.run, c.id, 1, RunResult(run_id=p.run, status="done", outcome=p.outcome),
                      ReportMetrics(total_tokens=p.total_tokens, tool_calls=p.tool_calls))
        cds.append(ContestantData(c, "", "", [run]))
    return RoundReport("r7", lab, 1, False, cds)


def test_token_gap_line_reproduces_the_headline_from_measured_data() -> None:
    """The article: Sonnet 19K tokens (Complete) vs 1–4M for the local models that tried (Devstral's
    14K without a tool call does not count): "100-200x"."""
    from dataclasses import replace

    from labctl.report.published import token_gap_line

    rep = round7_as_published()
    assert token_gap_line(rep) == (
        "Token efficiency gap (measured): the cloud model used 19.2K tokens per Complete run; the local "
        "models that tried reached no Complete and used 1.14M–3.89M tokens per run: 59–202×. "
        "Published: 100–200×.")
    # A local Complete: compared per Complete run on both sides.
    coder = next(cd for cd in rep.contestants if cd.contestant.id == "qwen3-coder-30b-a3b")
    coder.runs[0].result.outcome = "Complete"
    assert token_gap_line(rep) == (
        "Token efficiency gap (measured): the cloud model used 19.2K tokens per Complete run, the local "
        "models 8.27M: 430×. Published: 100–200×.")
    # No cloud contestant (or no cloud Complete): no line rather than a made-up ratio.
    assert token_gap_line(replace(rep, contestants=[c for c in rep.contestants
                                                    if c.contestant.kind == "local"])) is None


def test_human_nudges_column_counts_the_operator(tmp_path: Path, envelopes: Path) -> None:  # noqa: F811
    """The operator's records in a run's transcript read as the publication wrote a human's help:
    `2 + stop`; the declared Nudges beside them are unchanged."""
    rd = make_round(tmp_path)
    rid = next(r for r, s in load_envelope(rd.name).mapping.items() if s.contestant == LOCAL)
    ops = [{"kind": "operator", "source": "operator", "seq": i, "action": a,
            "text": "psst" if a == "nudge" else "", "t": 10.0 + i}
           for i, a in ((1, "nudge"), (2, "nudge"), (3, "stop"))]
    with (run_dir(rd, rid) / "transcript.jsonl").open("a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in ops))
    assert cli("report", rd)[0] == 0
    md = (rd / "report.md").read_text()
    header = md.split("## Results\n\n", 1)[1].splitlines()[0]
    assert "| Nudges | Human nudges | Outcome |" in header
    assert table(md, "Results")[NAMES[LOCAL]][-3:] == ["1", "2 + stop", "Total failure"]
    assert table(md, "Results")[NAMES[ORACLE]][-3:-1] == ["—", "—"]
