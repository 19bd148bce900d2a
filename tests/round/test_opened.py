"""The round opener (labctl.round.opened): one reader of a round's lab.yaml and lab.lock, and the
checks that tie the lab it runs with to sealed.json. No Docker: a sealed smoke round (test_seal.py's
helpers), the envelope never needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from labctl.errors import LabctlError
from labctl.lock.resolve import require_lock
from labctl.round.layout import RoundFileError, read_sealed
from labctl.round.opened import (
    RoundError,
    open_sealed,
    opened_from,
    read_round_lab,
    read_round_lock,
)
from labctl.spec.load import load_lab
from tests.round.test_seal import envelopes, sealed_lab  # noqa: F401


def test_the_record_and_the_runnable_round_agree(sealed_lab: tuple[Path, Path]) -> None:  # noqa: F811
    lab, rd = sealed_lab
    opened = open_sealed(rd)  # from the round's own copies, paths from the sealed lab_dir
    assert opened.sealed == read_sealed(rd)
    assert opened.loaded.lab == read_round_lab(rd) == load_lab(lab).lab
    assert opened.lock == read_round_lock(rd) == require_lock(load_lab(lab))
    assert opened.loaded.task_dir == load_lab(lab).task_dir


def test_state_in_hand_is_checked_as_a_fresh_open(sealed_lab: tuple[Path, Path]) -> None:  # noqa: F811
    lab, rd = sealed_lab
    loaded, sealed = load_lab(lab), read_sealed(rd)
    lock = require_lock(loaded)
    assert opened_from(rd, sealed, loaded, lock).lock is lock
    other = lock.model_copy(update={"lab": lock.lab + "-other"})
    with pytest.raises(RoundError, match="lock is not the one round"):
        opened_from(rd, sealed, loaded, other)
    (loaded.task_dir / "instruction.md").write_text("changed\n")
    with pytest.raises(RoundError, match="changed since round"):
        opened_from(rd, sealed, loaded, lock)


def test_a_round_file_that_does_not_parse_is_a_labctl_error(sealed_lab: tuple[Path, Path]) -> None:  # noqa: F811
    _, rd = sealed_lab
    (rd / "sealed.json").write_text("{}")
    with pytest.raises(RoundFileError) as got:
        open_sealed(rd)
    assert isinstance(got.value, LabctlError) and isinstance(got.value, ValueError)
