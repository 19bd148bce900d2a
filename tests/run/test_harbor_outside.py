"""A Terminal-Bench 2-style task that needs the outside, run unchanged under the lab's network policy
(helper F's egress gateway, branch h-egress) and graded in the agent's live container.

tests/harbor_tasks/outside-tools: solve.sh apt-installs `hello-svc` from deb.debian.org and starts
the service it ships; test.sh tries uv from astral.sh (on no allowlist), falls back to installing
pytest from pypi.org, probes the service, writes reward 1 or 0 and exits 0. The "outside" is served by
this test's own containers (tests/outside.py: an internal network, stand-ins under the registry
names): the archive holds a `hello-svc` built here with dpkg-deb, the index real pytest wheels
repacked from this interpreter's own installed distributions (nothing downloaded).

* `allowlist` (the default): oracle Complete, nop Failed; egress.jsonl shows the archive and the index
  allowed — the verifier's pip requests among them, so the tests had the run's network — and
  astral.sh denied.
* `none`: the oracle is Failed, and the report quotes the verifier's reason.

Needs h-egress merged (`network:` in lab.yaml, labctl.run.egress, tests/outside.py): skipped before.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import re
import zipfile
from pathlib import Path

import pytest

from tests import outside
from tests.run.test_harbor import TASKS, cli, run_round, task_lab
from tests.run.test_runner import build, runner_env

__all__ = ["runner_env"]  # test_runner's module fixture: envelopes, scratch, labs/smoke.lock
pytestmark = pytest.mark.docker
TASK = TASKS / "outside-tools"
HELLO_SVC = r"""#!/usr/bin/perl
use strict; use warnings; use IO::Socket::INET;
my $s = IO::Socket::INET->new(LocalAddr => '0.0.0.0', LocalPort => 8080, Listen => 8, ReuseAddr => 1)
    or die "listen: $!\n";
while (my $c = $s->accept) { <$c>; print $c "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello"; close $c }
"""
PYTEST_TREE = ("pytest", "pluggy", "iniconfig", "packaging", "pygments")


def repacked_wheel(name: str) -> tuple[str, bytes]:
    """An installed pure-Python distribution as the wheel it was installed from (its files under
    site-packages, its dist-info with a fresh RECORD): real code, and no download."""
    dist = importlib.metadata.distribution(name)
    files = [f for f in dist.files or [] if not str(f).startswith("..") and "__pycache__" not in f.parts
             and f.name not in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")]
    stem = f"{dist.metadata['Name'].replace('-', '_')}-{dist.version}"
    info = next(str(f.parts[0]) for f in files if f.parts[0].endswith(".dist-info"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in files:
            data = Path(str(dist.locate_file(f))).read_bytes()
            zf.writestr(zipfile.ZipInfo(str(f), (2020, 1, 1, 0, 0, 0)), data)
        record = "".join(f"{f},,\n" for f in files) + f"{info}/RECORD,,\n"
        zf.writestr(zipfile.ZipInfo(f"{info}/RECORD", (2020, 1, 1, 0, 0, 0)), record)
    return f"{stem}-py3-none-any.whl", buf.getvalue()


def site(tmp: Path) -> Path:
    root = tmp / "site"
    outside.pypi_tree(root, {n: [repacked_wheel(n)] for n in PYTEST_TREE})
    deb = outside.make_deb(tmp, "hello-svc", "1.0", {"/usr/bin/hello-svc": HELLO_SVC})
    outside.debian_tree(root / "debian", [deb])
    return root


def test_tb2_style_task_under_the_allowlist(tmp_path: Path) -> None:
    from labctl.engine.container import detect_engine
    from labctl.round.layout import read_egress

    lab = task_lab(tmp_path, TASK)
    build(lab)
    with outside.outside_world(detect_engine(), tmp_path / "outside") as out:
        registries = out.serve(site(tmp_path), ["deb.debian.org", "pypi.org", "files.pythonhosted.org"])
        done, data = run_round(lab, tmp_path)
        answered = registries.requests()
    assert done.returncode == 0, done.stderr
    rows = {r["contestant"]: r for r in data["runs"]}
    assert rows["oracle"]["outcome"] == "Complete", (rows, done.stderr)
    assert rows["nop"]["outcome"] == "Failed", rows
    rd = Path(data["round_dir"])
    oracle = rd / "runs" / rows["oracle"]["run"]
    log = read_egress(oracle / "egress.jsonl")
    allowed = {r.host for r in log if r.allowed}
    assert {"deb.debian.org", "pypi.org"} <= allowed, log
    assert [r for r in log if r.host == "astral.sh" and not r.allowed], log  # on no list: denied
    assert any("/simple/pytest" in str(r["path"]) for r in answered)  # the verifier's pip, served
    assert "2 passed" in (oracle / "verifier" / "stdout.txt").read_text()
    nop = rd / "runs" / rows["nop"]["run"] / "verifier"
    assert "FAILED: the tests of /tests/test_outputs.py did not pass" in (nop / "stderr.txt").read_text()
    check = cli("verify", rd, cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr


def test_tb2_style_task_without_network_fails_and_says_why(tmp_path: Path) -> None:
    from labctl.engine.container import detect_engine

    lab = task_lab(tmp_path, TASK, contestants="  - id: oracle\n    kind: oracle\n")
    lab.write_text(lab.read_text() + "network: {egress: none}\n")
    from tests.run.test_harbor_live import _relock

    _relock(lab)
    build(lab)
    with outside.outside_world(detect_engine(), tmp_path / "outside") as out:
        out.serve(site(tmp_path), ["deb.debian.org", "pypi.org", "files.pythonhosted.org"])
        done, data = run_round(lab, tmp_path)
    [run] = data["runs"]
    assert run["outcome"] == "Failed" and data["controls_failed"], (data, done.stderr)
    rd = Path(data["round_dir"])
    rep = cli("report", rd, "--format", "json", cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    said = json.dumps(json.loads((rd / "report.json").read_text()))
    assert re.search(r'"verifier_said": "stderr: [^"]*pytest could not be installed', said), said[:3000]
