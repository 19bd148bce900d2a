"""The lab's network policy: its default (allowlist: the registry preset), the lab's own hosts,
located errors for a bad host and for `network` where only the lab may say it (a contestant, an
inline profile, a profile file), and a task's `allow_internet = false` narrowing it to none."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from labctl.run.egress import policy_for
from labctl.spec.load import load_lab
from labctl.spec.network import REGISTRY_PRESET, Network
from labctl.spec.task import read_task
from tests.helpers import ROOT, lab_copy, line_of, run_cli
from tests.spec.test_spec import only_error

SMOKE = (ROOT / "labs" / "smoke.yaml").read_text().replace("path: ../tasks/", "path: tasks/")


def test_the_default_is_the_registry_allowlist(tmp_path: Path) -> None:
    lab = load_lab(lab_copy(tmp_path, SMOKE)).lab
    assert lab.network.egress == "allowlist"
    assert lab.network.hosts() == list(REGISTRY_PRESET)
    registries = {"deb.debian.org", "pypi.org", "files.pythonhosted.org", "registry.npmjs.org"}
    assert registries <= set(REGISTRY_PRESET)
    own = load_lab(lab_copy(tmp_path, SMOKE + "network: {allow: [astral.sh, '*.github.com']}\n")).lab
    assert own.network.hosts() == [*REGISTRY_PRESET, "astral.sh", "*.github.com"]
    assert load_lab(lab_copy(tmp_path, SMOKE + "network: {egress: open}\n")).lab.network.hosts() == []


@pytest.mark.parametrize(("text", "needle", "field", "message"), [
    ("network: {egress: allowlist, allow: ['http://x.org']}\n", "network:", "network.allow[0]",
     "does not match"),
    ("network: {egress: wide}\n", "network:", "network.egress", "expected one of"),
    ("", "", "contestants[1].network", "the network policy is the lab's alone"),
])
def test_bad_policies_are_located(tmp_path: Path, text: str, needle: str, field: str, message: str) -> None:
    body = SMOKE + text
    if not text:  # a contestant naming `network`: refused at its key
        body = body.replace("  - id: oracle\n", "  - id: oracle\n    network: {egress: open}\n")
        needle = "network: {egress: open}"
    path = lab_copy(tmp_path, body)
    code, _, err = run_cli("validate", path)
    m = only_error(err)
    assert code == 2 and int(m["line"]) == line_of(body, needle)
    assert m["rest"].startswith(f"{field}: ") and message in m["rest"], m["rest"]


def test_a_profile_cannot_name_a_network(tmp_path: Path) -> None:
    inline = SMOKE.replace("profile: cpu\n",
                           "profile:\n  name: box\n  host_ram: 8GiB\n  network: {egress: open}\n")
    code, _, err = run_cli("validate", lab_copy(tmp_path, inline))
    m = only_error(err)
    assert code == 2 and m["rest"].startswith("profile.network: ") and "lab's alone" in m["rest"]
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "wide.yaml").write_text("host_ram: 8GiB\nnetwork: {egress: open}\n")
    code, _, err = run_cli("validate", lab_copy(tmp_path, SMOKE.replace("profile: cpu\n", "profile: wide\n")))
    m = only_error(err)
    assert code == 2 and m["file"].endswith("wide.yaml") and m["line"] == "2" and "lab's alone" in m["rest"]


def test_allow_internet_false_means_none_for_that_task(tmp_path: Path) -> None:
    task = tmp_path / "task"
    shutil.copytree(ROOT / "tasks" / "smoke-hello", task)
    lab = load_lab(lab_copy(tmp_path, SMOKE + "network: {egress: open}\n")).lab
    assert policy_for(lab, read_task(task)).egress == "open"  # Harbor's default: allow_internet = true
    toml = task / "task.toml"
    toml.write_text(toml.read_text() + "\n[environment]\nallow_internet = false\n"
                    if "[environment]" not in toml.read_text()
                    else toml.read_text().replace("[environment]", "[environment]\nallow_internet = false"))
    assert policy_for(lab, read_task(task)) == Network(egress="none")
