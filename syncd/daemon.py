"""The daemon: a pass that gathers state, asks the policy for a plan, and carries it out.

    output_dir/.syncd/
      syncd.lock, syncd.pid   one daemon per output folder (locking.py)
      syncd.log               the detached daemon's log (``syncd start``)
      status.json             what ``syncd status`` shows (status.py)
      staging/                hard-linked copies being uploaded (stage.py)
      state/uploads/          per-checkpoint resume state (upload.py)
      state/committed/        which local files are the bytes of which commit (freshness.py)
      trash/                  local folders being retired (retire.py)

One pass, top to bottom (``_pass``)::

    gather     local folders judged complete (completeness.py), the remote snapshot
               (remote_state.py), interrupted commits finished, whose run folder it is
               (run_claim.py), damaged and stale copies (verify.py, freshness.py)
    plan       uploads and remote deletions, then local retirements (reconcile.py,
               whose rules are policy.py's)
    execute    stage (stage.py) and queue for the uploader thread (upload_worker.py,
               which uploads and commits: upload.py); un-commit and prune remote
               folders (deleter.py); retire local folders and drop staged copies
               (retire.py)

Threads have one role each: watchdog's threads and ``ClockWatch`` only ask for a pass
(watch.py); APScheduler runs the passes (one at a time) and the disk check; the
uploader thread moves bytes. An unexpected exception in any of them is logged with
its traceback, counted in status and /metrics, and the thread carries on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime, timedelta, timezone

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

from . import completeness, freshness, parts, policy, reconcile, retire, space, verify
from .checkpoints import (
    FINAL_NAME,
    LocalCheckpoint,
    inspect_checkpoint,
    inspect_final,
    scan_local,
    step_of,
)
from .config import SyncConfig
from .deleter import RemoteDeleter, permitted
from .errors import ConfigError, RemoteError, RemoteUnavailable, SyncdError
from .faults import fault_point
from .locking import DaemonLock
from .manifest import Manifest
from .overlap import check_overlap
from .remote_state import (
    LEGACY,
    OURS,
    UNREADABLE,
    Entry,
    RemoteIndex,
    base_name,
    finish_interrupted,
)
from .remotes import Remote, open_remote
from .remotes.base import join
from .run_claim import RunClaim
from .stage import Stager, staged_names
from .status import Board, Lag, Status
from .upload import Uploader, UploadJob
from .upload_worker import Hooks, UploadWorker
from .watch import ClockWatch, Watcher

log = logging.getLogger("syncd")

POKE_DELAY_SECONDS = 0.1  # coalesces an inotify burst into one pass


class Daemon:
    """Owns the watcher, the scheduler and the uploader; a context manager."""

    def __init__(self, cfg: SyncConfig, *, poll: bool = False, remote: Remote | None = None) -> None:
        self.cfg = cfg
        self.out = cfg.output_dir
        self.state_dir = cfg.state_dir
        self.staging = self.state_dir / "staging"
        self.trash = self.state_dir / "trash"
        self.remote = remote
        self.index: RemoteIndex | None = None
        self.claim: RunClaim | None = None
        self.parts: parts.Parts | None = None  # the other nodes' parts, with several nodes
        self.worker: UploadWorker | None = None
        self.board = Board(self.state_dir, Status(remote=cfg.remote_url, run=cfg.run_name))
        self.status = self.board.status
        self.http = None
        self._lock = DaemonLock(self.state_dir)
        self._pass_lock = threading.Lock()
        self._stopping = threading.Event()
        self._poke_due: float | None = None  # monotonic time of the soonest pending pass
        self._settler = completeness.Settler(cfg.settle_seconds)
        self._lag = Lag()
        self._announced: set[str] = set()
        self._stager = Stager(self.staging, self.board.error, self.board.clear)
        self._damaged: dict[str, str] = {}  # committed folder -> what is wrong with it
        self._remote_best: dict[str, int | None] = {}  # committed folder -> the best step it names
        self._space_checked = False
        self._start_unavailable = False  # the start probe met a remote answering errors that may pass
        self._check_copies_due = True
        self._intervals: dict[str, float] = {}
        self.watcher = Watcher(self.out, self.poke, self.board.worker_failed, poll=poll)
        self._clock = ClockWatch(self._stopping, self._on_clock_jump, self.board.worker_failed)
        self.scheduler = BackgroundScheduler(
            executors={"default": {"type": "threadpool", "max_workers": 3}},
            job_defaults={"coalesce": True, "misfire_grace_time": None},
        )

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
            retire.empty_trash(self.trash)  # a retire killed half-way
            self.watcher.start()
            if self.worker is not None:
                self.worker.start()
            interval = self.cfg.interval_seconds
            self._intervals = {"reconcile": interval, "disk": max(interval, 1.0)}
            now = datetime.now()
            self.scheduler.add_job(self.pass_now, "interval", seconds=interval, id="reconcile",
                                   next_run_time=now, max_instances=1, kwargs={"full": True})
            self.scheduler.add_job(self._disk_check, "interval", seconds=self._intervals["disk"], id="disk",
                                   next_run_time=now, max_instances=1)
            self.scheduler.start()
            self._clock.start()
        except BaseException:
            self._stopping.set()
            if self.http is not None:
                self.http.stop()
            self._lock.release()
            raise
        self.status.state = "running"
        if self._start_unavailable:
            # Ready now: the first pass may be retrying the remote for minutes.
            self.board.write(force=True)
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
        self.index = RemoteIndex(self.remote, self.cfg.run_name, self.cfg.manifest_key)
        if self.cfg.nodes > 1:
            self.parts = parts.Parts(self.remote, self.cfg.run, self.cfg.nodes, self.cfg.manifest_key)
        self.claim = RunClaim(self.remote, self.index, run=self.cfg.run_name, remote_url=self.cfg.remote_url,
                              state_dir=self.state_dir, output_dir=self.out, board=self.board,
                              first_part=self.cfg.run if self.cfg.node_rank else None)
        # Seconds, not minutes of backoff: a remote that answers with errors that may pass
        # (RemoteUnavailable) does not hold up the start; the passes retry it and status
        # shows why. Anything else (credentials, a missing bucket or folder, no such host)
        # is a verdict on the config and fails the start.
        probe = join(self.cfg.run_name, f".syncd-probe-{os.getpid()}")
        with self.remote.briefly():
            try:
                self.remote.write_bytes(probe, b"ok\n")
                with permitted(probe):  # written a moment ago, by us
                    self.remote.delete(probe)
            except RemoteUnavailable as e:
                self.board.error(f"remote {self.cfg.remote_url} is unavailable for now: {e}; "
                                 "started anyway, each pass tries again")
                self._start_unavailable = True
            except RemoteError as e:
                raise RemoteError(f"remote {self.cfg.remote_url} is not writable: {e}") from None
            if not self._start_unavailable:
                self._start_checks()
        uploader = Uploader(self.remote, self.index, self.state_dir, workers=self.cfg.upload_workers,
                            bwlimit_mbps=self.cfg.bwlimit_mbps, on_bytes=self.board.add_bytes)
        claim = self.claim
        self.worker = UploadWorker(uploader, self.board, Hooks(
            run_id=claim.ensure_run_id, writer=lambda: claim.writer, committed=self._committed,
            source_changed=self._settler.forget, unreadable=self._block_unreadable,
            poke=lambda: self.poke(delay=0.0)), self.staging, self._stopping, self.cfg.interval_seconds)

    def _start_checks(self) -> None:
        """Once the remote answers at start: leftovers of earlier uploads, and whether this run may write."""
        cleanup = getattr(self.remote, "abort_incomplete_uploads", None)
        if cleanup is not None:
            try:
                cleanup(self.cfg.run_name)
            except RemoteError as e:
                log.warning("could not abort earlier incomplete uploads: %s", e)
        refusal = self.claim.refuse_at_start(has_local_checkpoints=bool(scan_local(self.out)))
        if refusal is not None:
            raise ConfigError(refusal)

    def stop(self, timeout: float = 60.0) -> None:
        if self._stopping.is_set() and self.status.state == "stopped":
            return
        log.info("syncd stopping")
        self._stopping.set()
        if self.worker is not None:  # first: the grace is counted from the stop request
            self.worker.stop(self.cfg.stop_grace_seconds, timeout)
        if self.remote is not None:
            # Before waiting for a pass: closing ends the retry waits of a pass that reads
            # a remote that is down, which would otherwise hold the stop for minutes.
            self.remote.close()
        try:
            self.scheduler.shutdown(wait=True)
        except Exception:  # noqa: BLE001 - not started
            pass
        if self.http is not None:
            self.http.stop()
        self.watcher.stop(timeout)
        self.status.state = "stopped"
        self.status.current = None
        self.board.write(force=True)
        self._lock.release()
        log.info("syncd stopped")

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopping.wait(timeout)

    def request_stop(self) -> None:
        """Ask the daemon to stop (safe from a signal handler); ``stop()`` does the work."""
        self._stopping.set()

    def snapshot(self) -> dict:
        return self.board.snapshot()

    # -- what asks for a pass ------------------------------------------------
    def poke(self, delay: float = POKE_DELAY_SECONDS) -> None:
        """Ask for a pass in ``delay`` seconds; a burst of calls yields one pass.

        A pass already due sooner absorbs the call; one due later (a settle-time
        re-check) does not, so an event never waits behind a timer.
        """
        due = time.monotonic() + delay
        with self.board.lock:
            if self._stopping.is_set() or (self._poke_due is not None and self._poke_due <= due):
                return
            self._poke_due = due
        try:
            self.scheduler.add_job(self.pass_now, "date", id=f"poke-{time.monotonic_ns()}",
                                   run_date=datetime.now() + timedelta(seconds=delay), max_instances=4)
        except Exception:  # noqa: BLE001 - scheduler shut down under us
            with self.board.lock:
                self._poke_due = None

    def _on_clock_jump(self, _drift: float) -> None:
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
        with self.board.lock:
            self._poke_due = None
        for job_id in ("reconcile", "disk"):
            self.scheduler.reschedule_job(job_id, trigger="interval", seconds=self._intervals[job_id])
        self.poke(delay=0.0)

    # -- the pass --------------------------------------------------------------
    def pass_now(self, full: bool = False) -> None:
        """One pass; ``full`` (the timer's) also checks the committed copies still hold their files."""
        with self.board.lock:
            self._poke_due = None
        if self._stopping.is_set():
            return
        with self._pass_lock:
            try:
                self._check_copies_due = self._check_copies_due or full
                self._pass()
            except SyncdError as e:
                self.board.error(str(e))
            except OSError as e:  # a local folder that cannot be read or written, say
                self.board.error(f"the pass failed: {e}")
            except Exception as e:  # noqa: BLE001 - a bug must show in status, not only in the log
                self.board.worker_failed("reconcile", e)
            finally:
                self.board.write(force=True)

    def _pass(self) -> None:
        fault_point("reconcile")
        if self.out.exists() and not self._lock.ensure():
            self.board.error(f"another syncd took over {self.out} after its .syncd folder was deleted; stopping")
            self._stopping.set()
            return
        self.staging.mkdir(parents=True, exist_ok=True)
        self.status.last_pass_at = datetime.now(timezone.utc).isoformat(timespec="seconds")

        world = self._gather()
        plan = reconcile.plan_remote(world, self.cfg.backup_keep_last) if self.index is not None else None
        if plan is not None:
            self._queue_uploads(world, plan)
            self._delete_remote(plan)
            if world.owned:
                self._lag.update(self.status, [c for c in world.local if c.complete], plan.committed,
                                 time.time(), world.mono)
        staged_now = set(staged_names(self.staging))
        for step in reconcile.plan_local(world, plan, staged_now, has_remote=self.remote is not None,
                                         save_total_limit=self.cfg.save_total_limit,
                                         stale_seconds=self.cfg.stale_seconds):
            retire.retire(world.by_step[step], self.trash, self.board.error)
        if plan is None and self.remote is None or plan is not None and plan.steps is not None:
            # Only a pass that knows what the remote holds may drop staged copies: one whose
            # local folder is gone may be the last copy anywhere.
            wanted = self.worker.wanted() if self.worker is not None else set()
            retire.drop_staged(self.staging, wanted, self._forget_upload)
        self._ask_again_when_settled(world)

    # -- gather ----------------------------------------------------------------
    def _gather(self) -> reconcile.World:
        mono = time.monotonic()
        local, final = self._judge_local(mono)
        if self.watcher.follow([c.path for c in local]):
            self.poke()  # writes that landed before the new watch existed
        world = reconcile.World(
            mono=mono, local=local, final=final,
            staged={n: self.staging / n for n in staged_names(self.staging) if step_of(n) is not None},
            changed_at={c.name: self._settler.changed_at(c, mono) for c in local if not c.complete},
            pins=reconcile.restored_pins(self.state_dir, local), best=reconcile.best_step(local),
            blocked=dict(self._stager.blocked))
        busy = self.worker.busy() if self.worker is not None else None
        world.busy = (busy.name, busy.version) if busy is not None else None
        if self.index is not None:
            self._gather_remote(world)
        return world

    def _judge_local(self, mono: float) -> tuple[list[LocalCheckpoint], LocalCheckpoint | None]:
        """Every local folder judged by the one completeness rule; verdicts published in status."""
        local = [self._settler.judge(c, mono) for c in scan_local(self.out)]
        final = inspect_final(self.out)
        final = self._settler.judge(final, mono) if final is not None else None
        judged = local + ([final] if final else [])
        self._settler.keep_only(c.name for c in judged)
        verdicts = {}
        for c in judged:
            due = self._settler.due(c)
            verdicts[c.name] = {"complete": c.complete,
                                "text": completeness.verdict_text(c, None if due is None else due - mono)}
            if c.complete and c.name not in self._announced:
                self._announced.add(c.name)
                log.info("%s: detected complete (%s, %.1f MB)", c.name, c.reason, c.size_bytes / 1e6)
        with self.board.lock:
            self.status.local = verdicts
        return local, final

    def _gather_remote(self, world: reconcile.World) -> None:
        try:
            snap = self.index.scan()
        except RemoteError as e:
            self.board.error(f"listing the remote failed: {e}")
            return
        if snap.io_errors:
            self.board.error("remote reads failed, so nothing is deleted this pass: " + "; ".join(snap.io_errors[:3]))
        world.owned = self.claim.settle(snap, has_local_checkpoints=bool(world.local))
        self.status.remote_notes = {e.name: _note(e) for e in snap if e.owner != OURS or e.error}
        if not world.owned:
            self.worker.set_queue([])
            world.snap = snap
            return
        snap, failed = finish_interrupted(self.remote, self.index, snap, world.busy)
        for target, err in failed:
            self.board.error(f"{target}: finishing its commit failed: {err}", base_name(target))
        world.snap = snap
        if self._check_copies_due:
            # A damaged copy stops counting as a backup: the local copy, when it is still
            # here, is uploaded as a new version, and the damaged one is then superseded.
            self._check_copies_due = False
            found = verify.damaged_copies(self.remote, self.cfg.run_name, snap.copies(), self._damaged)
            for name, message in found.items():
                if self._damaged.get(name) != message:
                    self.board.error(message + "; uploading the local copy again where there is one",
                                     base_name(name))
            self._damaged = found
        names = {e.name for e in snap.copies().values()}
        self._damaged = {n: p for n, p in self._damaged.items() if n in names}
        world.damaged = set(self._damaged)
        self.status.damaged = dict(self._damaged)
        self.status.committed = sorted(world.copies())
        stale = reconcile.stale_names(self.state_dir, world.holding(), world.local, world.final,
                                      superset=self.parts is not None)
        for name in stale - set(self.status.stale):
            log.info("%s: differs from its committed copy; uploading it again", name)
        world.stale = stale
        self.status.stale = sorted(stale)
        world.best = reconcile.best_for(world, self.remote, self.cfg.run_name, self._remote_best)
        if self.parts is not None:
            self._gather_parts(world)
        self.status.best_step = world.best

    def _gather_parts(self, world: reconcile.World) -> None:
        """Several nodes (parts.py): the steps every node's part holds, and node 0's best."""
        try:
            others = self.parts.others(self.cfg.node_rank, self.claim.run_id)
            if 0 in others:  # node 0's part holds trainer_state.json
                found = self.parts.best(others[0])
                world.best = found if found is not None else world.best
        except SyncdError as e:  # a failed read, or a part that is not a run's
            world.parts_unknown = True
            self.board.error(f"another node's part cannot be read, so nothing is pruned this pass: {e}")
            return
        own = [e.step for e in world.copies().values() if e.step is not None]
        world.sets = parts.complete_sets([own] + [parts.committed_steps(s).keys() for s in others.values()])

    # -- execute -----------------------------------------------------------------
    def _queue_uploads(self, world: reconcile.World, plan: reconcile.RemotePlan) -> None:
        """Stage what the plan wants uploaded and hand it to the uploader, newest first."""
        if not world.owned:
            return
        if plan.uploads and not self._space_checked:
            self._space_checked = True
            self.status.space = space.check(self.remote, world, self.cfg.backup_keep_last)
        jobs = []
        for up in plan.uploads:
            path = world.staged.get(up.name) if up.local is None else self._stager(up.local)
            if path is not None:
                jobs.append(UploadJob(up.name, step_of(up.name), path, up.version))
        self.worker.set_queue(jobs)

    def _delete_remote(self, plan: reconcile.RemotePlan) -> None:
        deleter = RemoteDeleter(self.remote, self.index)
        for d in plan.deletions:
            try:
                deleter.apply(d, self.claim.run_id)
            except RemoteError as err:
                self.board.error(f"{d.name}: remote delete failed: {err}", base_name(d.name))

    def _forget_upload(self, name: str) -> None:
        if self.worker is not None:
            self.worker.uploader.drop_state(name)

    def _ask_again_when_settled(self, world: reconcile.World) -> None:
        """Checkpoints without a marker become complete by quiet time alone: look again then."""
        due = [d for c in world.local + ([world.final] if world.final else [])
               if (d := self._settler.due(c)) is not None]
        if due:
            self.poke(delay=max(0.05, min(due) - time.monotonic() + 0.05))

    # -- what the uploader reports -----------------------------------------------
    def _committed(self, job: UploadJob, manifest: Manifest) -> None:
        s = self.status
        if job.step is not None and (s.newest_committed_step is None or job.step > s.newest_committed_step):
            s.newest_committed_step = job.step  # shown now, not only after the next pass
            if s.newest_local_step is not None and job.step >= s.newest_local_step:
                s.lag_steps, s.lag_seconds = 0, 0.0
        self.status.errors.pop(job.name, None)
        self._stager.blocked.pop(job.name, None)
        freshness.record(self.state_dir, job.name, job.staged, manifest, job.target)
        self.status.last_error = None
        self.board.write(force=True)

    def _block_unreadable(self, name: str) -> None:
        """A checkpoint whose local read failed waits until its files change."""
        path = self.out if name == FINAL_NAME else self.out / name
        found = inspect_final(self.out) if name == FINAL_NAME else inspect_checkpoint(path)
        self._stager.blocked[name] = found.files if found is not None else ()

    # -- the disk --------------------------------------------------------------
    def _disk_check(self) -> None:
        try:
            self._relieve_disk()
        except Exception as e:  # noqa: BLE001
            self.board.worker_failed("disk", e)

    def _relieve_disk(self) -> None:
        """Below ``syncd_min_free_gb``, retire local copies harder (retire.py)."""
        fault_point("disk")
        du = retire.disk_free(self.out)
        if du is None:
            return
        self.status.disk_free_bytes, self.status.disk_total_bytes = du.free, du.total
        if not retire.short_of_space(du, self.cfg.min_free_gb):
            return
        with self._pass_lock:
            mono = time.monotonic()
            local = [self._settler.judge(c, mono) for c in scan_local(self.out)]
            views = [policy.View(c.step, c.complete, mono if c.complete else self._settler.changed_at(c, mono))
                     for c in local]
            committed = [step_of(n) for n in self.status.committed if step_of(n) is not None]
            best = self.status.best_step if self.status.best_step is not None else reconcile.best_step(local)
            retire.relieve_disk(local, views, committed, best, self.trash, self.board.error,
                                f"low disk: {du.free / 1e9:.2f} GB free on {self.out}, below "
                                f"syncd_min_free_gb={self.cfg.min_free_gb:g}")


def _note(e: Entry) -> str:
    """Why a folder in the run is not one of this run's commits (status ``remote_notes``)."""
    if e.owner == UNREADABLE:
        return f"unreadable: {e.error}"
    if e.owner == LEGACY:
        return "legacy (committed before run ids; restorable, never pruned)"
    if e.error:
        return f"unverified: {e.error}"
    if e.manifest is not None:
        return "foreign (another run's commit)"
    return "foreign (not made by this run)"


__all__ = ["Daemon"]
