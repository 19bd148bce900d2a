"""What a run's meter is told about money: the cloud contestant's declared price and the lab's
`budgets.cost`, as `RunSession._start_model` passes them into the meter config, survive the
meter's command line (`MeterConfig.to_argv` → `labctl meter`). No Docker: the fields alone."""

from __future__ import annotations

from pathlib import Path

from labctl.meter.state import MeterConfig, MeterState
from labctl.run.grade import run_metrics
from labctl.run.runplan import cost_fields
from labctl.spec.lab import CloudContestant
from labctl.spec.load import load_lab
from tests.helpers import ROOT, lab_copy
from tests.meter.test_meter_argv import parsed
from tests.spec.test_price_spec import ANCHOR, PRICE

LAB = (ROOT / "lab.yaml").read_text()



def test_a_priced_contestant_gets_its_price_and_the_cost_budget(tmp_path: Path) -> None:
    text = LAB.replace(ANCHOR, ANCHOR + PRICE).replace("budgets:\n", "budgets:\n  cost: 2.5\n", 1)
    lab = load_lab(lab_copy(tmp_path, text)).lab
    c = next(c for c in lab.contestants if isinstance(c, CloudContestant))
    fields = cost_fields(lab, c)
    assert fields == {"price": c.price, "cost_budget": 2.5}
    cfg = MeterConfig.model_validate({"upstream": "https://api.anthropic.com", "dialect": "anthropic",
                                      "transcript": "/meter/transcript.jsonl", "alias": "run-01",
                                      "api_key_env": c.api_key_env, **fields})
    back = parsed(cfg.to_argv())
    assert back == cfg and back.price == c.price and back.cost_budget == 2.5


def test_an_unpriced_contestant_gets_no_cost_fields(tmp_path: Path) -> None:
    lab = load_lab(lab_copy(tmp_path, LAB.replace("budgets:\n", "budgets:\n  cost: 2.5\n", 1))).lab
    c = next(c for c in lab.contestants if isinstance(c, CloudContestant))
    assert c.price is None and cost_fields(lab, c) == {}


def test_metrics_carry_the_meters_cost(tmp_path: Path) -> None:
    """metrics.json's cost_usd is the meter's running total; an unpriced meter's None stays None."""
    t = tmp_path / "transcript.jsonl"
    t.write_text("")
    for cost in (0.4213, None):
        state = MeterState(alias="run-1", dialect="anthropic", started_at=0.0, cost_usd=cost)
        m = run_metrics(meter_state=state, transcript=t, ws=None, reward=None, wall_s=1.0,
                        needs_model=True, stopped_by=None)
        assert m.cost_usd == cost
        assert ("cost_usd" in m.model_dump(exclude_none=True)) is (cost is not None)
