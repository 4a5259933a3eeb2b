"""Retention and upload ordering: tables, then hypothesis over whole histories."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd import policy
from syncd.policy import View
from syncd.remote_state import (
    BEING_DELETED,
    COMMITTED,
    FOREIGN,
    IN_FLIGHT,
    INVALID,
    LEFTOVER,
    LEGACY,
    OURS,
    UNCOMMITTED,
    UNREADABLE,
    folder_name,
)


def V(*steps, incomplete=(), mtime=0.0):
    return [View(s, s not in incomplete, mtime) for s in steps]


@pytest.mark.parametrize(
    "local, committed, keep, expected",
    [
        (V(5, 10, 15), [], 2, [15, 10]),  # newest first, window of 2
        (V(5, 10, 15), [10], 2, [15]),  # committed ones are not sent again
        (V(5, 10, 15), [15, 10], 2, []),  # nothing to do
        (V(5), [10, 15], 2, []),  # older than the remote window: never sent
        (V(5, 10, 15, incomplete=(15,)), [], 3, [10, 5]),  # incomplete never uploaded
        (V(), [], 3, []),
    ],
    ids=["newest-first", "skip-committed", "all-done", "outside-window", "skip-incomplete", "empty"],
)
def test_upload_plan(local, committed, keep, expected):
    assert policy.upload_plan(local, committed, keep) == expected


@pytest.mark.parametrize(
    "committed, keep, expected",
    [([1, 2, 3, 4], 3, [1]), ([4, 3], 3, []), ([7], 1, []), ([1, 2], 1, [1]), ([], 2, [])],
)
def test_remote_prune(committed, keep, expected):
    assert policy.remote_prune(committed, keep) == expected


@pytest.mark.parametrize(
    "local, keep, best, protect, expected",
    [
        (V(1, 2, 3, 4), 2, None, (), [1, 2]),
        (V(1, 2, 3, 4), 2, 1, (), [2]),  # the best checkpoint stays
        (V(1, 2, 3, 4), 2, None, (2,), [1]),  # protected (not yet staged) stays
        (V(1, 2, 3, incomplete=(3,)), 1, None, (), [1]),  # newest incomplete: may still be written
        (V(1, 2, 3, incomplete=(2,)), 1, None, (), [1]),  # incomplete but not yet stale
    ],
    ids=["keep-newest", "keep-best", "protect", "newest-incomplete", "fresh-incomplete"],
)
def test_local_retire(local, keep, best, protect, expected):
    assert policy.local_retire(local, keep, best_step=best, now=100.0, stale_seconds=1000.0, protect=protect) == expected


def test_stale_incomplete_is_retired_only_when_superseded():
    local = [View(1, True), View(2, False, changed_at=0.0), View(3, True)]
    assert policy.local_retire(local, 5, now=100.0, stale_seconds=10.0) == [2]
    newest_incomplete = [View(1, True), View(2, False, changed_at=0.0)]
    assert policy.local_retire(newest_incomplete, 5, now=100.0, stale_seconds=10.0) == []


def test_disk_pressure_keeps_newest_and_newest_committed():
    local = V(1, 2, 3, 4)
    assert policy.disk_pressure_retire(local, committed=[2]) == [1, 3]
    assert policy.disk_pressure_retire(local, committed=[]) == [1, 2, 3]
    assert policy.disk_pressure_retire(V(1, incomplete=(1,)), committed=[]) == []


# -- property: for any history, the invariants hold ---------------------------------
events = st.lists(
    st.one_of(
        st.tuples(st.just("save"), st.booleans()),  # a save that completes or is killed half-way
        st.tuples(st.just("upload"), st.booleans()),  # the next upload succeeds or fails
        st.tuples(st.just("restart"), st.just(True)),  # the daemon restarts (no memory)
        st.tuples(st.just("tick"), st.just(True)),  # time passes
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(events, st.integers(1, 4), st.integers(1, 4))
def test_invariants_hold_over_any_history(history, keep_local, keep_remote):
    local: dict[int, View] = {}
    remote: set[int] = set()
    step, now = 0, 0.0
    ever_good = False
    for kind, ok in history:
        now += 1.0
        if kind == "save":
            step += 1
            local[step] = View(step, ok, now)
        elif kind == "upload":
            plan = policy.upload_plan(list(local.values()), remote, keep_remote)
            assert plan == sorted(plan, reverse=True), "newest first"
            if plan and ok:
                assert local[plan[0]].complete, "only complete checkpoints are sent"
                remote.add(plan[0])
        elif kind == "tick":
            now += 50.0
        # the daemon's pass: prune the remote, then retire locally
        committed_before = set(remote)
        for s in policy.remote_prune(remote, keep_remote):
            remote.discard(s)
        assert remote or not committed_before, "pruning removed every remote copy"
        complete = [s for s, v in local.items() if v.complete]
        newest_complete = max(complete, default=None)
        untouchable = {s for s, v in local.items() if not v.complete
                       and (newest_complete is None or s > newest_complete or now - v.changed_at < 20.0)}
        for s in policy.local_retire(list(local.values()), keep_local, now=now, stale_seconds=20.0):
            del local[s]
        if newest_complete is not None:
            assert newest_complete in local, "the newest complete checkpoint was retired"
        assert untouchable <= set(local), "an incomplete folder that may still be written was retired"
        assert sum(v.complete for v in local.values()) <= keep_local
        assert len(remote) <= keep_remote
        good = {s for s, v in local.items() if v.complete} | remote
        ever_good = ever_good or bool(good)
        if ever_good:
            assert good, "the last good copy was deleted"


# -- remote deletions: only on proof -----------------------------------------------------


_SUFFIX = {IN_FLIGHT: ".partial", BEING_DELETED: ".deleting", LEFTOVER: ".old"}


def R(step, state=COMMITTED, owner=OURS, version=1, manifest=None, damaged=False):
    base = f"checkpoint-{step}" if step is not None else "final"
    return policy.RemoteView(folder_name(base, version, _SUFFIX.get(state, "")), base, step, version, state, owner,
                             state == COMMITTED if manifest is None else manifest, damaged)


def names(deletions):
    return sorted(d.name for d in deletions)


@pytest.mark.parametrize(
    "entries, keep, in_use, expected",
    [
        ([R(1), R(2), R(3)], 2, (), ["checkpoint-1"]),
        ([R(1), R(2, owner=FOREIGN), R(3)], 1, (), ["checkpoint-1"]),  # another run's: never
        ([R(1, owner=LEGACY), R(2), R(3)], 1, (), ["checkpoint-2"]),  # made before run ids: never
        ([R(1, INVALID), R(2), R(3)], 1, (), ["checkpoint-2"]),  # a manifest that does not verify: never
        ([R(4), R(4, version=2)], 3, (), ["checkpoint-4"]),  # superseded by a newer version of the step
        ([R(4, version=2), R(4, IN_FLIGHT, version=3, manifest=True)], 3, (), []),  # a lost rename: finished
        ([R(4), R(4, IN_FLIGHT, version=2)], 3, (), ["checkpoint-4.v2.partial"]),  # an abandoned new version
        ([R(5, IN_FLIGHT), R(6)], 3, (), ["checkpoint-5.partial"]),  # our abandoned upload
        ([R(5, IN_FLIGHT), R(6)], 3, ("checkpoint-5.partial",), []),  # still being written
        ([R(5, UNCOMMITTED, FOREIGN), R(6, IN_FLIGHT, FOREIGN)], 1, (), []),  # a user's folders
        ([R(2, BEING_DELETED), R(3, LEFTOVER, FOREIGN)], 1, (), ["checkpoint-2.deleting"]),
        ([R(None), R(None, version=2), R(1)], 1, (), ["final"]),
        ([R(1), R(2), R(3, damaged=True)], 2, (), []),  # a damaged copy keeps nothing older away
        ([R(3, damaged=True), R(3, version=2)], 2, (), ["checkpoint-3"]),  # repaired: the damaged one goes
    ],
    ids=["retention", "foreign", "legacy", "invalid", "superseded", "lost-rename", "abandoned-version", "abandoned",
         "in-use",
         "users-folders", "finish-prune", "final-versions", "damaged-counts-for-nothing", "damaged-repaired"],
)
def test_remote_deletions(entries, keep, in_use, expected):
    got = policy.remote_deletions(entries, keep=keep, in_use=in_use, clean=True, identity_ok=True)
    assert names(got) == expected


@pytest.mark.parametrize(
    "entries, keep, best, expected",
    [
        ([R(1), R(2), R(3), R(4), R(5)], 3, 1, ["checkpoint-2"]),  # the best stays beside the newest 3
        ([R(1), R(2), R(3), R(4), R(5)], 3, 4, ["checkpoint-1", "checkpoint-2"]),  # best in the window
        ([R(1), R(1, version=2), R(2), R(3)], 1, 1, ["checkpoint-1", "checkpoint-2"]),  # best's old version goes
        ([R(2), R(3)], 1, 7, ["checkpoint-2"]),  # a best with no copy keeps nothing else
    ],
    ids=["old-best-kept", "best-in-window", "best-superseded-version", "best-not-there"],
)
def test_remote_deletions_keep_the_best(entries, keep, best, expected):
    got = policy.remote_deletions(entries, keep=keep, clean=True, identity_ok=True, best=best)
    assert names(got) == expected


@pytest.mark.parametrize(
    "local, committed, keep, best, expected",
    [
        (V(1, 2, 3, 4), [], 2, 1, [4, 3, 1]),  # older than the window, yet sent
        (V(1, 2, 3, 4), [1], 2, 1, [4, 3]),  # already there
        (V(1, 2, 3, 4), [], 2, 4, [4, 3]),  # in the window: once
        (V(3, 4), [], 2, 1, [4, 3]),  # not here to send
        (V(1, 3, 4, incomplete=(1,)), [], 2, 1, [4, 3]),  # not complete: never sent
    ],
    ids=["old-best", "best-committed", "best-in-window", "best-gone", "best-incomplete"],
)
def test_upload_plan_sends_the_best(local, committed, keep, best, expected):
    assert policy.upload_plan(local, committed, keep, best=best) == expected


def test_disk_pressure_keeps_the_best_while_it_is_the_only_copy():
    assert policy.disk_pressure_retire(V(1, 2, 3, 4), committed=[3], best=1) == [2]
    assert policy.disk_pressure_retire(V(1, 2, 3, 4), committed=[1, 3], best=1) == [1, 2]


def test_no_deletion_after_a_failed_read_or_without_identity():
    entries = [R(1), R(2), R(3), R(4, UNCOMMITTED, UNREADABLE)]
    assert policy.remote_deletions(entries, keep=1, clean=False, identity_ok=True) == []
    assert policy.remote_deletions(entries, keep=1, clean=True, identity_ok=False) == []


_remote_entry = st.builds(
    R,
    st.one_of(st.none(), st.integers(0, 6)),
    st.sampled_from([COMMITTED, UNCOMMITTED, INVALID, IN_FLIGHT, BEING_DELETED, LEFTOVER]),
    st.sampled_from([OURS, FOREIGN, LEGACY, UNREADABLE]),
    st.integers(1, 3),
    st.booleans(),
    st.booleans(),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_remote_entry, max_size=12, unique_by=lambda e: e.name), st.integers(1, 4), st.booleans(),
       st.booleans())
def test_nothing_unprovable_is_ever_planned_for_deletion(entries, keep, clean, identity_ok):
    doomed = {d.name for d in policy.remote_deletions(entries, keep=keep, clean=clean, identity_ok=identity_ok)}
    by_name = {e.name: e for e in entries}
    if not clean or not identity_ok:
        assert not doomed
    for name in doomed:
        e = by_name[name]
        assert e.owner == OURS, f"{name} is not provably ours"
        assert e.state != INVALID
    # Every kept step keeps a committed copy of ours: the newest version of each of the
    # newest `keep` steps survives, and so does the newest final.
    ours = [e for e in entries if e.owner == OURS and e.state == COMMITTED and not e.damaged]
    newest: dict[str, policy.RemoteView] = {}
    for e in ours:
        if e.base not in newest or e.version > newest[e.base].version:
            newest[e.base] = e
    kept_steps = sorted((e.step for e in newest.values() if e.step is not None), reverse=True)[:keep]
    for e in newest.values():
        if e.step is None or e.step in kept_steps:
            assert e.name not in doomed, f"{e.name} is the last good copy of {e.base}"
