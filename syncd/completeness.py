"""When a local checkpoint is complete: the one rule, shared by the daemon, ``syncd
wait``/``status``/``list`` and the trainer's resume.

1. A folder with our marker (``checkpoint-complete.json``, or ``training-complete.json``
   for the final model) is complete exactly when every file the marker lists exists
   with its listed size. Nothing else is asked of it.
2. A folder without a marker is a *candidate* when ``trainer_state.json`` is there and
   no ``checkpoint-is-incomplete.txt`` sentinel is (checkpoints.py reads this much);
   anything else is incomplete, and says why.
3. A candidate is complete once its files (paths, sizes, mtimes) have stayed the same
   for ``syncd_settle_seconds``, as seen by one observer on the monotonic clock. The
   first sight counts as a change: a process that starts never trusts mtimes it did not
   watch, so a wall clock that jumps (NTP, a resumed VM) can neither settle a folder
   still being written nor hold back a finished one.

Who observes: the daemon (``Settler`` below), which publishes its verdicts in
``status.json``; ``syncd wait`` and ``syncd status`` read those verdicts while it runs.
Without a daemon nobody has watched the folder, so ``status`` reports candidates as
waiting for quiet. A caller that knows no writer is active (the trainer's resume before
its first step, ``restore`` checking a target folder) passes ``WRITER_STOPPED``: a
candidate is then complete at once, which is rule 3 with an infinite quiet time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace

from .checkpoints import AWAITING_QUIET, LocalCheckpoint

WRITER_STOPPED = math.inf  # quiet time for callers that know nothing writes the folder
QUIET = "quiet"  # the reason a candidate became complete


def judge(c: LocalCheckpoint, quiet_seconds: float, settle_seconds: float) -> LocalCheckpoint:
    """``c`` with ``complete``/``reason`` set by the rule above, given the observed quiet time."""
    if c.reason != AWAITING_QUIET:
        return c  # a marker decided, or it is not a candidate
    if quiet_seconds >= settle_seconds:
        return replace(c, complete=True, reason=QUIET)
    return c


def verdict_text(c: LocalCheckpoint, seconds_left: float | None = None) -> str:
    """How ``status`` shows one judged folder."""
    if c.complete:
        return "complete" if c.reason != QUIET else "complete (quiet)"
    if c.reason == AWAITING_QUIET and seconds_left is not None:
        return f"incomplete (settling, {max(0.0, seconds_left):.0f} s to go)"
    return f"incomplete ({c.reason})"


class Settler:
    """The observer of rule 3: how long each folder has stayed unchanged, on the monotonic clock."""

    def __init__(self, settle_seconds: float) -> None:
        self.settle_seconds = settle_seconds
        self._seen: dict[str, tuple[tuple, float]] = {}  # name -> (fingerprint, changed at)

    def changed_at(self, c: LocalCheckpoint, mono_now: float) -> float:
        """Monotonic time at which ``c`` was last seen to change (now, at first sight)."""
        fingerprint = tuple((f.path, f.size, f.mtime) for f in c.files)
        prev = self._seen.get(c.name)
        if prev is None or prev[0] != fingerprint:
            self._seen[c.name] = (fingerprint, mono_now)
            return mono_now
        return prev[1]

    def judge(self, c: LocalCheckpoint, mono_now: float) -> LocalCheckpoint:
        return judge(c, mono_now - self.changed_at(c, mono_now), self.settle_seconds)

    def due(self, c: LocalCheckpoint) -> float | None:
        """Monotonic time at which a candidate still settling would become complete."""
        if c.reason != AWAITING_QUIET or c.name not in self._seen:
            return None
        return self._seen[c.name][1] + self.settle_seconds

    def forget(self, name: str) -> None:
        """Count ``name`` as just changed next time (its files changed in a way stats miss)."""
        self._seen.pop(name, None)

    def keep_only(self, names: Iterable[str]) -> None:
        keep = set(names)
        for name in list(self._seen):
            if name not in keep:
                del self._seen[name]


def from_status(doc: dict | None) -> dict[str, bool]:
    """The daemon's published verdicts (``status.json``): name -> complete."""
    local = (doc or {}).get("local") or {}
    return {name: bool(v.get("complete")) for name, v in local.items() if isinstance(v, dict)}


def scan_stopped(output_dir) -> list[LocalCheckpoint]:
    """Every checkpoint folder, judged for a caller that knows no writer is active."""
    from .checkpoints import scan_local

    return [judge(c, WRITER_STOPPED, 0.0) for c in scan_local(output_dir)]


def newest_complete_stopped(output_dir) -> LocalCheckpoint | None:
    """The newest complete checkpoint, when no writer is active (the trainer before step one)."""
    complete = [c for c in scan_stopped(output_dir) if c.complete]
    return complete[-1] if complete else None
