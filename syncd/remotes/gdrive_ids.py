"""What one Drive remote knows about ids: one table, path -> ``Entry``.

Drive names items by id; syncd names them by path. Listings map paths to ids but lag
behind writes (seconds, sometimes minutes), and Drive allows several items of one title
in a folder ("twins"). So a process keeps what it learnt itself, and that wins over a
listing:

    key                      Entry
    "\\0<level>"              folder:  a folder of the URL's own chain above the URL folder
    ""                       folder:  the URL folder
    "run/checkpoint-5"       folder:  Folder(id, ours, parent, confirmed_at, created)
                             twins:   every folder id a lookup found here, oldest first, and when
    "run/checkpoint-5/a.bin" file:    File(id, size, md5, parent): what this process uploaded

- ``Folder.ours``: this process made the folder here or moved it here, so it overrules
  any listing; otherwise it is a folder writes went to, relied on and checked by id.
- ``parent``: known only for what this process put in place (made, moved, uploaded).

Two indexes are derived from the table and kept by the same methods that change it,
never by callers: ``path_of(id)`` for every id of an ours folder or a file, and the ids
deleted here (``is_gone``), which lagging listings may still show. The invariants
(tested as a table in tests/gdrive/test_gdrive_ids.py):

1. ``path_of`` is exactly the inverse of the ours folders' and the files' ids.
2. No gone id is in the table.
3. No entry is empty: an entry with no folder, no file and no lookup is dropped.
4. ``renamed(src, dst, ...)`` re-keys ``src`` and everything under it to ``dst``,
   drops what was known under ``dst`` (it did not exist), and forgets every lookup.
5. ``forget(path, ids)`` drops ``path`` and everything under it; ``ids`` become gone.
6. A lookup is reused only while younger than the caller's ``max_age_s``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Folder:
    id: str
    ours: bool  # made or moved here by this process: it overrules listings
    parent: str | None = None  # where we put it, when we did
    confirmed_at: float | None = None  # when last seen at this path by id (clock of the cache)
    created: str = ""  # Drive's createdDate: of twins, the oldest is canonical


@dataclass(frozen=True)
class File:
    id: str
    size: int
    md5: str | None
    parent: str | None = None


@dataclass(frozen=True)
class Entry:
    folder: Folder | None = None
    file: File | None = None
    twins: tuple[str, ...] = ()  # a lookup: every folder here, canonical first
    looked_up_at: float | None = None

    def empty(self) -> bool:
        return self.folder is None and self.file is None and self.looked_up_at is None


def under(key: str, top: str) -> bool:
    """``key`` is ``top`` or below it (``top`` "" is everything below the URL folder)."""
    if key.startswith("\0"):
        return False  # the URL's own chain is above every relative path
    return top == "" or key == top or key.startswith(top + "/")


class IdCache:
    """The table and its two indexes, behind one lock; every method keeps the invariants."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self._entries: dict[str, Entry] = {}
        self._by_id: dict[str, str] = {}  # derived: id -> key, for ours folders and files
        self._gone: set[str] = set()  # derived: ids deleted here

    # ------------------------------------------------------------ reading

    def entry(self, key: str) -> Entry:
        with self._lock:
            return self._entries.get(key, Entry())

    def keys(self) -> list[str]:
        with self._lock:
            return sorted(self._entries)

    def path_of(self, fid: str) -> str | None:
        """Where this process put ``fid`` (an ours folder or a file), else None."""
        with self._lock:
            return self._by_id.get(fid)

    def is_gone(self, fid: str) -> bool:
        with self._lock:
            return fid in self._gone

    def relied_on(self, key: str) -> str | None:
        """The folder id this process relies on at ``key`` (made, moved or written into)."""
        folder = self.entry(key).folder
        return folder.id if folder else None

    def twins(self, key: str, max_age_s: float) -> list[str] | None:
        """The folder ids a lookup found at ``key``, if it is younger than ``max_age_s``."""
        e = self.entry(key)
        if e.looked_up_at is None or self._clock() - e.looked_up_at >= max_age_s:
            return None
        return list(e.twins)

    def confirmed(self, key: str, fid: str, max_age_s: float) -> str | None:
        """createdDate of ``fid`` if it was confirmed at ``key`` within ``max_age_s``, else None."""
        folder = self.entry(key).folder
        if folder is None or folder.id != fid or folder.confirmed_at is None:
            return None
        if self._clock() - folder.confirmed_at >= max_age_s:
            return None
        return folder.created

    def parent_of(self, fid: str) -> str | None:
        """The parent this process put ``fid`` in, if it did."""
        with self._lock:
            key = self._by_id.get(fid)
            e = self._entries.get(key) if key is not None else None
        if e is None:
            return None
        if e.folder is not None and e.folder.id == fid:
            return e.folder.parent
        if e.file is not None and e.file.id == fid:
            return e.file.parent
        return None

    def ours(self, below: bool = False) -> list[tuple[str, str]]:
        """(key, id) of the folders this process made or moved, shallowest first; ``below``:
        only those under the URL folder (not the URL's own chain, not the URL folder)."""
        with self._lock:
            found = [(k, e.folder.id) for k, e in self._entries.items() if e.folder and e.folder.ours]
        if below:
            found = [(k, i) for k, i in found if k and not k.startswith("\0")]
        return sorted(found, key=lambda kv: (_depth_order(kv[0]), kv[0]))

    def file(self, path: str) -> File | None:
        return self.entry(path).file

    def files(self, top: str = "") -> list[tuple[str, File]]:
        """(path, File) of what this process uploaded below folder ``top``."""
        with self._lock:
            return sorted((k, e.file) for k, e in self._entries.items()
                          if e.file and under(k, top) and k != top)

    def ids_at(self, key: str) -> set[str]:
        """Every id this process knows at exactly ``key``: its folder and its file."""
        e = self.entry(key)
        return {i.id for i in (e.folder, e.file) if i is not None}

    # ------------------------------------------------------------ learning

    def looked_up(self, key: str, ids: list[str]) -> None:
        """A lookup found ``ids`` at ``key`` (canonical first); reused for a while."""
        with self._lock:
            self._put(key, replace(self.entry(key), twins=tuple(ids), looked_up_at=self._clock()))

    def drop_lookups(self) -> None:
        """Forget every lookup (after a move: paths under it changed)."""
        with self._lock:
            for key, e in list(self._entries.items()):
                self._put(key, replace(e, twins=(), looked_up_at=None))

    def made(self, key: str, fid: str, parent: str, created: str) -> None:
        """This process created folder ``fid`` in ``parent`` at ``key``."""
        with self._lock:
            self._set_folder(key, Folder(fid, True, parent, self._clock(), created))

    def use(self, key: str, fid: str) -> None:
        """Writes go to folder ``fid`` at ``key``. An ours folder there stays until
        ``yield_to_twin``: what this process put in it has yet to be moved out."""
        with self._lock:
            cur = self.entry(key).folder
            if cur is not None and (cur.id == fid or cur.ours):
                return
            self._set_folder(key, Folder(fid, False))

    def confirm(self, key: str, fid: str, created: str) -> None:
        """Folder ``fid`` was just seen at ``key`` by id."""
        with self._lock:
            cur = self.entry(key).folder
            if cur is not None and cur.id == fid:
                self._set_folder(key, replace(cur, confirmed_at=self._clock(), created=created))

    def lost(self, key: str, fid: str) -> None:
        """Folder ``fid`` is no longer in Drive (deleted or trashed behind our back)."""
        with self._lock:
            e = self.entry(key)
            folder = e.folder if e.folder is not None and e.folder.id == fid else None
            if folder is not None:
                self._by_id.pop(fid, None)
            self._put(key, replace(e, folder=None if folder else e.folder, twins=(), looked_up_at=None))

    def yield_to_twin(self, key: str, fid: str, canonical: str) -> None:
        """Ours folder ``fid`` at ``key`` has an older twin: writes go to ``canonical`` now."""
        with self._lock:
            cur = self.entry(key).folder
            if cur is None or cur.id != fid:
                return
            self._by_id.pop(fid, None)
            self._set_folder(key, Folder(canonical, False))

    def moved(self, fid: str, parent: str) -> None:
        """This process re-parented ``fid`` (ours folder or file) into ``parent``."""
        with self._lock:
            key = self._by_id.get(fid)
            if key is not None:
                e = self._entries[key]
                if e.folder is not None and e.folder.id == fid:
                    e = replace(e, folder=replace(e.folder, parent=parent))
                if e.file is not None and e.file.id == fid:
                    e = replace(e, file=replace(e.file, parent=parent))
                self._put(key, e)
            self.drop_lookups()

    def uploaded(self, path: str, fid: str, size: int, md5: str | None, parent: str) -> None:
        """This process uploaded ``fid`` to ``path`` (replacing what it knew there)."""
        with self._lock:
            e = self.entry(path)
            if e.file is not None:
                self._by_id.pop(e.file.id, None)
            self._gone.discard(fid)
            self._by_id[fid] = path
            self._put(path, replace(e, file=File(fid, size, md5, parent)))

    def renamed(self, src: str, dst: str, fid: str, parent: str, created: str) -> None:
        """This process moved folder ``fid`` from ``src`` to ``dst`` (into ``parent``):
        all it knew under ``src`` is under ``dst`` now, and the folder is ours there."""
        with self._lock:
            moving = {k: self._pop(k) for k in [k for k in self._entries if under(k, src)]}
            for k in [k for k in self._entries if under(k, dst)]:
                self._pop(k)  # stale: the destination did not exist
            for k, e in moving.items():
                new = dst + k[len(src):]
                for item in (e.folder, e.file):
                    if item is not None and (isinstance(item, File) or item.ours):
                        self._by_id[item.id] = new
                self._put(new, e)
            self.drop_lookups()
            self._set_folder(dst, Folder(fid, True, parent, self._clock(), created))

    def forget(self, top: str, gone: Iterable[str] = ()) -> None:
        """Drop ``top`` and everything under it; the ids in ``gone`` were deleted."""
        with self._lock:
            for k in [k for k in self._entries if under(k, top)]:
                self._pop(k)
            self.drop_lookups()
            self._gone |= set(gone)

    def deleted(self, ids: Iterable[str]) -> None:
        """``ids`` were deleted here (older copies of a file): hide them from listings."""
        with self._lock:
            ids = set(ids)
            for fid in ids:
                key = self._by_id.pop(fid, None)
                if key is not None:
                    e = self._entries[key]
                    self._put(key, replace(e, folder=None if e.folder and e.folder.id == fid else e.folder,
                                           file=None if e.file and e.file.id == fid else e.file))
            self._gone |= ids

    def clear(self) -> None:
        """Forget every path (a folder we knew disappeared); deleted ids stay hidden."""
        with self._lock:
            self._entries.clear()
            self._by_id.clear()

    # ------------------------------------------------------------ inside

    def _set_folder(self, key: str, folder: Folder) -> None:
        e = self.entry(key)
        if e.folder is not None and self._by_id.get(e.folder.id) == key:
            del self._by_id[e.folder.id]
        if folder.ours:
            self._by_id[folder.id] = key
        self._gone.discard(folder.id)  # it is there: we just made, moved or found it
        self._put(key, replace(e, folder=folder))

    def _pop(self, key: str) -> Entry:
        """Remove ``key`` and its ids from the index."""
        e = self._entries.pop(key, Entry())
        for item in (e.folder, e.file):
            if item is not None and self._by_id.get(item.id) == key:
                del self._by_id[item.id]
        return e

    def _put(self, key: str, e: Entry) -> None:
        if e.empty():
            self._entries.pop(key, None)
        else:
            self._entries[key] = e

    def check(self) -> None:
        """Raise AssertionError unless the invariants hold (for tests)."""
        with self._lock:
            want = {}
            for k, e in self._entries.items():
                assert not e.empty(), k
                if e.folder is not None and e.folder.ours:
                    want[e.folder.id] = k
                if e.file is not None:
                    want[e.file.id] = k
                for item in (e.folder, e.file):
                    assert item is None or item.id not in self._gone, (k, item)
            assert want == self._by_id, (want, self._by_id)


def _depth_order(key: str) -> tuple[int, int]:
    """The URL's chain first (top down), then the URL folder, then by depth below it."""
    if key.startswith("\0"):
        return (0, int(key[1:]))
    return (1, key.count("/") + 1 if key else 0)
