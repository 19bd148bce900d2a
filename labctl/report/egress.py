"""The report's Egress table: per run, what its task container fetched through the egress gateway
and what the gateway denied (from the run's egress.jsonl, `labctl.run.egress`)."""

from __future__ import annotations

from collections import Counter

from labctl.report.data import DASH, RoundReport
from labctl.round.layout import EgressRecord
from labctl.spec.network import REGISTRY_PRESET
from labctl.spec.units import format_size

HEADERS = ["Run", "Model", "Requests", "Fetched", "Denied"]


def _hosts(records: list[EgressRecord], *, sizes: bool) -> str:
    if not records:
        return DASH
    counts = Counter(f"{r.host}:{r.port}" if r.port not in (80, 443, None) else r.host for r in records)
    volume: Counter[str] = Counter()
    for r in records:
        volume[r.host] += r.bytes
    cells = []
    for host, n in counts.most_common():
        size = f", {format_size(volume[host.split(':')[0]])}" if sizes else ""
        cells.append(f"{host} ×{n}{size}" if n > 1 or sizes else host)
    return "; ".join(cells)


def egress_table(rep: RoundReport) -> tuple[str, list[str], list[list[str]], str] | None:
    """(title, headers, rows, note) of the Egress table; None when no run had a gateway (policy
    `none` or `open`, whose traffic no gateway saw)."""
    net = rep.lab.network
    rows = []
    for cd in rep.contestants:
        for run in cd.runs:
            if run.egress is None:
                continue
            allowed = [r for r in run.egress if r.allowed]
            denied = [r for r in run.egress if not r.allowed]
            rows.append([run.run_id, cd.name, str(len(run.egress)), _hosts(allowed, sizes=True),
                         _hosts(denied, sizes=False)])
    if not rows:
        return None
    rows.sort(key=lambda row: row[0])
    extra = f" plus the lab's {', '.join(net.allow)}" if net.allow else ""
    note = (f"Network policy `{net.egress}`: the task container reached only the package registries "
            f"({len(REGISTRY_PRESET)} hosts, README){extra}, through the run's egress gateway; every request "
            "is in runs/<run>/egress.jsonl. Fetched: host × requests, bytes received.")
    return "Egress", HEADERS, rows, note
