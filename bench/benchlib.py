"""Helpers shared by the benchmarks (run as `python bench/NAME.py`, so this folder is on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path


def write_random(path: Path, size: int) -> None:
    """``size`` bytes that no filesystem or transport can compress, written fast."""
    block = os.urandom(8 * 1024 * 1024)
    with open(path, "wb") as fh:
        left = size
        while left > 0:
            n = min(left, len(block))
            fh.write(block[:n])
            left -= n
