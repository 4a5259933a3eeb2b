"""One daemon per output folder: an exclusive POSIX lock plus a pidfile.

    output_dir/.syncd/syncd.lock   write-locked (fcntl) for the daemon's lifetime
    output_dir/.syncd/syncd.pid    the holder's pid, for people; the lock decides

POSIX record locks can be *queried* (F_GETLK) without being taken, so ``status``
never races a starting daemon for the lock; the kernel drops the lock when the
holder dies, even by SIGKILL.
"""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path

from .errors import ConfigError, LockedError


def lock_path(state_dir: Path) -> Path:
    return state_dir / "syncd.lock"


def pid_path(state_dir: Path) -> Path:
    return state_dir / "syncd.pid"


# Closing any descriptor of a file drops this process's POSIX locks on it, so a
# process never re-opens a lock file it holds: it answers from this set instead.
_HELD: set[Path] = set()


class DaemonLock:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._fd: int | None = None

    def acquire(self) -> None:
        prepare_state_dir(self.state_dir)
        try:
            fd = os.open(lock_path(self.state_dir), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise _unwritable(self.state_dir, e) from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            pid = read_pid(self.state_dir)
            who = f" (pid {pid})" if pid else ""
            raise LockedError(
                f"another syncd{who} is already running for {self.state_dir.parent}"
            ) from None
        self._fd = fd
        _HELD.add(lock_path(self.state_dir).resolve())
        try:
            pid_path(self.state_dir).write_text(f"{os.getpid()}\n")
        except OSError as e:
            self.release()
            raise _unwritable(self.state_dir, e) from None

    def ensure(self) -> bool:
        """Take the lock again if ``.syncd/`` was deleted under us (``rm -rf output``).

        Returns False when another daemon got there first.
        """
        if self._fd is None:
            return False
        try:
            if os.stat(lock_path(self.state_dir)).st_ino == os.fstat(self._fd).st_ino:
                return True
        except FileNotFoundError:
            pass
        old, self._fd = self._fd, None
        _HELD.discard(lock_path(self.state_dir).resolve())
        try:
            self.acquire()
        except LockedError:
            return False
        finally:
            os.close(old)  # another inode: this drops nothing on the new lock file
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            if read_pid(self.state_dir) == os.getpid():
                pid_path(self.state_dir).unlink(missing_ok=True)
        finally:
            _HELD.discard(lock_path(self.state_dir).resolve())
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _unwritable(state_dir: Path, e: OSError) -> ConfigError:
    return ConfigError(f"output_dir {state_dir.parent} is not writable: {e.strerror or e}")


def prepare_state_dir(state_dir: Path) -> None:
    """Create ``output_dir/.syncd``; a read-only or unwritable output folder is a ConfigError.

    ``os.access`` answers EROFS even for root, for whom permission bits do not count.
    """
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _unwritable(state_dir, e) from None
    if not os.access(state_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"output_dir {state_dir.parent} is not writable")


def read_pid(state_dir: Path) -> int | None:
    try:
        return int(pid_path(state_dir).read_text().strip())
    except (OSError, ValueError):
        return None


# struct flock on Linux (x86-64 and arm64): type, whence, start, len, pid, padding.
_FLOCK = "hhqqi4x"


def running_pid(state_dir: Path) -> int | None:
    """The pid of the daemon holding the lock, or None when no daemon runs."""
    if lock_path(state_dir).resolve() in _HELD:
        return os.getpid()
    try:
        fd = os.open(lock_path(state_dir), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
    finally:
        os.close(fd)
    l_type, _whence, _start, _len, pid = struct.unpack(_FLOCK, answer)
    return None if l_type == fcntl.F_UNLCK else pid
