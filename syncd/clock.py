"""Time that survives wall-clock jumps (NTP corrections, a VM resumed from a snapshot).

File mtimes and APScheduler's timers follow the wall clock. A jump forward would make
a checkpoint still being written look settled; a jump back would make finished ones
look fresh for as long as the jump, and push the timer's next run as far away. So the
daemon judges quiet time on the monotonic clock, and re-arms its timers when the two
clocks drift apart (watch.py). Quiet time itself is completeness.py's.
"""

from __future__ import annotations


class JumpDetector:
    """Reports how far the wall clock moved beyond what the monotonic clock saw."""

    def __init__(self, wall: float, mono: float, tolerance_seconds: float = 2.0) -> None:
        self._wall, self._mono = wall, mono
        self.tolerance_seconds = tolerance_seconds

    def check(self, wall: float, mono: float) -> float | None:
        drift = (wall - self._wall) - (mono - self._mono)
        self._wall, self._mono = wall, mono
        return drift if abs(drift) > self.tolerance_seconds else None
