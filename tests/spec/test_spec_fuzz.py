"""Property: whatever a mutated lab file holds, `labctl validate` answers with exit 0 or with
located errors and exit 2 — never a traceback."""

from __future__ import annotations

import contextlib
import copy
import io
import re
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from labctl.spec.located import load_yaml, plain
from tests.helpers import ROOT, lab_copy, run_cli

BASE = plain(load_yaml(ROOT / "lab.yaml").root)
LOCATED = re.compile(r"^(\S[^:\n]*:\d+:\d+|--profile): \S")

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.text(max_size=12), st.sampled_from(["max", "45m", "32GiB", "2M", "on", "local", "cloud", "q8_0"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=6)


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths(v, prefix + (i,))
    return out


ALL_PATHS = paths(BASE)[1:]
OPS = ["delete", "replace", "add", "duplicate"]


def mutate(data: Any, path: tuple, op: str, value: Any, key: str) -> None:
    parent = data
    for p in path[:-1]:
        parent = parent[p]
    last = path[-1]
    if op == "delete":
        del parent[last]
    elif op == "replace":
        parent[last] = value
    elif op == "add" and isinstance(parent[last], dict):
        parent[last][key] = value
    elif op == "duplicate" and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[last]))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(ALL_PATHS), st.sampled_from(OPS), values,
                          st.text(min_size=1, max_size=10)), min_size=1, max_size=3))
def test_mutated_specs_never_escape(tmp_path: Path, mutations: list) -> None:
    data = copy.deepcopy(BASE)
    for path, op, value, key in mutations:
        with contextlib.suppress(KeyError, IndexError, TypeError):
            mutate(data, path, op, value, key)  # may miss: an earlier mutation reshaped this path
    buf = io.StringIO()
    YAML(typ="safe", pure=True).dump(data, buf)
    path = lab_copy(tmp_path, buf.getvalue(), name="fuzz.yaml")
    code, _, err = run_cli("validate", path)  # an escaping exception fails the test here
    assert code in (0, 2)
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines and all(LOCATED.match(line) for line in lines), err
