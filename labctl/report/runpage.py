"""A page per run: `rounds/<R>/runs/<id>/transcript.html`, the run's conversation step by step.

Why: the report's tables and its "why" say what a run came to; they cannot show how. A reader who
wants to know why the tiny model never called a tool, or what the agent saw before a nudge, had to
read transcript.jsonl by hand. The page shows each model answer, each executed call with its
arguments and the result the agent got back (read from the next request, `labctl.report.steps`),
tokens and llama.cpp timings per step, the meter's interventions and the pathology flags at the step
where they fired, the verifier's checks and output, and a repository task's final diff.

Blindness: the page names a contestant only when it is given `identity` (the report passes it, from
the unsealed mapping). Without it, the page of a sealed round shows the run id and the run's own
files, which are blind already (the meter writes the run's alias in place of a model's name).
Self-contained like report.html: inline CSS and one inline script (the search box), nothing fetched;
every text is HTML-escaped.
"""

from __future__ import annotations

import contextlib
import html
import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from labctl.meter.readback import transcript_records
from labctl.report.data import ReportMetrics, _run_metrics
from labctl.report.steps import Call, Step, anchor_flags, first_prompt, orphan_interventions, steps
from labctl.round.layout import (
    VERIFIER_EXIT,
    VERIFIER_STDERR,
    VERIFIER_STDOUT,
    RunResult,
    read_result,
    read_sealed,
    result_path,
    run_dir,
    transcript_path,
    write_manifest,
)

PAGE = "transcript.html"
BUNDLE = "workspace.bundle"
FOLD_CHARS, FOLD_LINES = 600, 12
"""Texts longer than this are folded (<details>), so a long build log does not bury the steps."""
MAX_CHARS = 100_000
"""A text is cut here on the page (the transcript keeps it whole), so one huge output cannot make the
page unusable."""
GIT_TIMEOUT_S = 30


def page_path(round_dir: Path, run_id: str) -> Path:
    return run_dir(round_dir, run_id) / PAGE


def _e(text: Any) -> str:
    return html.escape(str(text))


def _pre(text: str, summary: str, cls: str = "") -> str:
    """A text as <pre>, folded when long; cut at MAX_CHARS with a note saying where the rest is."""
    if len(text) > MAX_CHARS:
        text = text[:MAX_CHARS] + f"\n… ({len(text) - MAX_CHARS:,} more characters in the run's files)"
    body = f'<pre class="{cls}">{_e(text)}</pre>'
    if len(text) > FOLD_CHARS or text.count("\n") > FOLD_LINES:
        return f"<details><summary>{_e(summary)} ({text.count(chr(10)) + 1} lines)</summary>{body}</details>"
    return body


def _figures(s: Step) -> str:
    """Tokens, llama.cpp's timings (speeds from their own n over ms) and the latency, in one line."""
    u, t = s.usage, s.timings
    parts = [f"{k.split('_')[0]} {u[k]:,}" for k in ("prompt_tokens", "completion_tokens", "cached_tokens")
             if type(u.get(k)) is int]

    def rate(n: str, ms: str) -> str | None:
        if type(t.get(n)) in (int, float) and type(t.get(ms)) in (int, float) and t[ms]:
            return f"{t[n]:.0f} in {t[ms]:.0f} ms ({t[n] / t[ms] * 1000:.1f} tok/s)"
        return None

    if p := rate("prompt_n", "prompt_ms"):
        parts.append(f"prompt eval {p}")
    if g := rate("predicted_n", "predicted_ms"):
        parts.append(f"generation {g}")
    if s.latency_ms is not None:
        parts.append(f"latency {s.latency_ms / 1000:.1f} s")
    if s.finish_reason:
        parts.append(f"finish {s.finish_reason}")
    return f'<p class="fig">{_e(" · ".join(parts))}</p>' if parts else ""


def _intervention(rec: Mapping[str, Any]) -> str:
    action = str(rec.get("action") or "intervention")
    detail = rec.get("detail")
    extra = f" — {json.dumps(detail, ensure_ascii=False)}" if detail else ""
    text = rec.get("text") if rec.get("source") == "operator" else rec.get("message")
    msg = f"<br>injected: <q>{_e(str(text))}</q>" if text else ""
    if rec.get("source") == "operator":  # a human's, not a declared rule's (labctl nudge / stop)
        seq = _e(str(rec.get("seq")))
        return f'<div class="iv {_e(action)}"><b>{_e(action)}</b> by the operator (#{seq}){msg}</div>'
    name = rec.get("name") or "(unnamed)"
    return (f'<div class="iv {_e(action)}"><b>{_e(action)}</b> <code>{_e(name)}</code>'
            f" fired on this request{_e(extra)}{msg}</div>")


def _call(c: Call) -> str:
    head = f'<div class="call"><p><b>{_e(c.name)}</b></p>'
    args = _pre(c.command if c.command is not None else c.arguments, "arguments", "cmd")
    if c.command is not None and c.more:
        args += _pre(c.arguments, "all arguments")
    if c.result is None:
        res = '<p class="none">no result recorded (the agent sent no further request)</p>'
    else:
        code = "" if c.result.code is None else f" (exit {c.result.code})"
        cls = "result failed" if c.result.failed else "result"
        out = _pre(c.result.text, "result", cls) if c.result.text.strip() else \
            '<p class="none">(no output)</p>'
        res = f'<p class="rl">result{_e(code)}</p>{out}'
    return head + args + res + "</div>"


def _step(s: Step) -> str:
    title = f"Step {s.n}" if s.n is not None else "Request without an answer"
    seq = f" · request {s.seq}" if s.seq is not None else ""
    out = [f'<article class="step" id="step-{s.n if s.n is not None else f"seq-{s.seq}"}">'
           f"<h3>{_e(title)}{_e(seq)}</h3>"]
    out += [_intervention(i) for i in s.interventions]
    out += [f'<div class="flag">pathology: {_e(f)}</div>' for f in s.flags]
    if s.error:
        out.append(f'<p class="err">status {_e(s.status)}: {_e(s.error)}</p>')
    if s.reasoning:
        out.append(_pre(s.reasoning, "reasoning", "reasoning"))
    if s.answer.strip():
        out.append(_pre(s.answer, "answer", "answer"))
    out += [_call(c) for c in s.calls]
    out.append(_figures(s))
    return "".join(out) + "</article>"


def _verifier(d: Path, m: ReportMetrics) -> str:
    out = ["<h2>Verifier</h2>"]
    if m.checks is not None:
        notes = m.notes or {}
        rows = "".join(f"<tr><td><code>{_e(c)}</code></td><td>{_e(json.dumps(v))}</td>"
                       f"<td>{_e(notes.get(c, ''))}</td></tr>" for c, v in m.checks.items())
        out.append(f'<table id="checks"><thead><tr><th>Check</th><th>Value</th><th>Note</th></tr></thead>'
                   f"<tbody>{rows}</tbody></table>")
    else:
        out.append("<p>No named checks were recorded.</p>")
    for name in ("reward.json", "reward.txt", VERIFIER_EXIT, VERIFIER_STDOUT, VERIFIER_STDERR):
        with contextlib.suppress(OSError):
            text = (d / "verifier" / name).read_text(encoding="utf-8", errors="replace")
            out.append(f"<h4>verifier/{_e(name)}</h4>" + _pre(text, name))
    return "".join(out)


def final_diff(bundle: Path) -> str | None:
    """A repository task's diff, base commit → the branch as pushed, from the run's workspace.bundle
    (its root commit is the base, `labctl.run.parts.make_workspace`). None without a bundle or git,
    or when git cannot read it: the page then simply has no diff."""
    git = shutil.which("git")
    if git is None or not bundle.is_file():
        return None
    with tempfile.TemporaryDirectory(prefix="labctl-diff-") as tmp:
        def run(*args: str) -> str:
            return subprocess.run([git, *args], capture_output=True, text=True, check=True, errors="replace",
                                  timeout=GIT_TIMEOUT_S).stdout
        try:  # a bundle has no HEAD: its one branch's tip, as it lists it
            heads = run("bundle", "list-heads", str(bundle.resolve())).split()
            if not heads:
                return None
            run("clone", "-q", "--bare", str(bundle.resolve()), tmp)
            root = run("-C", tmp, "rev-list", "--max-parents=0", heads[0]).split()
            if not root:
                return None
            return run("-C", tmp, "diff", "--no-color", "--no-ext-diff", root[-1], heads[0])
        except (OSError, subprocess.SubprocessError):
            return None


_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1100px;color:#222;
padding:0 1em}pre{white-space:pre-wrap;word-break:break-word;background:#f6f6f6;border:1px solid #ddd;
padding:6px;margin:.3em 0}pre.cmd{background:#eef3fb}pre.failed{border-color:#c62828}pre.reasoning{color:#555}
article.step{border-left:4px solid #90a4ae;padding:.1em 0 .1em 1em;margin:0 0 1.2em}
article.step h3{margin:.2em 0}div.call{margin:.4em 0 .4em 1em}p.fig{color:#666;font-size:12px;margin:.2em 0}
div.iv{background:#fff8e1;border:1px solid #f9a825;padding:4px 8px;margin:.3em 0}
div.iv.stop{background:#ffebee;border-color:#c62828}
div.flag{background:#f3e5f5;border:1px solid #6a1b9a;padding:4px 8px;margin:.3em 0}
p.err{color:#c62828}p.rl{margin:.2em 0 0;font-weight:600}table{border-collapse:collapse}th,td{border:1px solid
#ccc;padding:3px 8px;text-align:left;vertical-align:top}#search{width:24em;padding:4px;font-size:14px}
.hidden{display:none}"""

_JS = """const q=document.getElementById('search'),n=document.getElementById('shown');
q.addEventListener('input',()=>{const w=q.value.toLowerCase();let k=0;
for(const a of document.querySelectorAll('article.step')){
const hit=!w||a.textContent.toLowerCase().includes(w);a.classList.toggle('hidden',!hit);
if(hit){k++;if(w)for(const d of a.querySelectorAll('details'))d.open=true;}}
n.textContent=k;});"""


def render_page(round_id: str, run_id: str, result: RunResult, metrics: ReportMetrics,
                records: list[dict[str, Any]], d: Path, identity: str | None = None,
                report_link: str | None = None) -> str:
    """The page's HTML. `identity` (who ran, unsealed rounds only) is the one place a contestant
    can appear; everything else comes from the run directory, which is blind."""
    st = steps(records)
    loose = anchor_flags(st, metrics.flags or [], metrics.pathology)
    answered = sum(s.n is not None for s in st)
    who = f" · {identity}" if identity else ""
    title = f"{run_id}{who}"
    head = [f"<h1>{_e(title)}</h1>",
            f"<p>Round <code>{_e(round_id)}</code> · status {_e(result.status)} · outcome "
            f"{_e(result.outcome or '—')} · {answered} answered step{'s' if answered != 1 else ''}"
            + (f' · <a href="{_e(report_link)}">the round\'s report</a>' if report_link else "") + "</p>"]
    if metrics.ended is not None:
        end = metrics.ended
        head.append(f"<p>Ended: {_e(end.by)}{_e(': ' + end.detail if end.detail else '')}</p>")
    totals = [f"{k.replace('_', ' ')} {v:,}" for k in ("total_tokens", "tool_calls", "requests")
              if type(v := getattr(metrics, k)) is int]
    if totals:
        head.append(f"<p>{_e(' · '.join(totals))}</p>")
    if flags := metrics.flags:
        head.append("<p>Pathology flags: " + _e("; ".join(flags)) + "</p>")
    head += [f'<div class="flag">pathology (the run as a whole): {_e(f)}</div>' for f in loose]
    body = [*head]
    if prompt := first_prompt(records):
        body.append(_pre(prompt, "the conversation as the first request opened it"))
    body.append('<h2>Steps</h2><p><input id="search" type="search" placeholder="filter steps: a command, an '
                'error, a word" aria-label="filter steps"> <span id="shown">' + str(len(st))
                + f"</span> of {len(st)} shown</p>")
    body += [_step(s) for s in st] or ["<p>No model call was recorded (a run without a model).</p>"]
    if orphans := orphan_interventions(records, st):
        body.append("<h3>After the last recorded request</h3>" + "".join(_intervention(i) for i in orphans))
    body.append(_verifier(d, metrics))
    if (diff := final_diff(d / BUNDLE)) is not None:
        shown = _pre(diff, "git diff base..branch", "diff") if diff.strip() else \
            "<p>The branch as pushed is the base commit: no change.</p>"
        body.append(f'<h2 id="diff">Final diff</h2>{shown}')
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body)
            + f"\n<script>{_JS}</script>\n</body></html>\n")


def write_run_pages(round_dir: Path, identities: Mapping[str, str] | None = None, *,
                    report_link: str | None = None, manifest: bool = True) -> list[Path]:
    """Write every run's page that has a run directory; returns them. `identities` maps a run id to
    who ran it and is given only for an unsealed round: without it, no page names a contestant.
    `manifest`: rewrite manifest.json afterwards (the report rewrites it once itself)."""
    written = []
    sealed = read_sealed(round_dir)
    for rid in sealed.run_ids:
        d = run_dir(round_dir, rid)
        if not d.is_dir():
            continue
        try:
            result = read_result(round_dir, rid) if result_path(round_dir, rid).is_file() else None
        except ValueError:
            result = None
        result = result or RunResult(run_id=rid)
        text = render_page(sealed.round, rid, result, _run_metrics(round_dir, rid, result),
                           transcript_records(transcript_path(round_dir, rid)), d,
                           (identities or {}).get(rid), report_link)
        target = d / PAGE
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
        written.append(target)
    if manifest and written:
        write_manifest(round_dir)
    return written


__all__ = ["PAGE", "final_diff", "page_path", "render_page", "write_run_pages"]
