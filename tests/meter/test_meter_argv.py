"""`MeterConfig.to_argv()` (how the runner starts a meter) parsed by `labctl meter`'s own options
gives the same config back: the runner and the CLI cannot drift apart. No network, no meter."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import typer

from labctl.cli.app import app
from labctl.cli.meter import meter_config
from labctl.meter.state import MeterConfig
from labctl.spec.interventions import Interventions
from labctl.spec.price import Price


def parsed(argv: list[str]) -> MeterConfig:
    """The config `labctl meter ARGV` would serve, through click's real parser."""
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    command = group.commands["meter"]
    params = command.make_context("meter", list(argv)).params
    params.pop("as_json")
    return meter_config(**params)


def test_a_local_runs_meter_round_trips(tmp_path: Path) -> None:
    rules = Interventions.model_validate({"max_nudges": 1, "rules": [
        {"name": "keep-going", "action": "nudge", "message": "Keep going.", "trigger": {"idle": "60s"}}]})
    cfg = MeterConfig(upstream="http://server:8080", dialect="openai", host="0.0.0.0", port=8080,
                      transcript=Path("/meter/transcript.jsonl"), alias="run-01", max_output=64,
                      token_budget=200_000, request_budget=8, interventions=rules)
    file = tmp_path / "interventions.json"
    file.write_text(rules.model_dump_json(exclude_none=True))
    argv = cfg.to_argv(file)
    assert argv == ["--upstream", "http://server:8080", "--dialect", "openai", "--listen", "0.0.0.0:8080",
                    "--transcript", "/meter/transcript.jsonl", "--alias", "run-01", "--max-output", "64",
                    "--token-budget", "200000", "--request-budget", "8", "--interventions", str(file)]
    assert parsed(argv) == cfg


def test_a_cloud_runs_meter_round_trips() -> None:
    cfg = MeterConfig(upstream="https://api.anthropic.com", dialect="anthropic", host="0.0.0.0", port=8080,
                      transcript=Path("/meter/transcript.jsonl"), alias="run-02", api_key_env="KEY",
                      upstream_model="claude-x")
    argv = cfg.to_argv()
    assert argv[-4:] == ["--api-key-env", "KEY", "--upstream-model", "claude-x"]
    assert parsed(argv) == cfg


def test_every_option_round_trips(tmp_path: Path) -> None:
    cfg = MeterConfig(upstream="http://u", dialect="openai", host="::1", port=0,
                      transcript=tmp_path / "t.jsonl", status_path=tmp_path / "s.json",
                      max_request_bytes=4096, blob_bytes=None, control_dir=tmp_path / "control")
    assert parsed(cfg.to_argv()) == cfg
    assert parsed(cfg.model_copy(update={"blob_bytes": 0}).to_argv()).blob_bytes == 0


def test_what_the_cli_cannot_carry_is_refused() -> None:
    cfg = MeterConfig(upstream="http://u", dialect="openai", transcript=Path("t"), read_timeout_s=5)
    with pytest.raises(ValueError, match="read_timeout_s"):
        cfg.to_argv()
    rules = Interventions.model_validate({"max_nudges": 2})
    with pytest.raises(ValueError, match="interventions_file"):
        MeterConfig(upstream="http://u", dialect="openai", transcript=Path("t"),
                    interventions=rules).to_argv()


def test_a_priced_cloud_runs_meter_round_trips() -> None:
    """The price travels as its JSON and the cost budget as a float; both come back exactly."""
    price = Price(input=3, output=15, cache_read=0.3, cache_write=3.75, as_of=dt.date(2026, 6, 1),
                  source="https://www.anthropic.com/pricing")
    cfg = MeterConfig(upstream="https://api.anthropic.com", dialect="anthropic", host="0.0.0.0", port=8080,
                      transcript=Path("/meter/transcript.jsonl"), alias="run-03", api_key_env="KEY",
                      upstream_model="claude-x", price=price, cost_budget=0.1)
    argv = cfg.to_argv()
    assert argv[argv.index("--cost-budget") + 1] == "0.1"
    assert parsed(argv) == cfg and parsed(argv).price == price
