"""Drive's resumable upload protocol, spoken here, and the sessions kept across crashes.

One file goes up as one session (https://developers.google.com/drive/api/guides/manage-uploads):

    POST <upload endpoint>?uploadType=resumable   metadata   -> 200, Location: <session URI>
    PUT  <session URI>  Content-Range: bytes a-b/N  a chunk  -> 308 Range: bytes=0-k (have k+1)
                                                              | 200/201 the new file's metadata
    PUT  <session URI>  Content-Range: bytes */N    nothing  -> the same answers: a probe

``ResumableUpload`` tracks the session's state itself: how many bytes Drive has
acknowledged, and whether the last exchange failed (a dropped connection, a 5xx) or the
session was reopened after a crash, in which case the next step probes before sending,
so a chunk is never sent from a guessed offset. Chunks are ``bytes`` read on demand
(one chunk in memory at a time), so an authorised connection that refreshes a token
on a 401 can send the same body again without rewinding anything.

The session URI of a file in flight is kept in

    <output_dir>/.syncd/gdrive-uploads/<sha1 of the remote URL and the destination>.json
        {"dest", "src", "size", "mtime_ns", "parent", "uri"}          (mode 0600)

written as soon as Drive opened the session and removed once the file is in Drive.
A state file whose source or target no longer matches is stale: it is dropped with a
line in the log, and the upload starts over.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import RemoteError
from ..fsutil import atomic_write_json, read_json
from ..hashing import CHUNK_BYTES, Digest, Progress

if TYPE_CHECKING:
    from .gdrive_transport import Transport

log = logging.getLogger(__name__)

BINARY_MIME = "application/octet-stream"
# Drive takes chunks in multiples of this, except the last one.
CHUNK_MULTIPLE_BYTES = 256 * 1024
# How often a session Drive forgot (404/410) is opened again from byte 0.
FRESH_SESSIONS = 3


class FolderGone(Exception):
    """Drive no longer has the folder an upload was aimed at (404 opening the session)."""


class SessionLost(Exception):
    """Drive no longer knows the session (404/410 on a chunk or probe): start over."""


class HashingSource:
    """Bytes of one local file, one chunk at a time, each byte hashed once.

    While a chunk is being sent, md5 and sha256 of it run on two helper threads
    (hashlib releases the GIL), so hashing costs little upload time where a core is
    free. The next read waits for them, which keeps the hashes in file order and one
    chunk in memory. A session resumed at byte k hashes bytes 0..k from the file first.
    """

    def __init__(self, fh: BinaryIO, progress: Progress | None = None) -> None:
        self._fh = fh
        fh.seek(0, 2)
        self.size = fh.tell()
        self.hashed = 0  # bytes fed to both hashes (or handed to their threads)
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha = hashlib.sha256()
        self._progress = progress
        self._pending: list[threading.Thread] = []

    def wait(self) -> None:
        """Until the hash threads of the last chunk are done."""
        for t in self._pending:
            t.join()
        self._pending = []

    def _hash_to(self, pos: int) -> None:
        self.wait()
        while self.hashed < pos:
            self._fh.seek(self.hashed)
            block = self._fh.read(min(CHUNK_BYTES, pos - self.hashed))
            if not block:
                raise RemoteError("source file shrank during upload")
            self._md5.update(block)
            self._sha.update(block)
            self.hashed += len(block)

    def read_at(self, begin: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``begin``; new bytes go to the hashes and ``progress``."""
        self._hash_to(begin)
        self._fh.seek(begin)
        data = self._fh.read(length)
        new = begin + len(data) - self.hashed
        if new > 0:
            view = memoryview(data)[len(data) - new:]
            self._pending = [threading.Thread(target=h.update, args=(view,), daemon=True, name="syncd-gdrive-hash")
                             for h in (self._md5, self._sha)]
            for t in self._pending:
                t.start()
            self.hashed += new
            if self._progress:
                self._progress(new)
        return data

    def digest(self) -> Digest:
        """Of the whole file, once it was sent (bytes not yet hashed are read now)."""
        self._hash_to(self.size)
        return Digest(self.hashed, self._md5.hexdigest(), self._sha.hexdigest())


class SessionStore:
    """Session URIs of files in flight, one small JSON file each (see the module docstring)."""

    def __init__(self, folder: Path | None, url: str) -> None:
        self.folder = folder  # None: nothing kept (a crash then starts the file over)
        self.url = url

    def _path(self, dest: str) -> Path | None:
        if self.folder is None:
            return None
        key = hashlib.sha1(f"{self.url}\n{dest}".encode()).hexdigest()
        return self.folder / f"{key}.json"

    def load(self, dest: str, ident: dict[str, Any]) -> str | None:
        """The URI saved for ``dest`` if it was saved for this same source and target."""
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
            path.unlink(missing_ok=True)


class ResumableUpload:
    """One upload session; ``step`` makes one exchange with Drive.

    State, all of it here: ``uri`` (None until Drive opened the session), ``acked``
    (bytes Drive said it holds), ``must_probe`` (ask Drive how far it got before the
    next chunk: after any failed exchange, and for a session reopened from disk).
    """

    def __init__(self, start_url: str, metadata: dict[str, Any], source: HashingSource,
                 chunk_bytes: int, uri: str | None = None) -> None:
        if chunk_bytes <= 0 or chunk_bytes % CHUNK_MULTIPLE_BYTES:
            raise ValueError("chunk size must be a positive multiple of 256 KiB")
        self.start_url = start_url
        self.metadata = metadata
        self.source = source
        self.chunk_bytes = chunk_bytes
        self.uri = uri
        self.acked = 0
        self.must_probe = uri is not None
        self.on_open: Any = None  # called with the URI once Drive opened a new session

    def step(self, http: Any) -> dict[str, Any] | None:
        """Open, probe or send one chunk; the new file's metadata once Drive has it all.

        Raises ``HttpError`` for an answer that is none of the protocol's (to be retried
        or not by the caller), ``FolderGone`` and ``SessionLost`` as described on them,
        and whatever the connection raised."""
        if self.uri is None:
            self._open(http)
        elif self.must_probe:
            done = self._exchange(http, b"", {"Content-Range": f"bytes */{self.source.size}"})
            if done is not None:
                return done
        data = self.source.read_at(self.acked, self.chunk_bytes)
        headers = {}
        if data:  # an empty file is finished by an empty PUT with no range at all
            total = self.source.size if len(data) == self.chunk_bytes else self.acked + len(data)
            headers["Content-Range"] = f"bytes {self.acked}-{self.acked + len(data) - 1}/{total}"
        return self._exchange(http, data, headers)

    def _open(self, http: Any) -> None:
        from googleapiclient.errors import HttpError

        body = json.dumps(self.metadata).encode()
        resp, content = http.request(self.start_url, "POST", body=body, headers={
            "Content-Type": "application/json; charset=UTF-8", "Content-Length": str(len(body)),
            "X-Upload-Content-Type": BINARY_MIME, "X-Upload-Content-Length": str(self.source.size)})
        if resp.status == 404:
            raise FolderGone
        if resp.status != 200 or "location" not in resp:
            raise HttpError(resp, content, uri=self.start_url)
        self.uri, self.acked, self.must_probe = resp["location"], 0, False
        if self.on_open is not None:
            self.on_open(self.uri)

    def _exchange(self, http: Any, body: bytes, headers: dict[str, str]) -> dict[str, Any] | None:
        from googleapiclient.errors import HttpError

        assert self.uri is not None
        self.must_probe = True  # until Drive says how far it got
        resp, content = http.request(self.uri, "PUT", body=body, headers=headers | {"Content-Length": str(len(body))})
        if resp.status in (200, 201):
            self.must_probe = False
            return json.loads(content)
        if resp.status == 308:
            self.must_probe = False
            held = resp.get("range")  # "bytes=0-k"; none: Drive holds nothing yet
            self.acked = int(held.rpartition("-")[2]) + 1 if held else 0
            if "location" in resp:
                self.uri = resp["location"]
            return None
        if resp.status in (404, 410):
            raise SessionLost
        raise HttpError(resp, content, uri=self.uri)


def send(transport: Transport, op: str, upload: ResumableUpload) -> dict[str, Any]:
    """Steps until Drive has the whole file; retries as the transport decides.

    The backoff starts again whenever Drive acknowledges more bytes than before, so a
    long upload through a flaky link gives up only when it stops moving."""
    attempt, last_acked, reloaded = 0, -1, False
    while True:
        try:
            result = upload.step(transport.http())
        except (FolderGone, SessionLost):
            raise
        except Exception as e:  # transient ones retry; the rest re-raise in there
            if transport.retry(op, e, attempt, reloaded):
                reloaded = True
            else:
                attempt += 1
            continue
        transport.answered()
        if result is not None:
            return result
        if upload.acked > last_acked:  # moving again: reset the backoff
            last_acked, attempt = upload.acked, 0


def upload_file(transport: Transport, store: SessionStore, op: str, *, dest: str, metadata: dict[str, Any],
                fields: str, fh: BinaryIO, chunk_bytes: int, ident: dict[str, Any] | None,
                progress: Progress | None) -> tuple[dict[str, Any], Digest]:
    """Upload ``fh`` as a new file: Drive's metadata of it (``fields`` of it), and the
    digest of what was sent.

    With ``ident`` (what identifies the source and target) the session is kept in
    ``store`` while in flight, and a matching one saved earlier is resumed."""
    query = {"uploadType": "resumable", "supportsAllDrives": "true", "fields": fields, "alt": "json"}
    start_url = f"{transport.upload_url}?{urllib.parse.urlencode(query)}"
    transport.fresh_token()
    uri = store.load(dest, ident) if ident else None
    for _ in range(FRESH_SESSIONS):
        source = HashingSource(fh, progress)
        upload = ResumableUpload(start_url, metadata, source, chunk_bytes, uri)
        if ident:
            upload.on_open = lambda new: store.save(dest, ident, new)
        if uri is not None:
            log.info("%s: resuming its upload session", op)
        try:
            result = send(transport, op, upload)
        except SessionLost:
            log.info("%s: Drive no longer knows the upload session; starting over", op)
            if ident:
                store.clear(dest)
            uri = None
            continue
        finally:
            source.wait()  # the hash threads never outlive the upload
        digest = source.digest()
        if ident:
            store.clear(dest)
        return result, digest
    raise RemoteError(f"{op}: Drive keeps dropping the upload session")
