"""The grading rule: how a run's verifier output (reward.json / reward.txt) and its metrics.json
become an outcome class — reading the reward, its named checks, when a check passed, the outcome.

Why its own module: the runner's grader (`labctl.run.grade`), `labctl verify`
(`labctl.round.verify`), the controls (`labctl.round.controls`) and the report (`labctl.report`) all
judge by it, so a grade written into result.json and the grade verify re-derives can only differ
when a file was changed. It sits below verify and controls, so neither has to import the other to
grade.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

from labctl.round.records import RunMetrics
from labctl.spec.lab import Outcome
from labctl.spec.task import OutcomeRules

Reward = dict[str, Any] | float
"""The verifier's output: reward.json's object (or bare number), or reward.txt's number."""


def check_passed(value: Any) -> bool:
    """The one rule for a named check in reward.json: JSON `true`, or a number ≥ 1 (Harbor's flat form
    writes 0 / 1; a score above 1 is still a pass). Everything else fails: `false`, 0, a fraction
    (0.5 is a partial score, not a pass), null, and strings (`"1"`, `"true"`: a verifier that writes
    strings is broken, and a string "false" must never pass). Grade, verify and report all use this."""
    return value is True or (type(value) in (int, float) and value >= 1)


def named_checks(reward: Reward | None) -> dict[str, Any] | None:
    """reward.json's named checks, in either form: labctl's `checks` object, and Harbor's flat form
    where every top-level key but `reward` whose value is a number or a boolean is a named check
    (`{"reward": 0, "name_argument": 1}`). Both at once are merged; the `checks` object wins a clash.
    None when there is none (reward.txt, or a reward.json with `reward` only)."""
    if not isinstance(reward, dict):
        return None
    flat = {k: v for k, v in reward.items()
            if k not in ("reward", "checks") and (isinstance(v, bool) or type(v) in (int, float))}
    nested = reward.get("checks")
    found = {**flat, **(nested if isinstance(nested, dict) else {})}
    return found if found or isinstance(nested, dict) else None


def derive_outcome(reward: Reward | None, metrics: RunMetrics | dict[str, Any] | None,
                   rules: OutcomeRules | dict[str, Any] | None) -> Outcome | None:
    """The outcome class of a run, from its verifier output and its metrics.

    0. `metrics.upstream_errored` ⇒ None: ungraded. The provider or server failed (5xx, a refused
       key), so the model never had its chance; the run is `errored` and is re-run, not judged.
    1. `metrics.tool_calls == 0` ⇒ Total failure: the agent never acted. Contestants without a
       model (oracle, nop) have `tool_calls` absent or null, so this rule never grades them.
    2. No verifier output (`reward` None) ⇒ None: ungraded (the run errored before the verifier).
    3. With `rules` and named checks in reward.json (`named_checks`: the `checks` object or Harbor's
       flat numeric keys): Complete when every `complete` check passed,
       Partial when every `partial` check passed (and there are some), else Failed. A check the
       verifier did not write counts as failed.
    4. Otherwise the numeric reward (reward.txt, or reward.json's "reward"): ≥ 1 Complete,
       > 0 Partial, else Failed.
    A named check passes by `check_passed`, the rule grade and report use too.
    Raises ValueError when the reward has neither checks nor a number (or metrics that are no
    metrics record).
    """
    m = RunMetrics.model_validate(metrics) if isinstance(metrics, dict) else metrics or RunMetrics()
    if m.upstream_errored is True:
        return None
    if m.tool_calls == 0:
        return "Total failure"
    if reward is None:
        return None
    if isinstance(rules, dict):
        rules = OutcomeRules.model_validate(rules)
    checks = named_checks(reward)
    if rules is not None and checks is not None:
        if all(check_passed(checks.get(c)) for c in rules.complete):
            return "Complete"
        if rules.partial and all(check_passed(checks.get(c)) for c in rules.partial):
            return "Partial"
        return "Failed"
    value = reward.get("reward") if isinstance(reward, dict) else reward
    if type(value) not in (int, float):
        raise ValueError(f"no numeric reward to grade by (got {value!r})")
    number = cast(float, value)  # an int or a float, bool excluded: what `type(...) in` checked
    return "Complete" if number >= 1 else "Partial" if number > 0 else "Failed"


def read_reward(run: Path) -> tuple[Reward | None, str | None]:
    """(reward, file it came from): verifier/reward.json first, then reward.txt (Harbor's order)."""
    j, t = run / "verifier" / "reward.json", run / "verifier" / "reward.txt"
    if j.is_file():
        data = json.loads(j.read_text(encoding="utf-8"))
        if isinstance(data, dict) or type(data) in (int, float):
            return (data if isinstance(data, dict) else float(data)), "verifier/reward.json"
        raise ValueError("verifier/reward.json is neither an object nor a number")
    if t.is_file():
        return float(t.read_text(encoding="utf-8").strip()), "verifier/reward.txt"
    return None, None


__all__ = ["Reward", "check_passed", "derive_outcome", "named_checks", "read_reward"]
