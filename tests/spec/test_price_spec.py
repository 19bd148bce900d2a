"""A cloud contestant's declared price: accepted whole, and every bad field named at file:line:col."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from labctl.spec.lab import CloudContestant
from labctl.spec.load import load_lab
from tests.helpers import ROOT, lab_copy, line_of, run_cli
from tests.spec.test_spec import only_error

LAB = (ROOT / "lab.yaml").read_text()
ANCHOR = "    api_key_env: ANTHROPIC_API_KEY\n"
PRICE = ("    price: {input: 3, output: 15, cache_read: 0.3, cache_write: 3.75, as_of: 2026-06-01,\n"
         "            source: https://www.anthropic.com/pricing}\n")


def priced(tmp_path: Path, price: str = PRICE) -> Path:
    assert LAB.count(ANCHOR) == 1
    return lab_copy(tmp_path, LAB.replace(ANCHOR, ANCHOR + price))


def test_a_declared_price_loads(tmp_path: Path) -> None:
    lab = load_lab(priced(tmp_path)).lab
    cloud = next(c for c in lab.contestants if isinstance(c, CloudContestant))
    assert cloud.price is not None
    assert (cloud.price.input, cloud.price.output, cloud.price.cache_read, cloud.price.cache_write) == (
        3, 15, 0.3, 3.75)
    assert cloud.price.as_of == dt.date(2026, 6, 1) and cloud.price.source.startswith("https://")


@pytest.mark.parametrize(("bad", "field", "says"), [
    ("output: 15", "output", "greater than or equal to 0"),
    ("as_of: 2026-06-01", "as_of", "date"),
    ("cache_write: 3.75, ", "cache_write", "required"),
])
def test_a_bad_price_field_is_located(tmp_path: Path, bad: str, field: str, says: str) -> None:
    broken = {"output: 15": "output: -1", "as_of: 2026-06-01": "as_of: someday",
              "cache_write: 3.75, ": ""}[bad]
    path = priced(tmp_path, PRICE.replace(bad, broken))
    code, _, err = run_cli("validate", path)
    m = only_error(err)
    assert code != 0 and Path(m["file"]).name == path.name
    assert int(m["line"]) == line_of(path.read_text(), "    price: {")
    assert f"price.{field}" in m["rest"] and says in m["rest"].lower(), m["rest"]


def test_a_cost_budget_must_be_positive(tmp_path: Path) -> None:
    path = lab_copy(tmp_path, LAB.replace("budgets:\n", "budgets:\n  cost: -2\n", 1))
    code, _, err = run_cli("validate", path)
    m = only_error(err)
    assert int(m["line"]) == line_of(path.read_text(), "  cost: -2") and "budgets.cost" in m["rest"]
