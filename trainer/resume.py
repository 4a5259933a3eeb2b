"""Where a run resumes from: ``resume_from_checkpoint`` of auto, a path, or false.

``auto`` never trusts the highest-numbered folder (a save killed half-way leaves one):

    1. the newest *complete* local checkpoint (marker matches, or settled without one);
    2. else, when a remote is configured, its newest committed checkpoint, restored
       into ``output_dir/checkpoint-N`` first (syncd verifies it); a remote that could
       not be read stops the run (it is not "nothing there": starting over would
       fork the run);
    3. else, if ``output_dir`` holds checkpoint folders but none is usable: an error,
       rather than silently starting over on top of them;
    4. else a fresh start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syncd.checkpoints import inspect_checkpoint, newest_complete, scan_local
from syncd.config import SyncConfig
from syncd.errors import NothingToRestore, RemoteError, SyncdError
from syncd.overlap import check_overlap

logger = logging.getLogger("tessync.trainer")


class ResumeError(SyncdError):
    """No usable checkpoint where one was expected."""

    exit_code = 2


@dataclass(frozen=True)
class ResumePlan:
    path: Path | None  # the checkpoint folder to resume from; None starts fresh
    why: str  # one line for the log

    @property
    def fresh(self) -> bool:
        return self.path is None


def _restore_from_remote(sync: SyncConfig) -> Path | None:
    try:
        from syncd import api  # late: only needed when restoring
    except ImportError:
        logger.warning("this syncd has no restore API; not looking for a checkpoint on the remote")
        return None
    try:
        return Path(api.restore(sync))
    except NothingToRestore:
        return None
    except RemoteError as e:
        raise RemoteError(f"cannot tell whether {sync.remote_url} holds a checkpoint of this run ({e}); "
                          "not starting over: fix the remote and run again, or pass "
                          "--resume_from_checkpoint false to start a new run") from None


def plan_resume(setting: Any, sync: SyncConfig, *, restore=_restore_from_remote) -> ResumePlan:
    """Decide where to resume from; may restore from the remote (step 2 above)."""
    output_dir = sync.output_dir
    check_overlap(output_dir, sync.remote_url, sync.run_name)
    if setting is None or setting is False or (isinstance(setting, str) and setting.lower() == "false"):
        return ResumePlan(None, "starting fresh (resume_from_checkpoint is false)")
    if isinstance(setting, str) and setting.lower() not in ("auto", "true"):
        path = Path(setting).expanduser()
        if not path.is_dir():
            raise ResumeError(f"resume_from_checkpoint {setting} is not a folder")
        ckpt = inspect_checkpoint(path, sync.settle_seconds)
        if not ckpt.complete:
            logger.warning("resume_from_checkpoint %s looks incomplete (%s); using it as asked", path, ckpt.reason)
        return ResumePlan(path, f"resuming from {path} (given in resume_from_checkpoint)")
    local = newest_complete(output_dir, sync.settle_seconds)
    if local is not None:
        return ResumePlan(local.path, f"resuming from {local.path} (newest complete local checkpoint, "
                                      f"step {local.step})")
    if sync.remote_url:
        restored = restore(sync)
        if restored is not None:
            return ResumePlan(restored, f"resuming from {restored}, restored from the remote {sync.remote_url}")
    present = scan_local(output_dir, sync.settle_seconds)
    if present:
        names = ", ".join(f"{c.name} ({c.reason})" for c in present)
        where = " and the remote has none" if sync.remote_url else ""
        raise ResumeError(f"{output_dir} holds checkpoints but none is usable{where}: {names}; "
                          f"pass --resume_from_checkpoint false to start over or a path to force one")
    remote = f" or on the remote {sync.remote_url}" if sync.remote_url else ""
    return ResumePlan(None, f"starting fresh: no checkpoint in {output_dir}{remote}")
