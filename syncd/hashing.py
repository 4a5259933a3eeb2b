"""Checksums of the bytes syncd moves: sha256 (ours, always) and md5 (what servers compute).

Every upload, read-back, restore and freshness check hashes through here, so the
chunk size and the md5-on-a-side-thread trick live in one place. Nothing here knows
about remotes: a ``Digest`` is the size and hex digests of one byte stream.

md5 is computed only where something can compare it: an upload to a remote whose
server computes md5 of what it stores (Drive, single-part S3), so a listing verifies
without a read-back. Elsewhere it would cost the slowest hash (md5 runs at half
sha256's speed here) for a value nobody checks: the sha256 decides.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# Big enough to amortise syscalls and hashing, small enough to keep RSS flat.
CHUNK_BYTES = 4 * 1024 * 1024

Progress = Callable[[int], None]  # called with the number of new bytes moved


@dataclass(frozen=True)
class Digest:
    size: int
    md5: str | None  # None where it was not computed (no server to compare it with)
    sha256: str


class Hasher:
    """md5 and sha256 of a byte stream, fed chunk by chunk.

    As a context manager it computes md5 on a side thread while the caller does
    sha256 and the I/O (hashlib drops the GIL on large buffers): md5 is the slow
    one, and this takes it off the critical path. Callers must not reuse a chunk's
    buffer until the next ``update`` returns.
    """

    def __init__(self, md5: bool = True) -> None:
        self.size = 0
        self._md5 = hashlib.md5(usedforsecurity=False) if md5 else None
        self._sha = hashlib.sha256()
        self._side: ThreadPoolExecutor | None = None
        self._pending: Future | None = None

    def __enter__(self) -> Hasher:
        if self._md5 is not None:
            self._side = ThreadPoolExecutor(max_workers=1, thread_name_prefix="syncd-md5")
        return self

    def __exit__(self, *exc) -> None:
        self._drain()
        if self._side is not None:
            self._side.shutdown(wait=True)
        self._side = None

    def _drain(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def update(self, chunk: bytes | memoryview) -> None:
        self.size += len(chunk)
        if self._md5 is None:
            pass
        elif self._side is None:
            self._md5.update(chunk)
        else:
            self._drain()  # the previous chunk's md5 is done before this one starts
            self._pending = self._side.submit(self._md5.update, chunk)
        self._sha.update(chunk)

    def digest(self) -> Digest:
        self._drain()
        return Digest(self.size, self._md5.hexdigest() if self._md5 is not None else None, self._sha.hexdigest())


def hashed_copy(read: Callable[[], bytes], write: Callable[[bytes], object], hasher: Hasher,
                progress: Progress | None = None, depth: int = 2) -> None:
    """Copy the chunks ``read()`` returns (``b""`` at the end) to ``write``, hashing them.

    Reading and hashing one chunk overlaps writing the previous one: both calls
    release the GIL, and on a local copy writing into the page cache is as slow as
    reading and hashing together, so the copy takes the longer of the two instead of
    their sum. At most ``depth`` chunks wait between the two (memory stays flat). An
    exception on either side (``progress`` raising Cancelled, say) stops both.
    """
    waiting: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                chunk = read()
                if chunk:
                    hasher.update(chunk)
                waiting.put(chunk)
                if not chunk:
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the writing side, which raises it
            waiting.put(e)

    thread = threading.Thread(target=reader, name="syncd-read", daemon=True)
    thread.start()
    try:
        while True:
            item = waiting.get()
            if isinstance(item, BaseException):
                raise item
            if not item:
                return
            view = memoryview(item)
            while view:  # a raw file's write may take part of a chunk
                n = write(view)
                if n is None:  # a writer that takes everything and says nothing
                    break
                view = view[n:]
            if progress:
                progress(len(item))
    finally:
        stop.set()
        while thread.is_alive():  # let a reader blocked on a full queue see the stop
            try:
                waiting.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


def sha256_stream(fh: BinaryIO) -> tuple[int, str]:
    """(size, sha256) of a stream: the cheap check of bytes read back."""
    h = hashlib.sha256()
    size = 0
    while chunk := fh.read(CHUNK_BYTES):
        size += len(chunk)
        h.update(chunk)
    return size, h.hexdigest()


def hash_stream(fh: BinaryIO, progress: Progress | None = None) -> Digest:
    """Size, md5 and sha256 of everything left in ``fh``; ``progress`` sees every chunk."""
    h = Hasher()
    while chunk := fh.read(CHUNK_BYTES):
        h.update(chunk)
        if progress:
            progress(len(chunk))
    return h.digest()


def hash_file(path: Path, progress: Progress | None = None) -> Digest:
    with open(path, "rb", buffering=0) as fh:
        return hash_stream(fh, progress)
