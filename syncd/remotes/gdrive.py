"""Google Drive through its v2 API: ``gdrive://<folder path>``.

The URL names a folder under My Drive, or under ``syncd_gdrive_root_id`` (a folder
or a Shared Drive id); ``gdrive://My Drive/x`` is ``gdrive://x``. Missing folders are
created. Remote paths map onto Drive folders by title:

    <root>/<url path>/<run>/checkpoint-N.partial/model.safetensors
                           /checkpoint-N/syncd-manifest.json

This module maps paths to Drive items; its parts live beside it:

    gdrive_transport.py   credentials, connections, retries, errors (every request)
    gdrive_ids.py         what this process knows: one table, path -> ids
    gdrive_upload.py      the resumable upload protocol and the sessions kept on disk
    gdrive_auth.py        credential files and ``syncd auth``

Drive is eventually consistent and allows duplicate titles, so:
- the ids of what this process wrote, created or renamed are kept and win over a
  listing, which may lag behind the writes;
- after an upload, other files with the same title in that folder are deleted;
- folders are created with ids generated up front, so a retried create is idempotent.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import urllib.parse
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import RemoteError
from ..hashing import CHUNK_BYTES, Digest, Progress
from .base import Capabilities, Quota, RemoteFile, join
from .gdrive_ids import IdCache
from .gdrive_options import GDriveOptions
from .gdrive_transport import MAX_ATTEMPTS, Transport, discovery_document
from .gdrive_upload import BINARY_MIME, CHUNK_MULTIPLE_BYTES, FolderGone, SessionStore, upload_file

if TYPE_CHECKING:
    from .registry import RemoteSettings

__all__ = ["GDriveRemote", "discovery_document", "parse_url", "pick_file"]

log = logging.getLogger(__name__)

MIB = 1024 * 1024
FOLDER_MIME = "application/vnd.google-apps.folder"
FILE_FIELDS = "id,title,mimeType,fileSize,md5Checksum,parents(id),labels(trashed),createdDate,modifiedDate,driveId"
LIST_FIELDS = f"nextPageToken,items({FILE_FIELDS})"
LIST_PAGE = 1000  # Drive's maximum page size for files.list
# How long a folder id found by listing is reused without asking again; short, because
# another process (the daemon, while we restore or wait) may rename it meanwhile.
LOOKUP_TTL_S = 10.0


def parse_url(url: str) -> list[str]:
    """``gdrive://My Drive/a/b`` -> ``["a", "b"]``; ``gdrive://`` is the root itself."""
    if not url.startswith("gdrive://"):
        raise RemoteError(f"not a gdrive:// URL: {url}")
    parts = [urllib.parse.unquote(p) for p in url[len("gdrive://"):].split("/") if p]
    if parts and parts[0] in ("My Drive", "MyDrive"):
        parts = parts[1:]
    if any(p in (".", "..") for p in parts):
        raise RemoteError(f"gdrive URL {url} must not contain . or ..")
    return parts


def _q_str(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _split(rel: str) -> tuple[str, str]:
    rel = rel.strip("/")
    head, _, tail = rel.rpartition("/")
    return head, tail


def pick_file(candidates: list[dict[str, Any]], *, mine: str | None = None,
              md5: str | None = None) -> dict[str, Any]:
    """One file among same-titled ones (Drive allows them): the one whose md5 is the
    expected one, if a caller knows it; else the one this process wrote; else the newest.
    Ties break on the id, so every process makes the same choice."""
    def rank(m: dict[str, Any]) -> tuple[bool, bool, str, str]:
        return (md5 is not None and m.get("md5Checksum") == md5, m["id"] == mine,
                m.get("modifiedDate", ""), m["id"])

    return max(candidates, key=rank)


class _FolderKeys:
    """Folder keys of one URL: a path under the URL folder ("" is that folder), and
    ``"\\0<level>"`` for the URL's own folders above it (level 0 is the topmost)."""

    def __init__(self, parts: list[str]) -> None:
        self.parts = parts

    def base(self, level: int) -> str:
        return "" if level == len(self.parts) - 1 else f"\0{level}"

    def parent(self, key: str) -> str | None:
        """The key one level up; None for the top (My Drive or ``syncd_gdrive_root_id``)."""
        if key.startswith("\0") or key == "":
            level = int(key[1:]) if key else len(self.parts) - 1
            return None if level <= 0 else self.base(level - 1)
        return _split(key)[0]

    def title(self, key: str) -> str:
        if key.startswith("\0"):
            return self.parts[int(key[1:])]
        return self.parts[-1] if key == "" else _split(key)[1]

    def display(self, key: str) -> str:
        """The folder's path under My Drive (or the root id), as a person sees it."""
        if key.startswith("\0"):
            return "/".join(self.parts[:int(key[1:]) + 1])
        return "/".join([*self.parts, *([key] if key else [])]) or "the top folder"


class _RangeReader(io.RawIOBase):
    """A Drive file as a read-only stream: one ranged GET per chunk, at most one chunk held.

    Small reads are served from the last chunk fetched, so a caller reading 8 KiB at a
    time still costs one request per chunk, not one per read.
    """

    def __init__(self, transport: Transport, rel: str, file_id: str, size: int, chunk_bytes: int) -> None:
        self._transport = transport
        self._rel = rel
        self._uri = transport.service.files().get_media(fileId=file_id, supportsAllDrives=True).uri
        self._size = size
        self._chunk = chunk_bytes
        self._pos = 0  # next byte to fetch from Drive
        self._buf = memoryview(b"")  # fetched, not yet handed out

    def readable(self) -> bool:
        return True

    def _fetch(self) -> None:
        n = min(self._chunk, self._size - self._pos)
        first, last = self._pos, self._pos + n - 1

        def fetch() -> bytes:
            from googleapiclient.errors import HttpError

            resp, content = self._transport.http().request(
                self._uri, "GET", headers={"Range": f"bytes={first}-{last}"})
            if resp.status == 206:
                return content
            if resp.status == 200:  # a server that ignores Range: take our slice
                return content[first:last + 1]
            raise HttpError(resp, content, uri=self._uri)

        data = self._transport.call(f"read {self._rel}", fetch)
        if len(data) != n:
            raise RemoteError(f"read {self._rel}: Drive sent {len(data)} bytes for a range of {n}")
        self._buf = memoryview(data)
        self._pos += n

    def readinto(self, b: Any) -> int:
        if not self._buf:
            if self._pos >= self._size:
                return 0
            self._fetch()
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def readall(self) -> bytes:
        parts = [bytes(self._buf)]
        self._buf = memoryview(b"")
        while self._pos < self._size:
            self._fetch()
            parts.append(bytes(self._buf))
            self._buf = memoryview(b"")
        return b"".join(parts)


class GDriveRemote:
    """The Remote protocol on Google Drive (v2 API through pydrive2)."""

    capabilities = Capabilities(rename=True, server_md5=True, quota=True, resumable_upload=True)

    def __init__(
        self,
        url: str,
        *,
        credentials: str | None,
        root_id: str | None = None,
        root_url: str | None = None,
        chunk_bytes: int = 8 * MIB,
        delete_mode: str = "permanent",
        state_dir: Path | None = None,
        timeout_s: float = 60.0,
        backoff_base_s: float = 1.0,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        if chunk_bytes <= 0 or chunk_bytes % CHUNK_MULTIPLE_BYTES:
            raise RemoteError("gdrive chunk size must be a positive multiple of 256 KiB")
        self.url = url
        self._parts = parse_url(url)
        self._keys = _FolderKeys(self._parts)
        self._root_arg = root_id or "root"
        self._chunk = chunk_bytes
        self._delete_mode = delete_mode
        self._sessions = SessionStore(state_dir, url)
        self._mkdir_lock = threading.RLock()  # one folder walk at a time: no twin folders of our own
        self._cache = IdCache()
        self._root_id: str | None = None
        self._spare_ids: list[str] = []
        self._net = Transport(credentials=credentials, root_url=root_url, timeout_s=timeout_s,
                              backoff_base_s=backoff_base_s, max_attempts=max_attempts)
        self._service = self._net.service

    @classmethod
    def from_config(cls, url: str, cfg: RemoteSettings, **kwargs: Any) -> GDriveRemote:
        opts = GDriveOptions.of(cfg.remote_options)
        return cls(
            url,
            credentials=opts.credentials,
            root_id=opts.root_id,
            root_url=opts.root_url,
            chunk_bytes=opts.chunk_bytes,
            delete_mode=cfg.delete_mode,
            state_dir=cfg.state_dir / "gdrive-uploads",
            **kwargs,
        )

    # ------------------------------------------------------------ requests

    def _exec(self, op: str, request: Any) -> Any:
        return self._net.execute(op, request)

    def _get_meta(self, op: str, fid: str) -> dict[str, Any] | None:
        """Current metadata by id (consistent, unlike listings); None if gone or trashed."""
        from googleapiclient.errors import HttpError

        def get() -> Any:
            try:
                return self._service.files().get(fileId=fid, supportsAllDrives=True, fields=FILE_FIELDS).execute(
                    http=self._net.http())
            except HttpError as e:
                if e.resp.status == 404:
                    return None
                raise

        meta = self._net.call(op, get)
        if meta is None or meta.get("labels", {}).get("trashed"):
            return None
        return meta

    def _list(self, op: str, q: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token = None
        kw: dict[str, Any] = {"supportsAllDrives": True, "includeItemsFromAllDrives": True}
        if self._net.shared_drive:
            kw |= {"corpora": "drive", "driveId": self._net.shared_drive}
        while True:
            req = self._service.files().list(q=q, maxResults=LIST_PAGE, pageToken=token, fields=LIST_FIELDS, **kw)
            page = self._exec(op, req)
            out.extend(i for i in page.get("items", []) if not self._cache.is_gone(i["id"]))
            token = page.get("nextPageToken")
            if not token:
                return out

    def _children(self, folder_id: str, title: str | None = None, folders_only: bool = False) -> list[dict[str, Any]]:
        q = f"{_q_str(folder_id)} in parents and trashed = false"
        if title is not None:
            q += f" and title = {_q_str(title)}"
        if folders_only:
            q += f" and mimeType = {_q_str(FOLDER_MIME)}"
        return self._list(f"list {title or folder_id}", q)

    def _children_of_all(self, folder_ids: list[str], title: str | None = None,
                         folders_only: bool = False) -> list[dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for fid in folder_ids:
            for m in self._children(fid, title, folders_only):
                out.setdefault(m["id"], m)
        return list(out.values())

    def _not_moved(self, metas: list[dict[str, Any]], rel: str) -> list[dict[str, Any]]:
        """Drop listed items that we moved or renamed away from ``rel`` (the listing lags)."""
        return [m for m in metas if self._cache.path_of(m["id"]) in (None, rel)]

    def _remove(self, op: str, fid: str) -> None:
        from googleapiclient.errors import HttpError

        def go() -> None:
            try:
                if self._delete_mode == "trash":
                    self._service.files().trash(fileId=fid, supportsAllDrives=True, fields="id").execute(
                        http=self._net.http())
                else:
                    self._service.files().delete(fileId=fid, supportsAllDrives=True).execute(http=self._net.http())
            except HttpError as e:
                if e.resp.status != 404:  # already gone is fine
                    raise

        self._net.call(op, go)

    # ------------------------------------------------------------ ids and folders
    #
    # A folder path maps to every folder of that title chain: Drive allows twins, and
    # lagging listings make them (two daemons starting at once, or one restarted, each
    # create `tess_backups`). Readers look through all twins; the oldest (createdDate,
    # then id) is canonical: writers create in it, and before each commit a writer moves
    # what it created out of the other twins into it (moves only, nothing is deleted).

    def _root(self) -> str:
        """The id of My Drive or of ``syncd_gdrive_root_id``; notes whether it is a Shared Drive."""
        if self._root_id is None:
            meta = self._exec("open gdrive root", self._service.files().get(
                fileId=self._root_arg, supportsAllDrives=True, fields=FILE_FIELDS))
            self._net.shared_drive = meta.get("driveId") or None
            self._root_id = meta["id"]
        return self._root_id

    def _ids(self, key: str | None, create: bool = False, fresh: bool = False,
             memo: dict[str, list[str]] | None = None) -> list[str]:
        """Every folder at ``key``, the canonical one first; [] when there is none.

        Only writers (``create``) make a missing folder, in the canonical parent: a
        reader that did could make a twin of a folder a lagging listing still hides.
        ``fresh`` lists again instead of trusting lookups younger than LOOKUP_TTL_S, and
        checks by id that the folders writes went to are still where they were.
        """
        if key is None or (key == "" and not self._parts):
            return [self._root()]
        with self._mkdir_lock:
            if memo is not None and memo.get(key):
                ids = memo[key]
            else:
                ids = None if fresh else self._cache.twins(key, LOOKUP_TTL_S)
                if ids is None:
                    parents = self._ids(self._keys.parent(key), create, fresh, memo)
                    ids = self._twins(key, parents, fresh) if parents else []
                    if not ids and create:
                        ids = [self._create_dir(key, parents[0])]
                    if ids:
                        self._cache.looked_up(key, ids)
                if memo is not None and ids:
                    memo[key] = ids
            if create and ids:
                self._cache.use(key, ids[0])
            return ids

    def _twins(self, key: str, parents: list[str], fresh: bool) -> list[str]:
        """Ids of the folders titled as ``key`` in any of ``parents``, oldest first."""
        title = self._keys.title(key)
        found: dict[str, str] = {}  # id -> createdDate
        for pid in parents:
            for m in self._not_moved(self._children(pid, title, folders_only=True), key):
                found[m["id"]] = m.get("createdDate", "")
        fid = self._cache.relied_on(key)  # a lagging listing may not show it yet
        if fid is not None:
            created = self._confirm(key, fid, parents, fresh)
            if created is None:
                found.pop(fid, None)
            else:
                found[fid] = created or found.get(fid, "")
        return sorted(found, key=lambda i: (found[i], i))

    def _confirm(self, key: str, fid: str, parents: list[str], fresh: bool) -> str | None:
        """createdDate of a folder we rely on at ``key``, checked by id (listings lag); None
        if it is gone. A folder moved or renamed in Drive is an error: a commit written
        into it would be where restore, which looks by path, never finds it."""
        if not fresh:
            created = self._cache.confirmed(key, fid, LOOKUP_TTL_S)
            if created is not None:
                return created
        meta = self._get_meta(f"check folder {self._keys.display(key)}", fid)
        if meta is None:  # deleted or trashed: forget it, so that writers make it again
            log.warning("Google Drive folder %s has disappeared; looking it up again", self._keys.display(key))
            self._cache.lost(key, fid)
            return None
        if meta.get("title") != self._keys.title(key) or not any(p["id"] in parents for p in meta.get("parents", [])):
            raise RemoteError(
                f"Google Drive folder {self._keys.display(key)} was moved or renamed in Drive "
                f"(it is now {self._location(meta)}); syncd will not write where restore cannot find it: "
                "move it back, or set gdrive_backup_dir to its new place")
        self._cache.confirm(key, fid, meta.get("createdDate", ""))
        return meta.get("createdDate", "")

    def _location(self, meta: dict[str, Any]) -> str:
        """Where a folder is now, as a path of titles (best effort)."""
        names, cur = [meta.get("title", "?")], meta
        for _ in range(32):
            parents = cur.get("parents") or []
            if not parents:
                break
            up = self._get_meta("locate a moved folder", parents[0]["id"])
            if up is None:
                return "in the trash"
            names.append(up.get("title", "?"))
            cur = up
        return "/".join(reversed(names))

    def _create_dir(self, key: str, parent_id: str) -> str:
        """A new folder at ``key`` (its id generated first, so a retried create is one folder)."""
        from googleapiclient.errors import HttpError

        title = self._keys.title(key)
        if not self._spare_ids:
            got = self._exec("generate ids", self._service.files().generateIds(maxResults=10, space="drive"))
            self._spare_ids = list(got.get("ids", []))
        fid = self._spare_ids.pop()
        body = {"id": fid, "title": title, "mimeType": FOLDER_MIME, "parents": [{"id": parent_id}]}

        def create() -> Any:
            try:
                return self._service.files().insert(body=body, supportsAllDrives=True, fields="id,createdDate").execute(
                    http=self._net.http())
            except HttpError as e:  # an earlier attempt did land: the id is taken by our folder
                if e.resp.status == 409:
                    return self._get_meta(f"create folder {title}", fid) or {"id": fid}
                raise

        made = self._net.call(f"create folder {title}", create)
        self._cache.made(key, made["id"], parent_id, made.get("createdDate", ""))
        return made["id"]

    def _folder_id(self, rel: str, create: bool, fresh: bool = False,
                   memo: dict[str, list[str]] | None = None) -> str | None:
        """The canonical folder at ``rel`` (where writes go), or None."""
        ids = self._ids(rel.strip("/"), create, fresh, memo)
        return ids[0] if ids else None

    def _converge(self) -> dict[str, list[str]]:
        """Move what this process created out of twin folders into the canonical ones.

        Called before each commit. A folder of ours that has an older twin keeps its place
        (empty of ours afterwards, never deleted: another process may have written into
        it too; readers look through it anyway). Returns the fresh lookups it made.
        """
        memo: dict[str, list[str]] = {}
        with self._mkdir_lock:
            for key, fid in self._cache.ours():
                if self._cache.relied_on(key) != fid:
                    continue
                twins = self._ids(key, fresh=True, memo=memo)
                if fid not in twins:
                    continue
                if twins[0] != fid:
                    log.warning("Google Drive has two folders %s (made while its listings lagged); "
                                "moving what syncd put in the newer one into the older one", self._keys.display(key))
                    self._cache.yield_to_twin(key, fid, twins[0])  # still found through listings, as a twin
                    continue
                parents = self._ids(self._keys.parent(key), fresh=True, memo=memo)
                self._move_into(key, fid, parents[0])
            for rel, f in self._cache.files():
                parents = self._ids(_split(rel)[0], fresh=True, memo=memo)
                if parents:
                    self._move_into(rel, f.id, parents[0])
        return memo

    def _move_into(self, key: str, fid: str, target: str) -> None:
        """Re-parent one item of ours into ``target`` (a move, never a copy and delete)."""
        current = self._cache.parent_of(fid)
        if current is None or current == target:
            return
        self._exec(f"move {self._keys.display(key)} into the older twin folder", self._service.files().patch(
            fileId=fid, body={}, addParents=target, removeParents=current, supportsAllDrives=True,
            fields="id"))
        self._cache.moved(fid, target)

    def _pick(self, rel: str, candidates: list[dict[str, Any]], md5: str | None = None) -> dict[str, Any]:
        ours = self._cache.file(rel)
        return pick_file(candidates, mine=ours.id if ours else None, md5=md5)

    @staticmethod
    def _is_file(meta: dict[str, Any]) -> bool:
        # Google Docs have no bytes to sync; folders are not files
        return not meta.get("mimeType", "").startswith("application/vnd.google-apps.")

    @staticmethod
    def _as_file(rel: str, meta: dict[str, Any]) -> RemoteFile:
        return RemoteFile(rel, int(meta.get("fileSize") or 0), meta.get("md5Checksum"))

    # ------------------------------------------------------------ the protocol

    def list_dirs(self, prefix: str) -> list[str]:
        prefix = prefix.strip("/")
        fids = self._ids(prefix)
        if not fids:
            return []
        names = set()
        listed = self._children_of_all(fids, folders_only=True)
        with self._mkdir_lock:  # after the listing: a rename since is known here
            where = {m["id"]: self._cache.path_of(m["id"]) for m in listed}
            dirs = self._cache.ours(below=True)
        for m in listed:
            seen_at = where[m["id"]]
            if seen_at is not None:  # ours: where we put it wins over a lagging listing
                if seen_at == join(prefix, m["title"]):
                    names.add(m["title"])
                continue
            # Another process may have renamed or deleted it since (Drive listings lag,
            # reads by id do not): ask for this one folder as it is now.
            now = self._get_meta(f"list {prefix or '/'}", m["id"])
            if now is not None and any(p["id"] in fids for p in now.get("parents", [])):
                names.add(now["title"])
        for rel, _ in dirs:
            head, tail = _split(rel)
            if head == prefix:
                names.add(tail)
        return sorted(names)

    def list_files(self, prefix: str) -> list[RemoteFile]:
        prefix = prefix.strip("/")
        tops = self._ids(prefix)
        if not tops:
            return []
        groups: dict[str, dict[str, dict[str, Any]]] = {}
        walked: set[str] = set()
        todo = [(top, "") for top in tops]  # twins too: readers see their union
        while todo:
            fid, sub = todo.pop()
            if fid in walked:
                continue
            walked.add(fid)
            kids = self._children(fid)
            with self._mkdir_lock:  # after the listing: a rename since is known here
                where = {m["id"]: self._cache.path_of(m["id"]) for m in kids}
                dirs = self._cache.ours(below=True)
            for m in kids:
                rel = join(sub, m["title"])
                full = join(prefix, rel)
                if where[m["id"]] not in (None, full):
                    continue  # moved or renamed by us; the listing has not caught up
                if m.get("mimeType") == FOLDER_MIME:
                    todo.append((m["id"], rel))
                elif self._is_file(m):
                    groups.setdefault(rel, {})[m["id"]] = m
            here = join(prefix, sub)
            for d, did in dirs:  # folders made or moved here that the listing lags behind
                head, tail = _split(d)
                if head == here:
                    todo.append((did, join(sub, tail)))
        found = {rel: self._as_file(rel, self._pick(join(prefix, rel), list(c.values())))
                 for rel, c in groups.items()}
        listed_ids = {i for cands in groups.values() for i in cands}
        for rel, f in self._cache.files(prefix):  # what we uploaded wins; if the listing lacks it, ask by id
            if f.id not in listed_ids and self._get_meta(f"list {prefix or '/'}", f.id) is None:
                self._cache.forget(rel, {f.id})
                continue
            sub = rel[len(prefix) + 1:] if prefix else rel
            found[sub] = RemoteFile(sub, f.size, f.md5)
        return sorted(found.values(), key=lambda f: f.path)

    def _lookup(self, rel: str, md5: str | None = None) -> dict[str, Any] | None:
        """Metadata of the file at ``rel``: by the id we know, else by title in any twin of
        its folder; with ``md5``, a copy with that checksum wins over newer ones."""
        rel = rel.strip("/")
        ours = self._cache.file(rel)
        if ours is not None and (md5 is None or ours.md5 == md5):
            meta = self._get_meta(f"stat {rel}", ours.id)
            if meta is not None:
                return meta
            self._cache.forget(rel, {ours.id})
        head, title = _split(rel)
        parents = self._ids(head)
        if not parents or not title:
            return None
        cands = [m for m in self._not_moved(self._children_of_all(parents, title), rel) if self._is_file(m)]
        while cands:  # the listing may still show a file deleted or moved since: check by id
            pick = self._pick(rel, cands, md5)
            meta = self._get_meta(f"stat {rel}", pick["id"])
            if meta is not None and meta["title"] == title and any(p["id"] in parents for p in meta["parents"]):
                return meta
            cands.remove(pick)
        return None

    def stat(self, path: str, *, md5: str | None = None) -> RemoteFile | None:
        """As the protocol says; ``md5`` (the manifest's, when the caller knows it) picks the
        matching copy where Drive holds several files of that title."""
        meta = self._lookup(path, md5)
        return None if meta is None else self._as_file(path.strip("/"), meta)

    def put_file(self, src: Path, dest: str, progress: Progress | None = None) -> Digest:
        dest = dest.strip("/")
        try:
            st = os.stat(src)
        except OSError as e:
            raise RemoteError(f"upload {dest}: {e.strerror or e}") from e
        head, title = _split(dest)
        for again in (False, True):
            parent = self._folder_id(head, create=True)
            assert parent is not None
            ident = {"dest": dest, "src": str(Path(src).resolve()), "size": st.st_size,
                     "mtime_ns": st.st_mtime_ns, "parent": parent}
            try:
                with open(src, "rb") as fh:
                    return self._upload(dest, parent, title, fh, ident, progress)
            except FolderGone:
                if again:
                    raise RemoteError(f"upload {dest}: its folder keeps disappearing") from None
                self._reset_folders()
            except OSError as e:
                raise RemoteError(f"upload {dest}: {e.strerror or e}") from e
        raise AssertionError("unreachable")

    def write_bytes(self, dest: str, data: bytes) -> None:
        """Small files: manifests, so a commit. Before it, twins converge and the folders
        are confirmed by id to be where restore will look for them."""
        dest = dest.strip("/")
        head, title = _split(dest)
        for again in (False, True):
            memo = self._converge()
            parent = self._folder_id(head, create=True, fresh=True, memo=memo)
            assert parent is not None
            try:
                self._upload(dest, parent, title, io.BytesIO(data), None, None)
                return
            except FolderGone:
                if again:
                    raise RemoteError(f"upload {dest}: its folder keeps disappearing") from None
                self._reset_folders()

    def _reset_folders(self) -> None:
        """Someone deleted a folder we knew: forget every folder id and look them up again."""
        log.warning("a Drive folder syncd knew has disappeared; looking the folders up again")
        with self._mkdir_lock:
            self._cache.clear()

    def _upload(self, dest: str, parent: str, title: str, fh: BinaryIO,
                ident: dict[str, Any] | None, progress: Progress | None) -> Digest:
        """One file into folder ``parent``, verified against Drive's md5, replacing others
        of its title there. ``ident``: keep the session on disk (see gdrive_upload)."""
        op = f"upload {dest}"
        metadata = {"title": title, "mimeType": BINARY_MIME, "parents": [{"id": parent}]}
        result, digest = upload_file(self._net, self._sessions, op, dest=dest, metadata=metadata, fields=FILE_FIELDS,
                                     fh=fh, chunk_bytes=self._chunk, ident=ident, progress=progress)
        fid = result["id"]
        size = int(result.get("fileSize") or -1)
        if size != digest.size or result.get("md5Checksum") != digest.md5:
            self._remove(op, fid)
            raise RemoteError(
                f"{op}: Drive stored {size} bytes with md5 {result.get('md5Checksum')}, "
                f"but {digest.size} bytes with md5 {digest.md5} were sent")
        older = self._cache.file(dest)
        self._cache.uploaded(dest, fid, digest.size, digest.md5, parent)
        # Overwrite: everything else titled so in that folder goes (an older version, or a
        # twin from an upload another process finished), now that ours is verified.
        stale = {m["id"] for m in self._children(parent, title) if m["id"] != fid}
        if older is not None and older.id != fid:
            stale.add(older.id)
        for other in stale:
            self._remove(f"{op} (older copy)", other)
        self._cache.deleted(stale)
        return digest

    def open_read(self, path: str, *, md5: str | None = None) -> BinaryIO:
        rel = path.strip("/")
        meta = self._lookup(rel, md5)
        if meta is None:
            raise RemoteError(f"read {rel}: no such file on Google Drive")
        raw = _RangeReader(self._net, rel, meta["id"], int(meta.get("fileSize") or 0), self._chunk)
        return io.BufferedReader(raw, buffer_size=min(self._chunk, CHUNK_BYTES))  # type: ignore[return-value]

    def delete(self, prefix: str) -> None:
        rel = prefix.strip("/")
        if not rel:
            raise RemoteError("delete: refusing to delete the whole gdrive:// folder")
        head, title = _split(rel)
        parents = self._ids(head)
        ids = self._cache.ids_at(rel)
        if parents:  # in every twin of its folder: readers see them all
            ids |= {m["id"] for m in self._not_moved(self._children_of_all(parents, title), rel)}
        for fid in sorted(ids):
            self._remove(f"delete {rel}", fid)
        self._cache.forget(rel, ids)

    def rename_dir(self, src: str, dst: str) -> None:
        with self._mkdir_lock:  # listings read the cache after it, never halfway through
            self._rename_dir(src, dst)

    def _rename_dir(self, src: str, dst: str) -> None:
        src, dst = src.strip("/"), dst.strip("/")
        op = f"rename {src} -> {dst}"
        memo = self._converge()  # a commit: what we wrote sits in the canonical folders
        fid = self._folder_id(src, create=False, fresh=True, memo=memo)
        if fid is None:
            raise RemoteError(f"{op}: no such folder")
        if self._folder_id(dst, create=False, fresh=True, memo=memo) is not None:
            raise RemoteError(f"{op}: the destination exists")
        dst_parent = self._folder_id(_split(dst)[0], create=True, fresh=True, memo=memo)
        assert dst_parent is not None
        src_parent = self._cache.parent_of(fid)
        if src_parent is None:  # not ours: ask where it is
            meta = self._get_meta(op, fid)
            if meta is None:
                raise RemoteError(f"{op}: no such folder")
            src_parent = ",".join(p["id"] for p in meta.get("parents", []))
        kw: dict[str, Any] = {}
        if src_parent != dst_parent:
            kw = {"addParents": dst_parent, "removeParents": src_parent}
        done = self._exec(op, self._service.files().patch(
            fileId=fid, body={"title": _split(dst)[1]}, supportsAllDrives=True, fields="id,createdDate", **kw))
        # ours now: it overrules listings that still show src
        self._cache.renamed(src, dst, fid, dst_parent, done.get("createdDate", ""))

    def briefly(self) -> AbstractContextManager[None]:
        """Give up within seconds on errors that may pass (``RemoteUnavailable``), on this thread."""
        return self._net.briefly()

    def quota(self) -> Quota:
        """Limit and use of the account's storage. Used is what counts against the limit:
        Drive with its trash, and Gmail and Photos, which share it; so free space never
        includes the trash (trash_bytes says how much emptying it would give back)."""
        self._root()
        about = self._exec("read Drive quota", self._service.about().get(
            fields="quotaBytesTotal,quotaBytesUsed,quotaBytesUsedAggregate,quotaBytesUsedInTrash,quotaType"))
        if self._net.shared_drive:  # Shared Drive storage is the organisation's pool, not ours to count
            return Quota(None, 0, 0)
        limit = int(about.get("quotaBytesTotal") or 0)
        unlimited = about.get("quotaType") == "UNLIMITED" or limit <= 0
        trash = int(about.get("quotaBytesUsedInTrash") or 0)
        used = max(int(about.get("quotaBytesUsedAggregate") or 0), int(about.get("quotaBytesUsed") or 0), trash)
        return Quota(None if unlimited else limit, used, trash)

    def empty_trash(self) -> None:
        """Permanently delete everything in the Drive trash (it counts toward the quota)."""
        self._exec("empty Drive trash", self._service.files().emptyTrash())

    def close(self) -> None:
        self._net.close()
