"""`labctl report`: an unsealed round's measured results as the published round's tables.

Why its own module: the report is the one place where run ids meet contestant names, so it reads
only rounds that are already unsealed (`ReportError` otherwise) and never anything private.
Everything comes from the round directory alone (lab.yaml, lab.lock, unsealed.json, runs/*), so
anyone holding a verified round can regenerate the same report.

Data flow: `load_report` gathers one `RunData` per run (metrics.json read as the runner's record,
`labctl.round.records.RunMetrics`, with gaps filled from transcript.jsonl and verifier/reward.json,
since metrics.json keys may be missing; the figures keep the runner's names), groups them
into `ContestantData` in lab order, and `labctl.report.tables.tables` turns them into `Table`s that
the Markdown and HTML renderers (`labctl.report.render`) share, so all formats show the same cells;
`labctl.report.why` tells each run's story. `render.write_report` writes report.<fmt> and report.png
and rewrites the manifest so `labctl verify` still passes.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from labctl.errors import LabctlError
from labctl.lock.lockfile import Lock
from labctl.meter.readback import exchange_records, speeds, transcript_records
from labctl.meter.wire_responses import request_turns
from labctl.round.grading import check_passed, named_checks, read_reward
from labctl.round.layout import (
    UNSEALED_FILE,
    EgressRecord,
    RunResult,
    SealedRound,
    Unsealed,
    egress_path,
    metrics_path,
    read_egress,
    read_result,
    read_sealed,
    read_unsealed,
    result_path,
    run_dir,
    transcript_path,
    verifier_tail,
)
from labctl.round.opened import read_round_lab, read_round_lock
from labctl.round.records import RunMetrics, read_metrics
from labctl.spec.lab import CloudContestant, Contestant, Lab, LocalContestant, Published
from labctl.spec.located import SpecError

Format = Literal["md", "json", "html"]
FORMATS: tuple[Format, ...] = ("md", "json", "html")
DASH = "—"
OUTCOME_RANK = {"Complete": 0, "Partial": 1, "Failed": 2, "Total failure": 3}
"""Best first: the order outcome counts are listed in."""


class ReportError(LabctlError):
    """The round cannot be reported (not a round, not unsealed, unreadable lab)."""


# --- gathering -------------------------------------------------------------------------------------


class ReportMetrics(RunMetrics):
    """A run's metrics.json figures, gaps filled, plus what the report adds from the run directory."""

    checks: dict[str, Any] | None = None
    """reward.json's named checks as the verifier wrote them (`named_checks`)."""
    notes: dict[str, str] | None = None
    """reward.json's notes: why a check failed, in the verifier's words."""
    total_wall_s: float | None = None
    """The run's whole time, result.json's started → ended (setup, agent, verifier)."""
    verifier_tail: str | None = None
    """The verifier's last words (`labctl.round.layout.verifier_tail`), when it named no checks."""
    operator_nudges: int | None = None
    """The operator's nudges (`labctl nudge`): the transcript's `operator` records."""
    operator_stops: int | None = None
    """The operator's stops (`labctl stop`), 0 or 1."""


@dataclass
class RunData:
    """One run as the report sees it: its slot, its result, and metrics with gaps filled."""

    run_id: str
    contestant: str
    repeat: int
    result: RunResult
    metrics: ReportMetrics
    egress: list[EgressRecord] | None = None
    """Requests through the run's egress gateway (egress.jsonl), None without one."""

    @property
    def outcome_label(self) -> str:
        return self.result.outcome or f"{DASH} ({self.result.status})"


@dataclass
class ContestantData:
    """A contestant's identity, how it is labelled in the tables, and its runs."""

    contestant: Contestant
    type: str
    params: str
    runs: list[RunData] = field(default_factory=list)
    agent: str = "—"
    """The harness that drove it, `runtime version` (its own `agent:` or the lab's; — for controls)."""
    tool_calling: str | None = None
    """The round's preflight verdict (`preflight.json`, `labctl.plan.probe`): "tool calling: …"."""

    @property
    def name(self) -> str:
        return self.contestant.name or self.contestant.id

    @property
    def published(self) -> Published | None:
        return self.contestant.published

    def values(self, key: str) -> list[float]:
        """Numeric values of one figure (a `ReportMetrics` field or property) across runs; missing ones
        left out."""
        return [float(v) for r in self.runs if type(v := getattr(r.metrics, key)) in (int, float)]

    def pass_at(self, k: int) -> float | None:
        """Unbiased pass@k of Complete (Chen et al. 2021): 1 - C(n-c, k) / C(n, k) over graded runs."""
        graded = [r for r in self.runs if r.result.outcome is not None]
        n, c = len(graded), sum(r.result.outcome == "Complete" for r in graded)
        if n == 0 or k > n:
            return None
        return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@dataclass
class RoundReport:
    """Everything a renderer needs."""

    round: str
    lab: Lab
    repeats: int
    forced: bool
    contestants: list[ContestantData]

    @property
    def has_published(self) -> bool:
        return any(c.published is not None for c in self.contestants)


def transcript_summary(path: Path) -> dict[str, Any]:
    """Metrics recomputed from transcript.jsonl, for figures metrics.json lacks, under `RunMetrics`'s
    names. The records and the speeds are the grader's (`labctl.meter.readback`): token-weighted over
    llama.cpp's `timings`."""
    records = transcript_records(path)
    exchanges = exchange_records(records)
    if not exchanges:
        return {}  # no exchange: no model behind the run (oracle, nop), nothing to count as zero
    keys = ("prompt_tokens", "completion_tokens", "cached_tokens", "total_tokens")
    out: dict[str, Any] = dict.fromkeys(keys, 0) | {"requests": len(exchanges), "tool_calls": 0}
    messages = None
    for rec in exchanges:
        for k in keys:
            out[k] += int((rec.get("usage") or {}).get(k) or 0)
        out["tool_calls"] += len((rec.get("response") or {}).get("tool_calls") or [])
        msgs = request_turns(rec.get("request") or {})
        messages = len(msgs) if isinstance(msgs, list) else messages
    out["messages"] = messages
    if priced := [float(c) for rec in exchanges if (c := rec.get("cost_usd")) is not None]:
        out["cost_usd"] = sum(priced)  # the meter's figure, when metrics.json lacks it
    out["interventions"] = dict(Counter(str(r.get("name") or "(unnamed)") for r in records
                                        if r.get("kind") == "intervention"))
    ops = [r.get("action") for r in records if r.get("kind") == "operator"]
    out["operator_nudges"], out["operator_stops"] = ops.count("nudge"), ops.count("stop")
    return out | speeds(exchanges)._asdict()


def _run_metrics(round_dir: Path, run_id: str, result: RunResult | None = None) -> ReportMetrics:
    """metrics.json over transcript-derived values over reward.json's checks and notes (best source
    wins); the run's total wall time from result.json (started → ended: setup, agent, verifier)."""
    metrics: dict[str, Any] = {}
    try:
        reward, _ = read_reward(run_dir(round_dir, run_id))
    except (OSError, ValueError):
        reward = None
    checks = named_checks(reward)
    if checks is not None:
        metrics |= {"checks": checks, "checks_total": len(checks),
                    "checks_passed": sum(check_passed(v) for v in checks.values())}
        notes = reward.get("notes") if isinstance(reward, dict) else None
        if isinstance(notes, dict):
            metrics["notes"] = {str(k): str(v) for k, v in notes.items()}
    elif (tail := verifier_tail(run_dir(round_dir, run_id))) is not None:
        metrics["verifier_tail"] = tail
    if result is not None and result.started and result.ended:
        metrics["total_wall_s"] = (result.ended - result.started).total_seconds()
    metrics |= transcript_summary(transcript_path(round_dir, run_id))
    try:
        own = read_metrics(metrics_path(round_dir, run_id))
    except (OSError, ValueError):
        own = None
    if own is not None:
        metrics |= own.model_dump(exclude_none=True)
    return ReportMetrics.model_validate(metrics)


def _count(n: float) -> str:
    """`30_532_122_624` → `30.5B`, `139_584` → `140K` (parameter counts, as model cards write them)."""
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(int(n))


def _type_and_params(c: Contestant, lock: Lock | None) -> tuple[str, str]:
    """`Local MoE` / `Local dense` from the lock's GGUF header (else the lab's declared numbers);
    parameters from the lock's header counts, which only a lock that read the GGUF has."""
    if isinstance(c, CloudContestant):
        return "Cloud", DASH
    if not isinstance(c, LocalContestant):
        return c.kind.capitalize(), DASH
    ml = lock.models.get(c.id) if lock else None
    meta = ml.gguf if ml and ml.gguf else c.model.declared
    if meta is None:
        return "Local", DASH
    kind = "Local MoE" if (meta.expert_count or 0) > 1 else "Local dense"
    if not meta.n_params:
        return kind, DASH
    total = _count(meta.n_params)
    if meta.n_params_active and meta.n_params_active != meta.n_params:
        return kind, f"{total} ({_count(meta.n_params_active)} active)"
    return kind, total


def read_unsealed_round(round_dir: Path) -> tuple[SealedRound, Unsealed, Lab]:
    """sealed.json, unsealed.json and the round's lab.yaml; ReportError says what to do when the
    round is not unsealed yet or a file does not read."""
    if not (round_dir / UNSEALED_FILE).is_file():
        raise ReportError(f"{round_dir} is not unsealed yet: the report names contestants, so it needs the "
                          f"reveal; run `labctl unseal {round_dir}` once every run finished")
    try:
        lab = read_round_lab(round_dir)
        return read_sealed(round_dir), read_unsealed(round_dir), lab
    except (OSError, ValueError, SpecError) as e:
        raise ReportError(f"{round_dir}: {str(e).splitlines()[0]}") from e


def _egress(round_dir: Path, rid: str) -> list[EgressRecord] | None:
    path = egress_path(round_dir, rid)
    try:
        return read_egress(path) if path.is_file() else None
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: {e} (`labctl verify` the round)") from e


def load_report(round_dir: Path) -> RoundReport:
    """Gather an unsealed round; raises ReportError with the one thing to do about it."""
    if not (round_dir / "sealed.json").is_file():
        raise ReportError(f"{round_dir} is not a round directory (no sealed.json)")
    sealed, unsealed, lab = read_unsealed_round(round_dir)
    try:
        lock: Lock | None = read_round_lock(round_dir)
    except (OSError, ValueError):
        lock = None
    by_id = {c.id: ContestantData(c, *_type_and_params(c, lock),
                                  agent=f"{a.runtime} {a.version}" if (a := lab.agent_for(c)) else "—")
             for c in lab.contestants}
    for rid in sealed.run_ids:
        slot = unsealed.mapping.get(rid)
        if slot is None or slot.contestant not in by_id:
            raise ReportError(f"{round_dir}: {rid} maps to no contestant of lab.yaml (`labctl verify` it)")
        try:
            result = read_result(round_dir, rid) if result_path(round_dir, rid).is_file() else None
        except ValueError as e:
            raise ReportError(f"{result_path(round_dir, rid)}: {str(e).splitlines()[0]}") from e
        run = RunData(rid, slot.contestant, slot.repeat, result or RunResult(run_id=rid),
                      _run_metrics(round_dir, rid, result), _egress(round_dir, rid))
        by_id[slot.contestant].runs.append(run)
    for cd in by_id.values():
        cd.runs.sort(key=lambda r: r.repeat)
    from labctl.plan.preflight import read_preflight
    if pre := read_preflight(round_dir):
        for cid, got in pre.contestants.items():
            if cid in by_id:
                by_id[cid].tool_calling = got.verdict()
    return RoundReport(sealed.round, lab, sealed.repeats, unsealed.forced, list(by_id.values()))


__all__ = ["DASH", "FORMATS", "OUTCOME_RANK", "ContestantData", "Format", "ReportError", "ReportMetrics",
           "RoundReport", "RunData", "load_report", "transcript_summary"]
