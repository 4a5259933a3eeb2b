"""Time that survives wall-clock jumps (NTP corrections, a VM resumed from a snapshot).

File mtimes and APScheduler's timers follow the wall clock. A jump forward would make
a checkpoint still being written look settled; a jump back would make finished ones
look fresh for as long as the jump, and push the timer's next run as far away. So the
daemon judges quiet time on the monotonic clock, and re-arms its timers when the two
clocks drift apart.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable


class QuietTracker:
    """How long each folder's contents have stayed unchanged, on the monotonic clock.

    A folder first seen counts as just changed: after a restart the daemon waits one
    full quiet period rather than trust mtimes it cannot vouch for.
    """

    def __init__(self) -> None:
        self._seen: dict[str, tuple[Hashable, float]] = {}

    def changed_at(self, name: str, fingerprint: Hashable, mono_now: float) -> float:
        """Monotonic time at which ``name`` was last seen to change."""
        prev = self._seen.get(name)
        if prev is None or prev[0] != fingerprint:
            self._seen[name] = (fingerprint, mono_now)
            return mono_now
        return prev[1]

    def forget(self, name: str) -> None:
        """Count ``name`` as just changed next time (its files changed in a way stats miss)."""
        self._seen.pop(name, None)

    def keep_only(self, names: Iterable[str]) -> None:
        keep = set(names)
        for name in list(self._seen):
            if name not in keep:
                del self._seen[name]


class JumpDetector:
    """Reports how far the wall clock moved beyond what the monotonic clock saw."""

    def __init__(self, wall: float, mono: float, tolerance_seconds: float = 2.0) -> None:
        self._wall, self._mono = wall, mono
        self.tolerance_seconds = tolerance_seconds

    def check(self, wall: float, mono: float) -> float | None:
        drift = (wall - self._wall) - (mono - self._mono)
        self._wall, self._mono = wall, mono
        return drift if abs(drift) > self.tolerance_seconds else None
