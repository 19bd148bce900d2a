"""`labctl round` on a lab that was never locked: a first run locks it (saying what it pinned) and goes
on as far as it can; only drift against an existing lock stops it.

The lab is a fresh `labctl init` scaffold. Its references are real ones (llama.cpp on GitHub,
mini-swe-agent on PyPI), so the test points them at loopback stand-ins the way a user behind a mirror
would: git's own `url.<base>.insteadOf` for the llama.cpp repository (a local repository with the
b9660 tag) and `LABCTL_PYPI_URL` for the package index (tests/lock/test_lock.py's PyPI JSON server).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.lock.test_lock import llama_repo, pypi  # noqa: F401  (pypi: a fixture)

UPSTREAM = "https://github.com/ggml-org/llama.cpp"


@pytest.fixture
def fresh_lab(tmp_path: Path, pypi, monkeypatch: pytest.MonkeyPatch) -> Path:  # noqa: F811
    src = llama_repo(tmp_path / "llama.cpp")
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", f"url.file://{src}.insteadOf")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", UPSTREAM)
    # pip (the image build's download) asks the same stand-in index, and nothing else.
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_INDEX_URL", f"{pypi.url}/simple/")
    monkeypatch.setenv("LABCTL_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("LABCTL_ENVELOPES", str(tmp_path / "envelopes"))
    code, _, err = run_cli("init", tmp_path / "lab")
    assert code == 0, err
    return tmp_path / "lab" / "lab.yaml"


@pytest.mark.docker
def test_first_round_locks_then_goes_on(fresh_lab: Path, tmp_path: Path) -> None:
    """No lab.lock: `round` locks (printing each pin), writes lab.lock, and carries on to fetch and
    build: it stops only where this machine cannot go further (the stand-in index has the agent's
    metadata but no wheel to download), never asking for a separate `labctl lock`."""
    lock = fresh_lab.with_suffix(".lock")
    assert not lock.exists()
    code, out, err = run_cli("round", fresh_lab, "--rounds-dir", tmp_path / "rounds")
    said = out + err
    assert "no lab.lock yet: locking" in said, said
    assert "pinned llama_cpp: b9660 → " in said and "pinned task: " in said and "pinned models.tiny" in said
    assert lock.is_file() and f"wrote {lock}" in said
    assert "run `labctl lock" not in said
    assert "fetch" in said and "build" in said, said  # got past the lock
    assert run_cli("lock", fresh_lab, "--check")[0] == 0, "the lock round wrote is the one `lock` would"
    assert code == 1, said  # the stand-in PyPI serves no wheel to build with: as far as it can go


def test_drift_against_an_existing_lock_stops_the_round(fresh_lab: Path, tmp_path: Path) -> None:
    assert run_cli("lock", fresh_lab)[0] == 0
    lock = fresh_lab.with_suffix(".lock")
    before = lock.read_bytes()
    fresh_lab.write_text(fresh_lab.read_text().replace("generate: {seed: 1}", "generate: {seed: 2}"))
    code, out, err = run_cli("round", fresh_lab, "--rounds-dir", tmp_path / "rounds")
    assert code == 1
    assert "changed since lab.lock was written" in err and "locking" not in out + err
    assert lock.read_bytes() == before, "a round never rewrites an existing lock"
    assert not (tmp_path / "rounds").exists()
