"""syncd as a library, for the trainer and for scripts: restore, is-running, wait."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path

from .checkpoints import FINAL_NAME, LocalCheckpoint, inspect_final, scan_local
from .config import SyncConfig
from .errors import RemoteError
from .locking import running_pid
from .remote_state import RemoteCheckpoint, RemoteIndex
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
    return RemoteIndex(remote, cfg.run_name, cfg.manifest_key)


def daemon_running(output_dir: Path) -> bool:
    return running_pid(Path(output_dir) / ".syncd") is not None


def pending(cfg: SyncConfig, entries: list[RemoteCheckpoint], include_final: bool = True) -> list[str]:
    """Names that must still be committed: the newest local checkpoint, and the final model."""
    local = [c for c in scan_local(cfg.output_dir, cfg.settle_seconds)
             if c.complete or c.reason == "settling"]
    want: list[LocalCheckpoint] = local[-1:]
    if include_final:
        final = inspect_final(cfg.output_dir, cfg.settle_seconds)
        if final is not None and (final.complete or final.reason == "settling"):
            want.append(final)
    committed = {e.name: e for e in entries if e.committed}
    out = []
    for c in want:
        entry = committed.get(c.name)
        if entry is None:
            out.append(c.name)
        elif c.name == FINAL_NAME and not _final_matches(c, entry):
            out.append(c.name)
    return out


def _final_matches(final: LocalCheckpoint, entry: RemoteCheckpoint) -> bool:
    """The remote final model holds the local files (sizes) and is newer than them."""
    assert entry.manifest is not None
    if {f.path: f.size for f in final.files} != {f.path: f.size for f in entry.manifest.files}:
        return False
    try:
        created = datetime.fromisoformat(entry.manifest.created).timestamp()
    except ValueError:
        return False
    return created >= final.newest_mtime - 1.0


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
