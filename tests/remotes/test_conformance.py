"""One suite, every backend: the Remote protocol's contract (syncd/remotes/base.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import os

import pytest

from syncd.errors import RemoteError
from syncd.hashing import CHUNK_BYTES
from syncd.remotes.base import Capabilities, Quota, Remote


def _file(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_put_returns_digest_of_bytes_sent_and_stat_sees_them(remote, tmp_path):
    data = os.urandom(CHUNK_BYTES + 12345)  # more than one chunk
    d = remote.put_file(_file(tmp_path, "a.bin", data), "run/ck/a.bin")
    # md5 only where the server computes one to compare it with (hashing.py); sha256 always.
    md5 = hashlib.md5(data).hexdigest() if remote.capabilities.server_md5 else None
    assert (d.size, d.md5, d.sha256) == (len(data), md5, hashlib.sha256(data).hexdigest())
    st = remote.stat("run/ck/a.bin")
    assert st is not None and st.size == len(data)
    if remote.capabilities.server_md5:
        assert st.md5 == d.md5
    with remote.open_read("run/ck/a.bin") as fh:
        assert fh.read() == data


def test_progress_counts_every_byte(remote, tmp_path):
    seen = []
    remote.put_file(_file(tmp_path, "p.bin", b"x" * 1000), "p.bin", progress=seen.append)
    assert sum(seen) == 1000


def test_listings_are_relative_and_recursive(remote, tmp_path):
    src = _file(tmp_path, "f", b"abc")
    for rel in ("run/c1/a", "run/c1/sub/b", "run/c2/c"):
        remote.put_file(src, rel)
    assert remote.list_dirs("run") == ["c1", "c2"]
    assert [(f.path, f.size) for f in remote.list_files("run/c1")] == [("a", 3), ("sub/b", 3)]
    assert remote.list_dirs("nothing/here") == []
    assert remote.list_files("nothing/here") == []
    assert remote.stat("run/c1/missing") is None


def test_write_bytes_replaces_whole(remote):
    remote.write_bytes("run/m.json", b"first version, longer")
    remote.write_bytes("run/m.json", b"second")
    with remote.open_read("run/m.json") as fh:
        assert fh.read() == b"second"


def test_put_overwrites(remote, tmp_path):
    remote.put_file(_file(tmp_path, "1", b"old old old"), "x/f")
    remote.put_file(_file(tmp_path, "2", b"new"), "x/f")
    assert remote.stat("x/f").size == 3


def test_delete_is_idempotent_for_files_and_folders(remote, tmp_path):
    src = _file(tmp_path, "f", b"abc")
    remote.put_file(src, "run/c1/a")
    remote.put_file(src, "run/c1/sub/b")
    remote.put_file(src, "run/keep")
    remote.delete("run/c1")
    remote.delete("run/c1")
    remote.delete("run/never-existed")
    assert remote.list_files("run/c1") == []
    assert "c1" not in remote.list_dirs("run")
    assert remote.stat("run/keep") is not None
    remote.delete("run/keep")
    assert remote.stat("run/keep") is None


def test_the_protocol_and_a_frozen_capabilities_record(remote):
    assert isinstance(remote, Remote)
    assert isinstance(remote.capabilities, Capabilities)
    with pytest.raises(dataclasses.FrozenInstanceError):
        remote.capabilities.rename = not remote.capabilities.rename  # type: ignore[misc]


def test_md5_is_reported_exactly_where_the_server_computes_it(remote, tmp_path):
    data = b"checksummed by whom?" * 100
    d = remote.put_file(_file(tmp_path, "m.bin", data), "run/ck/m.bin")
    reported = {remote.stat("run/ck/m.bin").md5} | {f.md5 for f in remote.list_files("run/ck")}
    if remote.capabilities.server_md5:
        assert reported == {d.md5}, "a server md5 must be the md5 of the bytes stored"
    else:
        assert reported == {None}, "without server_md5 no md5 may be reported: verifiers would trust it"


def test_rename_moves_a_folder_or_refuses_as_documented(remote, tmp_path):
    src = _file(tmp_path, "f", b"abc")
    remote.put_file(src, "run/c.partial/a")
    remote.put_file(src, "run/c.partial/d/b")
    if remote.capabilities.rename:
        remote.rename_dir("run/c.partial", "run/c")
        assert remote.list_dirs("run") == ["c"]
        assert [f.path for f in remote.list_files("run/c")] == ["a", "d/b"]
    else:  # the protocol's fallback: a RemoteError, and nothing moved
        with pytest.raises(RemoteError, match="cannot rename"):
            remote.rename_dir("run/c.partial", "run/c")
        assert remote.list_dirs("run") == ["c.partial"]
        assert [f.path for f in remote.list_files("run/c.partial")] == ["a", "d/b"]


def test_rename_onto_an_existing_folder_fails_and_changes_nothing(remote, tmp_path):
    # base.py promises it: a commit must never merge into, or replace, a folder that exists.
    remote.put_file(_file(tmp_path, "new", b"new"), "run/c.partial/a")
    remote.put_file(_file(tmp_path, "old", b"old!"), "run/c/a")
    with pytest.raises(RemoteError):
        remote.rename_dir("run/c.partial", "run/c")
    assert sorted(remote.list_dirs("run")) == ["c", "c.partial"]
    with remote.open_read("run/c/a") as fh:
        assert fh.read() == b"old!"
    with remote.open_read("run/c.partial/a") as fh:
        assert fh.read() == b"new"


def test_rename_onto_an_existing_empty_folder_fails_too(remote, tmp_path):
    # A plain rename(2) replaces an empty folder; the contract says "dst exists" fails.
    remote.put_file(_file(tmp_path, "new", b"new"), "run/c.partial/a")
    remote.put_file(_file(tmp_path, "x", b"x"), "run/c/x")
    remote.delete("run/c/x")
    if remote.capabilities.rename:  # folders are real where they can be renamed: an empty one stays
        assert "c" in remote.list_dirs("run") and remote.list_files("run/c") == []
    with pytest.raises(RemoteError):
        remote.rename_dir("run/c.partial", "run/c")
    assert [f.path for f in remote.list_files("run/c.partial")] == ["a"]
    assert remote.list_files("run/c") == []


def test_quota_is_the_accounts_or_unknown_as_documented(made, tmp_path):
    remote, truth = made
    remote.put_file(_file(tmp_path, "q", b"q" * 300_000), "run/ck/q")
    q, expected = remote.quota(), truth()
    if not remote.capabilities.quota:
        assert q is None and expected is None  # the fallback: unknown, and callers go ahead
        return
    want, exact = expected
    assert isinstance(q, Quota)
    assert q.limit_bytes == want.limit_bytes
    assert q.trash_bytes >= 0 and 0 < q.used_bytes <= q.limit_bytes
    assert q.free_bytes == q.limit_bytes - q.used_bytes
    if exact:
        assert (q.used_bytes, q.trash_bytes) == (want.used_bytes, want.trash_bytes)
        assert q.used_bytes >= 300_000


def test_missing_source_is_an_error_not_a_crash(remote, tmp_path):
    with pytest.raises((RemoteError, OSError)):
        remote.put_file(tmp_path / "does-not-exist", "x/y")
