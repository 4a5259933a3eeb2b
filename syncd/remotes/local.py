"""A plain folder as a remote: a mounted Google Drive, an NFS share, a second disk.

Renames are atomic within one filesystem, so uploads go to ``checkpoint-N.partial``
and become ``checkpoint-N`` in one step. There is no server-side checksum: the
uploader verifies by reading the written file back.

Mounts: the remote's folder is created only when its parent exists (``./backups``
works), never as a chain, so a Drive that is not mounted is an error naming the
missing mount rather than a copy on the local disk. Once seen, the folder must stay
on the same filesystem: unmounted mid-run, it is an error, never re-created.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import shutil
import stat
from pathlib import Path
from typing import BinaryIO

from ..errors import IntegrityError, RemoteError
from ..fsutil import atomic_write_bytes, fsync_dir
from ..hashing import CHUNK_BYTES, Digest, Hasher, Progress, hashed_copy
from .base import Capabilities, Quota, Remote, RemoteFile

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


@functools.lru_cache(maxsize=1)
def _renameat2():
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def rename_noreplace(src: Path, dst: Path) -> None:
    """``os.rename`` that never replaces ``dst``: ``FileExistsError`` when it exists.

    ``os.rename`` silently replaces an *empty* folder at ``dst``, which would let a
    commit land on a folder someone else just made. ``renameat2(RENAME_NOREPLACE)``
    refuses atomically; where it is missing (another OS, an old kernel, a network
    filesystem without it) we check, then rename, which leaves only a narrow race.
    """
    fn = _renameat2()
    if fn is not None:
        if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(src), None, str(dst))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


class LocalRemote(Remote):
    capabilities = Capabilities(rename=True, quota=True)

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.url = str(self.root)
        self._dev: int | None = None  # the filesystem the folder was first seen on

    def _p(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    def _root_ready(self, create: bool) -> bool:
        """Whether the remote folder exists (creating it when asked and its parent exists).

        RemoteError when it vanished or moved filesystem since we first saw it, or when
        its parent is missing too (most often a drive that is not mounted).
        """
        try:
            st = os.stat(self.root)
        except FileNotFoundError:
            if self._dev is not None:
                raise RemoteError(f"remote folder {self.root} disappeared (was its drive unmounted?); "
                                  "syncd does not re-create it") from None
            if not self.root.parent.is_dir():
                raise RemoteError(f"remote folder {self.root} does not exist, nor does {self.root.parent}: "
                                  "is the drive mounted?") from None
            if not create:
                return False
            try:
                os.mkdir(self.root)
                st = os.stat(self.root)
            except FileExistsError:
                st = os.stat(self.root)
            except OSError as e:
                raise RemoteError(f"create {self.root}: {e.strerror or e}") from e
        except OSError as e:
            raise RemoteError(f"remote folder {self.root}: {e.strerror or e}") from e
        if not stat.S_ISDIR(st.st_mode):
            raise RemoteError(f"remote {self.root} is not a folder")
        if self._dev is None:
            self._dev = st.st_dev
        elif st.st_dev != self._dev:
            raise RemoteError(f"remote folder {self.root} is on another filesystem than when syncd started "
                              "(was its drive unmounted?)")
        return True

    def list_dirs(self, prefix: str) -> list[str]:
        if not self._root_ready(create=False):
            return []
        try:
            return sorted(e.name for e in os.scandir(self._p(prefix)) if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return []
        except OSError as e:
            raise RemoteError(f"list {self._p(prefix)}: {e.strerror or e}") from e

    def list_files(self, prefix: str) -> list[RemoteFile]:
        base = self._p(prefix)
        out = []
        if not self._root_ready(create=False):
            return []
        try:
            for dirpath, _dirs, files in os.walk(base):
                for name in files:
                    full = Path(dirpath, name)
                    st = full.lstat()
                    if not stat.S_ISREG(st.st_mode):
                        continue  # links and devices are never ours
                    out.append(RemoteFile(full.relative_to(base).as_posix(), st.st_size))
        except OSError as e:
            raise RemoteError(f"list {base}: {e.strerror or e}") from e
        return sorted(out, key=lambda f: f.path)

    def stat(self, path: str) -> RemoteFile | None:
        if not self._root_ready(create=False):
            return None
        try:
            st = self._p(path).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise RemoteError(f"stat {path}: {e.strerror or e}") from e
        return RemoteFile(path, st.st_size)

    def put_file(self, src: Path, dest: str, progress: Progress | None = None) -> Digest:
        target = self._p(dest)
        self._root_ready(create=True)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # No server md5 here (verify.py reads back): sha256 alone, the faster hash.
            with Hasher(md5=False) as h, open(src, "rb", buffering=0) as fin, \
                    open(target, "wb", buffering=0) as fout:
                hashed_copy(lambda: fin.read(CHUNK_BYTES), fout.write, h, progress)
                os.fsync(fout.fileno())
        except OSError as e:
            raise RemoteError(f"upload {dest}: {e.strerror or e}") from e
        return h.digest()

    def write_bytes(self, dest: str, data: bytes) -> None:
        self._root_ready(create=True)
        try:
            atomic_write_bytes(self._p(dest), data)
        except OSError as e:
            raise RemoteError(f"write {dest}: {e.strerror or e}") from e

    def open_read(self, path: str) -> BinaryIO:
        """Open a stored file; refuses links, devices and anything outside the root.

        The remote is untrusted when restoring: a planted symlink must not make
        restore copy a file from elsewhere on this machine.
        """
        p = self._p(path)
        self._root_ready(create=False)
        # Hostile contents are an integrity failure (exit 4), not a failed read.
        if not p.resolve().is_relative_to(self.root.resolve()):
            raise IntegrityError(f"read {path}: leads outside the remote folder")
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise IntegrityError(f"read {path}: is a symlink") from None
            raise RemoteError(f"read {path}: {e.strerror or e}") from e
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise IntegrityError(f"read {path}: not a regular file")
        return os.fdopen(fd, "rb")

    def delete(self, prefix: str) -> None:
        p = self._p(prefix)
        if not self._root_ready(create=False):
            return
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise RemoteError(f"delete {prefix}: {e.strerror or e}") from e

    def rename_dir(self, src: str, dst: str) -> None:
        self._root_ready(create=False)
        try:
            rename_noreplace(self._p(src), self._p(dst))  # never merges into, nor replaces, a folder
            fsync_dir(self._p(dst).parent)
        except OSError as e:
            raise RemoteError(f"rename {src} -> {dst}: {e.strerror or e}") from e

    def quota(self) -> Quota | None:
        try:
            du = shutil.disk_usage(self.root if self.root.exists() else self.root.parent)
        except OSError:
            return None
        # What we may still write, not the raw size: reserved blocks are not ours.
        return Quota(du.used + du.free, du.used)

    def close(self) -> None:
        pass
