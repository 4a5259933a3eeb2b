"""syncd for any Hugging Face Trainer script: one callback, and where to resume from.

    from syncd.hf import SyncdCallback, resume_checkpoint
    trainer = Trainer(..., callbacks=[SyncdCallback("cfg.json")])   # or SyncdCallback()
    trainer.train(resume_from_checkpoint=resume_checkpoint("cfg.json"))

What the callback writes, and when::

    output_dir/checkpoint-N/checkpoint-complete.json   on every save, once every rank has
                                                       finished writing (the writing process)

With the marker, syncd takes the checkpoint as complete at once instead of after
``syncd_settle_seconds`` of quiet (checkpoints.py has the rules). At the end of
training the callback waits, bounded, for the newest checkpoint's commit and says
where the copy is; given a config it starts ``syncd start CONFIG`` when no daemon runs.

Preemption: SIGTERM (what spot VMs, ``systemctl stop`` and Kubernetes send) only sets a
flag. At the next step end the ranks agree on it (a MAX all-reduce when
torch.distributed is initialised, so every rank stops at the same step and none hangs
in a collective), the Trainer saves checkpoint-N with the marker, training stops, and
the process exits with one line and ``PREEMPTED_EXIT_CODE``.

Only this module of syncd touches transformers or torch, and only when a callback is
first used (``SyncdCallback`` and ``PreemptionCallback`` are built on first access), so
``resume_checkpoint`` and the rest of syncd stay importable without them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from functools import cache
from pathlib import Path
from typing import Any

from . import api
from .checkpoints import MARKER, scan_local, write_checkpoint_marker
from .completeness import newest_complete_stopped
from .config import KEYS, SyncConfig, load_config
from .errors import NothingToRestore, RemoteError, ResumeError, SyncdError
from .locking import running_pid
from .overlap import check_overlap

log = logging.getLogger("syncd.hf")

# EX_TEMPFAIL from sysexits.h: "try again later", which is exactly what a resume does.
# Distinct from 143 (killed by SIGTERM before anything was saved) and from 1 (a failure).
PREEMPTED_EXIT_CODE = 75
START_TIMEOUT_SECONDS = 60.0  # `syncd start` itself gives up after 30 s; this only bounds a hang
POLL_SECONDS = 0.5


# -- where to resume from ------------------------------------------------------------


def find_resume(sync: SyncConfig, *, restore=None,
                start_over: str = "train without resume_from_checkpoint to start a new run"
                ) -> tuple[Path | None, str]:
    """The checkpoint to resume from and one line saying why; restores from the remote if needed.

    Call it before training starts, when no writer is active (completeness.py's
    ``WRITER_STOPPED``).

    1. the newest *complete* local checkpoint: its marker matches, or, without one, it
       is a candidate (``trainer_state.json``, no sentinel) and nothing writes it now;
    2. else, with a remote, its newest committed checkpoint, restored (and verified) into
       ``output_dir/checkpoint-N``; a remote that cannot be read raises RemoteError (it
       is not "nothing there": starting over would fork the run);
    3. else, when ``output_dir`` holds checkpoint folders but none is usable, ResumeError
       rather than silently starting over on top of them;
    4. else (None, why): there is truly nothing anywhere.

    ``start_over`` is the hint the errors give for deliberately starting over.
    """
    output_dir = sync.output_dir
    check_overlap(output_dir, sync.remote_url, sync.run_name)
    local = newest_complete_stopped(output_dir)
    if local is not None:
        return local.path, f"resuming from {local.path} (newest complete local checkpoint, step {local.step})"
    if sync.remote_url:
        try:
            restored = (restore or api.restore)(sync)
        except NothingToRestore:
            restored = None
        except RemoteError as e:
            raise RemoteError(f"cannot tell whether {sync.remote_url} holds a checkpoint of this run ({e}); "
                              f"not starting over: fix the remote and run again, or {start_over}") from None
        if restored is not None:
            return Path(restored), f"resuming from {restored}, restored from the remote {sync.remote_url}"
    present = scan_local(output_dir)
    if present:
        names = ", ".join(f"{c.name} ({c.reason})" for c in present)
        where = " and the remote has none" if sync.remote_url else ""
        raise ResumeError(f"{output_dir} holds checkpoints but none is usable{where}: {names}; "
                          f"{start_over} or pass a checkpoint's path to force one")
    remote = f" or on the remote {sync.remote_url}" if sync.remote_url else ""
    return None, f"starting fresh: no checkpoint in {output_dir}{remote}"


def resume_checkpoint(config: str | os.PathLike[str] | SyncConfig, **overrides: Any) -> str | None:
    """The path for ``trainer.train(resume_from_checkpoint=...)``, or None when there is nothing anywhere.

    Restores the remote's newest committed checkpoint first when the local folder has
    no complete one. Raises RemoteError when the remote cannot be read, ResumeError
    when the local folder holds only unusable checkpoints (both SyncdErrors).
    Under torch.distributed, rank 0 decides (and restores) first, then each other
    node's first process, then the rest (``_in_turns``): call it once the Trainer is
    built, which is when the process group exists.
    """
    sync = config if isinstance(config, SyncConfig) else load_config(config, overrides)
    with _in_turns():
        path, why = find_resume(sync)
    log.info("%s", why)
    return str(path) if path is not None else None


# -- the distributed bits (torch only when it is already loaded and initialised) -----


def _dist():
    """torch.distributed when a process group is up, else None; never imports torch itself."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    dist = torch.distributed
    return dist if dist.is_available() and dist.is_initialized() else None


def _barrier() -> None:
    dist = _dist()
    if dist is not None:
        dist.barrier()


def _any_rank(flag: bool) -> bool:
    """True on every rank when it is True on any (a MAX all-reduce of one number)."""
    dist = _dist()
    if dist is None:
        return flag
    import torch

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


@contextlib.contextmanager
def _in_turns():
    """World rank 0 first, then the first process of every other node, then the rest.

    So one process per disk restores (a shared disk: rank 0; a disk per node: each
    node's first process) and the others find the local copy. Three barriers on every
    rank, also when the body raises, so no rank is left waiting.
    """
    dist = _dist()
    if dist is None:
        yield
        return
    rank = dist.get_rank()
    turn = 0 if rank == 0 else 1 if int(os.environ.get("LOCAL_RANK", rank)) == 0 else 2
    for _ in range(turn):
        dist.barrier()
    try:
        yield
    finally:
        for _ in range(turn, 3):
            dist.barrier()


# -- the pieces a callback (ours or the TESS trainer's) is made of --------------------


def checkpoint_dir(args, state) -> Path:
    return Path(args.output_dir) / f"checkpoint-{state.global_step}"


def _marks(args) -> bool:
    """Whether this process writes the marker: the one the Trainer saves with
    (``args.should_save``), and each node's first process, whose disk may hold only its
    ranks' ``rng_state_{rank}.pth`` (several nodes without a shared disk: parts.py).
    On a shared disk two processes then write one marker; each write is atomic and both
    list the same files, written before the barrier."""
    return bool(args.should_save or getattr(args, "local_process_index", None) == 0)


def mark_saved_checkpoint(args, state) -> Path | None:
    """Call from ``on_save`` on every rank: after all have written, the writer adds the marker.

    The writers are the process the Trainer saves with (``args.should_save``: world rank
    0, or each node's first process with ``save_on_each_node``) and every node's first
    process (``_marks``). Returns the folder.
    """
    _barrier()  # every rank's rng_state_{rank}.pth (and shards) are on disk
    ckpt = checkpoint_dir(args, state)
    wrote = None
    if _marks(args) and ckpt.is_dir():
        write_checkpoint_marker(ckpt, state.global_step)
        wrote = ckpt
    _barrier()  # nobody moves on (or rotates it away) before the marker exists
    return wrote


def drop_stale_marker(args, state) -> None:
    """Before checkpoint-N is saved again (a run resumed from an earlier step), its old
    marker must not vouch for files that are being rewritten."""
    if _marks(args):
        (checkpoint_dir(args, state) / MARKER).unlink(missing_ok=True)


def _ensure_visible() -> None:
    """Scripts that configure no logging still see our few lines (on stderr, once)."""
    if not logging.getLogger().handlers and not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s syncd.hf %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


class _PreemptionHooks:
    """SIGTERM → finish the step, save checkpoint-N with the marker, stop, exit.

    ``exit_on_preemption=False`` leaves the exit to the script: after ``train()``
    returns, ``stopped_at`` holds the step that was saved (None when not preempted).
    """

    def __init__(self, *, signals: tuple[int, ...] = (signal.SIGTERM,), exit_on_preemption: bool = True,
                 resume_hint: str | None = None) -> None:
        self.signals = tuple(signals)
        self.exit_on_preemption = exit_on_preemption
        self.resume_hint = resume_hint
        self.requested: int | None = None  # the signal number, set by the handler
        self.stopped_at: int | None = None  # the step saved because of it
        self._previous: dict[int, Any] = {}
        _ensure_visible()

    # The handler only records: it runs between two bytecodes of the training loop.
    def _on_signal(self, signum, _frame) -> None:
        if self.requested is None:
            self.requested = signum

    def _install(self) -> None:
        if not self.signals or self._previous:
            return
        if threading.current_thread() is not threading.main_thread():
            log.warning("not in the main thread: SIGTERM will not trigger a checkpoint before exit")
            return
        for s in self.signals:
            self._previous[s] = signal.signal(s, self._on_signal)

    def _uninstall(self) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def on_train_begin(self, args, state, control, **kwargs):
        self._install()

    def on_step_end(self, args, state, control, **kwargs):
        if self.stopped_at is None and self.signals and _any_rank(self.requested is not None):
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
            if state.is_world_process_zero:
                name = signal.Signals(self.requested).name if self.requested else "a signal on another rank"
                log.warning("%s: saving checkpoint-%d after this step, then stopping", name, state.global_step)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self._uninstall()  # from here on a SIGTERM acts as it would have without us
        if self.stopped_at is not None and self.exit_on_preemption:
            self.exit(args, state)

    def summary(self, args) -> str:
        ckpt = Path(args.output_dir) / f"checkpoint-{self.stopped_at}"
        hint = self.resume_hint or f"trainer.train(resume_from_checkpoint={str(ckpt)!r})"
        return f"preempted: saved {ckpt.name}; resume with {hint}"

    def exit(self, args, state) -> None:
        """One line from the main process, the process group torn down, SystemExit(75) everywhere."""
        if state.is_world_process_zero:
            print(self.summary(args), file=sys.stderr, flush=True)
        dist = _dist()
        if dist is not None:
            dist.barrier()
            dist.destroy_process_group()  # a rank that just exits can abort in gloo's teardown
        raise SystemExit(PREEMPTED_EXIT_CODE)


class _SyncdHooks(_PreemptionHooks):
    """The marker on every save, preemption saves, and a bounded wait for the last commit."""

    def __init__(self, config: str | os.PathLike[str] | None = None, *, wait_timeout_seconds: float | None = None,
                 wait_at_end: bool = True, start_daemon: bool = True, preemption: bool = True,
                 exit_on_preemption: bool = True, resume_hint: str | None = None) -> None:
        self.config_path = Path(config) if config is not None else None
        if resume_hint is None and self.config_path is not None:
            resume_hint = f"trainer.train(resume_from_checkpoint=resume_checkpoint({str(config)!r}))"
        super().__init__(signals=(signal.SIGTERM,) if preemption else (), exit_on_preemption=exit_on_preemption,
                         resume_hint=resume_hint)
        self.sync = load_config(self.config_path) if self.config_path is not None else None  # bad config: now
        default_wait = self.sync.wait_timeout_seconds if self.sync else KEYS["syncd_wait_timeout_seconds"].default
        self.wait_timeout_seconds = default_wait if wait_timeout_seconds is None else float(wait_timeout_seconds)
        self.wait_at_end = wait_at_end and (self.sync.wait_at_end if self.sync else True)
        self.start_daemon = start_daemon
        self.committed: str | None = None  # where the last checkpoint's copy is, once the wait saw it

    def on_train_begin(self, args, state, control, **kwargs):
        if self.sync is not None and self.sync.output_dir != Path(args.output_dir).resolve():
            raise SyncdError(f"{self.config_path} has output_dir {self.sync.output_dir}, but the Trainer saves to "
                             f"{Path(args.output_dir).resolve()}: syncd would never see its checkpoints")
        # One daemon per disk: the saving process's, and with several nodes (parts.py)
        # every node's first process's, since each node mirrors its own part.
        if self.sync is not None and self.start_daemon and (args.should_save or self.sync.nodes > 1 and getattr(
                args, "local_process_index", None) == 0):
            self._start_daemon()
        super().on_train_begin(args, state, control, **kwargs)

    def _start_daemon(self) -> None:
        pid = running_pid(self.sync.state_dir)
        if pid is not None:
            log.info("syncd (pid %d) already runs for %s", pid, self.sync.output_dir)
            return
        cmd = [sys.executable, "-m", "syncd", "start", str(self.config_path.resolve())]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=START_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            raise SyncdError(f"syncd start {self.config_path} did not answer in {START_TIMEOUT_SECONDS:.0f} s") \
                from None
        if r.returncode != 0:
            lines = (r.stderr or r.stdout).strip().splitlines()
            raise SyncdError(f"syncd start {self.config_path} failed: {lines[-1] if lines else r.returncode}")
        log.info("%s", r.stdout.strip())

    def on_step_end(self, args, state, control, **kwargs):
        control = super().on_step_end(args, state, control, **kwargs) or control
        if control.should_save:
            drop_stale_marker(args, state)
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        if control.should_save:
            drop_stale_marker(args, state)
        return control

    def on_save(self, args, state, control, **kwargs):
        ckpt = mark_saved_checkpoint(args, state)
        if ckpt is not None:
            log.info("%s complete: marker written", ckpt.name)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self._uninstall()
        if self.stopped_at is not None:
            # A notice of 30 s cannot wait for an upload: the checkpoint is safe on local
            # disk, and syncd goes on sending it for as long as it is left running.
            if self.exit_on_preemption:
                self.exit(args, state)
            return control
        if self.wait_at_end and args.should_save:
            self._wait_for_commit(args)
        return control

    # -- the wait at the end ----------------------------------------------------------
    def _wait_for_commit(self, args) -> None:
        out = Path(args.output_dir).resolve()
        newest = newest_complete_stopped(out)  # training has ended: nothing writes a checkpoint
        if newest is None:
            return
        pid = running_pid(out / ".syncd")
        if pid is None:
            how = f"syncd start {self.config_path}" if self.config_path else "syncd start CONFIG"
            log.warning("syncd is not running for %s: %s is only on local disk (%s mirrors it)", out, newest.name,
                        how)
            return
        log.info("waiting up to %.0f s for syncd (pid %d) to commit %s", self.wait_timeout_seconds, pid, newest.name)
        start = time.monotonic()
        where = self._wait_with_config(newest.name) if self.sync else self._wait_on_status(out, newest.name)
        if where:
            self.committed = where
            log.info("%s committed to %s (waited %.1f s)", newest.name, where, time.monotonic() - start)
        else:
            log.warning("%s not committed after %.0f s; syncd keeps uploading while it runs (`syncd wait` "
                        "tells when)", newest.name, self.wait_timeout_seconds)

    def _wait_with_config(self, name: str) -> str | None:
        ok = api.wait_committed(self.sync, timeout_seconds=self.wait_timeout_seconds, include_final=False)
        return f"{self.sync.remote_url}/{self.sync.run_name}/{name}" if ok else None

    def _wait_on_status(self, out: Path, name: str) -> str | None:
        """Without a config, the running daemon's own status.json says what it committed."""
        deadline = time.monotonic() + self.wait_timeout_seconds
        status_file = out / ".syncd" / "status.json"
        while True:
            try:
                status = json.loads(status_file.read_text())
            except (OSError, ValueError):
                status = {}
            if name in (status.get("committed") or []) and name not in (status.get("stale") or []):
                return f"{status.get('remote')}/{status.get('run')}/{name}"
            if time.monotonic() >= deadline or running_pid(out / ".syncd") is None:
                return None
            time.sleep(POLL_SECONDS)


@cache
def _callback_classes() -> dict[str, type]:
    from transformers import TrainerCallback  # the one place syncd imports transformers

    def make(name: str, bases: tuple[type, ...], doc: str) -> type:
        return type(name, bases, {"__module__": __name__, "__qualname__": name, "__doc__": doc})

    preemption = make("PreemptionCallback", (_PreemptionHooks, TrainerCallback),
                      "A TrainerCallback: on SIGTERM, save a checkpoint at the step end and exit "
                      f"with {PREEMPTED_EXIT_CODE}. " + (_PreemptionHooks.__doc__ or ""))
    syncd = make("SyncdCallback", (_SyncdHooks, preemption),
                 "A TrainerCallback: syncd's marker on every save, preemption saves, and a bounded wait "
                 "for the newest checkpoint's commit at the end. " + (_SyncdHooks.__doc__ or ""))
    return {"PreemptionCallback": preemption, "SyncdCallback": syncd}


def __getattr__(name: str) -> type:
    if name in ("SyncdCallback", "PreemptionCallback"):
        return _callback_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

