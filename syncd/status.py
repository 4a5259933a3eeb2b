"""The daemon's live state, and the one place its errors are recorded.

    output_dir/.syncd/status.json   this Status as JSON, rewritten atomically (at most
                                    once a second while bytes flow, at once after a pass)

``syncd status``, ``syncd wait`` and the HTTP ``/status`` and ``/metrics`` read it; the
completeness verdicts under ``local`` are the ones ``wait`` and ``status`` share
(completeness.py).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .fsutil import atomic_write_json

log = logging.getLogger("syncd")

STATUS_WRITE_EVERY_SECONDS = 1.0  # while bytes flow; a pass always writes


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Status:
    """What the daemon shows; mirrored to status.json for ``syncd status``."""

    pid: int = field(default_factory=os.getpid)
    started: str = field(default_factory=_now_iso)
    state: str = "starting"
    remote: str | None = None
    run: str = ""
    queue: list[str] = field(default_factory=list)
    current: dict | None = None
    last_error: str | None = None
    last_error_at: str | None = None
    last_pass_at: str | None = None
    uploaded_bytes: int = 0
    commits: int = 0
    failures: int = 0
    disk_free_bytes: int | None = None
    disk_total_bytes: int | None = None
    quota: dict | None = None
    space: dict | None = None  # whether the remote can hold what it must keep (checked before the first upload)
    committed: list[str] = field(default_factory=list)
    best_step: int | None = None  # the step trainer_state.json names best: kept on the remote too
    errors: dict[str, str] = field(default_factory=dict)  # per checkpoint: its last error
    local: dict[str, dict] = field(default_factory=dict)  # completeness verdicts: name -> {complete, text}
    newest_local_step: int | None = None
    newest_committed_step: int | None = None
    lag_steps: int | None = None
    lag_seconds: float | None = None
    queue_length: int = 0
    http_port: int | None = None
    run_id: str | None = None
    identity: str | None = None  # whether this daemon owns the remote run folder, and if not why
    stale: list[str] = field(default_factory=list)  # local copies that differ from their commit
    damaged: dict[str, str] = field(default_factory=dict)  # committed copies that lost files
    remote_notes: dict[str, str] = field(default_factory=dict)  # folders not ours: why
    worker_errors: dict[str, int] = field(default_factory=dict)  # unexpected exceptions per worker thread


class Board:
    """The Status, its lock, and how errors reach it (log, status, status.json)."""

    def __init__(self, state_dir: Path, status: Status) -> None:
        self.state_dir = state_dir
        self.status = status
        self.lock = threading.Lock()
        self._written = 0.0

    def error(self, message: str, name: str | None = None) -> None:
        """A known failure: logged, kept as the last error and, with ``name``, as that checkpoint's."""
        log.error("%s", message)
        if name is not None:
            self.status.errors[name] = message
        self.status.last_error = message
        self.status.last_error_at = _now_iso()

    def clear(self, name: str, prefix: str | None = None) -> None:
        """Drop ``name``'s error (only one starting with ``prefix``, when given)."""
        if prefix is None or self.status.errors.get(name, "").startswith(prefix):
            self.status.errors.pop(name, None)

    def worker_failed(self, worker: str, exc: BaseException) -> None:
        """An unexpected exception in a worker: traceback in the log, counted, shown in status."""
        log.error("%s worker: unexpected %s: %s; it carries on", worker, type(exc).__name__, exc, exc_info=exc)
        with self.lock:
            self.status.worker_errors[worker] = self.status.worker_errors.get(worker, 0) + 1
        self.error(f"{worker} worker: unexpected {type(exc).__name__}: {exc}")

    def add_bytes(self, n: int) -> None:
        with self.lock:
            self.status.uploaded_bytes += n
            if self.status.current is not None:
                self.status.current["bytes_done"] += n
        self.write()

    def snapshot(self) -> dict:
        """A copy of the live status, safe to serialise from another thread."""
        with self.lock:
            return json.loads(json.dumps(self.status.__dict__))

    def write(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._written < STATUS_WRITE_EVERY_SECONDS:
            return
        self._written = now
        try:
            atomic_write_json(self.state_dir / "status.json", self.snapshot(), durable=False)
        except OSError as e:
            log.warning("cannot write status: %s", e)


class Lag:
    """How far the newest committed checkpoint trails the newest complete local one.

    When each checkpoint became complete is kept on the monotonic clock. First sight
    trusts the mtime once (after a restart the age is real); after that a wall clock
    jump cannot make the lag leap or vanish.
    """

    def __init__(self) -> None:
        self._complete_since: dict[str, float] = {}

    def update(self, status: Status, complete: list, committed: list[int], now: float, mono: float) -> None:
        newest = complete[-1] if complete else None
        for c in complete:
            self._complete_since.setdefault(c.name, mono - max(0.0, now - c.newest_mtime))
        for name in set(self._complete_since) - {c.name for c in complete}:
            del self._complete_since[name]
        status.newest_local_step = newest.step if newest else None
        status.newest_committed_step = committed[-1] if committed else None
        if newest is None:
            status.lag_steps, status.lag_seconds = 0, 0.0
        else:
            status.lag_steps = max(0, newest.step - (status.newest_committed_step or 0))
            status.lag_seconds = (0.0 if newest.step in committed
                                  else round(mono - self._complete_since[newest.name], 3))
