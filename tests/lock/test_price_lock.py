"""A cloud contestant's declared price is a pinned input: recorded in lab.lock, and a changed price is
drift in `labctl lock --check` (and `--offline`), like a moved model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.hfserver import HubServer, hub_server  # noqa: F401  (fixture)
from tests.lock.test_lock import lab, pypi  # noqa: F401  (fixtures)

CLOUD = """  - id: claude
    kind: cloud
    provider: anthropic
    model: claude-sonnet-4-20250514
    api_key_env: ANTHROPIC_API_KEY
    price: {input: 3, output: 15, cache_read: 0.3, cache_write: 3.75, as_of: 2026-06-01,
            source: "https://www.anthropic.com/pricing"}
"""


@pytest.fixture
def priced(lab: Path) -> Path:  # noqa: F811
    oracle = "  - {id: oracle, kind: oracle}\n"
    lab.write_text(lab.read_text().replace(oracle, CLOUD + oracle))
    return lab


def test_the_price_is_in_the_lock_and_a_change_is_drift(priced: Path) -> None:
    assert run_cli("lock", priced)[0] == 0
    locked = json.loads(priced.with_suffix(".lock").read_text())
    assert locked["prices"] == {"claude": {"input": 3.0, "output": 15.0, "cache_read": 0.3,
                                           "cache_write": 3.75, "as_of": "2026-06-01",
                                           "source": "https://www.anthropic.com/pricing"}}
    assert run_cli("lock", priced, "--check")[0] == 0
    priced.write_text(priced.read_text().replace("output: 15", "output: 18"))
    code, out, _ = run_cli("lock", priced, "--check", "--json")
    drifted = json.loads(out)["drifted"]
    assert code == 1
    assert "prices.claude.output: was 15.0, now 18.0" in drifted
    assert any(d.startswith("spec_sha256:") for d in drifted)
    assert not any(d.startswith("models.") for d in drifted)  # only what changed
    code, out, _ = run_cli("lock", priced, "--offline", "--json")
    result = json.loads(out)
    assert code == 1 and "prices.claude: declared price changed" in result["drifted"]


def test_an_unpriced_lab_keeps_its_lock_shape(lab: Path) -> None:  # noqa: F811
    assert run_cli("lock", lab)[0] == 0
    assert "prices" not in json.loads(lab.with_suffix(".lock").read_text())
