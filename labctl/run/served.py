"""What llama-server really serves, read back once it is healthy, against what the plan claims; and
a first request that did not fit, which is the lab's configuration failing, not the model.

llama-server can serve less context than it was told: it caps every slot at the model's training
context ("the slot context (N) exceeds the training context of the model (M) - capping", in
`server_context::n_ctx_slot()`), unless YaRN flags re-adjust that training context (see
`ServerSettings.rope_scale`). A plan that says 16384 while the slot holds 8192 would make every
long-context result a lie, so a run reads `/props` (`default_generation_settings.n_ctx` — the slot's
context — and `total_slots`) and errors when they differ from the plan (`served_mismatch`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from labctl.engine.container import Engine
from labctl.meter.readback import transcript_records
from labctl.plan.firstprompt import opening_requests
from labctl.plan.planner import ContestantPlan
from labctl.run.pathology import is_context_overflow


def read_props(docker: Engine, container: str, port: int) -> str:
    """`/props` of the llama-server in `container`, fetched inside it (the host cannot reach a fenced
    network; the health check asks the same way). Empty when it does not answer."""
    url = f"http://127.0.0.1:{port}/props"
    done = docker("exec", container, "curl", "-fsS", "-m", "10", url, check=False)
    return done.stdout if done.returncode == 0 else ""


def served_slot_context(props: dict[str, Any]) -> int | None:
    """The context of one slot, as `/props` reports it (None when the answer has no such number)."""
    settings = props.get("default_generation_settings")
    n = settings.get("n_ctx") if isinstance(settings, dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) else None


def served_mismatch(plan: ContestantPlan, props_text: str) -> str | None:
    """Why the server does not serve what `plan` says (one line), or None when it does."""
    try:
        props = json.loads(props_text)
    except json.JSONDecodeError:
        return f"could not read the served context back from llama-server's /props: {props_text[:200]!r}"
    served = served_slot_context(props) if isinstance(props, dict) else None
    want = plan.slot_context
    if want is None:
        return None
    if served is None:
        return "could not read the served context back from llama-server's /props (no n_ctx)"
    if served != want:
        why = ""
        if plan.training_context and served == plan.training_context and want > served:
            why = (f" (capped at the model's training context {plan.training_context}; "
                   "serve.allow_rope_scaling serves more with YaRN)")
        return (f"configuration: the plan says a context of {want:,} tokens per slot, llama-server serves "
                f"{served:,}{why}")
    slots = props.get("total_slots")
    if plan.server is not None and isinstance(slots, int) and slots != plan.server.parallel:
        return f"configuration: the plan says {plan.server.parallel} slot(s), llama-server serves {slots}"
    return None


def first_request_overflow(run_dir: Path) -> str | None:
    """The result reason when a request sent before the model had a turn was refused for its length
    (llama.cpp's 400 "exceeds the available context size"; `opening_requests`): the runtime's own
    first prompt plus max_output does not fit the planned context, so the model never had a turn —
    the run is errored (configuration), not graded as the model's Total failure. Not only the run's
    first record: a runtime may send a small side request beside its first prompt (opencode asks for
    a session title), in either order. None otherwise (an overflow later in a conversation is the
    agent's doing)."""
    transcript = run_dir / "transcript.jsonl"
    if not transcript.is_file():
        return None
    opening = opening_requests(transcript_records(transcript))
    refused = next((r for r in opening if is_context_overflow(r)), None)
    if refused is None:
        return None
    err = refused.get("error")
    text = err if isinstance(err, str) else json.dumps(err, ensure_ascii=False)
    return (f"configuration: context overflow on the first request (the runtime's first prompt does not fit "
            f"the planned context; see `labctl plan`): {text[:300]}")
