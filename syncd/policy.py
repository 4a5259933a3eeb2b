"""Retention and upload ordering as pure functions of a snapshot of state.

Nothing here touches a disk, a thread or a clock: the daemon gathers a ``View`` of
each checkpoint, asks these functions what to do, and applies the answer. That is
what lets the invariants be tested as tables and with hypothesis.

Invariants these functions keep (DESIGN.md):
- the newest complete local checkpoint is never retired;
- a remote checkpoint is pruned only when ``keep`` newer ones are committed, so
  the last good copy is never deleted;
- an incomplete folder is left alone while it may still be written.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class View:
    """What the policy needs to know about one local checkpoint."""

    step: int
    complete: bool
    changed_at: float = 0.0  # when its contents last changed, on the clock ``now`` is read from


def upload_plan(local: Iterable[View], committed: Iterable[int], keep: int) -> list[int]:
    """Steps to upload, newest first.

    The remote should end up holding the newest ``keep`` of everything known
    (committed remotely or complete locally); upload the ones it lacks. A local
    checkpoint older than that window is never sent: it would be pruned at once.
    """
    committed = set(committed)
    known = committed | {v.step for v in local if v.complete}
    window = sorted(known, reverse=True)[:keep]
    return [s for s in window if s not in committed]


def remote_prune(committed: Iterable[int], keep: int) -> list[int]:
    """Committed steps beyond the newest ``keep``; only ever older than ``keep`` commits."""
    ordered = sorted(set(committed), reverse=True)
    return ordered[max(keep, 1):]


def local_retire(
    local: Sequence[View],
    keep: int,
    *,
    best_step: int | None = None,
    now: float,
    stale_seconds: float,
    protect: Iterable[int] = (),
) -> list[int]:
    """Local steps to retire.

    Keep the newest ``keep`` complete checkpoints, the best one, the newest complete
    one always, and anything in ``protect`` (say, not yet staged for upload). An
    incomplete folder goes only when it is stale (untouched ``stale_seconds``) and
    superseded (a newer complete checkpoint exists).
    """
    complete = sorted((v.step for v in local if v.complete), reverse=True)
    keep_set = set(complete[: max(keep, 1)]) | set(protect)
    if best_step is not None:
        keep_set.add(best_step)
    newest_complete = complete[0] if complete else None
    out = []
    for v in local:
        if v.complete:
            if v.step not in keep_set:
                out.append(v.step)
        elif (
            newest_complete is not None
            and v.step < newest_complete
            and now - v.changed_at >= stale_seconds
            and v.step not in keep_set
        ):
            out.append(v.step)
    return sorted(out)


def disk_pressure_retire(
    local: Sequence[View], committed: Iterable[int], protect: Iterable[int] = ()
) -> list[int]:
    """Under low disk: keep only the newest complete and the newest committed checkpoint."""
    complete = sorted((v.step for v in local if v.complete), reverse=True)
    if not complete:
        return []
    keep_set = {complete[0]} | set(protect)
    committed_local = sorted(set(committed) & set(complete), reverse=True)
    if committed_local:
        keep_set.add(committed_local[0])
    return sorted(s for s in complete if s not in keep_set)


def stray_remote(partials: Iterable[str], uncommitted: Iterable[str], wanted: Iterable[str]) -> list[str]:
    """Remote folders that are neither committed nor wanted by the upload plan."""
    wanted = set(wanted)
    return sorted(n for n in set(partials) | set(uncommitted) if n.removesuffix(".partial") not in wanted)
