"""Agent runtime adapters and their offline install scripts (no Docker, no network).

What each adapter promises: a non-interactive command that holds no key, reaches the model only at
the meter, has every prompt answered and every call home switched off by configuration, knows the
deadline and the step limit; and an install that reads nothing but the build context.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from labctl.agents import Invocation, adapter, check_no_secrets
from labctl.agents.base import BUILD_DIR
from labctl.lock.lockfile import WheelLock
from labctl.lock.npmtree import project_files, prune_unresolved_optionals
from labctl.lock.wheeltree import requirements

DEADLINE = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
INV = Invocation(instruction_file="/task/instruction.md", model_base_url="http://meter:8080/",
                 model_name="run-12", step_limit=7, deadline=DEADLINE, log_dir="/logs/agent")


def _sh_args(argv: list[str]) -> list[str]:
    """argv is `sh -c SCRIPT NAME ARGS…`: the positional arguments the script sees as $1…"""
    assert argv[:2] == ["sh", "-c"]
    return argv[4:]


def test_claude_code_is_headless_keyless_and_at_the_meter() -> None:
    cmd = adapter("claude-code").command(INV)
    script = cmd.argv[2]
    for flag in ("-p", "--dangerously-skip-permissions", "--max-turns", "--output-format stream-json",
                 "--verbose", "--settings"):
        assert flag in script
    instruction, note, turns, model, settings, transcript = _sh_args(cmd.argv)
    assert (instruction, turns, model) == ("/task/instruction.md", "7", "run-12")
    assert "2030-01-01T12:00:00+00:00" in note and transcript.startswith("/logs/agent/")
    assert json.loads(settings) == {"apiKeyHelper": "echo labctl-proxy-placeholder"}
    assert cmd.env["ANTHROPIC_BASE_URL"] == "http://meter:8080"
    assert {cmd.env[k] for k in cmd.env if k.startswith("ANTHROPIC_") and k.endswith("MODEL")} == {"run-12"}
    for off in ("DISABLE_TELEMETRY", "DISABLE_ERROR_REPORTING", "DISABLE_AUTOUPDATER",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"):
        assert cmd.env[off] == "1"
    check_no_secrets(cmd.env)


def test_qwen_code_is_configured_by_system_settings_only() -> None:
    cmd = adapter("qwen-code").command(INV)
    assert "QWEN_CODE_SYSTEM_SETTINGS_PATH" in cmd.argv[2] and "qwen -p" in cmd.argv[2]
    instruction, note, settings, path, out = _sh_args(cmd.argv)
    conf = json.loads(settings)
    [provider] = conf["modelProviders"]["openai"]
    assert provider["baseUrl"] == "http://meter:8080/v1"
    assert provider["id"] == conf["model"]["name"] == "run-12"
    assert conf["env"][provider["envKey"]] == "labctl-proxy-placeholder"
    assert conf["security"]["auth"]["selectedType"] == "openai"
    assert conf["tools"]["approvalMode"] == "yolo" and conf["model"]["maxSessionTurns"] == 7
    assert conf["privacy"]["usageStatisticsEnabled"] is False and conf["telemetry"]["enabled"] is False
    assert conf["general"]["enableAutoUpdate"] is False
    assert path.startswith("/logs/agent/") and out.startswith("/logs/agent/") and "2030" in note
    assert cmd.env == {}


def test_qwen_code_script_writes_the_settings_it_is_given(tmp_path: Path) -> None:
    """The sh glue itself, run for real with a stand-in `qwen` that prints what it was handed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "qwen").write_text('#!/bin/sh\ncat "$QWEN_CODE_SYSTEM_SETTINGS_PATH"; echo; echo "$@"\n')
    (bin_dir / "qwen").chmod(0o755)
    (tmp_path / "instruction.md").write_text("Say hello.")
    inv = Invocation(instruction_file=str(tmp_path / "instruction.md"), model_base_url="http://meter:8080",
                     model_name="run-3", log_dir=str(tmp_path))
    cmd = adapter("qwen-code").command(inv)
    subprocess.run(cmd.argv, check=True, env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    settings, args = (tmp_path / "qwen-output.txt").read_text().splitlines()
    assert json.loads(settings)["model"]["name"] == "run-3" and args == "-p Say hello."


def test_codex_speaks_responses_to_the_meter_with_a_private_home() -> None:
    import tomllib

    cmd = adapter("codex").command(INV)
    script = cmd.argv[2]
    assert "codex exec --dangerously-bypass-approvals-and-sandbox --skip-git-repo-check --json" in script
    instruction, note, conf, home, events = _sh_args(cmd.argv)
    cfg = tomllib.loads(conf)
    provider = cfg["model_providers"][cfg["model_provider"]]
    assert provider["base_url"] == "http://meter:8080/v1" and provider["wire_api"] == "responses"
    assert provider["supports_websockets"] is False and cfg["model"] == "run-12"
    assert cfg["approval_policy"] == "never" and cfg["check_for_update_on_startup"] is False
    assert cfg["analytics"] == {"enabled": False}
    assert cmd.env == {provider["env_key"]: "labctl-proxy-placeholder"}
    check_no_secrets(cmd.env)
    assert home.startswith("/logs/agent/") and events.startswith("/logs/agent/") and "2030" in note


def test_opencode_uses_a_bundled_provider_at_the_meter() -> None:
    cmd = adapter("opencode").command(INV)
    assert "opencode run --model" in cmd.argv[2] and "--format json" in cmd.argv[2]
    instruction, note, model, events = _sh_args(cmd.argv)
    conf = json.loads(cmd.env["OPENCODE_CONFIG_CONTENT"])
    provider = conf["provider"]["labctl"]
    assert provider["npm"] == "@ai-sdk/openai-compatible"  # bundled: nothing installed at run time
    assert provider["options"]["baseURL"] == "http://meter:8080/v1"
    assert model == conf["model"] == conf["small_model"] == "labctl/run-12" and "run-12" in provider["models"]
    assert conf["permission"] == {"edit": "allow", "bash": "allow", "webfetch": "deny"}
    assert conf["autoupdate"] is False
    for off in ("OPENCODE_DISABLE_MODELS_FETCH", "OPENCODE_DISABLE_AUTOUPDATE",
                "OPENCODE_DISABLE_DEFAULT_PLUGINS", "OPENCODE_DISABLE_PROJECT_CONFIG"):
        assert cmd.env[off] == "true"
    check_no_secrets(cmd.env)
    assert events.startswith("/logs/agent/") and "2030" in note


def test_aider_runs_one_message_with_every_question_answered(tmp_path: Path) -> None:
    cmd = adapter("aider").command(INV)
    script = cmd.argv[2]
    for flag in ("--message-file", "--no-fancy-input", "--edit-format diff", "--no-analytics",
                 "--no-check-update", "--auto-commits", "--no-gitignore", "--no-detect-urls",
                 "--openai-api-key labctl-proxy-placeholder"):
        assert flag in script
    # --yes-always would decline every shell command the model proposes (explicit yes required)
    assert "--yes-always" not in script
    instruction, note, model, base, log_dir, metadata = _sh_args(cmd.argv)
    assert (model, base, log_dir) == ("openai/run-12", "http://meter:8080/v1", "/logs/agent")
    # the model is known to aider from this file: no fetch of litellm's price list from GitHub
    assert "--model-metadata-file" in script and json.loads(metadata)[model]["litellm_provider"] == "openai"
    assert cmd.env == {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    # the message file it is handed: the instruction, then the deadline
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # the stand-in prints the message, then answers two questions from its stdin, as aider would
    (bin_dir / "aider").write_text('#!/bin/sh\ncat "$2"\nhead -n 2\n')  # $2: the message file
    (bin_dir / "aider").chmod(0o755)
    (tmp_path / "i.md").write_text("Say hello.")
    inv = Invocation(instruction_file=str(tmp_path / "i.md"), model_base_url="http://meter:8080",
                     model_name="m", deadline=DEADLINE, log_dir=str(tmp_path))
    out = subprocess.run(adapter("aider").command(inv).argv, capture_output=True, text=True, check=True,
                         env={"PATH": f"{bin_dir}:/usr/bin:/bin"}).stdout
    assert out.startswith("Say hello.") and "2030-01-01T12:00:00+00:00" in out
    assert out.endswith("y\ny\n")  # every question, shell commands included, is answered yes


def test_npm_install_is_offline_and_runs_only_the_named_scripts() -> None:
    files = [f"{BUILD_DIR}/dist/node.tgz", f"{BUILD_DIR}/dist/npm.tgz"]
    script = adapter("claude-code").install_script(files)
    assert "ci --ignore-scripts --cache /opt/labctl/build/dist/npm-cache --offline" in script
    assert "rebuild --foreground-scripts --offline" in script and "@anthropic-ai/claude-code" in script
    assert "registry" not in script  # nothing to redirect: no registry is read
    assert "/opt/labctl/agents/claude-code/node_modules/.bin/claude" in script
    qwen = adapter("qwen-code").install_script(["n.tgz", "m.tgz"])
    assert "rebuild" not in qwen and "node_modules/.bin/qwen" in qwen


def test_wheels_install_is_hash_pinned_without_an_index() -> None:
    script = adapter("mini-swe-agent").install_script([])
    assert "--no-index --no-deps --require-hashes --find-links /opt/labctl/build/dist" in script
    assert f'req="{BUILD_DIR}/requirements/$py.txt"' in script


def test_requirements_per_python_pin_every_wheel() -> None:
    def wheel(name: str, file: str, sha: str, pys: list[str]) -> WheelLock:
        return WheelLock(name=name, version="1.0", filename=file, sha256=sha * 64, url=f"https://f/{file}",
                         pythons=pys)

    files = requirements([wheel("a", "a-1.0-py3-none-any.whl", "a", ["3.11", "3.12"]),
                          wheel("b", "b-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", "b", ["3.11"]),
                          wheel("b", "b-1.0-cp312-cp312-manylinux_2_17_x86_64.whl", "c", ["3.12"])])
    assert files == {"3.11.txt": f"a==1.0 --hash=sha256:{'a' * 64}\nb==1.0 --hash=sha256:{'b' * 64}\n",
                     "3.12.txt": f"a==1.0 --hash=sha256:{'a' * 64}\nb==1.0 --hash=sha256:{'c' * 64}\n"}


def test_unresolvable_optional_platform_packages_leave_the_lock() -> None:
    """What `install --package-lock-only` could not get is dropped from its declarer, so `npm ci`
    accepts the lock (qwen-code 0.24.4: @teddyzhu/clipboard's never-published platform builds)."""
    packages = {
        "": {"dependencies": {"q": "1"}},
        "node_modules/q": {"version": "1", "optionalDependencies": {"clip": "5", "clip-darwin": "5"}},
        "node_modules/clip": {"version": "5", "optionalDependencies": {"clip-linux": "5", "clip-win": "5"}},
        "node_modules/clip-linux": {"version": "5"},
        "node_modules/q/node_modules/nested": {"version": "2", "optionalDependencies": {"clip": "5"}},
    }
    pruned = prune_unresolved_optionals(packages)
    assert pruned["node_modules/q"]["optionalDependencies"] == {"clip": "5"}
    assert pruned["node_modules/clip"]["optionalDependencies"] == {"clip-linux": "5"}
    assert pruned["node_modules/q/node_modules/nested"] == packages["node_modules/q/node_modules/nested"]
    assert pruned["node_modules/clip-linux"] == {"version": "5"}


def test_npm_project_is_one_exact_dependency_and_its_lock() -> None:
    packages = {"": {"name": "labctl-agent-runtime"},
                "node_modules/x": {"version": "1.2.3", "integrity": "sha512-x"}}
    files = project_files("x", "1.2.3", packages)
    assert json.loads(files["package.json"])["dependencies"] == {"x": "1.2.3"}
    lock = json.loads(files["package-lock.json"])
    assert lock["lockfileVersion"] == 3 and lock["packages"] == packages


@pytest.mark.parametrize("runtime", ["aider", "claude-code", "codex", "opencode", "qwen-code",
                                     "mini-swe-agent"])
def test_every_runtime_needs_a_version_and_a_model(runtime: str) -> None:
    with pytest.raises(ValueError, match="version"):
        adapter(runtime).packages(None)
    with pytest.raises(ValueError, match="base URL"):
        adapter(runtime).command(Invocation(instruction_file="/i.md"))
