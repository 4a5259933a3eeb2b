"""The uploader thread: takes the first job of the queue, uploads and commits it (upload.py).

Each pass replaces what waits in the queue; the upload in flight always finishes
(abandoning it for a newer checkpoint would, when saves come faster than uploads, mean
nothing is ever committed while training runs). How each failure is met:

- Cancelled (stopping): nothing; the next start resumes from the journal.
- QuotaError: the remote is full or past a daily limit; retrying soon only burns
  requests, so the worker waits several timer periods, looking at the remote's free
  space once a timer period: when space was the problem and it is free again (the
  user emptied the trash), the upload starts again at once.
- SourceChanged: the files changed while read; staged again once quiet again.
- a staged file vanished: staged again at the next pass.
- another OSError (a local file that cannot be read): that checkpoint waits for its
  files to change; the others keep moving.
- SyncdError: retried with exponential backoff.
- anything else is a bug: logged with its traceback, counted, shown in status, and the
  worker carries on after a backoff. It never dies quietly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import Cancelled, QuotaError, SourceChanged, SyncdError
from .faults import fault_point
from .manifest import Manifest
from .stage import unstage
from .status import Board
from .upload import Uploader, UploadJob

log = logging.getLogger("syncd")

RETRY_MAX_SECONDS = 60.0
# Out of quota or past a daily limit: a person (or the clock) must change something.
QUOTA_RETRY_MIN_SECONDS, QUOTA_RETRY_MAX_SECONDS = 60.0, 900.0


@dataclass
class Hooks:
    """What the worker asks of the daemon around a job."""

    run_id: Callable[[], str]  # the run id, made when this run uploads first
    writer: Callable[[], str | None]
    committed: Callable[[UploadJob, Manifest], None]
    source_changed: Callable[[str], None]  # count the folder as just changed
    unreadable: Callable[[str], None]  # block the checkpoint until its files change
    poke: Callable[[], None]  # ask for a pass


class UploadWorker(threading.Thread):
    def __init__(self, uploader: Uploader, board: Board, hooks: Hooks, staging, stopping: threading.Event,
                 interval_seconds: float) -> None:
        super().__init__(name="syncd-uploader", daemon=True)
        self.uploader, self.board, self.hooks = uploader, board, hooks
        self.staging, self.stopping = staging, stopping
        self.interval_seconds = interval_seconds
        self._cv = threading.Condition(board.lock)
        self._queue: list[UploadJob] = []
        self._current: UploadJob | None = None
        self._cancel = threading.Event()
        self._failures = 0

    # -- what the passes see -------------------------------------------------
    def set_queue(self, jobs: list[UploadJob]) -> None:
        """Replace what waits; the upload in flight always finishes."""
        with self._cv:
            self._queue = jobs
            self.board.status.queue = [j.name for j in jobs]
            self.board.status.queue_length = len(jobs)
            self._cv.notify_all()

    def busy(self) -> UploadJob | None:
        with self._cv:
            return self._current

    def wanted(self) -> set[str]:
        """Names queued or in flight: their staged copies stay."""
        with self._cv:
            return {j.name for j in self._queue} | ({self._current.name} if self._current else set())

    def stop(self, grace_seconds: float, timeout: float) -> None:
        """Stop after the upload in flight, if it commits within ``grace_seconds``; else abandon it.

        ``stopping`` must be set first: no new job starts. An abandoned upload leaves
        its journal and claimed folder, and resumes at the next start.
        """
        with self._cv:
            self._cv.notify_all()
            current = self._current
        if current is not None and self.is_alive() and grace_seconds > 0:
            log.info("%s: letting its upload finish (up to %.0f s)", current.name, grace_seconds)
            self.join(grace_seconds)
        with self._cv:
            if self.is_alive() and self._current is not None:
                log.warning("%s: upload abandoned at stop; it resumes at the next start", self._current.name)
            self._cancel.set()
            self._cv.notify_all()
        if self.is_alive():
            self.join(timeout)

    # -- the thread ------------------------------------------------------------
    def _backoff(self, failures: int, base: float = 1.0) -> None:
        self.stopping.wait(min(RETRY_MAX_SECONDS, base * 2.0 ** failures))

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self._turn()
            except Exception as e:  # noqa: BLE001 - the uploader restarts; it never dies quietly
                with self._cv:
                    self._current = None
                    self.board.status.current = None
                self.board.worker_failed("uploader", e)
                self._failures += 1
                self._backoff(self._failures)

    def _free_bytes(self) -> int | None:
        remote = self.uploader.remote
        if not remote.capabilities.quota:
            return None
        try:
            quota = remote.quota()
        except SyncdError:
            return None
        return None if quota is None else quota.free_bytes

    def _wait_for_space(self, need: int, pause: float) -> None:
        """Wait ``pause`` seconds, or less when the remote lacked space for ``need`` bytes and has it now."""
        deadline = time.monotonic() + pause
        free = self._free_bytes()
        short = free is not None and free < need  # else a daily limit or the like: only time helps
        while not self.stopping.wait(min(self.interval_seconds, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                return
            if short:
                free = self._free_bytes()
                if free is not None and free >= need:
                    log.info("the remote has room again (%.1f MB free); uploading", free / 1e6)
                    return

    def _take(self) -> tuple[UploadJob, threading.Event] | None:
        with self._cv:
            while not self._queue and not self.stopping.is_set():
                self._cv.wait(1.0)
            if self.stopping.is_set():
                return None
            fault_point("uploader")
            job = self._queue[0]
            self._current = job
            self._cancel = threading.Event()
            total = sum(f.stat().st_size for f in job.staged.rglob("*") if f.is_file())
            self.board.status.current = {"name": job.name, "bytes_done": 0, "bytes_total": total}
            return job, self._cancel

    def _turn(self) -> None:
        """Take the first job of the queue and upload it."""
        taken = self._take()
        if taken is None:
            return
        job, cancel = taken
        job_bytes = (self.board.status.current or {}).get("bytes_total", 0)
        failures = self._failures
        status = self.board.status
        try:
            manifest = self.uploader.upload(job, cancel, self.hooks.run_id(), self.hooks.writer())
        except Cancelled:
            failures = 0
        except QuotaError as e:
            status.failures += 1
            pause = min(QUOTA_RETRY_MAX_SECONDS, max(QUOTA_RETRY_MIN_SECONDS, 5 * self.interval_seconds))
            self.board.error(f"{job.name}: upload stopped: {e} (next try in {pause:.0f} s, or once space "
                             "is free)", job.name)
            self._wait_for_space(job_bytes, pause)
        except SourceChanged as e:
            self.board.error(f"{job.name}: {e}; uploading it again once it is still", job.name)
            self.hooks.source_changed(job.name)
            unstage(self.staging, job.name)
            self._backoff(failures, base=0.5)
            failures += 1
        except (FileNotFoundError, NotADirectoryError) as e:
            failures += 1
            self.board.error(f"{job.name}: staged files vanished ({e}); staging again", job.name)
            unstage(self.staging, job.name)
        except OSError as e:
            status.failures += 1
            self.board.error(f"{job.name}: cannot read a local file: {e}; skipped until its files change", job.name)
            self.hooks.unreadable(job.name)
        except SyncdError as e:
            failures += 1
            status.failures += 1
            self.board.error(f"{job.name}: upload failed: {e}", job.name)
            self._backoff(failures)
        except Exception as e:  # noqa: BLE001 - a bug must not end the uploader silently
            failures += 1
            status.failures += 1
            self.board.worker_failed("uploader", e)
            status.errors[job.name] = f"{job.name}: upload failed (bug): {type(e).__name__}: {e}"
            self._backoff(failures)
        else:
            failures = 0
            status.commits += 1
            self.hooks.committed(job, manifest)
        finally:
            with self._cv:
                self._current = None
                status.current = None
                self._queue = [j for j in self._queue if j.name != job.name]
        self._failures = failures
        self.hooks.poke()
