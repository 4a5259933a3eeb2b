"""Google Drive through its v2 API: ``gdrive://<folder path>``.

The URL names a folder under My Drive, or under ``syncd_gdrive_root_id`` (a folder
or a Shared Drive id); ``gdrive://My Drive/x`` is ``gdrive://x``. Missing folders are
created. Remote paths map onto Drive folders by title:

    <root>/<url path>/<run>/checkpoint-N.partial/model.safetensors
                           /checkpoint-N/syncd-manifest.json

Requests go through pydrive2's authorised service (``GoogleAuth``), built from the
bundled discovery document ``drive.v2.json`` so ``syncd_gdrive_root_url`` can point
every request, uploads included, at a proxy or a test server.

Drive is eventually consistent and allows duplicate titles, so:
- the ids of what this process wrote, created or renamed are kept and win over a
  listing, which may lag behind the writes;
- after an upload, other files with the same title in that folder are deleted;
- folders are created with ids generated up front, so a retried create is idempotent.

Uploads use the resumable protocol, one chunk (``syncd_gdrive_chunk_mb``) in memory at a
time, hashing what is sent. The session URI of a file in flight is kept in

    <output_dir>/.syncd/gdrive-uploads/<sha1 of the destination>.json   (mode 0600)

so a process killed mid-file resumes from the last byte Drive acknowledged.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import http.client
import io
import json
import logging
import os
import random
import threading
import time
import urllib.parse
from collections.abc import Callable
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from ..errors import CredentialsError, QuotaError, RemoteError
from ..fsutil import atomic_write_json, read_json
from ..hashing import CHUNK_BYTES, Digest, Progress
from .base import Capabilities, Quota, RemoteFile, join
from .gdrive_auth import describe_refresh_error, load_credentials
from .gdrive_options import GDriveOptions

if TYPE_CHECKING:
    from .registry import RemoteSettings

log = logging.getLogger(__name__)

T = TypeVar("T")
MIB = 1024 * 1024
FOLDER_MIME = "application/vnd.google-apps.folder"
BINARY_MIME = "application/octet-stream"
FILE_FIELDS = "id,title,mimeType,fileSize,md5Checksum,parents(id),labels(trashed),createdDate,modifiedDate,driveId"
LIST_FIELDS = f"nextPageToken,items({FILE_FIELDS})"
LIST_PAGE = 1000  # Drive's maximum page size for files.list

# Reasons Drive gives with a 403 that mean "slow down", not "no".
RATE_REASONS = {"rateLimitExceeded", "userRateLimitExceeded", "sharingRateLimitExceeded", "backendError"}
# The 750 GB/day cap (and its older spellings): retrying for hours helps nobody.
DAILY_REASONS = {"uploadLimitExceeded", "dailyLimitExceeded", "quotaExceeded", "teamDriveFileLimitExceeded"}
# How long ahead of expiry an access token is renewed before an upload starts.
REFRESH_MARGIN_S = 600
# How long a folder id found by listing is reused without asking again; short, because
# another process (the daemon, while we restore or wait) may rename it meanwhile.
LOOKUP_TTL_S = 10.0
# Backoff: base * 2**attempt with jitter, capped; about 4 minutes in all at base 1 s.
BACKOFF_CAP_S = 64.0
MAX_ATTEMPTS = 9
# A Drive that never answered (refused, no such host) gets this many quick tries.
UNREACHABLE_ATTEMPTS = 3
UNREACHABLE_DELAY_S = 0.5


@lru_cache(maxsize=8)
def discovery_document(root_url: str | None) -> str:
    """The bundled Drive v2 discovery document, its URLs moved to ``root_url`` if given."""
    doc = json.loads(resources.files(__package__).joinpath("drive.v2.json").read_text(encoding="utf-8"))
    if root_url:
        root = root_url if root_url.endswith("/") else root_url + "/"
        doc["rootUrl"] = root
        doc["mtlsRootUrl"] = root
        doc["baseUrl"] = root + doc["servicePath"]
    return json.dumps(doc)


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


class _FolderGone(Exception):
    """Drive no longer has the folder an upload was aimed at."""


def _unreachable(err: BaseException) -> str | None:
    """Why no connection could be made at all, or None for errors that may pass."""
    import socket

    import httplib2

    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, (socket.gaierror, httplib2.ServerNotFoundError)):
        return "host name not found"
    if isinstance(err, OSError) and err.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "network unreachable"
    return None


def pick_file(candidates: list[dict[str, Any]], *, mine: str | None = None,
              md5: str | None = None) -> dict[str, Any]:
    """One file among same-titled ones (Drive allows them): the one whose md5 is the
    expected one, if a caller knows it; else the one this process wrote; else the newest.
    Ties break on the id, so every process makes the same choice."""
    def rank(m: dict[str, Any]) -> tuple[bool, bool, str, str]:
        return (md5 is not None and m.get("md5Checksum") == md5, m["id"] == mine,
                m.get("modifiedDate", ""), m["id"])

    return max(candidates, key=rank)


def _close_http(h: Any) -> None:
    for conn in list(getattr(h, "connections", {}).values()):
        try:
            conn.close()
        except OSError:
            pass


class _HashingUpload:
    """Upload source for googleapiclient: bytes of one chunk at a time, hashed once each.

    ``getbytes`` (not a stream) means each chunk is a ``bytes`` body, so a 401 retry
    inside oauth2client or a re-send after a probe never needs a rewind. While a chunk
    is being sent, md5 and sha256 of it run on two helper threads (hashlib releases the
    GIL), so hashing costs little upload time where a core is free. The next chunk waits
    for them, which keeps the hashes in file order and one chunk in memory.
    """

    def __new__(cls, *args: Any, **kwargs: Any):  # built lazily: googleapiclient is heavy
        from googleapiclient.http import MediaIoBaseUpload

        class Impl(MediaIoBaseUpload):
            def __init__(self, fh: BinaryIO, chunk_bytes: int, before_read: Callable[[], None],
                         progress: Progress | None) -> None:
                super().__init__(fh, mimetype=BINARY_MIME, chunksize=chunk_bytes, resumable=True)
                self._md5 = hashlib.md5(usedforsecurity=False)
                self._sha = hashlib.sha256()
                self.hashed = 0  # bytes fed to both hashes (or handed to their threads)
                self._before_read = before_read
                self._progress = progress
                self._pending: list[threading.Thread] = []

            def has_stream(self) -> bool:
                return False

            def wait(self) -> None:
                for t in self._pending:
                    t.join()
                self._pending = []

            def _hash_to(self, pos: int) -> None:
                self.wait()
                while self.hashed < pos:
                    self._fd.seek(self.hashed)
                    block = self._fd.read(min(CHUNK_BYTES, pos - self.hashed))
                    if not block:
                        raise RemoteError("source file shrank during upload")
                    self._md5.update(block)
                    self._sha.update(block)
                    self.hashed += len(block)

            def getbytes(self, begin: int, length: int) -> bytes:
                self._before_read()
                self._hash_to(begin)  # a resumed session starts past bytes sent earlier
                self._fd.seek(begin)
                data = self._fd.read(length)
                new = begin + len(data) - self.hashed
                if new > 0:
                    view = memoryview(data)[len(data) - new:]
                    self._pending = [threading.Thread(target=h.update, args=(view,), daemon=True,
                                                      name="syncd-gdrive-hash")
                                     for h in (self._md5, self._sha)]
                    for t in self._pending:
                        t.start()
                    self.hashed += new
                    if self._progress:
                        self._progress(new)
                return data

            def digest(self) -> Digest:
                self._hash_to(self.size())
                return Digest(self.hashed, self._md5.hexdigest(), self._sha.hexdigest())

        return Impl(*args, **kwargs)


class _SessionStore:
    """Resumable-session URIs of files in flight, one small JSON file each."""

    def __init__(self, folder: Path | None, url: str) -> None:
        self.folder = folder
        self.url = url

    def _path(self, dest: str) -> Path | None:
        if self.folder is None:
            return None
        key = hashlib.sha1(f"{self.url}\n{dest}".encode()).hexdigest()
        return self.folder / f"{key}.json"

    def load(self, dest: str, ident: dict[str, Any]) -> str | None:
        path = self._path(dest)
        if path is None:
            return None
        state = read_json(path)
        if not isinstance(state, dict):
            return None
        if any(state.get(k) != v for k, v in ident.items()) or not isinstance(state.get("uri"), str):
            log.info("discarding stale upload session for %s (source or target changed)", dest)
            self.clear(dest)
            return None
        return state["uri"]

    def save(self, dest: str, ident: dict[str, Any], uri: str) -> None:
        path = self._path(dest)
        if path is not None:
            atomic_write_json(path, ident | {"uri": uri}, mode=0o600)

    def clear(self, dest: str) -> None:
        path = self._path(dest)
        if path is not None:
            try:
                path.unlink()
            except FileNotFoundError:
                pass


class _SaveSessionOnce:
    """Called before each chunk is read: the first call after Drive opened the session saves it."""

    def __init__(self, store: _SessionStore, dest: str, ident: dict[str, Any] | None, done: bool) -> None:
        self.store, self.dest, self.ident, self.done = store, dest, ident, done
        self.req: Any = None

    def __call__(self) -> None:
        if self.ident and not self.done and self.req is not None and self.req.resumable_uri:
            self.store.save(self.dest, self.ident, self.req.resumable_uri)
            self.done = True


class _RangeReader(io.RawIOBase):
    """A Drive file as a read-only stream: one ranged GET per chunk, at most one chunk held.

    Small reads are served from the last chunk fetched, so a caller reading 8 KiB at a
    time still costs one request per chunk, not one per read.
    """

    def __init__(self, remote: GDriveRemote, rel: str, file_id: str, size: int, chunk_bytes: int) -> None:
        self._remote = remote
        self._rel = rel
        self._uri = remote._service.files().get_media(fileId=file_id, supportsAllDrives=True).uri
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

            resp, content = self._remote._http().request(
                self._uri, "GET", headers={"Range": f"bytes={first}-{last}"})
            if resp.status == 206:
                return content
            if resp.status == 200:  # a server that ignores Range: take our slice
                return content[first:last + 1]
            raise HttpError(resp, content, uri=self._uri)

        data = self._remote._call(f"read {self._rel}", fetch)
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
        if chunk_bytes <= 0 or chunk_bytes % (256 * 1024):
            raise RemoteError("gdrive chunk size must be a positive multiple of 256 KiB")
        self.url = url
        self._parts = parse_url(url)
        self._root_url = root_url
        self._root_arg = root_id or "root"
        self._chunk = chunk_bytes
        self._delete_mode = delete_mode
        self._timeout_s = timeout_s
        self._backoff_base_s = backoff_base_s
        self._max_attempts = max_attempts
        self._cred_path = str(Path(credentials).expanduser()) if credentials else None
        self._sessions = _SessionStore(state_dir, url)
        self._closing = threading.Event()
        self._rng = random.Random()
        self._lock = threading.RLock()  # caches below
        self._mkdir_lock = threading.RLock()  # one folder walk at a time: no twin folders of our own
        self._local = threading.local()
        self._https: list[tuple[threading.Thread, Any]] = []
        # Folders are keyed by their path under the URL folder ("" is that folder); the URL's
        # own folders above it by "\0<level>". What this process created or moved (key -> id)
        # overrules a listing; another process may rename what we merely looked up.
        self._dirs: dict[str, str] = {}
        self._seen: dict[str, tuple[list[str], float]] = {}  # looked up: key -> (twins, when)
        self._used: dict[str, str] = {}  # key -> the folder writes went to: checked by id, not path
        self._checked: dict[str, tuple[float, str]] = {}  # folder id -> (when confirmed, createdDate)
        self._parent_of: dict[str, str] = {}  # id -> parent id, of what we created, moved or uploaded
        self._files: dict[str, RemoteFile] = {}
        self._file_ids: dict[str, str] = {}
        self._where: dict[str, str] = {}  # id -> path, for ids above
        self._gone: set[str] = set()  # ids deleted here, which lagging listings may still show
        self._root_id: str | None = None
        self._shared_drive: str | None = None
        self._spare_ids: list[str] = []

        self._reached = False  # whether any request got an answer: unreachable at first fails fast
        self._cred_lock = threading.Lock()
        self._cred_gen = 0  # bumped when the credentials file is read again; threads re-authorise
        self._cred_stamp = self._stamp()
        self._creds, self._cred_kind = load_credentials(self._cred_path)  # also readies oauth2client
        from googleapiclient.discovery import build_from_document
        from pydrive2.auth import GoogleAuth

        self._gauth = GoogleAuth(settings={
            "client_config_backend": "settings",
            "client_config": {"client_id": "unused", "client_secret": "unused"},
            "save_credentials": False,
            "oauth_scope": ["https://www.googleapis.com/auth/drive"],
        }, http_timeout=timeout_s)
        self._gauth.credentials = self._creds
        self._gauth.auth_method = "service" if self._cred_kind == "service" else "local"
        self._gauth.http = self._http()
        self._service = build_from_document(discovery_document(root_url), http=self._gauth.http)
        self._gauth.service = self._service

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

    # ------------------------------------------------------------ plumbing

    def _http(self) -> Any:
        """An authorised httplib2.Http for this thread (they are not thread-safe).

        Upload pools come and go, so connections of threads that have ended are closed
        here rather than left open for the life of the daemon.
        """
        h = getattr(self._local, "http", None)
        if h is None or getattr(self._local, "gen", None) != self._cred_gen:
            stale = h  # authorised with credentials read before the file changed
            h = self._gauth.Get_Http_Object()
            self._local.http, self._local.gen = h, self._cred_gen
            with self._lock:
                dead = [(t, old) for t, old in self._https if not t.is_alive() or old is stale]
                self._https = [(t, old) for t, old in self._https if t.is_alive() and old is not stale]
                self._https.append((threading.current_thread(), h))
            for _, old in dead:
                _close_http(old)
        return h

    def _stamp(self) -> tuple[int, int, int] | None:
        if self._cred_path is None:
            return None
        try:
            st = os.stat(self._cred_path)
        except OSError:
            return None  # gone for a moment, or for good: keep what we have; Drive will say
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _reload_credentials(self) -> bool:
        """Read the credentials file again if it changed (``syncd auth`` rewrote it); True if so."""
        stamp = self._stamp()
        if stamp is None or stamp == self._cred_stamp:
            return False
        with self._cred_lock:
            if stamp == self._cred_stamp:
                return False  # another thread did it meanwhile
            creds, kind = load_credentials(self._cred_path)  # a broken file: its one clear line
            self._creds, self._cred_kind = creds, kind
            self._gauth.credentials = creds
            self._gauth.auth_method = "service" if kind == "service" else "local"
            self._cred_stamp = stamp
            self._cred_gen += 1
        log.warning("Google Drive credentials file %s changed; using the new credentials", self._cred_path)
        return True

    def _exec(self, op: str, request: Any) -> Any:
        return self._call(op, lambda: request.execute(http=self._http()))

    def _call(self, op: str, fn: Callable[[], T]) -> T:
        self._reload_credentials()
        attempt, reloaded = 0, False
        while True:
            try:
                out = fn()
                self._reached = True
                return out
            except Exception as e:  # sorted into retry or raise just below
                if self._retry(op, e, attempt, reloaded):
                    reloaded = True
                else:
                    attempt += 1

    def _retry(self, op: str, err: Exception, attempt: int, reloaded: bool) -> bool:
        """Sleep before the next attempt or raise; True: rejected credentials were replaced
        on disk meanwhile and are read again, so retry at once (once)."""
        try:
            self._retry_or_raise(op, err, attempt)
        except CredentialsError:
            if reloaded or not self._reload_credentials():
                raise
            return True
        return False

    def _retry_or_raise(self, op: str, err: Exception, attempt: int) -> None:
        """Sleep before the next attempt, or raise the right SyncdError."""
        import httplib2
        from googleapiclient.errors import HttpError
        from oauth2client.client import AccessTokenRefreshError, HttpAccessTokenRefreshError

        if isinstance(err, (RemoteError, CredentialsError)):
            raise err
        why: str
        if isinstance(err, HttpError):
            status = err.resp.status
            reason = self._reason(err)
            why = f"HTTP {status} {reason}".strip()
            if status == 403 and reason == "storageQuotaExceeded":
                if self._cred_kind == "service" and not self._shared_drive:
                    raise QuotaError(
                        f"{op}: service accounts have no storage in My Drive; put the backup folder "
                        "on a Shared Drive (syncd_gdrive_root_id) or use OAuth user credentials (syncd auth)"
                    ) from err
                raise QuotaError(
                    f"{op}: Google Drive storage is full; free space (emptying the trash helps) "
                    "or lower backup_keep_last") from err
            if status == 403 and reason in DAILY_REASONS:
                raise QuotaError(
                    f"{op}: Google Drive's daily upload limit (750 GB a day) is reached; "
                    "uploads can continue once it resets, within 24 hours") from err
            if status == 401:
                raise CredentialsError(
                    f"{op}: Google Drive rejected the credentials"
                    f"{' in ' + self._cred_path if self._cred_path else ''}; run syncd auth again") from err
            retry = status == 429 or status >= 500 or (status == 403 and reason in RATE_REASONS)
            if not retry:
                raise RemoteError(f"{op}: {why}") from err
        elif isinstance(err, HttpAccessTokenRefreshError):
            if err.status is not None and err.status < 500 and err.status != 429:
                raise CredentialsError(describe_refresh_error(err, self._cred_path)) from None
            why = f"token refresh HTTP {err.status}"
        elif isinstance(err, AccessTokenRefreshError):
            raise CredentialsError(describe_refresh_error(err, self._cred_path)) from None
        elif isinstance(err, (OSError, httplib2.HttpLib2Error, http.client.HTTPException)):
            why = type(err).__name__
            unreachable = _unreachable(err)
            if unreachable and not self._reached:
                # Nothing ever answered: a wrong address or no network, not a hiccup. Say so
                # in a second or two rather than after minutes of backoff.
                if attempt + 1 >= UNREACHABLE_ATTEMPTS:
                    where = f" at {self._root_url}" if self._root_url else ""
                    raise RemoteError(
                        f"{op}: cannot reach Google Drive{where} ({unreachable}); "
                        "check the network connection") from None
                if self._closing.wait(min(UNREACHABLE_DELAY_S, self._backoff_base_s)):
                    raise RemoteError(f"{op}: remote closed while retrying ({why})") from err
                return
        else:
            raise err
        if attempt + 1 >= self._max_attempts:
            raise RemoteError(f"{op}: giving up after {attempt + 1} attempts ({why})") from err
        delay = min(BACKOFF_CAP_S, self._backoff_base_s * 2**attempt) * (0.5 + self._rng.random() / 2)
        log.warning("%s: %s; retrying in %.1f s", op, why, delay)
        if self._closing.wait(delay):
            raise RemoteError(f"{op}: remote closed while retrying ({why})") from err

    @staticmethod
    def _reason(err: Any) -> str:
        try:
            data = json.loads(err.content.decode("utf-8"))
            errors = data["error"].get("errors") or []
            return (errors[0].get("reason") if errors else None) or data["error"].get("status") or ""
        except (ValueError, KeyError, AttributeError, TypeError, IndexError):
            return ""

    def _fresh_token(self) -> None:
        """Renew the access token now if it would expire during a long upload."""
        expiry = getattr(self._creds, "token_expiry", None)
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        if getattr(self._creds, "access_token", None) and expiry and (expiry - now).total_seconds() > REFRESH_MARGIN_S:
            return
        import httplib2

        raw = httplib2.Http(timeout=self._timeout_s)
        self._call("refresh token", lambda: self._creds.refresh(raw))

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
            self._shared_drive = meta.get("driveId") or None
            self._root_id = meta["id"]
        return self._root_id

    def _base_key(self, level: int) -> str:
        return "" if level == len(self._parts) - 1 else f"\0{level}"

    def _parent_key(self, key: str) -> str | None:
        """The key one level up; None for the top (My Drive or ``syncd_gdrive_root_id``)."""
        if key.startswith("\0") or key == "":
            level = int(key[1:]) if key else len(self._parts) - 1
            return None if level <= 0 else self._base_key(level - 1)
        return _split(key)[0]

    def _title(self, key: str) -> str:
        if key.startswith("\0"):
            return self._parts[int(key[1:])]
        return self._parts[-1] if key == "" else _split(key)[1]

    def _depth(self, key: str) -> int:
        if key.startswith("\0"):
            return int(key[1:])
        return len(self._parts) - 1 + (key.count("/") + 1 if key else 0)

    def _display(self, key: str) -> str:
        """The folder's path under My Drive (or the root id), as a person sees it."""
        if key.startswith("\0"):
            return "/".join(self._parts[:int(key[1:]) + 1])
        return "/".join([*self._parts, *([key] if key else [])]) or "the top folder"

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
                ids = None
                if not fresh:
                    with self._lock:
                        hit = self._seen.get(key)
                    if hit is not None and time.monotonic() - hit[1] < LOOKUP_TTL_S:
                        ids = hit[0]
                if ids is None:
                    parents = self._ids(self._parent_key(key), create, fresh, memo)
                    ids = self._twins(key, parents, fresh) if parents else []
                    if not ids and create:
                        ids = [self._create_dir(key, parents[0])]
                    if ids:
                        with self._lock:
                            self._seen[key] = (ids, time.monotonic())
                if memo is not None and ids:
                    memo[key] = ids
            if create and ids:
                with self._lock:
                    self._used[key] = ids[0]
            return ids

    def _twins(self, key: str, parents: list[str], fresh: bool) -> list[str]:
        """Ids of the folders titled as ``key`` in any of ``parents``, oldest first."""
        title = self._title(key)
        found: dict[str, str] = {}  # id -> createdDate
        for pid in parents:
            for m in self._not_moved(self._children(pid, title, folders_only=True), key):
                found[m["id"]] = m.get("createdDate", "")
        with self._lock:  # ours, or written to: a lagging listing may not show them yet
            rely = sorted({i for i in (self._dirs.get(key), self._used.get(key)) if i})
        for fid in rely:
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
        with self._lock:
            hit = self._checked.get(fid)
        if hit is not None and not fresh and time.monotonic() - hit[0] < LOOKUP_TTL_S:
            return hit[1]
        meta = self._get_meta(f"check folder {self._display(key)}", fid)
        if meta is None:  # deleted or trashed: forget it, so that writers make it again
            log.warning("Google Drive folder %s has disappeared; looking it up again", self._display(key))
            with self._lock:
                for table in (self._dirs, self._used):
                    if table.get(key) == fid:
                        del table[key]
                self._seen.pop(key, None)
                self._checked.pop(fid, None)
            return None
        if meta.get("title") != self._title(key) or not any(p["id"] in parents for p in meta.get("parents", [])):
            raise RemoteError(
                f"Google Drive folder {self._display(key)} was moved or renamed in Drive "
                f"(it is now {self._location(meta)}); syncd will not write where restore cannot find it: "
                "move it back, or set gdrive_backup_dir to its new place")
        with self._lock:
            self._checked[fid] = (time.monotonic(), meta.get("createdDate", ""))
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
        fid, created = self._create_folder(parent_id, self._title(key))
        with self._lock:
            self._dirs[key] = fid
            self._where[fid] = key
            self._parent_of[fid] = parent_id
            self._checked[fid] = (time.monotonic(), created)
        return fid

    def _list(self, op: str, q: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token = None
        kw: dict[str, Any] = {"supportsAllDrives": True, "includeItemsFromAllDrives": True}
        if self._shared_drive:
            kw |= {"corpora": "drive", "driveId": self._shared_drive}
        while True:
            req = self._service.files().list(q=q, maxResults=LIST_PAGE, pageToken=token, fields=LIST_FIELDS, **kw)
            page = self._exec(op, req)
            out.extend(i for i in page.get("items", []) if i["id"] not in self._gone)
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
        with self._lock:
            return [m for m in metas if self._where.get(m["id"], rel) == rel]

    def _create_folder(self, parent_id: str, title: str) -> tuple[str, str]:
        """(id, createdDate) of a new folder."""
        from googleapiclient.errors import HttpError

        if not self._spare_ids:
            got = self._exec("generate ids", self._service.files().generateIds(maxResults=10, space="drive"))
            self._spare_ids = list(got.get("ids", []))
        fid = self._spare_ids.pop()
        body = {"id": fid, "title": title, "mimeType": FOLDER_MIME, "parents": [{"id": parent_id}]}

        def create() -> Any:
            try:
                return self._service.files().insert(body=body, supportsAllDrives=True, fields="id,createdDate").execute(
                    http=self._http())
            except HttpError as e:  # an earlier attempt did land: the id is taken by our folder
                if e.resp.status == 409:
                    return self._get_meta(f"create folder {title}", fid) or {"id": fid}
                raise

        made = self._call(f"create folder {title}", create)
        return made["id"], made.get("createdDate", "")

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
            with self._lock:
                dirs = sorted(self._dirs.items(), key=lambda kv: (self._depth(kv[0]), kv[0]))
            for key, fid in dirs:
                with self._lock:
                    if self._dirs.get(key) != fid:
                        continue
                twins = self._ids(key, fresh=True, memo=memo)
                if fid not in twins:
                    continue
                if twins[0] != fid:
                    log.warning("Google Drive has two folders %s (made while its listings lagged); "
                                "moving what syncd put in the newer one into the older one", self._display(key))
                    with self._lock:
                        del self._dirs[key]  # still found through listings, as a twin
                        if self._used.get(key) == fid:
                            self._used[key] = twins[0]
                    continue
                parents = self._ids(self._parent_key(key), fresh=True, memo=memo)
                self._move_into(key, fid, parents[0])
            with self._lock:
                files = sorted(self._file_ids.items())
            for rel, fid in files:
                parents = self._ids(_split(rel)[0], fresh=True, memo=memo)
                if parents:
                    self._move_into(rel, fid, parents[0])
        return memo

    def _move_into(self, key: str, fid: str, target: str) -> None:
        """Re-parent one item of ours into ``target`` (a move, never a copy and delete)."""
        with self._lock:
            current = self._parent_of.get(fid)
        if current is None or current == target:
            return
        self._exec(f"move {self._display(key)} into the older twin folder", self._service.files().patch(
            fileId=fid, body={}, addParents=target, removeParents=current, supportsAllDrives=True,
            fields="id"))
        with self._lock:
            self._parent_of[fid] = target
            self._seen.clear()

    def _rel_dirs(self) -> dict[str, str]:
        """Our folders below the URL folder (not the URL's own chain)."""
        with self._lock:
            return {k: v for k, v in self._dirs.items() if k and not k.startswith("\0")}

    def _remember_file(self, rel: str, fid: str, size: int, md5: str | None, parent: str) -> None:
        with self._lock:
            old = self._file_ids.get(rel)
            if old:
                self._where.pop(old, None)
            self._files[rel] = RemoteFile(rel, size, md5)
            self._file_ids[rel] = fid
            self._where[fid] = rel
            self._parent_of[fid] = parent

    def _forget(self, rel: str, ids: set[str]) -> None:
        rel = rel.strip("/")
        with self._lock:
            for table in (self._dirs, self._file_ids):
                for key in [k for k in table if k == rel or k.startswith(rel + "/")]:
                    self._where.pop(table.pop(key), None)
            for key in [k for k in self._used if k == rel or k.startswith(rel + "/")]:
                del self._used[key]
            for key in [k for k in self._files if k == rel or k.startswith(rel + "/")]:
                del self._files[key]
            self._seen.clear()
            self._gone |= ids

    def _pick(self, rel: str, candidates: list[dict[str, Any]], md5: str | None = None) -> dict[str, Any]:
        with self._lock:
            mine = self._file_ids.get(rel)
        return pick_file(candidates, mine=mine, md5=md5)

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
        with self._mkdir_lock, self._lock:  # after the listing: a rename since is known here
            where = dict(self._where)
        dirs = self._rel_dirs()
        for m in listed:
            seen_at = where.get(m["id"])
            if seen_at is not None:  # ours: where we put it wins over a lagging listing
                if seen_at == join(prefix, m["title"]):
                    names.add(m["title"])
                continue
            # Another process may have renamed or deleted it since (Drive listings lag,
            # reads by id do not): ask for this one folder as it is now.
            now = self._get_meta(f"list {prefix or '/'}", m["id"])
            if now is not None and any(p["id"] in fids for p in now.get("parents", [])):
                names.add(now["title"])
        for rel in dirs:
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
            with self._mkdir_lock, self._lock:  # after the listing: a rename since is known here
                where = dict(self._where)
            dirs = self._rel_dirs()
            for m in kids:
                rel = join(sub, m["title"])
                full = join(prefix, rel)
                if where.get(m["id"], full) != full:
                    continue  # moved or renamed by us; the listing has not caught up
                if m.get("mimeType") == FOLDER_MIME:
                    todo.append((m["id"], rel))
                elif self._is_file(m):
                    groups.setdefault(rel, {})[m["id"]] = m
            here = join(prefix, sub)
            for d, did in dirs.items():  # folders made or moved here that the listing lags behind
                head, tail = _split(d)
                if head == here:
                    todo.append((did, join(sub, tail)))
        found = {rel: self._as_file(rel, self._pick(join(prefix, rel), list(c.values())))
                 for rel, c in groups.items()}
        listed_ids = {i for cands in groups.values() for i in cands}
        with self._lock:
            ours = [(rel, rf, self._file_ids[rel]) for rel, rf in self._files.items()
                    if prefix == "" or rel.startswith(prefix + "/")]
        for rel, rf, fid in ours:  # what we uploaded wins; if the listing lacks it, ask by id
            if fid not in listed_ids and self._get_meta(f"list {prefix or '/'}", fid) is None:
                self._forget(rel, {fid})
                continue
            sub = rel[len(prefix) + 1:] if prefix else rel
            found[sub] = RemoteFile(sub, rf.size, rf.md5)
        return sorted(found.values(), key=lambda f: f.path)

    def _lookup(self, rel: str, md5: str | None = None) -> dict[str, Any] | None:
        """Metadata of the file at ``rel``: by the id we know, else by title in any twin of
        its folder; with ``md5``, a copy with that checksum wins over newer ones."""
        rel = rel.strip("/")
        with self._lock:
            fid = self._file_ids.get(rel)
            ours = self._files.get(rel)
        if fid is not None and (md5 is None or ours is None or ours.md5 == md5):
            meta = self._get_meta(f"stat {rel}", fid)
            if meta is not None:
                return meta
            self._forget(rel, {fid})
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

    def _get_meta(self, op: str, fid: str) -> dict[str, Any] | None:
        """Current metadata by id (consistent, unlike listings); None if gone or trashed."""
        from googleapiclient.errors import HttpError

        def get() -> Any:
            try:
                return self._service.files().get(fileId=fid, supportsAllDrives=True, fields=FILE_FIELDS).execute(
                    http=self._http())
            except HttpError as e:
                if e.resp.status == 404:
                    return None
                raise

        meta = self._call(op, get)
        if meta is None or meta.get("labels", {}).get("trashed"):
            return None
        return meta

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
            ident = {"dest": dest, "src": str(Path(src).resolve()), "size": st.st_size,
                     "mtime_ns": st.st_mtime_ns, "parent": parent}
            try:
                with open(src, "rb") as fh:
                    return self._upload(dest, parent, title, fh, ident, progress)
            except _FolderGone:
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
            try:
                self._upload(dest, parent, title, io.BytesIO(data), None, None)
                return
            except _FolderGone:
                if again:
                    raise RemoteError(f"upload {dest}: its folder keeps disappearing") from None
                self._reset_folders()

    def _reset_folders(self) -> None:
        """Someone deleted a folder we knew: forget every folder id and look them up again."""
        log.warning("a Drive folder syncd knew has disappeared; looking the folders up again")
        with self._mkdir_lock, self._lock:
            self._dirs.clear()
            self._seen.clear()
            self._used.clear()
            self._checked.clear()
            self._files.clear()
            self._file_ids.clear()
            self._where.clear()
            self._parent_of.clear()

    def _upload(self, dest: str, parent: str, title: str, fh: BinaryIO,
                ident: dict[str, Any] | None, progress: Progress | None) -> Digest:
        op = f"upload {dest}"
        self._fresh_token()
        uri = self._sessions.load(dest, ident) if ident else None
        body = {"title": title, "mimeType": BINARY_MIME, "parents": [{"id": parent}]}
        for _ in range(3):  # once more from byte 0 only if Drive forgot the session
            persist = _SaveSessionOnce(self._sessions, dest, ident, done=uri is not None)
            media = _HashingUpload(fh, self._chunk, persist, progress)
            req = persist.req = self._service.files().insert(
                body=body, media_body=media, supportsAllDrives=True, fields=FILE_FIELDS)
            if uri is not None:
                req.resumable_uri = uri
                req._in_error_state = True  # googleapiclient: ask Drive how far it got first
                log.info("%s: resuming its upload session", op)
            try:
                result = self._send_all(op, req)
            finally:
                media.wait()  # the hash thread never outlives the upload
            if result is not None:
                break
            if ident:  # Drive forgot the session
                self._sessions.clear(dest)
            uri = None
        else:
            raise RemoteError(f"{op}: Drive keeps dropping the upload session")
        digest = media.digest()
        if ident:
            self._sessions.clear(dest)
        fid = result["id"]
        size = int(result.get("fileSize") or -1)
        if size != digest.size or result.get("md5Checksum") != digest.md5:
            self._remove(op, fid)
            raise RemoteError(
                f"{op}: Drive stored {size} bytes with md5 {result.get('md5Checksum')}, "
                f"but {digest.size} bytes with md5 {digest.md5} were sent")
        with self._lock:
            older = self._file_ids.get(dest)
        self._remember_file(dest, fid, digest.size, digest.md5, parent)
        # Overwrite: everything else titled so in that folder goes (an older version, or a
        # twin from an upload another process finished), now that ours is verified.
        stale = {m["id"] for m in self._children(parent, title) if m["id"] != fid}
        if older and older != fid:
            stale.add(older)
        for other in stale:
            self._remove(f"{op} (older copy)", other)
        with self._lock:
            self._gone |= stale
        return digest


    def _send_all(self, op: str, req: Any) -> dict[str, Any] | None:
        """Chunks until Drive answers with the file; None when the session is gone (404/410)."""
        from googleapiclient.errors import HttpError

        attempt, last_progress, reloaded = 0, -1, False
        while True:
            try:
                _, result = req.next_chunk(http=self._http())
            except HttpError as e:
                if req.resumable_uri and e.resp.status in (404, 410):
                    log.info("%s: Drive no longer knows the upload session; starting over", op)
                    return None
                if not req.resumable_uri and e.resp.status == 404:
                    raise _FolderGone from e
                if self._retry(op, e, attempt, reloaded):
                    reloaded = True
                else:
                    attempt += 1
                continue
            except Exception as e:  # transport errors retry; the rest re-raise in there
                if self._retry(op, e, attempt, reloaded):
                    reloaded = True
                else:
                    attempt += 1
                continue
            self._reached = True
            if result is not None:
                return result
            if req.resumable_progress > last_progress:  # moving again: reset the backoff
                last_progress, attempt = req.resumable_progress, 0


    def _remove(self, op: str, fid: str) -> None:
        from googleapiclient.errors import HttpError

        def go() -> None:
            try:
                if self._delete_mode == "trash":
                    self._service.files().trash(fileId=fid, supportsAllDrives=True, fields="id").execute(
                        http=self._http())
                else:
                    self._service.files().delete(fileId=fid, supportsAllDrives=True).execute(http=self._http())
            except HttpError as e:
                if e.resp.status != 404:  # already gone is fine
                    raise

        self._call(op, go)


    def open_read(self, path: str, *, md5: str | None = None) -> BinaryIO:
        rel = path.strip("/")
        meta = self._lookup(rel, md5)
        if meta is None:
            raise RemoteError(f"read {rel}: no such file on Google Drive")
        raw = _RangeReader(self, rel, meta["id"], int(meta.get("fileSize") or 0), self._chunk)
        return io.BufferedReader(raw, buffer_size=min(self._chunk, CHUNK_BYTES))  # type: ignore[return-value]

    def delete(self, prefix: str) -> None:
        rel = prefix.strip("/")
        if not rel:
            raise RemoteError("delete: refusing to delete the whole gdrive:// folder")
        head, title = _split(rel)
        parents = self._ids(head)
        ids: set[str] = set()
        with self._lock:
            for table in (self._dirs, self._file_ids, self._used):
                if rel in table:
                    ids.add(table[rel])
        if parents:  # in every twin of its folder: readers see them all
            ids |= {m["id"] for m in self._not_moved(self._children_of_all(parents, title), rel)}
        for fid in sorted(ids):
            self._remove(f"delete {rel}", fid)
        self._forget(rel, ids)

    def rename_dir(self, src: str, dst: str) -> None:
        with self._mkdir_lock:  # listings read our tables after it, never halfway through
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
        with self._lock:
            src_parent = self._parent_of.get(fid)
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
        with self._lock:  # move what we know under src to dst
            for table in (self._dirs, self._file_ids, self._used):
                for key in [k for k in table if k == src or k.startswith(src + "/")]:
                    new = dst + key[len(src):]
                    table[new] = table.pop(key)
                    if table is not self._used:
                        self._where[table[new]] = new
            for key in [k for k in self._files if k == src or k.startswith(src + "/")]:
                rf = self._files.pop(key)
                new = dst + key[len(src):]
                self._files[new] = RemoteFile(new, rf.size, rf.md5)
            self._seen.clear()
            self._dirs[dst] = fid  # ours now: it overrules listings that still show src
            self._where[fid] = dst
            self._parent_of[fid] = dst_parent
            self._checked[fid] = (time.monotonic(), done.get("createdDate", ""))

    def quota(self) -> Quota:
        """Limit and use of the account's storage. Used is what counts against the limit:
        Drive with its trash, and Gmail and Photos, which share it; so free space never
        includes the trash (trash_bytes says how much emptying it would give back)."""
        self._root()
        about = self._exec("read Drive quota", self._service.about().get(
            fields="quotaBytesTotal,quotaBytesUsed,quotaBytesUsedAggregate,quotaBytesUsedInTrash,quotaType"))
        if self._shared_drive:  # Shared Drive storage is the organisation's pool, not ours to count
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
        self._closing.set()
        with self._lock:
            https, self._https = self._https, []
        for _, h in https:
            _close_http(h)
