"""`pathology:` in lab.yaml: the flags' thresholds, with documented defaults, located errors."""

from __future__ import annotations

from pathlib import Path

from labctl.spec.load import load_lab
from labctl.spec.pathology import PathologyThresholds
from tests.helpers import ROOT, lab_copy, line_of, run_cli
from tests.spec.test_spec import only_error

LAB = (ROOT / "lab.yaml").read_text()
ANCHOR = "interventions:\n"


def test_thresholds_default_and_load(tmp_path: Path) -> None:
    assert load_lab(ROOT / "lab.yaml").lab.pathology == PathologyThresholds()
    d = PathologyThresholds()
    assert (d.repeated_line, d.repeated_failure, d.text_tool_calls, d.cwd_amnesia) == (5, 3, 1, 2)
    path = lab_copy(tmp_path, LAB.replace(ANCHOR, "pathology:\n  repeated_line: 10\n  cwd_amnesia: 1\n\n"
                                          + ANCHOR, 1))
    t = load_lab(path).lab.pathology
    assert (t.repeated_line, t.cwd_amnesia, t.repeated_failure) == (10, 1, 3)


def test_bad_threshold_is_located(tmp_path: Path) -> None:
    text = LAB.replace(ANCHOR, "pathology:\n  repeated_failure: 1\n  repeatd_line: 4\n\n" + ANCHOR, 1)
    code, _, err = run_cli("validate", lab_copy(tmp_path, text))
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert any(f":{line_of(text, 'repeated_failure: 1')}:" in ln and "pathology.repeated_failure" in ln
               for ln in lines), err
    assert any("pathology.repeatd_line" in ln and "did you mean 'repeated_line'" in ln for ln in lines), err
    text = LAB.replace(ANCHOR, "pathology:\n  text_tool_calls: 0\n\n" + ANCHOR, 1)
    code, _, err = run_cli("validate", lab_copy(tmp_path, text))
    m = only_error(err)
    assert code == 2 and m["rest"].startswith("pathology.text_tool_calls: ")
    assert int(m["line"]) == line_of(text, "text_tool_calls: 0")
