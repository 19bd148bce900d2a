"""The fence's rules as text: which rules a run owns, and that nothing else is ever matched (the
rules themselves are exercised against the real kernel in test_sandbox.py)."""

from __future__ import annotations

import pytest

from labctl.engine.container import EngineError
from labctl.engine.fence import comment, matching_rules, rule_specs

LISTING = """\
-P INPUT ACCEPT
-A INPUT -i br-0123456789ab -m comment --comment "labctl:r1:run-1" -j DROP
-A INPUT -i br-0123456789ab -m comment --comment "labctl:r1:run-10" -j DROP
-A INPUT -i br-ffffffffffff -m comment --comment "labctl:r12:run-1" -j DROP
-A INPUT -i eth0 -m comment --comment "someone else's" -j ACCEPT
-A FORWARD -i br-0123456789ab ! -o br-0123456789ab -m comment --comment "labctl:r1:run-1" -j DROP
-A DOCKER-USER -j RETURN
"""


def test_a_run_owns_exactly_its_rules() -> None:
    run1 = matching_rules(LISTING, comment("r1", "run-1"))
    assert run1 == [["INPUT", "-i", "br-0123456789ab", "-m", "comment", "--comment", "labctl:r1:run-1", "-j",
                     "DROP"],
                    ["FORWARD", "-i", "br-0123456789ab", "!", "-o", "br-0123456789ab", "-m", "comment",
                     "--comment", "labctl:r1:run-1", "-j", "DROP"]]
    assert len(matching_rules(LISTING, comment("r1"))) == 3  # every run of round r1, not r12's
    assert len(matching_rules(LISTING, comment(None))) == 4  # `labctl down` of every round
    assert matching_rules(LISTING, comment("r2", "run-1")) == []


def test_rules_are_built_from_safe_names_only() -> None:
    assert rule_specs("br-0123456789ab", "labctl:r:run-1")[0] == [
        "INPUT", "-i", "br-0123456789ab", "-m", "comment", "--comment", "labctl:r:run-1", "-j", "DROP"]
    for bad in ("br-x; reboot", "a-name-longer-than-15", ""):
        with pytest.raises(EngineError):
            rule_specs(bad, "labctl:r:run-1")
    with pytest.raises(ValueError):
        comment("r1", "run 1")
    with pytest.raises(ValueError):
        comment("r1\"", "run-1")
