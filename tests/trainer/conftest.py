"""Fixtures for the trainer tests; the helpers live in trainer_testlib.py."""

from __future__ import annotations

import pytest
from trainer_testlib import Procs


@pytest.fixture
def procs():
    """Trainer subprocesses, every one killed (with its process group) at teardown."""
    pr = Procs()
    try:
        yield pr
    finally:
        pr.close()


@pytest.fixture
def one_thread():
    """In-process runs use one thread, like the subprocesses (same float results, no oversubscription)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
