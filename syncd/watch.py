"""What wakes the daemon: file events and wall-clock jumps. Both only ask for a pass.

watchdog's emitter and observer threads deliver events; ``Watcher``'s handler only
calls ``poke``. Which folders are watched follows each pass: output_dir itself (not
recursively) and every checkpoint folder (recursively), never our own ``.syncd/``
nor the trainer's logs, so uploads and status writes do not wake the daemon.
``ClockWatch`` notices the wall clock jumping (APScheduler plans in wall time) and
lets the daemon re-arm its timers.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from .clock import JumpDetector
from .faults import fault_point

log = logging.getLogger("syncd")

_IGNORED_EVENTS = {"opened", "closed_no_write"}
CLOCK_CHECK_SECONDS = 1.0


class _Handler(FileSystemEventHandler):
    """Only signals: any relevant event asks for a pass."""

    def __init__(self, poke: Callable[[], None], failed: Callable[[str, BaseException], None]) -> None:
        self.poke, self.failed = poke, failed

    def on_any_event(self, event: FileSystemEvent) -> None:
        # An exception here would end watchdog's observer thread: never let one out.
        try:
            fault_point("watcher")
            if event.event_type in _IGNORED_EVENTS:
                return
            if os.path.basename(os.fsdecode(event.src_path)) == ".syncd":
                return
            self.poke()
        except Exception as e:  # noqa: BLE001
            self.failed("watcher", e)
            self.poke()


class Watcher:
    """The inotify (or polling) watches on output_dir and its checkpoint folders."""

    def __init__(self, output_dir: Path, poke: Callable[[], None],
                 failed: Callable[[str, BaseException], None], poll: bool = False) -> None:
        self.out = output_dir
        self.observer = PollingObserver(timeout=1) if poll else Observer()
        self._handler = _Handler(poke, failed)
        self._watches: dict[tuple, object] = {}

    def start(self) -> None:
        self.follow(())
        self.observer.start()

    def stop(self, timeout: float) -> None:
        self.observer.stop()
        if self.observer.is_alive():
            self.observer.join(timeout)

    def follow(self, checkpoint_dirs: Iterable[Path]) -> bool:
        """Watch output_dir and exactly these checkpoint folders; True when a watch was added.

        Until output_dir exists its nearest existing parent is watched instead.
        """
        target = self.out
        while not target.is_dir():
            target = target.parent
        wanted: dict[tuple, tuple[str, bool]] = {}
        for path, recursive in [(target, False)] + [(d, True) for d in checkpoint_dirs]:
            try:
                wanted[(str(path), path.stat().st_ino)] = (str(path), recursive)
            except FileNotFoundError:
                continue
        for key in set(self._watches) - set(wanted):
            try:
                self.observer.unschedule(self._watches.pop(key))
            except (KeyError, OSError):
                pass
        added = False
        for key in set(wanted) - set(self._watches):
            path, recursive = wanted[key]
            try:
                self._watches[key] = self.observer.schedule(self._handler, path, recursive=recursive)
                added = True
            except OSError as e:  # vanished between stat and watch, or out of inotify watches
                log.debug("cannot watch %s: %s", path, e)
        return added


class ClockWatch(threading.Thread):
    """Calls ``on_jump(drift_seconds)`` when the wall clock moves unlike the monotonic one."""

    def __init__(self, stopping: threading.Event, on_jump: Callable[[float], None],
                 failed: Callable[[str, BaseException], None]) -> None:
        super().__init__(name="syncd-clock", daemon=True)
        self.stopping, self.on_jump, self.failed = stopping, on_jump, failed

    def run(self) -> None:
        detector = JumpDetector(time.time(), time.monotonic())
        while not self.stopping.wait(CLOCK_CHECK_SECONDS):
            try:
                fault_point("clock")
                drift = detector.check(time.time(), time.monotonic())
                if drift is not None:
                    log.warning("the wall clock jumped by %+.0f s; re-arming the timers", drift)
                    self.on_jump(drift)
            except Exception as e:  # noqa: BLE001 - logged, counted, and the watch goes on
                if self.stopping.is_set():
                    return
                self.failed("clock", e)
