"""Credentials rewritten under a running remote, which of two same-titled files is meant,
what free space is, and a Drive that cannot be reached at all."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time

import pytest

from syncd.errors import CredentialsError, RemoteError

from .helpers_gdrive import CHUNK, REFRESH


def _rewrite_creds(path, drive, refresh):
    """What `syncd auth` does: a new file put in place atomically."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"type": "authorized_user", "client_id": "client-1", "client_secret": "secret-1",
                               "refresh_token": refresh, "token_uri": drive.token_uri}))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


# ------------------------------------------------------------------ item 15


def test_a_rewritten_credentials_file_is_used_without_a_restart(remote, drive, creds, caplog):
    remote.write_bytes("run/a", b"1")
    drive.revoke(REFRESH)  # the user revoked syncd's access...
    with pytest.raises(CredentialsError, match="invalid_grant"):
        remote.write_bytes("run/b", b"2")
    drive.add_refresh_token("1//fresh-token")  # ...and ran `syncd auth` again
    _rewrite_creds(creds, drive, "1//fresh-token")
    with caplog.at_level(logging.WARNING, logger="syncd.remotes.gdrive"):
        remote.write_bytes("run/b", b"2")  # the same instance, no restart
        assert remote.open_read("run/b").read() == b"2"
        assert remote.list_dirs("run") == []
    lines = [r.getMessage() for r in caplog.records if "credentials" in r.getMessage()]
    assert lines == [f"Google Drive credentials file {creds} changed; using the new credentials"]
    assert "fresh-token" not in caplog.text


def test_credentials_rewritten_mid_upload_take_over_at_the_next_refusal(make_remote, drive, creds, tmp_path):
    r = make_remote()
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(4 * CHUNK))
    r.write_bytes("warm", b"")
    seen = []

    def progress(n):
        seen.append(n)
        if len(seen) == 1:  # between two chunks: revoked, and the file already rewritten
            drive.revoke(REFRESH)
            drive.add_refresh_token("1//fresh-token")
            _rewrite_creds(creds, drive, "1//fresh-token")

    r.put_file(src, "run/big.bin", progress)
    assert drive.find("backups/run/big.bin").data == src.read_bytes()


def test_a_broken_rewrite_is_one_clear_line(remote, drive, creds):
    remote.write_bytes("a", b"1")
    creds.write_text('{"refresh_token": ')
    with pytest.raises(CredentialsError, match="not valid JSON"):
        remote.write_bytes("b", b"2")
    _rewrite_creds(creds, drive, REFRESH)
    remote.write_bytes("b", b"2")


# ------------------------------------------------------------------ item 17a


def _m(fid, modified, md5):
    return {"id": fid, "modifiedDate": modified, "md5Checksum": md5}


OLD, NEW, OURS = _m("a", "2024-01-01", "m-old"), _m("b", "2024-01-02", "m-new"), _m("c", "2023-12-31", "m-ours")


@pytest.mark.parametrize("mine, md5, want", [
    (None, None, "b"),  # the newest
    ("c", None, "c"),  # ours, though older
    (None, "m-old", "a"),  # the one whose md5 is expected, though older
    ("c", "m-old", "a"),  # the expected md5 wins over ours too
    ("c", "nowhere", "c"),  # no match: ours, then the newest, as without an md5
    (None, "nowhere", "b"),
])
def test_pick_file(mine, md5, want):
    from syncd.remotes.gdrive import pick_file

    assert pick_file([OLD, NEW, OURS], mine=mine, md5=md5)["id"] == want
    assert pick_file([OURS, NEW, OLD], mine=mine, md5=md5)["id"] == want  # order does not matter


def test_of_two_same_titled_files_the_one_with_the_expected_md5_is_read(make_remote, drive):
    writer = make_remote()
    writer.write_bytes("run/c/keep", b"k")
    folder = drive.find("backups/run/c").id
    good = drive.add_item(folder, "model.bin", b"the committed bytes")
    drive.add_item(folder, "model.bin", b"a newer copy")  # an upload another process finished later
    want = hashlib.md5(b"the committed bytes").hexdigest()
    reader = make_remote()  # `syncd restore` or `verify`, knowing the manifest's md5
    assert reader.stat("run/c/model.bin").md5 != want  # without it: the newest
    assert reader.stat("run/c/model.bin", md5=want).md5 == want
    assert reader.open_read("run/c/model.bin", md5=want).read() == b"the committed bytes"
    assert [f.md5 for f in reader.list_files("run/c") if f.path == "model.bin"] != [want]
    assert good in drive.items


def test_after_a_put_lookups_resolve_to_the_file_just_uploaded(remote, drive, tmp_path):
    src = tmp_path / "f.bin"
    src.write_bytes(b"ours")
    remote.put_file(src, "run/c/f.bin")
    mine = drive.find("backups/run/c/f.bin").id
    drive.add_item(drive.find("backups/run/c").id, "f.bin", b"newer, not ours")
    assert remote.stat("run/c/f.bin").md5 == hashlib.md5(b"ours").hexdigest()
    assert remote.open_read("run/c/f.bin").read() == b"ours"
    assert [f.md5 for f in remote.list_files("run/c")] == [hashlib.md5(b"ours").hexdigest()]
    assert mine in drive.items


# ------------------------------------------------------------------ item 17b


def test_free_space_counts_the_trash_and_other_services_as_used(make_remote, drive):
    drive.quota_limit = 100_000
    drive.other_services_bytes = 30_000  # Gmail and Photos share the 15 GB
    r = make_remote(delete_mode="trash")
    r.write_bytes("run/c/a", b"x" * 12_000)
    r.write_bytes("run/d/a", b"x" * 5_000)
    r.delete("run/c")  # to the bin: still counted until it is emptied
    q = r.quota()
    assert q.trash_bytes == 12_000
    assert q.used_bytes == 12_000 + 5_000 + 30_000
    assert q.free_bytes == 100_000 - 47_000
    r.empty_trash()
    assert r.quota().free_bytes == 100_000 - 35_000


# ------------------------------------------------------------------ item 17c


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fails_fast(call, remote):
    """Run ``call`` in a thread; the one line it raised, within 5 s, else fail (and stop it)."""
    out: list[BaseException] = []

    def go():
        try:
            call()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out.append(e)

    t0 = time.monotonic()
    t = threading.Thread(target=go)
    t.start()
    t.join(5)
    took = time.monotonic() - t0
    if t.is_alive():
        remote.close()  # ends the retry loop of a remote that keeps trying
        t.join(10)
        pytest.fail(f"still retrying after {took:.1f} s")
    assert out and isinstance(out[0], RemoteError), out
    msg = str(out[0])
    assert "\n" not in msg
    return msg


def test_a_stopped_drive_fails_within_seconds_with_one_line(make_remote, drive):
    r = make_remote(backoff_base_s=1.0)  # the daemon's real backoff: minutes in all
    drive.stop()
    msg = _fails_fast(lambda: r.list_dirs("run"), r)
    assert "cannot reach Google Drive" in msg and "connection refused" in msg


def test_a_port_with_nothing_listening_fails_within_seconds(make_remote, drive, creds, tmp_path):
    url = f"http://127.0.0.1:{_dead_port()}/"
    r = make_remote(root_url=url, backoff_base_s=1.0)
    msg = _fails_fast(lambda: r.write_bytes("run/x", b"1"), r)
    assert "cannot reach Google Drive" in msg


def test_an_unknown_host_fails_within_seconds(make_remote, drive):
    r = make_remote(root_url="http://no-such-host.invalid/", backoff_base_s=1.0)
    msg = _fails_fast(lambda: r.list_dirs(""), r)
    assert "host name not found" in msg


def test_once_drive_answered_a_refused_connection_is_retried(make_remote, drive):
    r = make_remote(max_attempts=3)
    r.write_bytes("run/x", b"1")
    drive.stop()
    with pytest.raises(RemoteError, match=r"giving up after 3 attempts"):
        r.write_bytes("run/y", b"2")
