"""The one protocol every remote implements, and what a remote may optionally do.

Paths given to a remote are relative POSIX paths under the remote's root, e.g.
``"myrun/checkpoint-500.partial/model.safetensors"``. ``""`` is the root itself.

Required methods (every backend, one conformance suite in tests/remotes):

- ``list_dirs(prefix)``   names of the immediate sub-folders of ``prefix``; ``[]``
                          when ``prefix`` does not exist.
- ``list_files(prefix)``  every file below ``prefix`` (recursive) as ``RemoteFile``
                          with paths relative to ``prefix``; ``[]`` when missing.
- ``stat(path)``          a ``RemoteFile`` (path relative to the root) or ``None``.
- ``put_file(src, dest, progress)``  stream a local file to ``dest`` (overwriting),
                          creating parent folders; returns the ``Digest`` of the
                          bytes *sent*, computed while sending. Raises ``RemoteError``.
- ``write_bytes(dest, data)``  small files (manifests); replaces ``dest`` whole.
- ``open_read(path)``     a binary file object streaming the stored bytes.
- ``delete(prefix)``      remove a file or a whole folder; idempotent (missing is fine).

Optional capabilities, declared in ``Capabilities`` and filled in once at
construction; callers fall back to the required methods when one is missing:

- ``rename``: ``rename_dir(src, dst)`` moves a folder atomically (``dst`` absent).
- ``server_md5``: ``stat`` returns the md5 the server computed, so verification
  needs no read-back.
- ``quota``: ``quota()`` returns a ``Quota``.
- ``resumable_upload``: an interrupted ``put_file`` continues where it stopped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

# Big enough to amortise syscalls and hashing, small enough to keep RSS flat.
CHUNK_BYTES = 4 * 1024 * 1024

Progress = Callable[[int], None]  # called with the number of new bytes moved


@dataclass(frozen=True)
class Capabilities:
    rename: bool = False
    server_md5: bool = False
    quota: bool = False
    resumable_upload: bool = False


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    md5: str | None = None  # only where the server computes it


@dataclass(frozen=True)
class Digest:
    size: int
    md5: str
    sha256: str


@dataclass(frozen=True)
class Quota:
    limit_bytes: int | None  # None: unlimited or unknown
    used_bytes: int
    trash_bytes: int = 0

    @property
    def free_bytes(self) -> int | None:
        return None if self.limit_bytes is None else max(0, self.limit_bytes - self.used_bytes)


@runtime_checkable
class Remote(Protocol):
    url: str
    capabilities: Capabilities

    def list_dirs(self, prefix: str) -> list[str]: ...
    def list_files(self, prefix: str) -> list[RemoteFile]: ...
    def stat(self, path: str) -> RemoteFile | None: ...
    def put_file(self, src: Path, dest: str, progress: Progress | None = None) -> Digest: ...
    def write_bytes(self, dest: str, data: bytes) -> None: ...
    def open_read(self, path: str) -> BinaryIO: ...
    def delete(self, prefix: str) -> None: ...
    def close(self) -> None: ...


class Hasher:
    """md5 and sha256 of a byte stream, fed chunk by chunk.

    As a context manager it computes md5 on a side thread while the caller does
    sha256 and the I/O (hashlib drops the GIL on large buffers): md5 is the slow
    one, and this takes it off the critical path. Callers must not reuse a chunk's
    buffer until the next ``update`` returns.
    """

    def __init__(self) -> None:
        self.size = 0
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha = hashlib.sha256()
        self._side = None
        self._pending = None

    def __enter__(self) -> Hasher:
        from concurrent.futures import ThreadPoolExecutor

        self._side = ThreadPoolExecutor(max_workers=1, thread_name_prefix="syncd-md5")
        return self

    def __exit__(self, *exc) -> None:
        self._drain()
        self._side.shutdown(wait=True)
        self._side = None

    def _drain(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def update(self, chunk: bytes | memoryview) -> None:
        self.size += len(chunk)
        if self._side is None:
            self._md5.update(chunk)
        else:
            self._drain()  # the previous chunk's md5 is done before this one starts
            self._pending = self._side.submit(self._md5.update, chunk)
        self._sha.update(chunk)

    def digest(self) -> Digest:
        self._drain()
        return Digest(self.size, self._md5.hexdigest(), self._sha.hexdigest())


def sha256_stream(fh: BinaryIO) -> tuple[int, str]:
    """(size, sha256) of a stream: the cheap check of bytes read back."""
    h = hashlib.sha256()
    size = 0
    while chunk := fh.read(CHUNK_BYTES):
        size += len(chunk)
        h.update(chunk)
    return size, h.hexdigest()


def hash_stream(fh: BinaryIO, progress: Progress | None = None) -> Digest:
    h = Hasher()
    while chunk := fh.read(CHUNK_BYTES):
        h.update(chunk)
        if progress:
            progress(len(chunk))
    return h.digest()


def hash_file(path: Path, progress: Progress | None = None) -> Digest:
    with open(path, "rb", buffering=0) as fh:
        return hash_stream(fh, progress)


def join(*parts: str) -> str:
    """Join remote path parts, dropping empty ones."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))
