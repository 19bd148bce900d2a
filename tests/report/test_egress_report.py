"""The report's Egress table from the runs' egress.jsonl (a synthetic unsealed round, no Docker):
per run what was fetched (host, requests, bytes) and what the gateway denied; `labctl verify`
passes on the reported round and names an egress log edited into something else."""

from __future__ import annotations

import json
from pathlib import Path

from labctl.round.layout import read_sealed, run_dir
from labctl.round.seal import unseal_round
from tests.report.test_report import cli, make_round, table
from tests.round.test_seal import envelopes  # noqa: F401  (fixture)


def record(host: str, method: str = "GET", *, allowed: bool = True, size: int = 2048) -> str:
    return json.dumps({"time": "2026-06-18T12:00:01Z", "method": method, "host": host,
                       "port": 443 if method == "CONNECT" else 80,
                       "url": f"{host}:443" if method == "CONNECT" else f"http://{host}/x",
                       "status": 200 if allowed else 403, "bytes": size if allowed else 0,
                       "request_bytes": 90,
                       "allowed": allowed, "result": "TCP_TUNNEL" if allowed else "TCP_DENIED"}) + "\n"


def test_the_report_says_what_each_run_fetched_and_what_was_denied(tmp_path: Path,
                                                                     envelopes: Path) -> None:  # noqa: F811
    rd = make_round(tmp_path, unseal=False)
    first = read_sealed(rd).run_ids[0]
    (run_dir(rd, first) / "egress.jsonl").write_text(
        record("pypi.org", "CONNECT", size=1536) + record("pypi.org", "CONNECT", size=512)
        + record("deb.debian.org") + record("not-allowed.example", allowed=False))
    unseal_round(rd)
    code, _, err = cli("report", rd)
    assert code == 0, err
    md = (rd / "report.md").read_text()
    rows = table(md, "Egress", run_column=True)
    assert list(rows) == [first]
    _, requests, fetched, denied = rows[first]
    assert requests == "4"
    assert fetched == "pypi.org ×2, 2.0 KiB; deb.debian.org ×1, 2.0 KiB"
    assert denied == "not-allowed.example"
    assert "Network policy `allowlist`" in md
    code, out, err = cli("verify", rd)
    assert code == 0, out + err
    with (run_dir(rd, first) / "egress.jsonl").open("a") as f:
        f.write('{"host": "x"}\n')
    code, out, err = cli("verify", rd)
    assert code != 0 and "not an egress log" in out + err
