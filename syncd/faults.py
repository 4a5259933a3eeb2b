"""Crash points for the fault-injection tests (tests/faults/).

``SYNCD_CRASH_AT=<name>`` makes the process SIGKILL itself the first time it
reaches ``crash_point(<name>)``: a real kill at an exact phase, not a simulation.
Unset, as in every real run, a crash point is one comparison.

Names: before_stage, mid_stage, mid_file, before_manifest, before_rename,
mid_prune, mid_retire.

``SYNCD_RAISE_AT=<worker>[,<worker>...]`` makes ``fault_point(<worker>)`` raise an
unexpected RuntimeError once per process: the test that no worker thread dies
silently (workers: watcher, reconcile, uploader, disk, clock).
"""

from __future__ import annotations

import os
import signal

_TARGET = os.environ.get("SYNCD_CRASH_AT") or None
_RAISE = set(filter(None, (os.environ.get("SYNCD_RAISE_AT") or "").split(",")))


def crash_point(name: str) -> None:
    if _TARGET is not None and _TARGET == name:
        os.kill(os.getpid(), signal.SIGKILL)


def fault_point(worker: str) -> None:
    if worker in _RAISE:
        _RAISE.discard(worker)
        raise RuntimeError(f"injected fault in the {worker} worker")
