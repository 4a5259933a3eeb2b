"""syncd as a library, for the trainer and for scripts: restore, is-running, wait."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from . import freshness
from .checkpoints import LocalCheckpoint, inspect_final, scan_local
from .config import SyncConfig
from .errors import RemoteError
from .identity import read_local_record
from .locking import running_pid
from .remote_state import RemoteIndex, Snapshot
from .remotes import Remote, open_remote
from .restore import restore as _restore

log = logging.getLogger("syncd")


def restore(cfg: SyncConfig, step: int | None = None, to: Path | None = None, progress: bool = False) -> Path:
    """Newest (or ``step``) committed checkpoint into ``(to or output_dir)/checkpoint-N``, verified."""
    remote = open_remote(cfg)
    try:
        return _restore(remote, cfg.run_name, Path(to) if to else cfg.output_dir, step=step, progress=progress,
                        key=cfg.manifest_key)
    finally:
        remote.close()


def index_for(cfg: SyncConfig, remote: Remote) -> RemoteIndex:
    """This output folder's view of the remote run: attributed by its run id when it has one."""
    return RemoteIndex(remote, cfg.run_name, cfg.manifest_key, read_local_record(cfg.state_dir))


def daemon_running(output_dir: Path) -> bool:
    return running_pid(Path(output_dir) / ".syncd") is not None


def pending(cfg: SyncConfig, snap: Snapshot, include_final: bool = True) -> list[str]:
    """Names that must still be committed: the newest local checkpoint, and the final model.

    A committed copy counts only when it holds the local bytes (freshness.py): a step
    saved again with other contents is pending until its new version is committed.
    """
    local = [c for c in scan_local(cfg.output_dir, cfg.settle_seconds)
             if c.complete or c.reason == "settling"]
    want: list[LocalCheckpoint] = local[-1:]
    if include_final:
        final = inspect_final(cfg.output_dir, cfg.settle_seconds)
        if final is not None and (final.complete or final.reason == "settling"):
            want.append(final)
    copies = snap.restorable() if isinstance(snap, Snapshot) else {e.base: e for e in snap if e.committed}
    out = []
    for c in want:
        entry = copies.get(c.name)
        if entry is None or entry.manifest is None or not c.complete or not freshness.same_as_committed(
                cfg.state_dir, c.name, c.path, c.files, entry.manifest, entry.name):
            out.append(c.name)
    return out


def wait_committed(cfg: SyncConfig, timeout_seconds: float, include_final: bool = True,
                   poll_seconds: float = 0.5) -> bool:
    """Block until the newest complete checkpoint (and the final model) is committed."""
    remote = open_remote(cfg)
    index = index_for(cfg, remote)
    deadline = time.monotonic() + timeout_seconds
    try:
        while True:
            try:
                left = pending(cfg, index.scan(), include_final)
            except RemoteError as e:
                log.warning("waiting: remote not readable yet (%s)", e)
                left = ["?"]
            if not left:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll_seconds)
    finally:
        remote.close()
