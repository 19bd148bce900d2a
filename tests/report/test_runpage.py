"""The page per run (`labctl.report.runpage`): runs/<id>/transcript.html, written with the report.

The round is test_report.py's synthetic smoke round (sealed with a constructed lock, runs written as
the runner leaves them); the tiny model's run gets a transcript in mini-swe-agent 2.4.x's shape (a
declared `bash` tool, tool messages `{"returncode": N, "output": …}`), with a failing command whose
output holds a `<script>`, a nudge the meter fired on the third request and a flag anchored at a
step. No Docker, no model; the browser test renders a page in headless Chromium.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from labctl.report.runpage import PAGE, write_run_pages
from labctl.round.layout import read_manifest, run_dir
from labctl.round.seal import load_envelope
from tests.conftest import in_ci
from tests.helpers import run_cli as cli
from tests.report.test_report import CHROMIUM, NAMES, make_round
from tests.round.test_seal import IDS, LOCAL, envelopes  # noqa: F401

FIRST = "cat greeting.txt"
FIRST_OUTPUT = "cat: greeting.txt: No such file or directory"
SCRIPT = "<script>alert('pwned')</script>"
SECOND = "echo hello > greeting.txt"
NUDGE = "Keep going — the task is not finished yet."
FLAG = "tool calls written as text (1 answers, step 2)"
TOOLS = [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}]


def _call(i: int, command: str) -> dict[str, Any]:
    return {"id": f"call-{i}", "name": "bash", "arguments": json.dumps({"command": command})}


def _exchange(seq: int, messages: list[dict[str, Any]], response: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "exchange", "seq": seq, "t_start": seq, "t_end": seq + 1, "latency_ms": 1500,
            "status": 200, "error": None,
            "request": {"model": "run-x", "messages": list(messages), "tools": TOOLS},
            "response": {"finish_reason": "tool_calls" if response.get("tool_calls") else "stop", **response},
            "usage": {"prompt_tokens": 900 + seq, "completion_tokens": 40, "cached_tokens": 0,
                      "total_tokens": 940 + seq},
            "timings": {"prompt_n": 900, "prompt_ms": 300.0, "predicted_n": 40, "predicted_ms": 800.0}}


def conversation() -> list[dict[str, Any]]:
    """Three steps: a failing `cat` (its output has a <script>), a passing `echo`, a nudge, an answer."""
    msgs: list[dict[str, Any]] = [{"role": "system", "content": "You are a helpful assistant."},
                                  {"role": "user", "content": "Write hello into greeting.txt."}]
    one = {"content": "Let me look first.", "tool_calls": [_call(1, FIRST)]}
    recs = [_exchange(0, msgs, one)]
    msgs += [{"role": "assistant", "content": one["content"], "tool_calls": [
                 {"id": "call-1", "type": "function", "function": {"name": "bash", "arguments": json.dumps(
                     {"command": FIRST})}}]},
             {"role": "tool", "tool_call_id": "call-1",
              "content": json.dumps({"returncode": 1, "output": f"{FIRST_OUTPUT}\n{SCRIPT}\n"})}]
    two = {"content": "It is not there; writing it.", "tool_calls": [_call(2, SECOND)]}
    recs.append(_exchange(1, msgs, two))
    msgs += [{"role": "assistant", "content": two["content"], "tool_calls": [
                 {"id": "call-2", "type": "function", "function": {"name": "bash", "arguments": json.dumps(
                     {"command": SECOND})}}]},
             {"role": "tool", "tool_call_id": "call-2",
              "content": json.dumps({"returncode": 0, "output": ""})},
             {"role": "user", "content": NUDGE}]
    recs.append({"kind": "intervention", "seq": 2, "t": 2.5, "name": "keep-going", "action": "nudge",
                 "trigger": {"idle": 60.0}, "message": NUDGE, "detail": {"idle_s": 61.0}})
    recs.append(_exchange(2, msgs, {"content": "Done: greeting.txt holds hello.", "tool_calls": []}))
    return recs


def local_run(rd: Path) -> Path:
    """The tiny model's run directory, its transcript replaced by `conversation()` and a flag
    anchored at step 2 (metrics.json's pathology block records the steps of a seed pattern)."""
    rid = next(r for r, s in load_envelope(rd.name).mapping.items() if s.contestant == LOCAL)
    d = run_dir(rd, rid)
    (d / "transcript.jsonl").write_text("".join(json.dumps(r) + "\n" for r in conversation()))
    metrics = json.loads((d / "metrics.json").read_text())
    # tool_calls stays as written: verify re-derives the grade from it
    metrics |= {"flags": [FLAG], "pathology": {"text_tool_calls": {"count": 1, "steps": [2], "sample": "x"}}}
    (d / "metrics.json").write_text(json.dumps(metrics))
    return d


def step(page: str, n: int) -> str:
    found = re.search(rf'<article class="step" id="step-{n}">(.*?)</article>', page, re.S)
    assert found, f"no step {n}"
    return found.group(1)


@pytest.fixture
def unsealed(tmp_path: Path, envelopes: Path) -> tuple[Path, Path]:  # noqa: F811
    rd = make_round(tmp_path)
    return rd, local_run(rd)


def test_the_page_shows_each_call_its_result_and_the_intervention_at_its_step(
        unsealed: tuple[Path, Path]) -> None:
    rd, d = unsealed
    code, _, stderr = cli("report", rd, "--format", "html")
    assert code == 0, stderr
    page = (d / PAGE).read_text()
    first, second, third = step(page, 1), step(page, 2), step(page, 3)
    assert FIRST in first and FIRST_OUTPUT in first and "result (exit 1)" in first
    assert html_text(SECOND) in second and "result (exit 0)" in second and FIRST_OUTPUT not in second
    # the nudge fired on the third request: at step 3, and nowhere before it
    assert "keep-going" in third and html_text(NUDGE) in third
    assert "keep-going" not in first + second
    assert f"pathology: {html_text(FLAG)}" in second and FLAG not in html_unescape(first + third)
    assert "prompt 900" in first and "generation 40 in 800 ms (50.0 tok/s)" in first
    assert "Done: greeting.txt holds hello." in third and "Write hello into greeting.txt." in page
    # the verifier: its checks as reward.json named them, with the verifier's notes
    assert '<table id="checks">' in page and "<code>greeting_text</code>" in page
    assert f"greeting_text: not there ({LOCAL})" in page
    # unsealed: the page says who ran (the positive control of the sealed test below)
    assert NAMES[LOCAL] in page
    # every run has its page, linked from the Runs table and from its "why"
    report = (rd / "report.html").read_text()
    for rid in load_envelope(rd.name).mapping:
        assert (run_dir(rd, rid) / PAGE).is_file()
        assert f'<td><a href="runs/{rid}/{PAGE}">{rid}</a></td>' in report
        why = re.search(rf'id="why-{rid}">(.*?)</article>', report, re.S)
        assert why and f'href="runs/{rid}/{PAGE}"' in why.group(1)
    assert "<script" not in report  # report.html stays script-free; only run pages carry the search box
    code, _, stderr = cli("verify", rd)  # the pages are in the manifest
    assert code == 0, stderr
    assert f"runs/{d.name}/{PAGE}" in read_manifest(rd)


def html_text(s: str) -> str:
    import html

    return html.escape(s)


def html_unescape(s: str) -> str:
    import html

    return html.unescape(s)


def test_tool_output_is_escaped(unsealed: tuple[Path, Path]) -> None:
    rd, d = unsealed
    write_run_pages(rd)
    page = (d / PAGE).read_text()
    assert html_text(SCRIPT) in page
    assert "alert('pwned')</script>" not in page and page.count("<script>") == 1  # the page's own search box


def test_a_sealed_rounds_pages_name_no_contestant(tmp_path: Path, envelopes: Path) -> None:  # noqa: F811
    rd = make_round(tmp_path, unseal=False)
    d = local_run(rd)
    for rid in load_envelope(rd.name).mapping:  # the fake verifier's notes name the contestant (a real
        reward = run_dir(rd, rid) / "verifier" / "reward.json"  # verifier cannot know it): scrubbed
        data = json.loads(reward.read_text())
        data["notes"] = {c: f"{c}: not there" for c in data["notes"]}
        reward.write_text(json.dumps(data))
    pages = write_run_pages(rd)
    assert len(pages) == 3 and d / PAGE in pages
    assert FIRST in (d / PAGE).read_text()  # the page has its content: only the identity is missing
    secret = [*IDS.values(), *NAMES.values(), "tiny-7.gguf", "tiny-llama"]
    for p in pages:
        text = p.read_text()
        assert p.parent.name in text
        assert [s for s in secret if s in text] == [], p
    assert f"runs/{d.name}/{PAGE}" in read_manifest(rd)


def test_a_repository_runs_final_diff(unsealed: tuple[Path, Path], tmp_path: Path) -> None:
    """The pushed branch kept as workspace.bundle: the page shows base → branch; without a bundle
    there is no diff section at all."""
    rd, d = unsealed
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)

    git("init", "-q", "-b", "run-01")
    git("commit", "-q", "--allow-empty", "-m", "Base commit")
    (repo / "greeting.txt").write_text("hello from the agent\n")
    git("add", "-A")
    git("commit", "-q", "-m", "greet")
    git("bundle", "create", str(d / "workspace.bundle"), "refs/heads/run-01")
    write_run_pages(rd)
    page = (d / PAGE).read_text()
    assert '<h2 id="diff">Final diff</h2>' in page and "+hello from the agent" in page
    others = [run_dir(rd, r) / PAGE for r in load_envelope(rd.name).mapping if r != d.name]
    assert all('id="diff"' not in p.read_text() for p in others)


@pytest.mark.browser
def test_a_run_page_renders_in_chromium(unsealed: tuple[Path, Path], tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        if in_ci():
            pytest.fail(f"{CHROMIUM} missing: .ci/run must install Debian's chromium package")
        pytest.skip(f"{CHROMIUM} missing (apt-get install -y chromium)")
    import numpy as np
    from matplotlib import image

    rd, d = unsealed
    write_run_pages(rd)
    url = (d / PAGE).resolve().as_uri()
    base = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    # the first command in a <pre> of step 1 outside any folded <details>: visible as the page opens
    first = step(dom.stdout, 1)
    assert re.search(rf'<pre class="cmd">{re.escape(FIRST)}</pre>', first), first[:2000]
    assert "<details" not in first.split(FIRST, 1)[0]
    assert '<input id="search"' in dom.stdout
    shot = tmp_path / "page.png"
    done = subprocess.run([*base, f"--screenshot={shot}", "--window-size=1100,1400", url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    pixels = image.imread(str(shot))
    colours = np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)
    assert len(colours) > 10  # text, the step borders, the nudge's box: not a blank page
    assert pixels[..., :3].min() < 0.3  # dark text on the light page


def test_operator_interventions_show_at_their_request_and_a_stop_after_the_last() -> None:
    """A nudge sits at the step whose request it went into (`operator:<seq>`), a stop (in no request)
    after the last step; both read as the operator's, never as a declared rule."""
    from labctl.report.runpage import _intervention
    from labctl.report.steps import orphan_interventions, steps

    ex = [{"kind": "exchange", "seq": i, "request": {"messages": [{"role": "user", "content": "go"}]},
           "response": {"content": "ok", "tool_calls": []}, "interventions": iv}
          for i, iv in ((1, None), (2, ["operator:1"]))]
    nudge = {"kind": "operator", "source": "operator", "seq": 1, "action": "nudge", "text": "<look>",
             "t": 1.0}
    stop = {"kind": "operator", "source": "operator", "seq": 2, "action": "stop", "text": "", "t": 2.0}
    records = [ex[0], nudge, ex[1], stop]
    st = steps(records)
    assert [s.interventions for s in st] == [[], [nudge]]
    assert orphan_interventions(records, st) == [stop]
    html = _intervention(nudge)
    assert "by the operator (#1)" in html and "&lt;look&gt;" in html and "fired on this request" not in html
