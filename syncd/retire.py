"""Local removals: retiring checkpoint folders, dropping staged copies, relieving a full disk.

    output_dir/.syncd/trash/<name>.<ns>   a folder being retired: renamed here first, so
                                          a delete killed half-way never leaves a half
                                          checkpoint where the trainer or restore looks;
                                          emptied when the daemon starts

Which folders go is policy.py's decision (``local_retire``, ``disk_pressure_retire``);
this module only carries it out.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from . import policy
from .checkpoints import LocalCheckpoint
from .faults import crash_point
from .stage import staged_names, unstage

log = logging.getLogger("syncd")


def empty_trash(trash: Path) -> None:
    """At start: finish retirements a kill interrupted."""
    shutil.rmtree(trash, ignore_errors=True)


def retire(ckpt: LocalCheckpoint, trash: Path, error: Callable[[str, str], None]) -> None:
    """Rename into trash first, then delete; ``error(message, name)`` when it cannot."""
    trash.mkdir(parents=True, exist_ok=True)
    dest = trash / f"{ckpt.name}.{time.time_ns()}"
    try:
        os.rename(ckpt.path, dest)
    except FileNotFoundError:
        return  # the trainer's rotation was first
    except OSError as e:
        error(f"{ckpt.name}: cannot retire: {e.strerror}", ckpt.name)
        return
    crash_point("mid_retire")
    shutil.rmtree(dest, ignore_errors=True)
    why = "complete" if ckpt.complete else f"incomplete and stale: {ckpt.reason}"
    log.info("%s: local copy retired (%s)", ckpt.name, why)


def drop_staged(staging: Path, keep: Iterable[str], forget: Callable[[str], None]) -> None:
    """Remove every staged copy not in ``keep``; ``forget(name)`` drops its upload state.

    Only a pass that knows what the remote holds may call this: a staged copy whose
    local folder is gone may be the last copy anywhere.
    """
    keep = set(keep)
    for name in staged_names(staging):
        base = name.removesuffix(".tmp")
        if base not in keep:
            unstage(staging, base)
            if not name.endswith(".tmp"):
                forget(name)


def disk_free(output_dir: Path) -> shutil._ntuple_diskusage | None:
    try:
        return shutil.disk_usage(output_dir if output_dir.exists() else output_dir.parent)
    except OSError:
        return None


def short_of_space(du, min_free_gb: float) -> bool:
    return du is not None and min_free_gb > 0 and du.free < min_free_gb * 1e9


def relieve_disk(local: list[LocalCheckpoint], views: list, committed: list[int], best: int | None,
                 trash: Path, error: Callable[[str, str], None], why: str) -> None:
    """Retire what ``policy.disk_pressure_retire`` allows: all but the newest complete, the
    newest committed, and the best while it is the only copy."""
    doomed = policy.disk_pressure_retire(views, committed, best=best)
    log.warning("%s; retiring %s", why, ", ".join(f"checkpoint-{s}" for s in doomed)
                or "nothing (already at the minimum)")
    for c in local:
        if c.step in doomed:
            retire(c, trash, error)
