"""The one place syncd deletes anything on a remote, and the audit that proves it.

Every remote delete the daemon makes is a ``policy.Deletion`` applied here. Before
acting, the folder's evidence is read again (the plan was made from a snapshot that
may be old): it must still be provably ours (remote_state.py), or nothing happens.
Then, in an order that keeps the proof until the end:

    1. un-commit: rename to ``<name>.deleting`` where the remote renames, and delete
       the manifest, so no reader ever takes a half-deleted folder for a backup;
    2. delete the files the manifest lists (all files, for an upload that never
       committed), keeping the claim: a killed prune leaves a folder that still carries
       our claim, which the next pass finishes;
    3. remove the folder, claim and all, unless it holds a file syncd did not write
       (then the folder stays). Listings that lag behind the deletes just made (Drive's
       do) cannot make a folder look foreign: only names syncd never wrote count.

``SYNCD_DELETE_AUDIT=<file>`` (tests) wraps every remote in ``AuditedRemote``,
which appends each delete and each rename of a committed folder to that file,
marked justified only when this module permitted that path first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from .errors import RemoteError
from .faults import crash_point
from .manifest import MANIFEST_NAME
from .policy import Deletion
from .remote_state import (
    CLAIM_NAME,
    DELETING,
    IN_FLIGHT,
    OURS,
    PARTIAL,
    UNCOMMITTED,
    RemoteIndex,
    uncommit,
)
from .remotes.base import Remote, join

log = logging.getLogger("syncd")

_permits: Counter[str] = Counter()  # counted: two deleters may permit one path at once
_permits_lock = threading.Lock()


@contextlib.contextmanager
def permitted(*paths: str) -> Iterator[None]:
    """Allow deletes at or below ``paths`` for the duration (seen by AuditedRemote)."""
    with _permits_lock:
        _permits.update(paths)
    try:
        yield
    finally:
        with _permits_lock:
            _permits.subtract(paths)
            for p in paths:
                if _permits[p] <= 0:
                    del _permits[p]


def is_permitted(path: str) -> bool:
    with _permits_lock:
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in _permits)


class RemoteDeleter:
    """Applies planned deletions on one run folder, re-checking the proof of each."""

    def __init__(self, remote: Remote, index: RemoteIndex) -> None:
        self.remote = remote
        self.index = index
        self.run = index.run

    def apply(self, deletion: Deletion, run_id: str | None) -> bool:
        """Delete one folder the plan named; False when its proof no longer holds."""
        name = deletion.name
        fresh = self.index.read_one(name, run_id) if run_id is not None else None
        if fresh is None:
            return False
        if fresh.owner != OURS:
            log.warning("%s: not deleted: it is no longer provably this run's (%s)", name, fresh.owner)
            return False
        if fresh.state != deletion.state or (fresh.state in (IN_FLIGHT, UNCOMMITTED) and (
                fresh.manifest is not None or fresh.error is not None)):
            # A listing that lagged showed an upload as abandoned that has committed since.
            log.info("%s: not deleted: it is %s now, not %s as planned", name, fresh.state, deletion.state)
            return False
        path = join(self.run, name)
        with permitted(path, path + DELETING):
            if fresh.committed or fresh.suffix == PARTIAL and fresh.manifest is not None:
                path = uncommit(self.remote, self.index, path, fresh)
                crash_point("mid_prune")
            ours = {MANIFEST_NAME, CLAIM_NAME} | {f.path for f in (fresh.manifest.files if fresh.manifest else ())}
            listed = self.remote.list_files(path)
            if fresh.manifest is None:
                ours |= {f.path for f in listed}  # claimed and never (or no longer) committed: all ours
            for f in listed:
                if f.path in ours and f.path != CLAIM_NAME:
                    self.remote.delete(join(path, f.path))
            # A listing may lag behind the deletes just made: only files we never wrote count.
            left = [f for f in self.remote.list_files(path) if f.path not in ours]
            if left:
                log.warning("%s: kept, because it holds files syncd did not write: %s", name,
                            ", ".join(f.path for f in left[:3]))
                return False
            self.remote.delete(path)  # the claim goes last, with the folder
        log.info("%s: remote copy %s", name, deletion.reason)
        return True


class AuditedRemote:
    """A Remote that records every delete, and whether syncd's deleter permitted it."""

    def __init__(self, inner: Remote, audit_file: Path) -> None:
        self._inner = inner
        self._audit = Path(audit_file)
        self._lock = threading.Lock()

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def _record(self, op: str, path: str, justified: bool) -> None:
        line = json.dumps({"op": op, "path": path, "justified": justified, "pid": os.getpid()}) + "\n"
        with self._lock, open(self._audit, "a", encoding="utf-8") as fh:
            fh.write(line)

    def delete(self, prefix: str) -> None:
        self._record("delete", prefix, is_permitted(prefix))
        return self._inner.delete(prefix)

    def rename_dir(self, src: str, dst: str) -> None:
        # Committing (``.partial`` to its name) creates; every other rename moves a copy away.
        if not src.endswith(PARTIAL):
            self._record("rename", src, is_permitted(src))
        return self._inner.rename_dir(src, dst)


def audited(remote: Remote) -> Remote:
    target = os.environ.get("SYNCD_DELETE_AUDIT")
    return AuditedRemote(remote, Path(target)) if target else remote


def unjustified(audit_file: Path) -> list[dict]:
    """The audit lines of deletes nobody permitted (for tests)."""
    try:
        lines = Path(audit_file).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    return [rec for rec in map(json.loads, lines) if not rec["justified"]]


__all__ = ["AuditedRemote", "RemoteDeleter", "RemoteError", "audited", "permitted", "unjustified"]
