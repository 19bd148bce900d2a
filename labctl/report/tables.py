"""The report's tables (Results, Token efficiency, The Numbers, Speed, Repeats, Runs) as plain strings,
so Markdown and HTML (`labctl.report.render`) show identical cells.

Cells read `measured / pub X` where the lab carries the published figure (`labctl.report.published`
writes X in the publication's own terms); with repeats, `mean (min–max)`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from labctl.report.cost import cost_table
from labctl.report.data import DASH, OUTCOME_RANK, ContestantData, RoundReport
from labctl.report.egress import egress_table
from labctl.report.published import pub, pub_build, pub_nudges, run_cell, token_gap_line
from labctl.spec.published import Published
from labctl.spec.units import format_duration

# --- cells -----------------------------------------------------------------------------------------


def _int(v: float) -> str:
    """Counts; a mean that is not whole keeps one decimal (0.5 commits must not read as 0)."""
    return f"{v:,.0f}" if abs(v - round(v)) < 0.05 else f"{v:,.1f}"


def _rate(v: float) -> str:
    return f"{v:,.1f}"


def _wall(v: float) -> str:
    return f"{v:.0f}s" if v < 60 else format_duration(round(v))


def _stat(values: Sequence[float], fmt: Callable[[float], str]) -> str:
    """One value as is; several as `mean (min–max)`; none as a dash."""
    if not values:
        return DASH
    if len(values) == 1:
        return fmt(values[0])
    lo, hi = min(values), max(values)
    mean = fmt(sum(values) / len(values))
    return mean if lo == hi else f"{mean} ({fmt(lo)}–{fmt(hi)})"


def _yes(flags: list[bool]) -> str:
    if not flags:
        return DASH
    if len(flags) == 1:
        return "yes" if flags[0] else "no"
    return f"{sum(flags)}/{len(flags)} yes"


def _build(cd: ContestantData) -> str:
    """`pass (attempt 2)`, `fail (0/13)` (the agent's 13 builds, none passed: the publication's
    notation), `fail`; with repeats `1/2 pass (attempt 1–3)`."""
    builds = [b for r in cd.runs if (b := r.metrics.build) is not None]
    if not builds:
        return DASH
    passed = [b for b in builds if b.passed]
    attempts = sorted(b.attempt for b in passed if b.attempt is not None)
    span = "" if not attempts else (f" (attempt {attempts[0]})" if attempts[0] == attempts[-1]
                                    else f" (attempt {attempts[0]}–{attempts[-1]})")
    if len(builds) == 1:
        runs = builds[0].agent_runs
        return f"pass{span}" if passed else f"fail (0/{runs})" if runs else "fail"
    return f"{len(passed)}/{len(builds)} pass{span}"


def _nudges(cd: ContestantData) -> str:
    """The nudges the meter injected (the lab's declared `interventions:`), `+ stop` where a declared
    stop ended the session: the publication's notation for a human's nudges and "stop" (`2 + stop`,
    `stop`); with repeats `mean (min–max)` and the runs stopped, `+ 1/3 stop`."""
    stops = sum(1 for r in cd.runs if (r.metrics.stopped_by or "").startswith("intervention:"))
    return _with_stops(cd, _stat(cd.values("nudges"), _int), stops)


def _human(cd: ContestantData) -> str:
    """The operator's own interventions (`labctl nudge`, `labctl stop`: the transcript's `operator`
    records, which verify holds against operator.jsonl), in the publication's notation: what its
    "Nudges" column counted, a human's help."""
    stops = sum(1 for r in cd.runs if r.metrics.operator_stops)
    return _with_stops(cd, _stat(cd.values("operator_nudges"), _int), stops)


def _with_stops(cd: ContestantData, cell: str, stops: int) -> str:
    if not stops:
        return cell
    if len(cd.runs) > 1:
        return f"{cell} + {stops}/{len(cd.runs)} stop"
    return "stop" if cell in ("0", DASH) else f"{cell} + stop"


def _outcome(cd: ContestantData) -> str:
    """The outcome; with repeats each outcome with its count, best first."""
    labels = [r.outcome_label for r in cd.runs]
    if len(labels) == 1:
        return labels[0]
    counts = sorted(Counter(labels).items(), key=lambda kv: OUTCOME_RANK.get(kv[0], 9))
    return ", ".join(f"{n}× {o}" for o, n in counts)


PARTIAL_NOTE = ("`≥ N`: a lower bound — a model call was cut before its usage came (a stop mid-stream) "
                "and no server counter covered it; `unknown (cut)`: nothing of it was counted.")


def _partial(cd: ContestantData) -> bool:
    """A run's token figure is a lower bound (`RunMetrics.tokens_partial`)."""
    return any(r.metrics.tokens_partial for r in cd.runs)


def partial_cell(cell: str, values: Sequence[float], partial: bool) -> str:
    """`≥ 9,822` for a lower bound; a partial figure that counted nothing is unknown, never 0."""
    if not partial or cell == DASH:
        return cell
    return "unknown (cut)" if not any(values) else f"≥ {cell}"


def _tokens(cd: ContestantData) -> str:
    values = cd.values("total_tokens")
    return partial_cell(_stat(values, _int), values, _partial(cd))


def _tokens_per_check(cd: ContestantData) -> str:
    per = [float(tokens) / passed for r in cd.runs
           if (tokens := r.metrics.total_tokens) is not None and (passed := r.metrics.checks_passed)]
    return partial_cell(_stat(per, _int), per, _partial(cd))


def _checks(cd: ContestantData) -> str:
    cells = [f"{r.metrics.checks_passed}/{r.metrics.checks_total}" for r in cd.runs
             if r.metrics.checks_passed is not None and r.metrics.checks_total is not None]
    return ", ".join(cells) or DASH


def _pct(v: float | None) -> str:
    return DASH if v is None else f"{v:.0%}"


def run_sort_key(run_id: str) -> list[int | str]:
    """run-9 before run-10."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", run_id)]


# --- tables ----------------------------------------------------------------------------------------


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


def tables(rep: RoundReport) -> list[Table]:
    """The published round's tables (Results, Token efficiency, The Numbers) plus speed, repeats
    and the run list, as plain strings so Markdown and HTML render identical cells."""
    results, efficiency, numbers, speed, repeats, runs = [], [], [], [], [], []
    for cd in rep.contestants:
        p = cd.published or Published()
        run = run_cell(cd)
        tool_calls = pub(_stat(cd.values("tool_calls"), _int), p.tool_calls)
        tokens = pub(_tokens(cd), p.total_tokens, _int)
        commits = pub(_stat(cd.values("commits_pushed"), _int), p.commits)
        build = pub(_build(cd), p.build, pub_build)
        shot = pub(_yes([v for r in cd.runs if (v := r.metrics.screenshot) is not None]),
                   p.screenshot, lambda b: "yes" if b else "no")
        outcome = pub(_outcome(cd), p.outcome)
        messages = pub(_stat(cd.values("messages"), _int), p.messages)
        nudges = pub(_stat(cd.values("interventions_fired"), _int), pub_nudges(p))
        wall = pub(_stat(cd.values("wall_time_s"), _wall), p.wall_time, _wall)
        human = pub(_human(cd), pub_nudges(p))
        results.append([cd.name, run, tool_calls, tokens, messages, commits, build, shot, _nudges(cd), human,
                        outcome])
        efficiency.append([cd.name, run, tokens, outcome, _checks(cd), _tokens_per_check(cd)])
        numbers.append([cd.name, run, pub(cd.type, p.type), pub(cd.params, p.parameters), tokens, tool_calls,
                        messages, commits, build, shot, nudges, wall,
                        pub(_outcome(cd), p.numbers_outcome or p.outcome)])
        speed.append([cd.name, _stat(cd.values("prompt_tokens_per_s"), _rate),
                      _stat(cd.values("gen_tokens_per_s"), _rate),
                      wall, _stat(cd.values("verifier_wall_s"), _wall),
                      _stat(cd.values("total_wall_s"), _wall)])
        n_complete = sum(r.result.outcome == "Complete" for r in cd.runs)
        repeats.append([cd.name, str(len(cd.runs)), str(n_complete), _pct(cd.pass_at(1)),
                        _pct(cd.pass_at(rep.repeats))])
        runs += [[r.run_id, cd.name, cd.agent, str(r.repeat), r.result.status, r.outcome_label,
                  str(r.result.attempts), r.result.host or DASH] for r in cd.runs]
    pub_note = " Cells read `measured / pub published` where the lab carries the published figure." \
        if rep.has_published else ""
    rep_note = f" {rep.repeats} runs per contestant: `mean (min–max)`." if rep.repeats > 1 else ""
    gap = token_gap_line(rep)
    cut = f" {PARTIAL_NOTE}" if any(_partial(cd) for cd in rep.contestants) else ""
    out = [
        Table("Results", ["Model", "Run", "Tool calls", "Total tokens", "Messages", "Commits", "Build",
                          "Screenshot", "Nudges", "Human nudges", "Outcome"], results,
              ("Messages: the conversation's length at its last request. Nudges: the lab's declared "
               "nudges the meter injected, `+ stop` where a declared stop ended the session. Human nudges: "
               "the operator's own (`labctl nudge`, `+ stop` for `labctl stop`), as recorded in the "
               "transcripts and operator.jsonl; the published figure counts a human's nudges and "
               "\"stop\" the same way." + pub_note + rep_note + cut).strip()),
        Table("Token efficiency",
              ["Model", "Run", "Total tokens", "Outcome", "Checks passed", "Tokens / passed check"],
              efficiency,
              "Tokens per passed check: total tokens over the verifier checks that passed."
              + (f" {gap}" if gap else "") + cut),
        Table("The Numbers", ["Model", "Run", "Type", "Parameters", "Total tokens", "Tool calls", "Messages",
                              "Commits", "Build", "Screenshot", "Interventions", "Wall time", "Outcome"],
              numbers, "Type and parameters from the round's lab.lock (GGUF header), else the lab's declared "
              "numbers; interventions beside the published human nudges (`+ stop`: the operator ended the "
              "session)."),
        Table("Speed", ["Model", "Prompt tok/s", "Generation tok/s", "Agent time", "Verifier time",
                        "Total time"], speed,
              "llama.cpp's own timings (prompt processing and generation), token-weighted over the run. "
              "Agent time: the agent's session; verifier time: the task's tests; total: the whole run "
              "(setup, agent, collection, verifier)."),
    ]
    if (cost := cost_table(rep)) is not None:
        out.append(Table(*cost))
    if rep.repeats > 1:
        out.append(Table("Repeats", ["Model", "Runs", "Complete", "pass@1", f"pass@{rep.repeats}"], repeats,
                         "pass@k: chance that at least one of k runs drawn from these reaches Complete."))
    if probed := [[cd.name, cd.tool_calling.removeprefix("tool calling: ")] for cd in rep.contestants
                  if cd.tool_calling]:
        out.append(Table("Tool calling", ["Model", "Preflight"], probed,
                         "Before the first run, each local model was served with its planned flags and asked "
                         "for one call of a declared tool (`labctl model probe`)."))
    if (egress := egress_table(rep)) is not None:
        out.append(Table(*egress))
    runs.sort(key=lambda row: run_sort_key(row[0]))
    out.append(Table("Runs", ["Run", "Model", "Agent", "Repeat", "Status", "Outcome", "Attempts", "Host"],
                     runs,
                     "Agent: the harness that drove the model (runtime and version, as locked)."))
    return out


__all__ = ["PARTIAL_NOTE", "Table", "partial_cell", "run_sort_key", "tables"]
