"""The lab spec: the shipped labs validate, and every kind of bad input gets one located error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
from ruamel.yaml import YAML

from labctl.spec.lab import SERVE_DEFAULTS, CloudContestant, LocalContestant
from labctl.spec.load import load_lab
from labctl.spec.located import SpecError, load_yaml, plain
from labctl.spec.schema import lab_schema, lab_schema_text
from tests.helpers import ROOT, lab_copy, line_of, run_cli

LAB = (ROOT / "lab.yaml").read_text()
LOCATED = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):(?P<col>\d+): (?P<rest>.+)$")


def only_error(stderr: str) -> re.Match[str]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got: {stderr!r}"
    assert "Traceback" not in stderr
    m = LOCATED.match(lines[0])
    assert m, f"not file:line:col: {lines[0]!r}"
    return m


@pytest.mark.parametrize("lab", ["lab.yaml", "labs/smoke.yaml"])
def test_shipped_labs_validate(lab: str) -> None:
    code, out, err = run_cli("validate", ROOT / lab)
    assert code == 0, err
    assert "is valid" in out


def test_round7_lab_says_what_the_published_round_needs() -> None:
    loaded = load_lab(ROOT / "lab.yaml")
    lab = loaded.lab
    local = [c for c in lab.contestants if isinstance(c, LocalContestant)]
    cloud = [c for c in lab.contestants if isinstance(c, CloudContestant)]
    assert [c.name for c in local] == ["Qwen 3.6 35B-A3B", "Gemma 4 12B", "Hermes 4 14B",
                                       "Qwen3-Coder 30B-A3B", "Devstral 24B"]
    assert all(c.model.repo and c.model.file and c.model.file.endswith(".gguf") for c in local)
    assert [c.model for c in cloud] == ["claude-sonnet-4-20250514"]
    assert lab.engine.llama_cpp.ref == "b9660" and lab.engine.cuda and lab.engine.cuda.version == "13.1"
    assert loaded.profile.name == "rtx5090-32g" and loaded.profile.cuda_arch == 120
    serve = lab.serve_for(local[0])
    assert (serve.flash_attention, serve.cache_type_k, serve.cache_type_v) == ("on", "q8_0", "q8_0")
    assert serve.max_output == 81920  # the contestant's override wins over the lab's 32768
    assert lab.serve_for(local[1]).max_output == 32768
    ids = [f"{lab.round.run_prefix}{lab.round.first_number + i}" for i in range(len(lab.contestants))]
    assert ids == ["run-10", "run-11", "run-12", "run-13", "run-14", "run-15"]
    assert all(c.published and c.published.outcome for c in lab.contestants)
    sonnet = cloud[0].published
    assert sonnet and sonnet.commits == 4 and sonnet.total_tokens == 19_237 and sonnet.wall_time == 600
    # Every figure the article publishes per model (its run id, tool calls, tokens, messages, commits).
    pubs = [c.published for c in lab.contestants if c.published]
    assert sorted(p.run for p in pubs) == ids  # type: ignore[type-var]
    assert all(None not in (p.tool_calls, p.total_tokens, p.messages, p.commits) for p in pubs)


def test_serve_defaults_fill_what_is_unset() -> None:
    loaded = load_lab(ROOT / "labs/smoke.yaml")
    tiny = loaded.lab.contestants[0]
    assert isinstance(tiny, LocalContestant)
    s = loaded.lab.serve_for(tiny)
    assert s.context == 4096 and s.parallel == SERVE_DEFAULTS.parallel and s.gpu_layers == "auto"


# Each broken example: (replace this, with that) in lab.yaml → field and a word of the message,
# and the line the error must point at (by a needle in the broken text).
BROKEN = {
    "wrong type": ("first_number: 10 ", "first_number: ten ", "round.first_number", "expected an integer",
                   "first_number: ten"),
    "unknown key": ("    provider: anthropic", "    provder: anthropic\n    provider: anthropic",
                    "contestants[5].provder", "did you mean 'provider'", "provder:"),
    "missing required field": ("      file: gemma-4-12b-it-UD-Q4_K_XL.gguf\n", "",
                               "contestants[1].model", "repo needs file", "repo: unsloth/gemma"),
    "missing field of a kind": ("    api_key_env: ANTHROPIC_API_KEY\n", "", "contestants[5].api_key_env",
                                "required field is missing", "- id: claude-sonnet-4"),
    "duplicate id": ("  - id: devstral-24b", "  - id: gemma-4-12b", "contestants[4].id",
                     "already used by contestants[1]", "- id: gemma-4-12b|2"),
    "task path missing": ("path: tasks/tag-manager", "path: tasks/nope", "task.path", "does not exist",
                          "path: tasks/nope"),
    "unknown profile": ("profile: rtx5090-32g ", "profile: rtx9090 ", "profile", "unknown profile 'rtx9090'",
                        "profile: rtx9090"),
    "field of another kind": ("    name: Gemma 4 12B\n", "    name: Gemma 4 12B\n    api_key_env: X\n",
                              "contestants[1].api_key_env", "belongs to kind 'cloud', not 'local'",
                              "api_key_env: X"),
    "bad duration": ("  wall_time: 2h", "  wall_time: two hours", "budgets.wall_time",
                     "expected a duration", "wall_time: two"),
    "bad enum": ('  flash_attention: "on"', "  flash_attention: maybe", "serve.flash_attention",
                 "expected one of", "flash_attention: maybe"),
    "bad id": ("  name: model-showdown-round-7", "  name: Round 7!", "lab.name", "not a valid id",
               "name: Round 7!"),
    "unknown kind": ("    kind: cloud", "    kind: clowd", "contestants[5].kind",
                     "got 'clowd'; did you mean 'cloud'?", "kind: clowd"),
    "kind missing": ("  - id: claude-sonnet-4\n    kind: cloud\n", "  - id: claude-sonnet-4\n",
                     "contestants[5].kind", "required field is missing", "- id: claude-sonnet-4"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_lab_gives_one_located_error(tmp_path: Path, case: str) -> None:
    old, new, field, words, needle = BROKEN[case]
    assert old in LAB, f"fixture drifted: {old!r}"
    text = LAB.replace(old, new, 1)
    path = lab_copy(tmp_path, text)
    code, _, err = run_cli("validate", path)
    assert code == 2
    m = only_error(err)
    assert m["file"] == str(path)
    assert m["rest"].startswith(f"{field}: "), m["rest"]
    assert words in m["rest"]
    needle, _, nth = needle.partition("|")
    assert int(m["line"]) == line_of(text, needle, int(nth or 1))


@pytest.mark.parametrize(
    "case, content, line, col, words",
    [
        ("invalid yaml", LAB.replace("  context: max", "  context: [max"), None, None, "invalid YAML"),
        ("empty file", "", 1, 1, "empty file"),
        ("only a comment", "# nothing here\n", 1, 1, "empty file"),
        ("top level is a list", "- a\n- b\n", 1, 1, "expected a mapping"),
        ("non-utf8", LAB.encode().replace(b"Gemma 4 12B", b"Gemma \xff 12B", 1), None, None, "not UTF-8"),
    ],
)
def test_unreadable_files(tmp_path: Path, case: str, content: str | bytes, line: int | None,
                          col: int | None, words: str) -> None:
    path = tmp_path / "lab.yaml"
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)  # type: ignore[operator]
    code, _, err = run_cli("validate", path)
    assert code == 2
    m = only_error(err)
    assert words in m["rest"]
    if line is not None:
        assert (int(m["line"]), int(m["col"])) == (line, col)
    elif case == "non-utf8":
        assert int(m["line"]) == line_of(LAB, "Gemma 4 12B")
        assert int(m["col"]) == LAB.splitlines()[int(m["line"]) - 1].index("4 12B") + 1
    else:
        # the parser fails on the line after the open bracket, and says where the bracket is
        assert int(m["line"]) == line_of(LAB, "  context: max") + 1
        assert f"began at line {line_of(LAB, '  context: max')}, column 12" in m["rest"]


def test_missing_file_and_json_errors(tmp_path: Path) -> None:
    code, out, err = run_cli("validate", tmp_path / "nope.yaml", "--json")
    assert code == 2
    data = json.loads(out)
    assert data["ok"] is False and data["errors"][0]["message"] == "file not found"


def test_profile_option_swaps_and_checks_the_profile() -> None:
    assert load_lab(ROOT / "lab.yaml", profile="h100-80g").profile.cuda_arch == 90
    code, _, err = run_cli("validate", ROOT / "lab.yaml", "--profile", "h999")
    assert code == 2 and err.startswith("--profile: unknown profile 'h999'")


def test_validate_json_summary() -> None:
    code, out, _ = run_cli("validate", ROOT / "lab.yaml", "--json")
    data = json.loads(out)
    assert code == 0 and data["ok"] and data["profile"] == "rtx5090-32g"
    assert [c["kind"] for c in data["contestants"]] == ["local"] * 5 + ["cloud"]


def test_several_errors_are_all_reported(tmp_path: Path) -> None:
    text = LAB.replace("first_number: 10 ", "first_number: ten ").replace("  seal: true", "  seal: maybe")
    code, _, err = run_cli("validate", lab_copy(tmp_path, text))
    assert code == 2
    fields = [LOCATED.match(line)["rest"].split(":")[0] for line in err.splitlines()]  # type: ignore[index]
    assert fields == ["round.first_number", "round.seal"]


def test_inline_profile_and_its_errors(tmp_path: Path) -> None:
    inline = "profile:\n  name: box\n  gpu: X\n  vram_per_gpu: 16GiB\n  cuda_arch: 86\n  host_ram: 32GiB\n"
    path = lab_copy(tmp_path, LAB.replace("profile: rtx5090-32g", inline))
    assert load_lab(path).profile.vram_per_gpu == 16 * 1024**3
    bad = lab_copy(tmp_path, LAB.replace("profile: rtx5090-32g", inline.replace("16GiB", "lots")))
    code, _, err = run_cli("validate", bad)
    m = only_error(err)
    assert m["rest"].startswith("profile.vram_per_gpu: expected a size")


# --- the schema ----------------------------------------------------------------------------------


@pytest.mark.parametrize("lab", ["lab.yaml", "labs/smoke.yaml", "labctl/spec/templates/init/lab.yaml"])
def test_schema_validates_the_shipped_labs(lab: str) -> None:
    data = plain(load_yaml(ROOT / lab).root)
    jsonschema.Draft202012Validator(lab_schema()).validate(data)


def test_schema_rejects_what_validate_rejects() -> None:
    data = plain(load_yaml(ROOT / "lab.yaml").root)
    data["round"]["surprise"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(lab_schema()).validate(data)


def test_committed_schema_is_current_and_referenced() -> None:
    assert (ROOT / "lab.schema.json").read_text() == lab_schema_text(), "run `make schema`"
    code, out, _ = run_cli("schema")
    assert code == 0 and json.loads(out)["title"] == "labctl lab"
    assert LAB.splitlines()[0] == "# yaml-language-server: $schema=./lab.schema.json"


def test_schema_carries_field_docs() -> None:
    props = lab_schema()["$defs"]["Serve"]["properties"]
    assert "quantized V cache" in props["cache_type_v"]["description"]


# --- profiles ------------------------------------------------------------------------------------


def test_profiles_json_lists_the_six() -> None:
    code, out, _ = run_cli("profiles", "--json")
    data = {p["name"]: p for p in json.loads(out)}
    assert code == 0
    assert {"rtx5090-32g", "rtx4090-24g", "h100-80g", "h200-141g", "a100-40g", "cpu"} <= set(data)
    assert data["rtx5090-32g"]["cuda_arch"] == 120 and data["h100-80g"]["cuda_arch"] == 90
    assert data["h100-80g"]["vram_per_gpu"] > 79 * 1024**3
    assert data["cpu"]["gpu_count"] == 0 and data["cpu"]["vram_per_gpu"] == 0


def test_user_profiles_on_the_search_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "profiles"
    d.mkdir()
    (d / "l40s-48g.yaml").write_text("gpu: NVIDIA L40S\nvram_per_gpu: 48GiB\ncuda_arch: 89\n"
                                     "host_ram: 256GiB\n")
    monkeypatch.setenv("LABCTL_PROFILE_PATH", str(d))
    code, out, _ = run_cli("profiles", "--json")
    found = {p["name"]: p for p in json.loads(out)}
    assert found["l40s-48g"]["source"] == str(d / "l40s-48g.yaml")
    assert load_lab(ROOT / "lab.yaml", profile="l40s-48g").profile.gpu == "NVIDIA L40S"


def test_profiles_next_to_the_lab_win(tmp_path: Path) -> None:
    path = lab_copy(tmp_path)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "rtx5090-32g.yaml").write_text(
        "gpu: NVIDIA GeForce RTX 5090\nvram_per_gpu: 32GiB\ncuda_arch: 120\nhost_ram: 192GiB\n")
    assert load_lab(path).profile.host_ram == 192 * 1024**3


def test_broken_profile_file_is_located(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bad.yaml").write_text("gpu: X\ngpu_count: 1\nvram_per_gpu: 8GiB\nhost_ram: 16GiB\n"
                                       "cuda_arch: 86\nvram_resrve: 1GiB\n")
    monkeypatch.setenv("LABCTL_PROFILE_PATH", str(tmp_path))
    code, _, err = run_cli("profiles")
    m = only_error(err)
    assert code == 2 and (m["line"], m["rest"].split(":")[0]) == ("6", "vram_resrve")
    assert "did you mean 'vram_reserve'" in m["rest"]


@pytest.mark.parametrize("body, words", [
    ("gpu: X\nvram_per_gpu: 0\ncuda_arch: 86\nhost_ram: 1GiB\n", "vram_per_gpu > 0"),
    ("gpu_count: 0\ncuda_arch: 86\nhost_ram: 1GiB\n", "gpu_count is 0"),
    ("gpu: X\nvram_per_gpu: 8GiB\nhost_ram: 1GiB\n", "needs cuda_arch"),
])
def test_inconsistent_profiles(tmp_path: Path, body: str, words: str) -> None:
    (tmp_path / "p.yaml").write_text(body)
    with pytest.raises(SpecError, match=words):
        from labctl.spec.profiles import load_profile_file

        load_profile_file(tmp_path / "p.yaml")


# --- init ----------------------------------------------------------------------------------------


def test_init_scaffolds_a_valid_commented_lab(tmp_path: Path) -> None:
    target = tmp_path / "My Lab"
    code, out, _ = run_cli("init", target, "--json")
    assert code == 0
    files = {Path(p).relative_to(target).as_posix() for p in json.loads(out)["files"]}
    assert {"lab.yaml", "lab.schema.json", "tasks/hello/task.toml", "tasks/hello/instruction.md",
            "tasks/hello/environment/Dockerfile", "tasks/hello/tests/test.sh",
            "tasks/hello/solution/solve.sh"} <= files
    text = (target / "lab.yaml").read_text()
    assert "# runs the task's reference solution: must pass" in text  # comments survive
    assert YAML(typ="safe").load(text)["lab"]["name"] == "my-lab"
    assert run_cli("validate", target / "lab.yaml")[0] == 0
    code, _, err = run_cli("init", target)
    assert code == 1 and "already exist" in err and "--force" in err
    assert run_cli("init", target, "--force", "--name", "other")[0] == 0
    assert YAML(typ="safe").load((target / "lab.yaml").read_text())["lab"]["name"] == "other"


def test_version() -> None:
    code, out, _ = run_cli("--version")
    assert code == 0 and re.fullmatch(r"labctl \d+\.\d+\.\d+\n", out)


def test_model_tiny_command_is_deterministic(tmp_path: Path) -> None:
    a = json.loads(run_cli("model", "tiny", "--seed", "3", "-o", tmp_path / "a.gguf", "--json")[1])
    b = json.loads(run_cli("model", "tiny", "--seed", "3", "-o", tmp_path / "b.gguf", "--json")[1])
    assert a["sha256"] == b["sha256"] and a["name"] == b["name"]
    assert (tmp_path / "a.gguf").read_bytes() == (tmp_path / "b.gguf").read_bytes()
    code, _, err = run_cli("model", "tiny", "--heads", "3", "-o", tmp_path / "c.gguf")
    assert code == 2 and "divisible" in err and not (tmp_path / "c.gguf").exists()
