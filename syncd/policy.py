"""Retention and upload ordering as pure functions of a snapshot of state.

Nothing here touches a disk, a thread or a clock: the daemon gathers a ``View`` of
each checkpoint, asks these functions what to do, and applies the answer. That is
what lets the invariants be tested as tables and with hypothesis.

Invariants these functions keep (DESIGN.md):
- the newest complete local checkpoint is never retired;
- a remote checkpoint is pruned only when ``keep`` newer ones are committed, so
  the last good copy is never deleted;
- an incomplete folder is left alone while it may still be written.

The rules for deleting on the remote (``remote_deletions``), each needing proof:
1. Nothing at all when the scan had a failed read or the run's identity is not
   settled: a read that failed is evidence of nothing (rclone's rule, too).
2. Only folders that are ``ours`` (remote_state.py: our manifest, or our claim on an
   upload that never committed). Foreign, legacy, unreadable and invalid folders
   are reported, never planned, whatever their name.
3. A committed version of a step goes only when a higher committed version of the
   same step is ours (superseded), or when ``keep`` newer steps have committed
   copies of ours (retention) and it is not the best step ``trainer_state.json``
   names. So a committed copy of every kept step, and of the best, exists at every
   moment.
4. Our uncommitted folders go when no upload wants them; ``.deleting`` ones were
   already un-committed by us and are finished.
``deleter.py`` applies each one after reading its proof again.

The rules for deleting locally (the daemon applies them; each folder is renamed into
``.syncd/trash/`` first):
1. ``local_retire``: complete checkpoints beyond ``save_total_limit`` (none when it is
   null), never the newest complete, the best, one the upload plan still wants and has
   not staged, or one restored here that training has not moved past; every complete
   one while the remote could not be read or does not accept this run; incomplete
   folders only once stale and superseded by a newer complete one.
2. ``disk_pressure_retire``: below ``syncd_min_free_gb``, all but the newest complete,
   the newest committed, and the best while it has no committed copy.
3. syncd's own files: staged hard links no upload wants, upload journals of finished
   uploads, the trash at start.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from .remote_state import BEING_DELETED, COMMITTED, IN_FLIGHT, LEFTOVER, OURS, UNCOMMITTED


@dataclass(frozen=True)
class View:
    """What the policy needs to know about one local checkpoint."""

    step: int
    complete: bool
    changed_at: float = 0.0  # when its contents last changed, on the clock ``now`` is read from


def upload_plan(local: Iterable[View], committed: Iterable[int], keep: int,
                best: int | None = None) -> list[int]:
    """Steps to upload, newest first, then the best.

    The remote should end up holding the newest ``keep`` of everything known
    (committed remotely or complete locally), and the best checkpoint that
    ``trainer_state.json`` names; upload the ones it lacks. Any other local
    checkpoint older than that window is never sent: it would be pruned at once.
    """
    local = list(local)
    committed = set(committed)
    known = committed | {v.step for v in local if v.complete}
    window = sorted(known, reverse=True)[:keep]
    plan = [s for s in window if s not in committed]
    if best is not None and best not in committed and best not in window and any(
            v.step == best and v.complete for v in local):
        plan.append(best)
    return plan


def remote_prune(committed: Iterable[int], keep: int) -> list[int]:
    """Committed steps beyond the newest ``keep``; only ever older than ``keep`` commits."""
    ordered = sorted(set(committed), reverse=True)
    return ordered[max(keep, 1):]


def prune_beyond_sets(committed: Iterable[int], sets: Iterable[int], keep: int) -> list[int]:
    """A node's committed parts that may go: those with ``keep`` complete sets newer (parts.py).

    ``sets``: steps every node has committed. A part newer than the ``keep``-th newest
    set is kept even when its set is incomplete, since the other nodes may still be
    sending theirs. With one node the sets are its own commits: ``remote_prune``.
    """
    newer_needed = max(keep, 1)
    ordered = sorted(set(sets), reverse=True)
    if len(ordered) < newer_needed:
        return []
    floor = ordered[newer_needed - 1]  # the keep-th newest complete set
    return sorted(s for s in set(committed) if s < floor)


@dataclass(frozen=True)
class RemoteView:
    """What the remote policy knows of one folder of the run (remote_state.Entry)."""

    name: str
    base: str
    step: int | None
    version: int
    state: str
    owner: str
    has_manifest: bool = False  # a manifest file is there, valid or not
    damaged: bool = False  # committed, but its files no longer match its manifest


@dataclass(frozen=True)
class Deletion:
    name: str
    reason: str
    state: str = COMMITTED  # the state the plan saw: the deleter acts only if it still holds


def remote_deletions(
    entries: Sequence[RemoteView],
    *,
    keep: int,
    in_use: Collection[str] = (),
    clean: bool,
    identity_ok: bool,
    best: int | None = None,
    sets: Collection[int] | None = None,
) -> list[Deletion]:
    """Remote folders to delete, each with the rule that allows it (see the module doc).

    ``in_use``: folder names an upload is writing or will write; ``clean``: every read
    of the scan succeeded; ``identity_ok``: this daemon owns the remote run folder;
    ``best``: the step ``trainer_state.json`` names as best, kept beside the newest ``keep``;
    ``sets``: with several nodes, the steps every node's part has committed (retention
    then counts those, ``prune_beyond_sets``); None for one node.
    """
    if not clean or not identity_ok:
        return []
    ours = [e for e in entries if e.owner == OURS]
    copies: dict[str, RemoteView] = {}
    for e in ours:  # a damaged copy is no copy: it neither keeps a step nor supersedes one
        if e.state == COMMITTED and not e.damaged and (e.base not in copies or e.version > copies[e.base].version):
            copies[e.base] = e
    steps = [c.step for c in copies.values() if c.step is not None]
    beyond = set(remote_prune(steps, keep) if sets is None else prune_beyond_sets(steps, sets, keep)) - {best}
    out = []
    for e in ours:
        if e.name in in_use:
            continue
        copy = copies.get(e.base)
        if e.state == COMMITTED:
            if copy is None:
                continue  # damaged, and nothing better yet: kept until a good version replaces it
            if e.version < copy.version:
                out.append(Deletion(e.name, f"superseded by {copy.name}", e.state))
            elif e.step in beyond and not e.damaged:
                out.append(Deletion(e.name, "pruned (beyond backup_keep_last)", e.state))
        elif e.state in (IN_FLIGHT, UNCOMMITTED):
            if e.state == IN_FLIGHT and e.has_manifest and (copy is None or copy.version < e.version):
                continue  # a commit whose rename was lost: finished, not deleted
            if e.has_manifest:
                continue  # a manifest is there (maybe one we cannot verify now): never "abandoned"
            out.append(Deletion(e.name, "removed (an upload of ours that is no longer wanted)", e.state))
        elif e.state in (BEING_DELETED, LEFTOVER):
            out.append(Deletion(e.name, "removed (finishing an interrupted step)", e.state))
    return out


def local_retire(
    local: Sequence[View],
    keep: int | None,
    *,
    best_step: int | None = None,
    now: float,
    stale_seconds: float,
    protect: Iterable[int] = (),
) -> list[int]:
    """Local steps to retire.

    Keep the newest ``keep`` complete checkpoints (all of them when ``keep`` is None,
    Hugging Face's ``save_total_limit: null``), the best one, the newest complete one
    always, and anything in ``protect`` (say, not yet staged for upload). An
    incomplete folder goes only when it is stale (untouched ``stale_seconds``) and
    superseded (a newer complete checkpoint exists).
    """
    complete = sorted((v.step for v in local if v.complete), reverse=True)
    keep_set = set(complete if keep is None else complete[: max(keep, 1)]) | set(protect)
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
    local: Sequence[View], committed: Iterable[int], protect: Iterable[int] = (), best: int | None = None
) -> list[int]:
    """Under low disk: keep only the newest complete and the newest committed checkpoint,
    and the best one while this is its only copy (not committed)."""
    complete = sorted((v.step for v in local if v.complete), reverse=True)
    if not complete:
        return []
    committed = set(committed)
    keep_set = {complete[0]} | set(protect)
    if best is not None and best not in committed:
        keep_set.add(best)
    committed_local = sorted(set(committed) & set(complete), reverse=True)
    if committed_local:
        keep_set.add(committed_local[0])
    return sorted(s for s in complete if s not in keep_set)
