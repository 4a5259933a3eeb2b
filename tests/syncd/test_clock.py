"""Quiet time and jump detection: the pieces that keep syncd honest when the wall clock jumps."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd.checkpoints import LocalCheckpoint, LocalFile
from syncd.clock import JumpDetector
from syncd.completeness import Settler


def _c(size: int) -> LocalCheckpoint:
    return LocalCheckpoint("checkpoint-5", 5, Path("checkpoint-5"), False, "settling",
                           (LocalFile("a", size, 1.0),))


def test_quiet_time_counts_on_the_monotonic_clock_only():
    q = Settler(settle_seconds=30)
    assert 100.0 - q.changed_at(_c(1), mono_now=100.0) == 0.0  # first sight: just changed
    assert 130.0 - q.changed_at(_c(1), mono_now=130.0) == 30.0
    assert 131.0 - q.changed_at(_c(2), mono_now=131.0) == 0.0  # a file grew: start over
    assert 140.0 - q.changed_at(_c(2), mono_now=140.0) == 9.0
    q.keep_only(["checkpoint-9"])
    assert 150.0 - q.changed_at(_c(2), mono_now=150.0) == 0.0  # forgotten, seen anew


@pytest.mark.parametrize(
    "wall, mono, expected",
    [
        (1001.0, 11.0, None),  # both moved one second
        (1003.5, 11.0, 2.5),  # wall ran ahead: NTP step or a resumed VM
        (-2600.0, 11.0, -3601.0),  # wall went back an hour
        (1001.5, 11.0, None),  # small drift is not a jump
    ],
    ids=["steady", "forward", "back", "tolerance"],
)
def test_jump_detector(wall, mono, expected):
    d = JumpDetector(wall=1000.0, mono=10.0, tolerance_seconds=2.0)
    assert d.check(wall, mono) == expected


def test_jump_detector_measures_from_the_last_check():
    d = JumpDetector(wall=0.0, mono=0.0)
    assert d.check(100.0, 1.0) == 99.0
    assert d.check(101.0, 2.0) is None
