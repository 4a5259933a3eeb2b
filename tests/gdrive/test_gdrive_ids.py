"""The Drive remote's id cache as a table: steps on a fresh cache, then what it holds.

Every step is followed by ``IdCache.check()`` (the index is the inverse of the ours
folders and files, no deleted id stays in the table, no empty entry is kept), so each
row also proves the invariants hold along the way, not only at the end.
"""

from __future__ import annotations

import pytest

from syncd.remotes.gdrive_ids import IdCache

TTL = 10.0  # seconds a lookup or a confirmation is trusted, as the remote passes it


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def view(cache: IdCache) -> dict[str, str]:
    """Each key as one short line: ``folder <id> ours|used [^parent]``, ``file <id>``, ``twins a,b``."""
    out = {}
    for key in cache.keys():
        e = cache.entry(key)
        parts = []
        if e.folder is not None:
            f = e.folder
            parts.append(f"folder {f.id} {'ours' if f.ours else 'used'}" + (f" ^{f.parent}" if f.parent else ""))
        if e.file is not None:
            parts.append(f"file {e.file.id} ^{e.file.parent}")
        if e.looked_up_at is not None:
            parts.append("twins " + ",".join(e.twins))
        out[key.replace("\0", "@")] = "; ".join(parts)
    return out


def run(steps: list[tuple]) -> tuple[IdCache, Clock]:
    clock = Clock()
    cache = IdCache(clock)
    for name, *args in steps:
        if name == "tick":
            clock.now += args[0]
        else:
            getattr(cache, name)(*args)
        cache.check()
    return cache, clock


# A checkpoint being written: run/ck.partial with a sub-folder and files, all ours.
WRITING = [
    ("made", "run", "R", "U", "1"),
    ("made", "run/ck.partial", "P", "R", "2"),
    ("made", "run/ck.partial/sub", "S", "P", "3"),
    ("uploaded", "run/ck.partial/a.bin", "FA", 3, "m-a", "P"),
    ("uploaded", "run/ck.partial/sub/b.bin", "FB", 4, "m-b", "S"),
    ("made", "run/ck.partial2", "Q", "R", "4"),  # a sibling whose name starts like it
]

CASES = {
    "made folders are ours and indexed": (
        WRITING[:3],
        {"run": "folder R ours ^U", "run/ck.partial": "folder P ours ^R", "run/ck.partial/sub": "folder S ours ^P"},
        [],
    ),
    "a folder writes went to is relied on, not ours": (
        [("use", "run", "R")],
        {"run": "folder R used"},
        [],
    ),
    "use does not displace an ours folder (its contents move first)": (
        [("made", "run", "R", "U", "1"), ("use", "run", "OLDER")],
        {"run": "folder R ours ^U"},
        [],
    ),
    "an ours folder yields to its older twin": (
        [("made", "run", "R", "U", "1"), ("yield_to_twin", "run", "R", "OLDER")],
        {"run": "folder OLDER used"},
        [],
    ),
    "yield_to_twin of a folder no longer there changes nothing": (
        [("made", "run", "R", "U", "1"), ("yield_to_twin", "run", "X", "OLDER")],
        {"run": "folder R ours ^U"},
        [],
    ),
    "an upload over our own file replaces its id": (
        [("uploaded", "run/f", "F1", 1, "m1", "R"), ("uploaded", "run/f", "F2", 2, "m2", "R")],
        {"run/f": "file F2 ^R"},
        [],
    ),
    "renaming a folder re-keys everything under it, not its look-alike sibling": (
        [*WRITING, ("looked_up", "run/ck.partial2", ["Q"]), ("renamed", "run/ck.partial", "run/ck", "P", "R", "9")],
        {"run": "folder R ours ^U", "run/ck": "folder P ours ^R", "run/ck/sub": "folder S ours ^P",
         "run/ck/a.bin": "file FA ^P", "run/ck/sub/b.bin": "file FB ^S", "run/ck.partial2": "folder Q ours ^R"},
        [],
    ),
    "renaming a folder we only looked up makes it ours at the new path": (
        [("use", "run/x.partial", "X"), ("uploaded", "run/x.partial/f", "F", 1, "m", "X"),
         ("renamed", "run/x.partial", "run/x", "X", "R", "5")],
        {"run/x": "folder X ours ^R", "run/x/f": "file F ^X"},
        [],
    ),
    "renaming over stale knowledge of the destination drops the stale entries": (
        [("uploaded", "run/b/old", "OLD", 1, "m", "B0"), ("made", "run/a", "A", "R", "1"),
         ("uploaded", "run/a/f", "F", 1, "m", "A"), ("renamed", "run/a", "run/b", "A", "R", "2")],
        {"run/b": "folder A ours ^R", "run/b/f": "file F ^A"},
        [],
    ),
    "forgetting a folder drops its subtree; the given ids are gone": (
        [*WRITING, ("forget", "run/ck.partial", ["P"])],
        {"run": "folder R ours ^U", "run/ck.partial2": "folder Q ours ^R"},
        ["P"],
    ),
    "forgetting a file keeps its folder": (
        [*WRITING[:4], ("forget", "run/ck.partial/a.bin", ["FA"])],
        {"run": "folder R ours ^U", "run/ck.partial": "folder P ours ^R", "run/ck.partial/sub": "folder S ours ^P"},
        ["FA"],
    ),
    "forgetting everything below the URL folder keeps the URL's own chain": (
        [("made", "\0" "0", "T", "ROOT", "0"), ("made", "", "U", "T", "1"), *WRITING[:1], ("forget", "", [])],
        {"@0": "folder T ours ^ROOT"},
        [],
    ),
    "deleted older copies leave the table and listings": (
        [("uploaded", "run/f", "F1", 1, "m", "R"), ("deleted", ["F1", "TWIN"])],
        {},
        ["F1", "TWIN"],
    ),
    "an id deleted earlier and made again is no longer gone": (
        [("deleted", ["R"]), ("made", "run", "R", "U", "1")],
        {"run": "folder R ours ^U"},
        [],
    ),
    "a lost folder is dropped, with the lookup at its key": (
        [("made", "run", "R", "U", "1"), ("looked_up", "run", ["R"]), ("lost", "run", "R")],
        {},
        [],
    ),
    "losing another id than the one relied on keeps the folder": (
        [("made", "run", "R", "U", "1"), ("lost", "run", "X")],
        {"run": "folder R ours ^U"},
        [],
    ),
    "a move updates the parent and forgets every lookup": (
        [*WRITING[:4], ("looked_up", "run", ["R"]), ("looked_up", "elsewhere", ["E"]), ("moved", "FA", "P2")],
        {"run": "folder R ours ^U", "run/ck.partial": "folder P ours ^R", "run/ck.partial/sub": "folder S ours ^P",
         "run/ck.partial/a.bin": "file FA ^P2"},
        [],
    ),
    "twins are kept in the order found": (
        [("looked_up", "run", ["OLD", "NEW"])],
        {"run": "twins OLD,NEW"},
        [],
    ),
    "clear forgets every path but keeps deleted ids hidden": (
        [*WRITING, ("deleted", ["X"]), ("clear",)],
        {},
        ["X"],
    ),
}


@pytest.mark.parametrize("steps, want, gone", CASES.values(), ids=CASES.keys())
def test_id_cache(steps, want, gone):
    cache, _ = run(steps)
    assert view(cache) == want
    for fid in gone:
        assert cache.is_gone(fid)
    for key in cache.keys():  # no id in the table is hidden from listings
        assert not any(cache.is_gone(i) for i in cache.ids_at(key))


@pytest.mark.parametrize("steps, fid, where, parent", [
    (WRITING, "S", "run/ck.partial/sub", "P"),
    (WRITING, "FB", "run/ck.partial/sub/b.bin", "S"),
    ([*WRITING, ("renamed", "run/ck.partial", "run/ck", "P", "R", "9")], "FB", "run/ck/sub/b.bin", "S"),
    ([*WRITING, ("renamed", "run/ck.partial", "run/ck", "P", "R", "9")], "P", "run/ck", "R"),
    ([("use", "run", "R")], "R", None, None),  # not ours: listings decide where it is
    ([*WRITING, ("forget", "run/ck.partial", [])], "FA", None, None),
], ids=["folder", "file", "file after rename", "renamed folder", "used folder", "forgotten"])
def test_path_and_parent_by_id(steps, fid, where, parent):
    cache, _ = run(steps)
    assert cache.path_of(fid) == where
    assert cache.parent_of(fid) == parent


def test_lookups_and_confirmations_age_out():
    cache, clock = run([("made", "run", "R", "U", "2024-01-01"), ("looked_up", "run", ["R", "T"])])
    assert cache.twins("run", TTL) == ["R", "T"]
    assert cache.confirmed("run", "R", TTL) == "2024-01-01"
    assert cache.confirmed("run", "T", TTL) is None  # only the folder relied on is confirmed
    clock.now += TTL
    assert cache.twins("run", TTL) is None and cache.confirmed("run", "R", TTL) is None
    cache.confirm("run", "R", "2024-01-01")
    assert cache.confirmed("run", "R", TTL) == "2024-01-01"
    assert cache.twins("run", 0.0) is None  # a caller that wants a fresh listing gets none


def test_ours_lists_the_url_chain_first_then_by_depth():
    cache, _ = run([
        ("made", "run/a/b", "B", "A", "3"), ("made", "run", "R", "U", "1"), ("made", "", "U", "T", "0"),
        ("made", "\0" "0", "T", "ROOT", "0"), ("made", "run/a", "A", "R", "2"), ("use", "other", "O"),
    ])
    assert cache.ours() == [("\0" "0", "T"), ("", "U"), ("run", "R"), ("run/a", "A"), ("run/a/b", "B")]
    assert cache.ours(below=True) == [("run", "R"), ("run/a", "A"), ("run/a/b", "B")]


def test_files_lists_what_is_strictly_below_a_folder():
    cache, _ = run([("uploaded", "run/c", "C", 1, "m", "R"), ("uploaded", "run/c/x", "X", 1, "m", "C2"),
                    ("uploaded", "run/cd/y", "Y", 1, "m", "D")])
    assert [k for k, _ in cache.files("run/c")] == ["run/c/x"]
    assert [k for k, _ in cache.files("")] == ["run/c", "run/c/x", "run/cd/y"]
