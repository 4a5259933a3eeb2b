"""The uploader's wait after the remote ran out of space: it ends when space is free again."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from syncd.remote_state import RemoteIndex
from syncd.remotes.base import Quota
from syncd.remotes.local import LocalRemote
from syncd.status import Board, Status
from syncd.upload import Uploader
from syncd.upload_worker import Hooks, UploadWorker

NEED = 1000


class FillingUp(LocalRemote):
    """A remote whose free space the test scripts, one answer per look."""

    def __init__(self, root: Path, free: list[int]) -> None:
        super().__init__(root)
        self.answers, self.looks = list(free), 0

    def quota(self) -> Quota:
        self.looks += 1
        free = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return Quota(limit_bytes=10 * NEED, used_bytes=10 * NEED - free)


def _worker(tmp_path: Path, remote, stopping: threading.Event) -> UploadWorker:
    hooks = Hooks(run_id=lambda: "r", writer=lambda: None, committed=lambda *a: None,
                  source_changed=lambda n: None, unreadable=lambda n: None, poke=lambda: None)
    uploader = Uploader(remote, RemoteIndex(remote, "run"), tmp_path / "state")
    return UploadWorker(uploader, Board(tmp_path, Status()), hooks, tmp_path / "staging", stopping,
                        interval_seconds=0.01)


@pytest.mark.timeout(60)  # a wait that never ends is the failure
def test_the_wait_ends_when_space_is_free_again(tmp_path):
    remote = FillingUp(tmp_path / "remote", free=[10, 10, 10, NEED])
    _worker(tmp_path, remote, threading.Event())._wait_for_space(NEED, pause=10**6)
    assert remote.looks == 4  # short three times, then room: not one look more


def test_a_limit_that_is_not_space_waits_the_whole_pause(tmp_path):
    """Room enough but still refused (Drive's daily upload limit): only time helps."""
    remote = FillingUp(tmp_path / "remote", free=[5 * NEED])
    stopping = threading.Event()
    worker = _worker(tmp_path, remote, stopping)
    threading.Timer(0.3, stopping.set).start()  # the pause would be a million seconds
    worker._wait_for_space(NEED, pause=10**6)
    assert remote.looks == 1  # looked once to learn space was not the problem, never again
