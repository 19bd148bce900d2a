"""`labctl lock --check` against a runtime's whole tree: a changed hash anywhere in it is drift.

Uses test_lock's lab (loopback git, Hub and PyPI stand-ins; the real pip resolves the tree).
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import run_cli
from tests.hfserver import hub_server  # noqa: F401  (fixture)
from tests.lock.test_lock import lab, pypi  # noqa: F401  (fixtures)


def test_a_changed_wheel_hash_fails_check(lab: Path) -> None:  # noqa: F811
    assert run_cli("lock", lab)[0] == 0
    path = lab.with_suffix(".lock")
    lock = json.loads(path.read_text())
    lock["agent"]["wheels"][0]["sha256"] = "0" * 64  # what a re-uploaded file would look like
    path.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    code, out, _ = run_cli("lock", lab, "--check", "--json")
    assert code == 1
    drifted = json.loads(out)["drifted"]
    assert any(d.startswith("agent.wheels[0].sha256: was 000") for d in drifted), drifted
