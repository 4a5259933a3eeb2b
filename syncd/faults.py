"""Crash points for the fault-injection tests (tests/faults/).

``SYNCD_CRASH_AT=<name>`` makes the process SIGKILL itself the first time it
reaches ``crash_point(<name>)``: a real kill at an exact phase, not a simulation.
Unset, as in every real run, a crash point is one comparison.

Names: before_stage, mid_stage, mid_file, before_manifest, before_rename,
mid_prune, mid_retire.
"""

from __future__ import annotations

import os
import signal

_TARGET = os.environ.get("SYNCD_CRASH_AT") or None


def crash_point(name: str) -> None:
    if _TARGET is not None and _TARGET == name:
        os.kill(os.getpid(), signal.SIGKILL)
