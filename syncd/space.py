"""Whether the remote can hold what syncd must keep there, checked before the first upload.

What must fit: the newest ``backup_keep_last`` checkpoints, the best one when it is
older, and one copy in flight, each taken as the size of the newest local checkpoint.
Our own committed copies already count as used, so they are added back to what is
free. Drive's free tier is 15 GB: three roberta-base checkpoints and a best are ~6 GB.
"""

from __future__ import annotations

import logging

from .errors import RemoteError
from .reconcile import World
from .remotes.base import Remote

log = logging.getLogger("syncd")


def check(remote: Remote, world: World, keep: int) -> dict | None:
    """``{need_bytes, available_bytes, copies[, warning]}``, or None when it cannot be told."""
    if not remote.capabilities.quota:
        return None
    complete = [c for c in world.local if c.complete]
    if not complete:
        return None
    try:
        quota = remote.quota()
    except RemoteError as e:
        log.warning("cannot read the remote's free space: %s", e)
        return None
    if quota is None or quota.free_bytes is None:
        return None
    size = complete[-1].size_bytes
    copies = world.copies() if world.snap is not None else {}
    newest = sorted({c.step for c in complete} | {e.step for e in copies.values() if e.step is not None},
                    reverse=True)
    count = 1 + keep + (1 if world.best is not None and world.best not in newest[:keep] else 0)
    ours = sum(e.manifest.size_bytes for e in copies.values() if e.manifest is not None)
    need, have = count * size, quota.free_bytes + ours
    out = {"need_bytes": need, "available_bytes": have, "copies": count}
    if have < need:
        out["warning"] = (f"the remote may run out of space: keeping {count} copies of ~{size / 1e9:.2f} GB "
                          f"(backup_keep_last={keep}, the best, one in flight) needs {need / 1e9:.2f} GB, and "
                          f"{have / 1e9:.2f} GB is free or ours; lower backup_keep_last or free space")
        log.warning("%s", out["warning"])
    return out
