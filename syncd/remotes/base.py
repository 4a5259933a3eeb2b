"""The one protocol every remote implements, and what a remote may optionally do.

Paths given to a remote are relative POSIX paths under the remote's root, e.g.
``"myrun/checkpoint-500.partial/model.safetensors"``. ``""`` is the root itself.

Required methods (every backend; the conformance suite in tests/remotes holds each
one to them):

- ``list_dirs(prefix)``   names of the immediate sub-folders of ``prefix``; ``[]``
                          when ``prefix`` does not exist.
- ``list_files(prefix)``  every file below ``prefix`` (recursive) as ``RemoteFile``
                          with paths relative to ``prefix``; ``[]`` when missing.
- ``stat(path)``          a ``RemoteFile`` (path relative to the root) or ``None``.
- ``put_file(src, dest, progress)``  stream a local file to ``dest`` (overwriting),
                          creating parent folders; returns the ``Digest`` of the
                          bytes *sent*, computed while sending (its md5 only with
                          ``server_md5``: hashing.py). Raises ``RemoteError``.
- ``write_bytes(dest, data)``  small files (manifests); replaces ``dest`` whole.
- ``open_read(path)``     a binary file object streaming the stored bytes.
- ``delete(prefix)``      remove a file or a whole folder; idempotent (missing is fine).
- ``close()``             release connections; the remote is not used afterwards.

Optional capabilities: each backend declares a frozen ``Capabilities`` record once,
at construction, and callers read the record, never probe for methods. The methods
behind them are part of the protocol too; a backend without the capability keeps
the protocol's own body, which is the fallback described here:

- ``rename``: ``rename_dir(src, dst)`` moves the folder ``src`` to ``dst`` in one
  atomic step. It fails with ``RemoteError``, changing nothing, when ``src`` is
  missing or ``dst`` exists (even as an empty folder): a commit never merges into,
  nor replaces, a folder. Without it ``rename_dir`` raises ``RemoteError``; callers
  upload straight to the final name and let the manifest, written last, commit.
- ``server_md5``: ``RemoteFile.md5`` (from ``stat`` and ``list_files``) is the md5 the
  server computed from the bytes it holds, so verification needs no read-back. It
  may still be ``None`` for a file the server has no plain md5 of (an S3 multipart
  object). Without it ``RemoteFile.md5`` is always ``None`` and verifiers read back.
- ``quota``: ``quota()`` returns the account's ``Quota``. Without it ``quota()``
  returns ``None``, "unknown": callers go ahead and let a full remote fail the upload.
- ``resumable_upload``: a ``put_file`` cut off by a crash continues from where the
  server last acknowledged on the next try, instead of sending the whole file again.
  Nothing to call: it is a promise about ``put_file``.

Optional without a capability (the protocol's body is the fallback):

- ``briefly()``: a context manager; within it, this thread's requests stop retrying
  errors that may pass after a few seconds and raise ``RemoteUnavailable``, where a
  backend would otherwise retry for minutes. ``syncd start``'s probe runs in it, so a
  flaky remote cannot hold up the start. The fallback changes nothing: a backend that
  does not retry for long needs no shorter budget.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from ..errors import RemoteError
from ..hashing import Digest, Progress


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do beyond the required methods (see the module docstring)."""

    rename: bool = False
    server_md5: bool = False
    quota: bool = False
    resumable_upload: bool = False


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    md5: str | None = None  # only where the server computes it (Capabilities.server_md5)


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
    """A backend. Subclass it to inherit the fallbacks of the optional methods."""

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

    def rename_dir(self, src: str, dst: str) -> None:
        """Capability ``rename``. The fallback refuses: nothing moves."""
        raise RemoteError(f"rename {src} -> {dst}: {self.url} cannot rename folders")

    def quota(self) -> Quota | None:
        """Capability ``quota``. The fallback: ``None``, the quota is unknown."""
        return None

    def briefly(self) -> AbstractContextManager[None]:
        """A short retry budget for this thread's requests. The fallback: as always."""
        return nullcontext()


def join(*parts: str) -> str:
    """Join remote path parts, dropping empty ones."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def read_small(remote: Remote, path: str, max_bytes: int) -> bytes | None:
    """A small file (a record, a claim, a trainer state) read whole; None when there is none.

    The remote is untrusted: more than ``max_bytes`` is an IntegrityError, never a
    read that fills memory. RemoteError when it could not be read.
    """
    from ..errors import IntegrityError

    st = remote.stat(path)
    if st is None:
        return None
    if st.size > max_bytes:
        raise IntegrityError(f"{path} is implausibly large ({st.size} bytes)")
    with remote.open_read(path) as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise IntegrityError(f"{path} is implausibly large (more than {max_bytes} bytes)")
    return data
