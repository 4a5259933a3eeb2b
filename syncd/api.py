"""syncd as a library, for the trainer and for scripts: restore, is-running, wait."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from . import completeness, freshness, parts
from .checkpoints import LocalCheckpoint, inspect_final, scan_local
from .config import SyncConfig
from .errors import RemoteError
from .fsutil import read_json
from .identity import read_local_record
from .locking import running_pid
from .remote_state import RemoteIndex, Snapshot
from .remotes import Remote, open_remote
from .restore import restore as _restore

log = logging.getLogger("syncd")


def restore(cfg: SyncConfig, step: int | None = None, to: Path | None = None, progress: bool = False,
            best: bool = False) -> Path:
    """Newest (or ``step``, or the best) committed checkpoint into ``(to or output_dir)/checkpoint-N``, verified."""
    remote = open_remote(cfg)
    try:
        if cfg.nodes > 1:  # every node's part of one checkpoint, or none (parts.py)
            return parts.restore_set(remote, cfg.run, cfg.nodes, cfg.node_rank, Path(to) if to else cfg.output_dir,
                                     step=step, best=best, progress=progress, key=cfg.manifest_key)
        return _restore(remote, cfg.run_name, Path(to) if to else cfg.output_dir, step=step, best=best,
                        progress=progress, key=cfg.manifest_key)
    finally:
        remote.close()


def index_for(cfg: SyncConfig, remote: Remote) -> RemoteIndex:
    """This output folder's view of the remote run: attributed by its run id when it has one."""
    return RemoteIndex(remote, cfg.run_name, cfg.manifest_key, read_local_record(cfg.state_dir))


def daemon_running(output_dir: Path) -> bool:
    return running_pid(Path(output_dir) / ".syncd") is not None


def local_verdicts(cfg: SyncConfig) -> dict[str, bool]:
    """The running daemon's completeness verdicts (completeness.py); empty without one."""
    if running_pid(cfg.state_dir) is None:
        return {}
    return completeness.from_status(read_json(cfg.state_dir / "status.json", default=None))


def judged_local(cfg: SyncConfig, verdicts: dict[str, bool]) -> list[LocalCheckpoint]:
    """Local checkpoints and the final model, complete where a marker or the daemon says so."""
    found = scan_local(cfg.output_dir)
    final = inspect_final(cfg.output_dir)
    out = []
    for c in found + ([final] if final is not None else []):
        quiet = completeness.WRITER_STOPPED if verdicts.get(c.name) else 0.0
        out.append(completeness.judge(c, quiet, cfg.settle_seconds))
    return out


def pending(cfg: SyncConfig, snap: Snapshot, include_final: bool = True,
            verdicts: dict[str, bool] | None = None, elsewhere: set[str] | None = None) -> list[str]:
    """Names that must still be committed: the newest local checkpoint, and the final model.

    Completeness is the daemon's verdict (``verdicts``, from its status) or a marker; a
    folder still settling is pending too. A committed copy counts only when it holds
    the local bytes (freshness.py): a step saved again with other contents is pending
    until its new version is committed. With several nodes (parts.py), ``elsewhere`` names
    the checkpoints every other node's part has committed: one missing there is pending.
    """
    judged = [c for c in judged_local(cfg, verdicts or {})
              if c.complete or c.reason == completeness.AWAITING_QUIET]
    local = [c for c in judged if not c.is_final]
    want: list[LocalCheckpoint] = local[-1:]
    if include_final:
        want += [c for c in judged if c.is_final]
    copies = snap.restorable() if isinstance(snap, Snapshot) else {e.base: e for e in snap if e.committed}
    out = []
    for c in want:
        entry = copies.get(c.name)
        if entry is None or entry.manifest is None or not c.complete or not freshness.same_as_committed(
                cfg.state_dir, c.name, c.path, c.files, entry.manifest, entry.name,
                superset=cfg.nodes > 1 and not c.is_final):
            out.append(c.name)
        elif elsewhere is not None and not c.is_final and c.name not in elsewhere:
            out.append(c.name)
    return out


def _progress_mark(cfg: SyncConfig) -> tuple:
    """What changes in the daemon's status when something may have been committed."""
    doc = read_json(cfg.state_dir / "status.json", default=None) or {}
    return (doc.get("pid"), doc.get("commits"), doc.get("last_pass_at"), tuple(doc.get("queue") or ()),
            (doc.get("current") or {}).get("name"), tuple(sorted((doc.get("local") or {}).items(), key=str)))


def wait_committed(cfg: SyncConfig, timeout_seconds: float, include_final: bool = True,
                   poll_seconds: float = 5.0, watch_seconds: float = 0.05) -> bool:
    """Block until the newest complete checkpoint (and the final model) is committed.

    The remote is read when the daemon's status shows progress (a commit, a pass), and
    at least every ``poll_seconds``; between reads only the local status file is
    watched, so ``wait`` returns moments after a commit without listing a network
    remote many times a second.
    """
    remote = open_remote(cfg)
    index = index_for(cfg, remote)
    deadline = time.monotonic() + timeout_seconds
    seen, next_read = None, 0.0
    try:
        while True:
            mark = _progress_mark(cfg)
            now = time.monotonic()
            if mark != seen or now >= next_read:
                seen, next_read = mark, now + poll_seconds
                try:
                    elsewhere = parts.committed_names_elsewhere(
                        remote, cfg.run, cfg.nodes, cfg.node_rank, cfg.manifest_key,
                        read_local_record(cfg.state_dir)) if cfg.nodes > 1 else None
                    left = pending(cfg, index.scan(), include_final, local_verdicts(cfg), elsewhere)
                except RemoteError as e:
                    log.warning("waiting: remote not readable yet (%s)", e)
                    left = ["?"]
                if not left:
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(watch_seconds)
    finally:
        remote.close()
