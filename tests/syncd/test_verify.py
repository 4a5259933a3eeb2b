"""verify.py: an md5 is proof only where the backend says its server computed it."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from syncd import verify
from syncd.hashing import Digest
from syncd.remotes.base import Capabilities
from syncd.remotes.local import LocalRemote

GOOD = b"the bytes we sent"
BAD = b"the bytes we kept"  # same length: only a checksum can tell


class ReportsMd5(LocalRemote):
    """A folder remote that reports an md5 for every file: the stored bytes', or a claimed one."""

    def __init__(self, root, *, server_md5: bool, claimed: str | None) -> None:
        super().__init__(root)
        self.capabilities = replace(self.capabilities, server_md5=server_md5)
        self.claimed = claimed
        self.reads = 0

    def stat(self, path):
        st = super().stat(path)
        return None if st is None else replace(st, md5=self.claimed)

    def list_files(self, prefix):
        return [replace(f, md5=self.claimed) for f in super().list_files(prefix)]

    def open_read(self, path):
        self.reads += 1
        return super().open_read(path)


def _digest(data: bytes) -> Digest:
    return Digest(len(data), hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest())


@pytest.mark.parametrize(
    "stored, server_md5, claimed, problem, reads",
    [
        (GOOD, True, hashlib.md5(GOOD).hexdigest(), None, 0),  # the server's md5: no read-back
        (BAD, True, hashlib.md5(BAD).hexdigest(), "md5", 0),  # the server's md5 differs
        (BAD, False, hashlib.md5(GOOD).hexdigest(), "sha256", 1),  # a reported md5 is no proof: read back
        (GOOD, False, "0" * 32, None, 1),  # nor is a wrong one: the bytes decide
        (GOOD, True, None, None, 1),  # a server without an md5 for this file (S3 multipart): read back
    ],
    ids=["server-md5-ok", "server-md5-differs", "reported-md5-not-trusted", "reported-md5-ignored", "no-md5"],
)
def test_file_problem(tmp_path, stored, server_md5, claimed, problem, reads):
    remote = ReportsMd5(tmp_path, server_md5=server_md5, claimed=claimed)
    remote.write_bytes("run/f.bin", stored)
    got = verify.file_problem(remote, "run/f.bin", _digest(GOOD))
    assert (got is None) == (problem is None) and (problem is None or problem in got)
    assert remote.reads == reads


def test_missing_and_short_files(tmp_path):
    remote = LocalRemote(tmp_path)
    assert "missing" in verify.file_problem(remote, "run/none.bin", _digest(GOOD))
    remote.write_bytes("run/f.bin", GOOD[:-1])
    assert "size" in verify.file_problem(remote, "run/f.bin", _digest(GOOD))
    assert Capabilities().server_md5 is False  # the safe default for a new backend
