"""`labctl export ROUND --format inspect`: a round as an Inspect AI eval log, so `inspect view` shows it.

Why its own module: the report compares contestants in tables; this hands every run to Inspect's log
viewer, built from the `inspect_ai` package's own log types and written by its own writer
(`inspect_ai.log.write_eval_log`), so the file is whatever that version of Inspect reads. `inspect_ai`
is an optional extra (`labctl[inspect]`), imported only here, inside `export_inspect`.

What goes where: one sample per run (controls included, `metadata.control` says which), its messages
rebuilt from transcript.jsonl (the longest conversation the agent sent, then the model's last answer;
structured tool calls as `ToolCall`s and their results as tool messages, in every wire labctl meters:
chat completions, Anthropic messages, Responses), one `ModelEvent` per model call, the run's token
figures (metrics.json, gaps filled from the transcript: `labctl.report.data`) as model usage, and the
outcome (`result.json`, graded by `labctl.round.grading.derive_outcome`) and the named checks as
scores. The eval's metadata holds the round's hashes (lab.yaml, lab.lock, task tree, commitment).

Blind: a sealed round is exported by run id only. Nothing of lab.yaml, lab.lock or the envelope is
read but their hashes, samples name their run as the model (`labctl/<run id>`), and the metadata holds
only what sealed.json and result.json already publish. An unsealed round names each run's contestant.
Text-protocol runtimes (aider, mini-swe-agent's text templates) act by fenced blocks in their prose:
those stay text in the assistant's message, not `ToolCall`s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labctl import __version__
from labctl.meter.actions import text
from labctl.meter.readback import exchange_records, transcript_records
from labctl.meter.wire_responses import request_turns
from labctl.report.data import OUTCOME_RANK, ReportError, ReportMetrics, _run_metrics
from labctl.round.layout import (
    FINISHED,
    LAB_FILE,
    SEALED_FILE,
    UNSEALED_FILE,
    RunResult,
    SealedRound,
    read_result,
    read_sealed,
    read_unsealed,
    result_path,
    transcript_path,
)
from labctl.treehash import file_sha256

if TYPE_CHECKING:
    from inspect_ai.event import ModelEvent
    from inspect_ai.log import EvalLog, EvalSample
    from inspect_ai.model import ChatMessage, ChatMessageAssistant, ModelOutput, ModelUsage, StopReason
    from inspect_ai.tool import ToolCall

INSTALL_HINT = "pip install 'labctl[inspect]'"
Rec = dict[str, Any]

STOP_REASONS: dict[str, StopReason] = {
    "stop": "stop", "end_turn": "stop", "stop_sequence": "stop", "tool_calls": "tool_calls",
    "tool_use": "tool_calls", "length": "max_tokens", "max_tokens": "max_tokens",
    "content_filter": "content_filter", "refusal": "content_filter"}
"""Every wire's finish reason (as the transcript keeps it) in Inspect's `StopReason` words."""


class InspectExportError(ReportError):
    """The round cannot be exported (not a round, unreadable records, the extra not installed)."""


@dataclass
class ExportResult:
    """Where the log went and what it holds."""

    path: Path
    samples: int
    sealed: bool


# --- transcript → Inspect messages -------------------------------------------------------------


def _arguments(raw: Any) -> tuple[dict[str, Any], str | None]:
    """A call's arguments as a dict (the JSON text parsed), and the parse error when it is none."""
    if isinstance(raw, dict):
        return raw, None
    if raw is None or raw == "":
        return {}, None
    if isinstance(raw, str):
        try:
            got = json.loads(raw)
        except ValueError as e:
            return {"arguments": raw}, f"arguments are not JSON: {e}"
        return (got, None) if isinstance(got, dict) else ({"arguments": got}, None)
    return {"arguments": raw}, None


def _tool_calls(message: Rec) -> list[ToolCall]:
    """The structured calls of an assistant turn or a transcript response, in every recorded shape:
    chat `{id, function: {name, arguments}}`, the transcript's `{id, name, arguments}`, Responses
    `{call_id, name, arguments}`, Anthropic `tool_use` blocks `{id, name, input}`."""
    from inspect_ai.tool import ToolCall

    calls = [c for c in message.get("tool_calls") or [] if isinstance(c, dict)]
    content = message.get("content")
    if isinstance(content, list):
        calls += [b for b in content
                  if isinstance(b, dict) and b.get("type") in ("tool_use", "server_tool_use")]
    out = []
    for n, c in enumerate(calls, 1):
        fn: Rec = c["function"] if isinstance(c.get("function"), dict) else c
        args, error = _arguments(fn.get("arguments", fn.get("input")))
        out.append(ToolCall(id=str(c.get("call_id") or c.get("id") or f"call_{n}"),
                            function=str(fn.get("name") or "(unnamed)"), arguments=args, parse_error=error))
    return out


def _prose(content: Any) -> str:
    """An assistant turn's text, its tool_use blocks left to `_tool_calls`."""
    if isinstance(content, list):
        content = [b for b in content if not (isinstance(b, dict) and b.get("type") in ("tool_use",
                                                                                         "server_tool_use"))]
    return text(content)


def _system(request: Rec) -> list[ChatMessage]:
    """The system prompt a wire keeps outside its turns: Anthropic `system`, Responses `instructions`."""
    from inspect_ai.model import ChatMessageSystem

    given = request.get("system", request.get("instructions"))
    return [ChatMessageSystem(content=t)] if (t := text(given)) else []


def chat_messages(request: Rec) -> list[ChatMessage]:
    """A recorded request's conversation as Inspect messages. A tool result names its call's function;
    one that names no call (the Responses output, as `request_turns` maps it) answers the oldest
    call still unanswered."""
    from inspect_ai.model import ChatMessageAssistant, ChatMessageSystem, ChatMessageTool, ChatMessageUser
    from inspect_ai.tool import ToolCallError

    out = _system(request)
    names: dict[str, str] = {}
    pending: list[str] = []

    def tool(call_id: Any, content: Any, is_error: bool = False) -> ChatMessageTool:
        cid = str(call_id) if call_id else (pending[0] if pending else None)
        if cid in pending:
            pending.remove(cid)
        body = text(content)
        return ChatMessageTool(content=body, tool_call_id=cid, function=names.get(cid or ""),
                               error=ToolCallError("unknown", body[-500:]) if is_error else None)

    for turn in request_turns(request) or []:
        if not isinstance(turn, dict):
            continue
        role, content = turn.get("role"), turn.get("content")
        if role in ("system", "developer"):
            out.append(ChatMessageSystem(content=text(content)))
        elif role == "assistant":
            calls = _tool_calls(turn)
            names |= {c.id: c.function for c in calls}
            pending = [c.id for c in calls]
            out.append(ChatMessageAssistant(content=_prose(content), tool_calls=calls or None))
        elif role == "tool":
            out.append(tool(turn.get("tool_call_id"), content))
        else:
            blocks = content if isinstance(content, list) else []
            results = [b for b in blocks if isinstance(b, dict) and b.get("type") == "tool_result"]
            out += [tool(b.get("tool_use_id"), b.get("content"), b.get("is_error") is True) for b in results]
            rest = [b for b in blocks if b not in results] if results else content
            if not results or text(rest):
                out.append(ChatMessageUser(content=text(rest)))
    return out


def _usage(usage: Rec | ReportMetrics | None) -> ModelUsage:
    """Token figures (a transcript record's usage, or a run's metrics) as Inspect counts them:
    input tokens are the whole prompt, cached ones included, as labctl's prompt_tokens are."""
    from inspect_ai.model import ModelUsage

    u = usage.model_dump() if isinstance(usage, ReportMetrics) else usage or {}
    prompt, completion = int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)
    return ModelUsage(input_tokens=prompt, output_tokens=completion,
                      total_tokens=int(u.get("total_tokens") or prompt + completion),
                      input_tokens_cache_read=int(u.get("cached_tokens") or 0) or None)


def _answer(response: Rec) -> ChatMessageAssistant:
    from inspect_ai.model import ChatMessageAssistant, ContentReasoning, ContentText

    calls = _tool_calls(response)
    body = text(response.get("content"))
    thought = response.get("reasoning")
    if isinstance(thought, str) and thought:
        both = [ContentReasoning(reasoning=thought), ContentText(text=body)]
        return ChatMessageAssistant(content=list(both), tool_calls=calls or None)
    return ChatMessageAssistant(content=body, tool_calls=calls or None)


def _output(model: str, rec: Rec | None) -> ModelOutput:
    from inspect_ai.model import ChatCompletionChoice, ModelOutput

    if rec is None or not isinstance(rec.get("response"), dict):
        return ModelOutput(model=model, error=str(rec.get("error")) if rec and rec.get("error") else None)
    reason = STOP_REASONS.get(str(rec["response"].get("finish_reason")), "unknown")
    return ModelOutput(model=model, choices=[ChatCompletionChoice(message=_answer(rec["response"]),
                                                                  stop_reason=reason)],
                       usage=_usage(rec.get("usage")), time=(rec.get("latency_ms") or 0) / 1000 or None)


def _event(model: str, rec: Rec) -> ModelEvent:
    """One model call: what the agent sent, what came back, its usage and its time."""
    from inspect_ai.event import ModelEvent
    from inspect_ai.model import GenerateConfig

    error = rec.get("error")
    return ModelEvent(model=model, input=chat_messages(rec.get("request") or {}), tools=[],
                      tool_choice="auto", config=GenerateConfig(), output=_output(model, rec),
                      error=None if error is None else str(error),
                      working_time=(rec.get("latency_ms") or 0) / 1000 or None,
                      metadata={"seq": rec.get("seq"), "status": rec.get("status")})


def conversation(exchanges: list[Rec]) -> list[ChatMessage]:
    """The run's conversation: the longest one the agent sent (its side requests, a title or a
    summary, are shorter), then the model's answer to it."""
    def turns(r: Rec) -> int:
        return len(request_turns(r.get("request") or {}) or [])
    if not exchanges:
        return []
    main = max(reversed(exchanges), key=turns)  # the last of the longest
    msgs = chat_messages(main.get("request") or {})
    if isinstance(main.get("response"), dict):
        msgs.append(_answer(main["response"]))
    return msgs


# --- a run → a sample ----------------------------------------------------------------------------


def _scores(result: RunResult, m: ReportMetrics) -> dict[str, Any]:
    from inspect_ai.scorer import Score

    explain = result.reason if result.status != "done" else None
    scores = {"outcome": Score(value=result.outcome or "ungraded", explanation=explain,
                               metadata={"status": result.status})}
    if m.checks is not None:
        values = {k: v if isinstance(v, bool | int | float) else str(v) for k, v in m.checks.items()}
        notes = "\n".join(f"{k}: {v}" for k, v in (m.notes or {}).items()) or None
        scores["checks"] = Score(value=values, explanation=notes,
                                 metadata={"passed": m.checks_passed, "total": m.checks_total})
    return scores


def _sample(round_dir: Path, sealed: SealedRound, rid: str, who: Rec | None) -> EvalSample:
    """One run as a sample; `who` is its contestant's identity (None in a sealed round)."""
    from inspect_ai.log import EvalSample

    try:
        path = result_path(round_dir, rid)
        result = read_result(round_dir, rid) if path.is_file() else RunResult(run_id=rid)
    except ValueError as e:
        raise InspectExportError(f"{result_path(round_dir, rid)}: {str(e).splitlines()[0]}") from e
    m = _run_metrics(round_dir, rid, result)
    model = f"labctl/{who['contestant'] if who else rid}"
    exchanges = exchange_records(transcript_records(transcript_path(round_dir, rid)))
    messages = conversation(exchanges)
    prompt = next((msg.text for msg in messages if msg.role == "user"), "")
    task = result.task or (sealed.run_tasks or {}).get(rid)
    metadata = {"run_id": rid, "control": result.control, "status": result.status, "task": task,
                "reason": result.reason, "attempts": result.attempts, "host": result.host,
                "tool_calls": m.tool_calls, "requests": m.requests, "wall_time_s": m.wall_time_s,
                "verifier_wall_s": m.verifier_wall_s, "stopped_by": m.stopped_by, "flags": m.flags,
                "ended": m.ended.model_dump(exclude_none=True) if m.ended else None, **(who or {})}
    usage = {model: _usage(m)} if m.total_tokens or m.prompt_tokens or m.completion_tokens else {}
    return EvalSample(
        id=rid, epoch=1, input=prompt, target="", messages=messages,
        output=_output(model, exchanges[-1] if exchanges else None),
        scores=_scores(result, m), metadata={k: v for k, v in metadata.items() if v is not None},
        events=[_event(model, r) for r in exchanges], model_usage=usage,
        started_at=result.started.isoformat() if result.started else None,
        completed_at=result.ended.isoformat() if result.ended else None,
        total_time=m.total_wall_s, working_time=m.wall_time_s)


# --- the round → the log -------------------------------------------------------------------------


def _identities(round_dir: Path) -> dict[str, Rec] | None:
    """Run id → its contestant's identity in an unsealed round; None when it is sealed."""
    if not (round_dir / UNSEALED_FILE).is_file():
        return None
    from labctl.round.opened import read_round_lab

    try:
        unsealed, lab = read_unsealed(round_dir), read_round_lab(round_dir)
    except (OSError, ValueError) as e:
        raise InspectExportError(f"{round_dir}: {str(e).splitlines()[0]}") from e
    by_id = {c.id: c for c in lab.contestants}
    out: dict[str, Rec] = {}
    for rid, slot in unsealed.mapping.items():
        c = by_id.get(slot.contestant)
        if c is None:
            raise InspectExportError(f"{round_dir}: {rid} maps to no contestant of lab.yaml "
                                     f"(`labctl verify` it)")
        out[rid] = {"contestant": c.id, "contestant_name": c.name or c.id, "kind": c.kind,
                    "repeat": slot.repeat}
    return out


def _hashes(round_dir: Path, sealed: SealedRound) -> Rec:
    """The round's pins: the seal's hashes and the copied files' own (never their contents)."""
    out: Rec = {"lock_sha256": sealed.lock_sha256, "lock_file_sha256": sealed.lock_file_sha256,
                "task_tree_sha256": sealed.task_tree_sha256, "commitment": sealed.commitment,
                "scheme": sealed.scheme}
    if (round_dir / LAB_FILE).is_file():
        out["lab_file_sha256"] = file_sha256(round_dir / LAB_FILE)
    if sealed.tasks:
        out["task_tree_sha256s"] = {k: t.tree_sha256 for k, t in sealed.tasks.items()}
    return out


def _results(samples: list[EvalSample]) -> Any:
    """Each outcome's count, and the share of graded model runs (controls left out) that are Complete."""
    from inspect_ai.log import EvalMetric, EvalResults, EvalScore

    outcomes = [str(s.scores["outcome"].value) for s in samples if s.scores]
    models = [o for s, o in zip(samples, outcomes, strict=True)
              if o != "ungraded" and not (s.metadata or {}).get("control")]
    metrics = {o: EvalMetric(name=o, value=outcomes.count(o)) for o in [*OUTCOME_RANK, "ungraded"]}
    if models:
        metrics["complete"] = EvalMetric(name="complete", value=models.count("Complete") / len(models))
    score = EvalScore(name="outcome", scorer="labctl", metrics=metrics,
                      scored_samples=len(outcomes) - outcomes.count("ungraded"),
                      unscored_samples=outcomes.count("ungraded"))
    return EvalResults(total_samples=len(samples), completed_samples=len(samples), scores=[score])


def build_log(round_dir: Path) -> EvalLog:
    """The round as an Inspect EvalLog (nothing written). Raises InspectExportError."""
    try:
        from inspect_ai.log import EvalConfig, EvalDataset, EvalLog, EvalSpec, EvalStats
    except ImportError as e:
        raise InspectExportError(f"exporting to Inspect needs the inspect_ai package: {INSTALL_HINT}") from e
    import inspect_ai

    if not (round_dir / SEALED_FILE).is_file():
        raise InspectExportError(f"{round_dir} is not a round directory (no {SEALED_FILE})")
    try:
        sealed = read_sealed(round_dir)
    except (OSError, ValueError) as e:
        raise InspectExportError(f"{round_dir / SEALED_FILE}: {str(e).splitlines()[0]}") from e
    who = _identities(round_dir)
    samples = [_sample(round_dir, sealed, rid, who[rid] if who else None) for rid in sealed.run_ids]
    usage: dict[str, Any] = {}
    for s in samples:
        for name, u in s.model_usage.items():
            usage[name] = usage[name] + u if name in usage else u
    times = [(s.started_at, s.completed_at) for s in samples]
    finished = all((s.metadata or {}).get("status") in FINISHED for s in samples)
    metadata: Rec = {"round": sealed.round, "lab": sealed.lab, "sealed": who is None,
                     "repeats": sealed.repeats, "labctl_version": sealed.labctl_version,
                     "exported_by": f"labctl {__version__}", **_hashes(round_dir, sealed)}
    if who is not None:
        metadata["contestants"] = list({w["contestant"]: {"id": w["contestant"], "name": w["contestant_name"],
                                                          "kind": w["kind"]} for w in who.values()}.values())
    spec = EvalSpec(
        eval_id=sealed.round, run_id=sealed.round, created=sealed.created.isoformat(), task=sealed.lab,
        task_id=sealed.round, dataset=EvalDataset(name=sealed.lab, samples=len(samples),
                                                  sample_ids=list(sealed.run_ids)),
        model="labctl/sealed" if who is None else "labctl/contestants", config=EvalConfig(epochs=1),
        packages={"labctl": sealed.labctl_version, "inspect_ai": inspect_ai.__version__}, metadata=metadata)
    return EvalLog(
        status="success" if finished else "cancelled", eval=spec, results=_results(samples), samples=samples,
        stats=EvalStats(started_at=min((a for a, _ in times if a), default=""),
                        completed_at=max((b for _, b in times if b), default=""), model_usage=usage))


def export_inspect(round_dir: Path, out: Path) -> ExportResult:
    """Write the round as an Inspect eval log at `out`: the `.json` format for a `.json` name, else
    Inspect's `.eval` (its default). Raises InspectExportError (a LabctlError)."""
    if out.resolve().is_relative_to(round_dir.resolve()):
        raise InspectExportError(f"{out} is inside the round: an unlisted file fails `labctl verify`")
    log = build_log(round_dir)
    from inspect_ai.log import write_eval_log

    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_eval_log(log, str(out), format="json" if out.suffix == ".json" else "eval")
    except OSError as e:
        raise InspectExportError(f"{out}: {e}") from e
    return ExportResult(out, len(log.samples or []), bool(log.eval.metadata and log.eval.metadata["sealed"]))


__all__ = ["INSTALL_HINT", "ExportResult", "InspectExportError", "build_log",
           "chat_messages", "conversation", "export_inspect"]
