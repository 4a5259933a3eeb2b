"""The daemon: watch, decide, stage, upload, verify, prune.

    output_dir/.syncd/
      syncd.lock, syncd.pid   one daemon per output folder (locking.py)
      syncd.log               the detached daemon's log (``syncd start``)
      status.json             what ``syncd status`` shows; rewritten atomically
      staging/                hard-linked copies being uploaded (stage.py)
      state/uploads/          per-checkpoint resume state (upload.py)
      trash/                  local folders being retired; emptied at start

Threads have one role each: watchdog's emitter and observer only deliver events,
our handler only sets a flag and schedules a pass; APScheduler's workers run the
reconcile pass (one at a time) and the disk check; one uploader thread moves
checkpoints, newest first, with a small pool for the files of one checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from . import freshness, identity, policy
from .checkpoints import (
    FINAL_NAME,
    TRAINER_STATE,
    LocalCheckpoint,
    inspect_checkpoint,
    inspect_final,
    scan_local,
    step_of,
)
from .clock import JumpDetector, QuietTracker
from .config import SyncConfig
from .deleter import RemoteDeleter, permitted
from .errors import Cancelled, ConfigError, QuotaError, RemoteError, SourceChanged, SyncdError
from .faults import crash_point, fault_point
from .fsutil import atomic_write_json, read_json
from .identity import read_local_record
from .locking import DaemonLock
from .manifest import Manifest
from .overlap import check_overlap
from .remote_state import (
    LEGACY,
    OURS,
    PARTIAL,
    UNREADABLE,
    Entry,
    RemoteIndex,
    Snapshot,
    base_name,
    folder_name,
    listing_problems,
)
from .remotes import Remote, open_remote
from .remotes.base import join
from .stage import stage, staged_names, unstage
from .upload import Uploader, UploadJob

log = logging.getLogger("syncd")

POKE_DELAY_SECONDS = 0.1  # coalesces an inotify burst into one pass
RETRY_MAX_SECONDS = 60.0
# Out of quota or past a daily limit: retrying soon only burns requests. A person
# (or the clock) must change something; look again every few timer periods.
QUOTA_RETRY_MIN_SECONDS, QUOTA_RETRY_MAX_SECONDS = 60.0, 900.0
_IGNORED_EVENTS = {"opened", "closed_no_write"}


def best_step(local: list[LocalCheckpoint]) -> int | None:
    """The step of ``best_model_checkpoint`` in the newest readable trainer_state.json."""
    for ckpt in reversed(local):
        state = read_json(ckpt.path / TRAINER_STATE, default=None)
        if isinstance(state, dict):
            best = state.get("best_model_checkpoint")
            return step_of(Path(best).name) if isinstance(best, str) else None
    return None


@dataclass
class Status:
    """The daemon's live state, mirrored to status.json for ``syncd status``."""

    pid: int = field(default_factory=os.getpid)
    started: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
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
    committed: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # per checkpoint: its last error
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


class _Handler(FileSystemEventHandler):
    """Only signals: any relevant event asks the daemon for a pass."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def on_any_event(self, event: FileSystemEvent) -> None:
        # An exception here would end watchdog's observer thread: never let one out.
        try:
            fault_point("watcher")
            if event.event_type in _IGNORED_EVENTS:
                return
            if os.path.basename(os.fsdecode(event.src_path)) == ".syncd":
                return
            self.daemon.poke()
        except Exception as e:  # noqa: BLE001
            self.daemon.worker_failed("watcher", e)
            self.daemon.poke()


class Daemon:
    """Owns the watcher, the scheduler and the uploader; a context manager."""

    def __init__(self, cfg: SyncConfig, *, poll: bool = False, remote: Remote | None = None) -> None:
        self.cfg = cfg
        self.out = cfg.output_dir
        self.state_dir = cfg.state_dir
        self.staging = self.state_dir / "staging"
        self.trash = self.state_dir / "trash"
        self.poll = poll
        self.remote = remote
        self.index: RemoteIndex | None = None
        self.uploader: Uploader | None = None
        self.status = Status(remote=cfg.remote_url, run=cfg.run_name)
        self.http = None
        self._lock = DaemonLock(self.state_dir)
        self._pass_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._poke_due: float | None = None  # monotonic time of the soonest pending pass
        self._stopping = threading.Event()
        self._queue: list[UploadJob] = []
        self._queue_cv = threading.Condition(self._state_lock)
        self._current: UploadJob | None = None
        self._job_cancel = threading.Event()
        self._announced: set[str] = set()
        self.run_id: str | None = None
        self.writer: str | None = None  # this output folder's writer id (identity.py)
        self._writing = False  # this daemon has recorded itself as the run's writer
        self._blocked: dict[str, tuple] = {}  # name -> files when a local read failed
        self._announced_links: set[str] = set()
        self._damaged: dict[str, str] = {}  # committed folder -> what is wrong with it
        self._check_copies_due = True
        self._watches: dict[tuple, object] = {}
        self._quiet = QuietTracker()
        self._settle_due: dict[str, float] = {}
        self._complete_since: dict[str, float] = {}
        self._intervals: dict[str, float] = {}
        self._clock_thread = threading.Thread(target=self._clock_watch, name="syncd-clock", daemon=True)
        self._handler = _Handler(self)
        self._status_written = 0.0
        self.scheduler = BackgroundScheduler(
            executors={"default": {"type": "threadpool", "max_workers": 3}},
            job_defaults={"coalesce": True, "misfire_grace_time": None},
        )
        self.observer = PollingObserver(timeout=1) if poll else Observer()
        self._uploader_thread = threading.Thread(target=self._upload_loop, name="syncd-uploader", daemon=True)

    # -- lifecycle ---------------------------------------------------------
    def __enter__(self) -> Daemon:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        check_overlap(self.out, self.cfg.remote_url, self.cfg.run_name)
        self._lock.acquire()
        try:
            # Listen before the first pass: status.json naming this pid is what callers
            # take as "ready", and a taken port should fail before anything else starts.
            if self.cfg.http_port:
                self._start_http()
            self._open_remote()
            self.staging.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(self.trash, ignore_errors=True)  # a retire killed half-way
            self._ensure_watch()
            self.observer.start()
            self._uploader_thread.start()
            interval = self.cfg.interval_seconds
            self._intervals = {"reconcile": interval, "disk": max(interval, 1.0)}
            now = datetime.now()
            self.scheduler.add_job(self._reconcile, "interval", seconds=interval, id="reconcile",
                                   next_run_time=now, max_instances=1, kwargs={"full": True})
            self.scheduler.add_job(self._disk_check, "interval", seconds=self._intervals["disk"], id="disk",
                                   next_run_time=now, max_instances=1)
            self.scheduler.start()
            self._clock_thread.start()
        except BaseException:
            self._stopping.set()
            if self.http is not None:
                self.http.stop()
            self._lock.release()
            raise
        self.status.state = "running"
        log.info("syncd watching %s%s", self.out,
                 f", mirroring to {self.cfg.remote_url} as run {self.cfg.run_name}" if self.remote else
                 " (no remote configured: local retention only)")

    def _start_http(self) -> None:
        from .http import StatusServer

        try:
            self.http = StatusServer(self.snapshot, self.cfg.http_host, self.cfg.http_port)
        except OSError as e:
            raise ConfigError(f"syncd_http_port: cannot listen on {self.cfg.http_host}:"
                              f"{self.cfg.http_port}: {e.strerror or e}") from None
        self.http.start()
        self.status.http_port = self.http.port
        log.info("status and metrics on http://%s:%d/", self.cfg.http_host, self.http.port)

    def _open_remote(self) -> None:
        if self.cfg.remote_url and self.remote is None:
            self.remote = open_remote(self.cfg)
        if self.remote is None:
            return
        probe = join(self.cfg.run_name, f".syncd-probe-{os.getpid()}")
        try:
            self.remote.write_bytes(probe, b"ok\n")
            with permitted(probe):  # written a moment ago, by us
                self.remote.delete(probe)
        except RemoteError as e:
            raise RemoteError(f"remote {self.cfg.remote_url} is not writable: {e}") from None
        cleanup = getattr(self.remote, "abort_incomplete_uploads", None)
        if cleanup is not None:
            try:
                cleanup(self.cfg.run_name)
            except RemoteError as e:
                log.warning("could not abort earlier incomplete uploads: %s", e)
        self.index = RemoteIndex(self.remote, self.cfg.run_name, self.cfg.manifest_key)
        self._refuse_foreign_run()
        self.uploader = Uploader(self.remote, self.index, self.state_dir, workers=self.cfg.upload_workers,
                                 bwlimit_mbps=self.cfg.bwlimit_mbps, on_bytes=self._on_bytes)

    def _refuse_foreign_run(self) -> None:
        """At start, a run that may not write here fails with one line (passes only report it)."""
        try:
            record = identity.read_remote_record(self.remote, self.cfg.run_name)
        except SyncdError as e:
            log.warning("cannot read the remote run record yet: %s", e)
            return
        decision = identity.decide(read_local_record(self.state_dir), record,
                                   has_local_checkpoints=bool(scan_local(self.out, self.cfg.settle_seconds)),
                                   output_dir=self.out, remote_run=f"{self.cfg.remote_url}/{self.cfg.run_name}")
        if decision.action == identity.REFUSE:
            raise ConfigError(decision.message)

    def stop(self, timeout: float = 60.0) -> None:
        if self._stopping.is_set() and self.status.state == "stopped":
            return
        log.info("syncd stopping")
        self._stopping.set()
        with self._queue_cv:
            self._job_cancel.set()
            self._queue_cv.notify_all()
        try:
            self.scheduler.shutdown(wait=True)
        except Exception:  # noqa: BLE001 - not started
            pass
        self.observer.stop()
        if self.http is not None:
            self.http.stop()
        if self._uploader_thread.is_alive():
            self._uploader_thread.join(timeout)
        if self.observer.is_alive():
            self.observer.join(timeout)
        self.status.state = "stopped"
        self.status.current = None
        self._write_status(force=True)
        if self.remote is not None:
            self.remote.close()
        self._lock.release()
        log.info("syncd stopped")

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopping.wait(timeout)

    def request_stop(self) -> None:
        """Ask the daemon to stop (safe from a signal handler); ``stop()`` does the work."""
        self._stopping.set()

    # -- signals from the watcher -----------------------------------------
    def poke(self, delay: float = POKE_DELAY_SECONDS) -> None:
        """Ask for a pass in ``delay`` seconds; a burst of calls yields one pass.

        A pass already due sooner absorbs the call; one due later (a settle-time
        re-check) does not, so an event never waits behind a timer.
        """
        due = time.monotonic() + delay
        with self._state_lock:
            if self._stopping.is_set() or (self._poke_due is not None and self._poke_due <= due):
                return
            self._poke_due = due
        try:
            self.scheduler.add_job(self._reconcile, "date", id=f"poke-{time.monotonic_ns()}",
                                   run_date=datetime.now() + timedelta(seconds=delay), max_instances=4)
        except Exception:  # noqa: BLE001 - scheduler shut down under us
            with self._state_lock:
                self._poke_due = None

    def _ensure_watch(self, checkpoint_dirs: list[Path] = ()) -> bool:
        """Watch output_dir (not recursively) and each checkpoint folder (recursively).

        Until output_dir exists its nearest existing parent is watched instead. Our
        own ``.syncd/`` and the trainer's logs are never watched, so uploads and
        status writes do not wake the daemon. Returns True when a watch was added.
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
        added = False
        for key in set(self._watches) - set(wanted):
            try:
                self.observer.unschedule(self._watches.pop(key))
            except (KeyError, OSError):
                pass
        for key in set(wanted) - set(self._watches):
            path, recursive = wanted[key]
            try:
                self._watches[key] = self.observer.schedule(self._handler, path, recursive=recursive)
                added = True
            except OSError as e:  # vanished between stat and watch, or out of inotify watches
                log.debug("cannot watch %s: %s", path, e)
        return added

    # -- the reconcile pass ------------------------------------------------
    def _reconcile(self, full: bool = False) -> None:
        """One pass; ``full`` (the timer's) also checks the committed copies still hold their files."""
        with self._state_lock:
            self._poke_due = None
        if self._stopping.is_set():
            return
        with self._pass_lock:
            try:
                self._check_copies_due = self._check_copies_due or full
                self._pass()
            except SyncdError as e:
                self._error(str(e))
            except OSError as e:  # a local folder that cannot be read or written, say
                self._error(f"the pass failed: {e}")
            except Exception as e:  # noqa: BLE001 - a bug must show in status, not only in the log
                self.worker_failed("reconcile", e)
            finally:
                self._write_status(force=True)

    def _pass(self) -> None:
        fault_point("reconcile")
        if self.out.exists() and not self._lock.ensure():
            self._error(f"another syncd took over {self.out} after its .syncd folder was deleted; stopping")
            self._stopping.set()
            return
        self.staging.mkdir(parents=True, exist_ok=True)
        now, mono = time.time(), time.monotonic()
        self.status.last_pass_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        local = [self._settle(c, mono) for c in scan_local(self.out, self.cfg.settle_seconds, now)]
        if self._ensure_watch([c.path for c in local]):
            self.poke()  # writes that landed before the new watch existed
        final = inspect_final(self.out, self.cfg.settle_seconds, now)
        final = self._settle(final, mono) if final is not None else None
        self._quiet.keep_only(c.name for c in local + ([final] if final else []))
        for c in local + ([final] if final else []):
            if c.complete and c.name not in self._announced:
                self._announced.add(c.name)
                log.info("%s: detected complete (%s, %.1f MB)", c.name, c.reason, c.size_bytes / 1e6)
        by_step = {c.step: c for c in local}
        views = self._views(local, mono)

        plan: list[int] | None = None
        if self.index is not None:
            try:
                snap = self.index.scan()
            except RemoteError as e:
                self._error(f"listing the remote failed: {e}")
            else:
                plan = self._remote_pass(snap, local, final, views, by_step, now, mono)
        elif self.remote is None:
            plan = []
        protect = set(self._restored_pins(local))
        if plan is None and self.remote is not None:
            # What the remote holds is unknown: nothing local goes that may not be mirrored.
            protect |= {c.step for c in local if c.complete}
        staged_now = set(staged_names(self.staging))
        protect |= {s for s in (plan or []) if f"checkpoint-{s}" not in staged_now}
        retire = policy.local_retire(views, self.cfg.save_total_limit, best_step=best_step(local),
                                     now=mono, stale_seconds=self.cfg.stale_seconds, protect=protect)
        for step in retire:
            self._retire_local(by_step[step])
        if plan is not None:
            # Only a pass that knows what the remote holds may drop staged copies: one whose
            # local folder is gone may be the last copy anywhere.
            self._gc_staging()

        # Checkpoints without a marker become complete by quiet time alone: look again then.
        settling = [self._settle_due[c.name] for c in local + ([final] if final else [])
                    if c.reason == "settling" and c.name in self._settle_due]
        if settling:
            self.poke(delay=max(0.05, min(settling) - time.monotonic() + 0.05))

    def _settle(self, c: LocalCheckpoint, mono: float) -> LocalCheckpoint:
        """Judge a checkpoint without a marker by monotonic quiet time, not by mtimes."""
        if c.reason not in ("settled", "settling"):
            return c
        quiet = mono - self._changed_at(c, mono)
        done = quiet >= self.cfg.settle_seconds
        self._settle_due[c.name] = mono + self.cfg.settle_seconds - quiet
        return replace(c, complete=done, reason="settled" if done else "settling")

    def _changed_at(self, c: LocalCheckpoint, mono: float) -> float:
        fingerprint = tuple((f.path, f.size, f.mtime) for f in c.files)
        return self._quiet.changed_at(c.name, fingerprint, mono)

    def _views(self, local: list[LocalCheckpoint], mono: float) -> list[policy.View]:
        """Policy views; an incomplete folder's age is its quiet time on the monotonic clock."""
        return [policy.View(c.step, c.complete, mono if c.complete else self._changed_at(c, mono))
                for c in local]

    def _clock_watch(self) -> None:
        """Re-arm the timers when the wall clock jumps: APScheduler plans in wall time."""
        detector = JumpDetector(time.time(), time.monotonic())
        while not self._stopping.wait(1.0):
            try:
                fault_point("clock")
                drift = detector.check(time.time(), time.monotonic())
                if drift is None:
                    continue
                log.warning("the wall clock jumped by %+.0f s; re-arming the timers", drift)
                self._rearm_timers()
                self.poke(delay=0.0)
            except Exception as e:  # noqa: BLE001
                if self._stopping.is_set():
                    return
                self.worker_failed("clock", e)

    def _rearm_timers(self) -> None:
        """Plan every timer again from the wall clock's new reading.

        After a jump back, a pass planned in wall time would wait as long as the jump,
        and the pending poke it stands for would swallow every event meanwhile.
        """
        for job in self.scheduler.get_jobs():
            if job.id.startswith("poke-"):
                try:
                    job.remove()
                except JobLookupError:
                    pass  # it ran meanwhile
        with self._state_lock:
            self._poke_due = None
        for job_id in ("reconcile", "disk"):
            self.scheduler.reschedule_job(job_id, trigger="interval", seconds=self._intervals[job_id])

    def _update_lag(self, local: list[LocalCheckpoint], committed: list[int], now: float, mono: float) -> None:
        complete = [c for c in local if c.complete]
        newest = complete[-1] if complete else None
        # When each checkpoint became complete, on the monotonic clock. First sight
        # trusts the mtime once (after a restart the age is real); after that a wall
        # clock jump cannot make the lag leap or vanish.
        for c in complete:
            self._complete_since.setdefault(c.name, mono - max(0.0, now - c.newest_mtime))
        for name in set(self._complete_since) - {c.name for c in complete}:
            del self._complete_since[name]
        s = self.status
        s.newest_local_step = newest.step if newest else None
        s.newest_committed_step = committed[-1] if committed else None
        if newest is None:
            s.lag_steps, s.lag_seconds = 0, 0.0
        else:
            s.lag_steps = max(0, newest.step - (s.newest_committed_step or 0))
            s.lag_seconds = 0.0 if newest.step in committed else round(mono - self._complete_since[newest.name], 3)

    # -- the remote side of a pass -------------------------------------------
    def _remote_pass(self, snap: Snapshot, local: list[LocalCheckpoint], final: LocalCheckpoint | None,
                     views: list[policy.View], by_step: dict[int, LocalCheckpoint], now: float,
                     mono: float) -> list[int] | None:
        """Plan uploads and remote deletions from one snapshot; the upload plan, or None if unknown."""
        if snap.io_errors:
            self._error("remote reads failed, so nothing is deleted this pass: " + "; ".join(snap.io_errors[:3]))
        owned = self._settle_identity(snap, local)
        self.status.remote_notes = {e.name: self._note(e) for e in snap if e.owner != OURS or e.error}
        if not owned:
            self._set_queue([])
            return None
        snap = self._finish_interrupted_commits(snap)
        copies = snap.copies()
        if self._check_copies_due:
            self._check_copies_due = False
            self._check_copies(copies)
        self._damaged = {n: p for n, p in self._damaged.items() if any(e.name == n for e in copies.values())}
        self.status.damaged = dict(self._damaged)
        copies = {b: e for b, e in copies.items() if e.name not in self._damaged}
        self.status.committed = sorted(copies)
        # A commit whose rename is still to come (or that a lagging listing still shows
        # under its old name) holds its bytes already: never a reason to send them again.
        for e in snap:
            if e.partial and e.owner == OURS and e.manifest is not None and (
                    e.base not in copies or copies[e.base].version < e.version):
                copies[e.base] = e
        stale = self._stale(copies, local, final)
        self.status.stale = sorted(stale)
        # A step whose folder could not be read may well be committed: neither sent again nor pruned.
        unknown = {e.base for e in snap if e.owner == UNREADABLE}
        committed = sorted({e.step for name, e in copies.items() if e.step is not None and name not in stale}
                           | {step_of(b) for b in unknown if step_of(b) is not None})
        # A staged checkpoint is complete by construction and survives the trainer's own
        # rotation, so it stays wanted even while a restarted daemon waits out its quiet time.
        staged = {n: self.staging / n for n in staged_names(self.staging) if step_of(n) is not None}
        staged_steps = {step_of(n) for n in staged}
        plan_views = [policy.View(v.step, v.complete or v.step in staged_steps) for v in views]
        plan_views += [policy.View(s, True) for s in staged_steps - set(by_step)]
        plan = policy.upload_plan(plan_views, committed, self.cfg.backup_keep_last)
        wanted: list[LocalCheckpoint | str] = []
        if final is not None and final.complete and (FINAL_NAME not in copies or FINAL_NAME in stale):
            wanted.append(final)
        for step in plan:
            ckpt = by_step.get(step)
            wanted.append(ckpt if ckpt is not None and ckpt.complete else f"checkpoint-{step}")
        jobs = []
        for item in wanted:
            name = item if isinstance(item, str) else item.name
            if name in unknown:
                continue
            if name in self._blocked and (isinstance(item, str) or self._blocked[name] == item.files):
                continue  # failed on a local read; waits for its files to change
            path = staged.get(name) if isinstance(item, str) else self._stage(item)
            if path is not None:
                step = step_of(name)
                jobs.append(UploadJob(name, step, path, self._version_for(snap, name)))
        self._set_queue(jobs)
        in_use = {folder_name(j.name, j.version, sfx) for j in jobs for sfx in ("", PARTIAL)}
        with self._state_lock:
            if self._current is not None:
                in_use |= {folder_name(self._current.name, self._current.version, sfx) for sfx in ("", PARTIAL)}
        doomed = policy.remote_deletions(
            [policy.RemoteView(e.name, e.base, e.step, e.version, e.state, e.owner,
                               e.manifest is not None or e.error is not None, e.name in self._damaged)
             for e in snap],
            keep=self.cfg.backup_keep_last, in_use=in_use, clean=snap.clean, identity_ok=True)
        deleter = RemoteDeleter(self.remote, self.index)
        for d in doomed:
            try:
                deleter.apply(d, self.run_id)
            except RemoteError as err:
                self._error(f"{d.name}: remote delete failed: {err}", base_name(d.name))
        self._update_lag(local, committed, now, mono)
        # After a failed read, nothing local goes either: not a retired checkpoint's staged copy.
        return plan if snap.clean else None

    def _check_copies(self, copies: dict[str, Entry]) -> None:
        """Sizes (and the server's md5 where it has one) of every committed copy against its manifest.

        A damaged copy stops counting as a backup: the local copy, when it is still
        here, is uploaded as a new version, and the damaged one is then superseded.
        """
        for e in copies.values():
            assert e.manifest is not None
            try:
                stored = {f.path: f for f in self.remote.list_files(join(self.cfg.run_name, e.name))}
            except RemoteError as err:
                log.warning("%s: could not check its files: %s", e.name, err)
                continue
            problems, _ = listing_problems(e.manifest, stored)
            if problems:
                message = f"{e.name}: damaged on the remote ({'; '.join(problems[:3])})"
                if self._damaged.get(e.name) != message:
                    self._error(message + "; uploading the local copy again where there is one", e.base)
                self._damaged[e.name] = message
            else:
                self._damaged.pop(e.name, None)

    @staticmethod
    def _note(e: Entry) -> str:
        if e.owner == UNREADABLE:
            return f"unreadable: {e.error}"
        if e.owner == LEGACY:
            return "legacy (committed before run ids; restorable, never pruned)"
        if e.error:
            return f"unverified: {e.error}"
        if e.manifest is not None:
            return "foreign (another run's commit)"
        return "foreign (not made by this run)"

    def _settle_identity(self, snap: Snapshot, local: list[LocalCheckpoint]) -> bool:
        """Whether this daemon may write to and delete in the remote run folder now."""
        record = snap.record_run_id
        if snap.record_error is not None:  # never written over: it may be another run's
            self.status.identity = f"unknown: {snap.record_error}"
            return False
        if self.run_id is not None and record == self.run_id:
            if snap.record_writer == self.writer:
                return True
            if self._writing:
                # Restored and resumed elsewhere while this machine lived on: that one writes now.
                message = (f"displaced: another output folder (writer {identity.short(snap.record_writer)}) now "
                           f"writes run {identity.short(self.run_id)}; this daemon no longer uploads or deletes "
                           "(restart it to take the run back)")
                if self.status.identity != message:
                    log.error("%s", message)
                self.status.identity = message
                self.status.errors["run"] = message
                self.status.last_error = message
                return False
        decision = identity.decide(read_local_record(self.state_dir), record,
                                   has_local_checkpoints=bool(local), output_dir=self.out,
                                   remote_run=f"{self.cfg.remote_url}/{self.cfg.run_name}")
        if decision.action == identity.CLAIM:
            assert decision.run_id is not None
            self.writer = identity.local_writer(self.state_dir)
            identity.write_remote_record(self.remote, self.cfg.run_name, decision.run_id, self.writer)
            self._writing = True
            log.info("run %s: recorded in the remote run folder", identity.short(decision.run_id))
            decision = identity.Decision(identity.OK, decision.run_id)
        if decision.action == identity.OK and not self._writing:
            # Starting to mirror: this output folder becomes the run's one writer.
            self.writer = identity.local_writer(self.state_dir)
            if snap.record_writer != self.writer:
                identity.write_remote_record(self.remote, self.cfg.run_name, decision.run_id, self.writer)
                if snap.record_writer is not None:
                    log.warning("run %s: this output folder takes over from writer %s",
                                identity.short(decision.run_id), identity.short(snap.record_writer))
            self._writing = True
        if decision.action == identity.OK:
            if self.run_id != decision.run_id:
                log.info("mirroring as run %s", identity.short(decision.run_id))
            self.run_id = decision.run_id
            self.index.run_id = decision.run_id
            self.status.run_id = decision.run_id
            self.status.identity = "this run"
            self.status.errors.pop("run", None)
            return True
        if decision.action == identity.NEW:
            self.run_id = None
            self.index.run_id = None
            self.status.identity = "new run: its id is made at the first upload"
            return True
        self.run_id = None
        self.index.run_id = None
        if self.status.identity != decision.message:
            (log.info if decision.action == identity.WAIT else log.error)("%s", decision.message)
        self.status.identity = decision.message
        if decision.action == identity.REFUSE:
            self.status.errors["run"] = decision.message
            self.status.last_error = decision.message
        return False

    def _ensure_run_id(self) -> str:
        """The run id, made (remote record first, then ours) when this run uploads first."""
        if self.run_id is not None:
            return self.run_id
        current = identity.read_remote_record(self.remote, self.cfg.run_name)
        if current is not None:
            raise RemoteError(f"another run ({identity.short(current)}) took {self.cfg.run_name} on the remote "
                              "meanwhile; set another run_name")
        run_id = identity.new_run_id()
        identity.write_local_record(self.state_dir, run_id, self.cfg.run_name, self.cfg.remote_url)
        self.writer = identity.local_writer(self.state_dir)
        identity.write_remote_record(self.remote, self.cfg.run_name, run_id, self.writer)
        self._writing = True
        log.info("new run %s for %s", identity.short(run_id), self.cfg.run_name)
        self.run_id = run_id
        self.index.run_id = run_id
        self.status.run_id = run_id
        self.status.identity = "this run"
        return run_id

    def _version_for(self, snap: Snapshot, base: str) -> int:
        """Where a new upload of ``base`` goes: our unfinished upload, or the next free version."""
        versions = snap.versions(base)
        copy = snap.copies().get(base)
        resumable = [e.version for e in versions if e.owner == OURS and e.manifest is None and e.error is None
                     and e.suffix in ("", PARTIAL) and (copy is None or e.version > copy.version)]
        if resumable:
            return max(resumable)
        return max((e.version for e in versions), default=0) + 1

    def _finish_interrupted_commits(self, snap: Snapshot) -> Snapshot:
        """An upload of ours whose manifest was written in ``.partial`` only lost its rename."""
        names = {e.name for e in snap}
        with self._state_lock:
            busy = self._current
        changed = False
        for e in snap:
            if not (e.partial and e.owner == OURS and e.manifest is not None):
                continue
            target = folder_name(e.base, e.version)
            if target in names or (busy is not None and busy.name == e.base and busy.version == e.version):
                continue
            log.info("%s: finishing an interrupted commit", target)
            try:
                self.remote.rename_dir(join(self.cfg.run_name, e.name), join(self.cfg.run_name, target))
                changed = True
            except RemoteError as err:
                if target not in {x.name for x in self.index.scan()}:  # else the uploader was first
                    self._error(f"{target}: finishing its commit failed: {err}", e.base)
        return self.index.scan() if changed else snap

    def _stale(self, copies: dict[str, Entry], local: list[LocalCheckpoint],
               final: LocalCheckpoint | None) -> set[str]:
        """Names whose complete local copy differs from their committed remote copy."""
        out = set()
        for c in [x for x in local if x.complete] + ([final] if final is not None and final.complete else []):
            entry = copies.get(c.name)
            if entry is None or entry.manifest is None:
                continue
            if not freshness.same_as_committed(self.state_dir, c.name, c.path, c.files, entry.manifest, entry.name):
                if c.name not in self.status.stale:
                    log.info("%s: differs from its committed copy %s; uploading it again", c.name, entry.name)
                out.add(c.name)
        return out

    def _restored_pins(self, local: list[LocalCheckpoint]) -> list[int]:
        """Steps restored here that training has not moved past yet: never retired under the user."""
        pins = read_json(self.state_dir / "state" / "restored.json", default={}) or {}
        out = []
        for c in local:
            at = pins.get(c.name) if isinstance(pins, dict) else None
            if isinstance(at, (int, float)) and not any(
                    o.complete and o.name != c.name and o.newest_mtime > at for o in local):
                out.append(c.step)
        return out

    def _retire_local(self, ckpt: LocalCheckpoint) -> None:
        """Rename into trash first, so a killed delete never leaves a half checkpoint in place."""
        self.trash.mkdir(parents=True, exist_ok=True)
        dest = self.trash / f"{ckpt.name}.{time.time_ns()}"
        try:
            os.rename(ckpt.path, dest)
        except FileNotFoundError:
            return  # the trainer's rotation was first
        except OSError as e:
            self._error(f"{ckpt.name}: cannot retire: {e.strerror}", ckpt.name)
            return
        crash_point("mid_retire")
        shutil.rmtree(dest, ignore_errors=True)
        why = "complete" if ckpt.complete else f"incomplete and stale: {ckpt.reason}"
        log.info("%s: local copy retired (%s)", ckpt.name, why)

    def _gc_staging(self) -> None:
        with self._state_lock:
            keep = {j.name for j in self._queue} | ({self._current.name} if self._current else set())
        for name in staged_names(self.staging):
            if name.removesuffix(".tmp") not in keep:
                unstage(self.staging, name.removesuffix(".tmp"))
                if self.uploader is not None and not name.endswith(".tmp"):
                    self.uploader.drop_state(name)

    def _disk_check(self) -> None:
        try:
            self._disk_check_once()
        except Exception as e:  # noqa: BLE001
            self.worker_failed("disk", e)

    def _disk_check_once(self) -> None:
        fault_point("disk")
        try:
            du = shutil.disk_usage(self.out if self.out.exists() else self.out.parent)
        except OSError:
            return
        self.status.disk_free_bytes, self.status.disk_total_bytes = du.free, du.total
        limit = self.cfg.min_free_gb * 1e9
        if limit <= 0 or du.free >= limit:
            return
        with self._pass_lock:
            mono = time.monotonic()
            local = [self._settle(c, mono) for c in scan_local(self.out, self.cfg.settle_seconds)]
            views = self._views(local, mono)
            committed = [step_of(n) for n in self.status.committed if step_of(n) is not None]
            doomed = policy.disk_pressure_retire(views, committed)
            log.warning("low disk: %.2f GB free on %s, below syncd_min_free_gb=%g; retiring %s",
                        du.free / 1e9, self.out, self.cfg.min_free_gb,
                        ", ".join(f"checkpoint-{s}" for s in doomed) or "nothing (already at the minimum)")
            for c in local:
                if c.step in doomed:
                    self._retire_local(c)

    # -- uploads -----------------------------------------------------------
    def snapshot(self) -> dict:
        """A copy of the live status, safe to serialise from another thread."""
        with self._state_lock:
            return json.loads(json.dumps(self.status.__dict__))

    def _set_queue(self, jobs: list[UploadJob]) -> None:
        """Replace what waits; the upload in flight always finishes.

        Abandoning it for a newer checkpoint would, when saves come faster than
        uploads, mean nothing is ever committed while training runs.
        """
        with self._queue_cv:
            self._queue = jobs
            self.status.queue = [j.name for j in jobs]
            self.status.queue_length = len(jobs)
            self._queue_cv.notify_all()

    def _on_bytes(self, n: int) -> None:
        with self._state_lock:
            self.status.uploaded_bytes += n
            if self.status.current is not None:
                self.status.current["bytes_done"] += n
        self._write_status()

    def _upload_loop(self) -> None:
        self._upload_failures = 0
        while not self._stopping.is_set():
            try:
                self._upload_next()
            except Exception as e:  # noqa: BLE001 - the uploader restarts; it never dies quietly
                with self._queue_cv:
                    self._current = None
                    self.status.current = None
                self.worker_failed("uploader", e)
                self._upload_failures += 1
                self._stopping.wait(min(RETRY_MAX_SECONDS, 2.0 ** self._upload_failures))

    def _upload_next(self) -> None:
        """Take the first job of the queue and upload it (one turn of the uploader)."""
        with self._queue_cv:
            while not self._queue and not self._stopping.is_set():
                self._queue_cv.wait(1.0)
            if self._stopping.is_set():
                return
            fault_point("uploader")
            job = self._queue[0]
            self._current = job
            self._job_cancel = threading.Event()
            cancel = self._job_cancel
            total = sum(f.stat().st_size for f in job.staged.rglob("*") if f.is_file())
            self.status.current = {"name": job.name, "bytes_done": 0, "bytes_total": total}
        failures = self._upload_failures
        assert self.uploader is not None
        try:
            run_id = self._ensure_run_id()
            manifest = self.uploader.upload(job, cancel, run_id, self.writer)
        except Cancelled:
            failures = 0
        except QuotaError as e:
            self.status.failures += 1
            pause = min(QUOTA_RETRY_MAX_SECONDS, max(QUOTA_RETRY_MIN_SECONDS, 5 * self.cfg.interval_seconds))
            self._error(f"{job.name}: upload stopped: {e} (next try in {pause:.0f} s)", job.name)
            self._stopping.wait(pause)
        except SourceChanged as e:
            # Start again from a fresh stage once the writer is done: its quiet time restarts.
            self._error(f"{job.name}: {e}; uploading it again once it is still", job.name)
            self._quiet.forget(job.name)
            unstage(self.staging, job.name)
            self._stopping.wait(min(RETRY_MAX_SECONDS, 0.5 * 2.0 ** failures))
            failures += 1
        except (FileNotFoundError, NotADirectoryError) as e:
            failures += 1
            self._error(f"{job.name}: staged files vanished ({e}); staging again", job.name)
            unstage(self.staging, job.name)
        except OSError as e:
            # A local file that cannot be read: this checkpoint waits for its files to
            # change, the others keep moving.
            self.status.failures += 1
            self._error(f"{job.name}: cannot read a local file: {e}; skipped until its files change", job.name)
            local = self._local_files(job.name)
            self._blocked[job.name] = local
        except SyncdError as e:
            failures += 1
            self.status.failures += 1
            self._error(f"{job.name}: upload failed: {e}", job.name)
            self._stopping.wait(min(RETRY_MAX_SECONDS, 2.0 ** failures))
        except Exception as e:  # noqa: BLE001 - a bug must not end the uploader silently
            failures += 1
            self.status.failures += 1
            self.worker_failed("uploader", e)
            self.status.errors[job.name] = f"{job.name}: upload failed (bug): {type(e).__name__}: {e}"
            self._stopping.wait(min(RETRY_MAX_SECONDS, 2.0 ** failures))
        else:
            failures = 0
            self._committed(job, manifest)
        finally:
            with self._queue_cv:
                self._current = None
                self.status.current = None
                self._queue = [j for j in self._queue if j.name != job.name]
        self._upload_failures = failures
        self.poke(delay=0.0)

    def _local_files(self, name: str) -> tuple:
        path = self.out if name == FINAL_NAME else self.out / name
        found = inspect_final(self.out, 0.0) if name == FINAL_NAME else inspect_checkpoint(path, 0.0)
        return found.files if found is not None else ()

    def _committed(self, job: UploadJob, manifest: Manifest) -> None:
        self.status.commits += 1
        self.status.errors.pop(job.name, None)
        self._blocked.pop(job.name, None)
        freshness.record(self.state_dir, job.name, job.staged, manifest, job.target)
        self.status.last_error = None

    def _stage(self, ckpt: LocalCheckpoint) -> Path | None:
        """Stage one checkpoint; a failure is that checkpoint's error, never the pass's."""
        if ckpt.links and ckpt.name not in self._announced_links:
            self._announced_links.add(ckpt.name)
            log.warning("%s: %d symlink(s) are not mirrored (syncd never follows links): %s", ckpt.name,
                        len(ckpt.links), ", ".join(ckpt.links[:3]))
        odd = [f.path for f in ckpt.files if "\\" in f.path]
        if odd:
            self._error(f"{ckpt.name}: cannot mirror a file name with a backslash ({odd[0]!r}): "
                        "it is not portable; rename it", ckpt.name)
            self._blocked[ckpt.name] = ckpt.files
            return None
        crash_point("before_stage")
        try:
            path = stage(ckpt, self.staging)
        except OSError as e:
            message = f"{ckpt.name}: cannot stage: {e}"
            if self.status.errors.get(ckpt.name) != message:
                self._error(message, ckpt.name)
            self._blocked[ckpt.name] = ckpt.files
            return None
        if path is not None and self.status.errors.get(ckpt.name, "").startswith(f"{ckpt.name}: cannot stage"):
            self.status.errors.pop(ckpt.name, None)
        return path

    # -- status ------------------------------------------------------------
    def worker_failed(self, worker: str, exc: BaseException) -> None:
        """An unexpected exception in a worker: traceback in the log, counted, shown in status."""
        log.error("%s worker: unexpected %s: %s; it carries on", worker, type(exc).__name__, exc, exc_info=exc)
        with self._state_lock:
            self.status.worker_errors[worker] = self.status.worker_errors.get(worker, 0) + 1
        self._error(f"{worker} worker: unexpected {type(exc).__name__}: {exc}")

    def _error(self, message: str, name: str | None = None) -> None:
        log.error("%s", message)
        if name is not None:
            self.status.errors[name] = message
        self.status.last_error = message
        self.status.last_error_at = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def _write_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._status_written < 1.0:
            return
        self._status_written = now
        doc = self.snapshot()
        try:
            atomic_write_json(self.state_dir / "status.json", doc, durable=False)
        except OSError as e:
            log.warning("cannot write status: %s", e)


__all__ = ["Daemon", "PARTIAL"]
