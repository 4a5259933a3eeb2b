"""Every fault the fake Drive injects either converges or stops with one clear error."""

from __future__ import annotations

import hashlib
import time

import pytest

from syncd.errors import CredentialsError, QuotaError, RemoteError

from .helpers_gdrive import CHUNK, blob, service_account_key


def _src(tmp_path, n=4 * CHUNK + 100, seed=2):
    data = blob(n, seed)
    p = tmp_path / f"src-{seed}.bin"
    p.write_bytes(data)
    return p, data


def _stored(drive, path):
    item = drive.find(path)
    assert item is not None, path
    return item.data


@pytest.mark.parametrize("kind, status, reason", [
    ("chunk", 500, ""),
    ("chunk", 503, ""),
    ("chunk", 429, ""),
    ("chunk", 403, "rateLimitExceeded"),
    ("chunk", 403, "userRateLimitExceeded"),
    ("upload_start", 500, ""),
    ("upload_start", 429, ""),
    ("list", 502, ""),
    ("create", 500, ""),
])
def test_transient_errors_converge(remote, drive, tmp_path, kind, status, reason):
    src, data = _src(tmp_path)
    drive.fail(kind, status, reason, times=3)
    digest = remote.put_file(src, "run/c/f.bin")
    assert _stored(drive, "backups/run/c/f.bin") == data
    assert digest.md5 == hashlib.md5(data).hexdigest()
    assert all(f.times == 0 for f in drive.faults)  # the faults did fire
    assert len(drive.children(drive.find("backups/run/c").id, "f.bin")) == 1


def test_persistent_5xx_gives_up_with_the_operation_named(make_remote, drive, tmp_path):
    r = make_remote(max_attempts=4)
    src, _ = _src(tmp_path)
    drive.fail("chunk", 500, times=None)
    with pytest.raises(RemoteError, match=r"upload run/f.bin: giving up after 4 attempts \(HTTP 500"):
        r.put_file(src, "run/f.bin")


def test_connection_dropped_mid_chunk(remote, drive, tmp_path):
    src, data = _src(tmp_path)
    # twice: httplib2 quietly retries a dropped request once by itself
    drive.drop("chunk", after_bytes=CHUNK // 2 + CHUNK // 4, times=2)
    drive.fail("chunk", 500, skip=2)  # and a later chunk fails after the drops were handled
    remote.put_file(src, "run/f.bin")
    assert _stored(drive, "backups/run/f.bin") == data


def test_drop_keeps_partial_bytes_and_the_client_resends_from_the_acknowledged_offset(make_remote, drive, tmp_path):
    r = make_remote(chunk_bytes=4 * CHUNK)
    src, data = _src(tmp_path, n=6 * CHUNK)
    drive.drop("chunk", after_bytes=3 * CHUNK + 10, times=2)
    r.put_file(src, "run/f.bin")
    assert _stored(drive, "backups/run/f.bin") == data
    # after the drop Drive held 3 x 256 KiB; the client asked and went on from there
    assert 3 * CHUNK in drive.chunk_offsets


@pytest.mark.parametrize("kind", ["create", "chunk", "upload_start", "patch", "delete"])
def test_lost_responses_do_not_duplicate_anything(remote, drive, tmp_path, kind):
    src, data = _src(tmp_path)
    remote.write_bytes("run/c.partial/old", b"o")
    drive.lose_response(kind, times=2)  # twice: httplib2 re-sends once by itself
    remote.put_file(src, "run/c.partial/sub/f.bin")
    remote.rename_dir("run/c.partial", "run/c")
    remote.delete("run/c/old")
    run = drive.find("backups/run")
    assert [i.title for i in drive.children(run.id)] == ["c"]
    assert [i.title for i in drive.children(drive.find("backups/run/c").id)] == ["sub"]
    assert len(drive.children(drive.find("backups/run/c/sub").id, "f.bin")) == 1
    assert _stored(drive, "backups/run/c/sub/f.bin") == data
    assert all(f.times == 0 for f in drive.faults)


def test_when_the_answer_to_the_last_chunk_is_lost_a_probe_finds_the_file(remote, drive, tmp_path):
    src, data = _src(tmp_path, n=2 * CHUNK)  # whole chunks: the last one carries the total size
    remote.write_bytes("run/warm", b"w")
    starts, puts = drive.count["upload_start"], drive.count["chunk"]
    drive.lose_response("chunk", times=2, skip=1)  # twice: httplib2 re-sends once by itself
    remote.put_file(src, "run/f.bin")
    assert _stored(drive, "backups/run/f.bin") == data
    assert drive.count["upload_start"] == starts + 1
    # two chunks, httplib2's re-send of the second, then one probe that Drive answers with
    # the file: nothing is sent again once Drive has it all
    assert drive.count["chunk"] - puts == 4
    assert drive.chunk_offsets[-2:] == [0, CHUNK]


def test_cancelling_through_progress_leaves_a_resumable_session(remote, drive, tmp_path):
    src, data = _src(tmp_path)

    class Stop(Exception):
        pass

    sent = []

    def progress(n):
        sent.append(n)
        if sum(sent) > 2 * CHUNK:
            raise Stop

    with pytest.raises(Stop):
        remote.put_file(src, "run/f.bin", progress)
    assert len(list((tmp_path / "state").glob("*.json"))) == 1
    received = drive.bytes_received
    remote.put_file(src, "run/f.bin")
    assert _stored(drive, "backups/run/f.bin") == data
    assert drive.bytes_received - received == len(data) - 2 * CHUNK


def test_token_expiring_mid_upload_is_refreshed(remote, drive, tmp_path):
    src, data = _src(tmp_path)
    remote.put_file(src, "run/warm.bin")  # the token is fresh now
    tokens_before = drive.count["token"]
    drive.expire_tokens_on("chunk")
    remote.put_file(src, "run/f.bin")
    assert _stored(drive, "backups/run/f.bin") == data
    assert drive.count["token"] == tokens_before + 1


def test_a_stalled_server_times_out_and_the_call_is_retried(make_remote, drive, tmp_path):
    r = make_remote(timeout_s=0.5)
    src, data = _src(tmp_path)
    drive.stall("chunk", seconds=1.5)
    t0 = time.monotonic()
    r.put_file(src, "run/f.bin")
    assert _stored(drive, "backups/run/f.bin") == data
    assert time.monotonic() - t0 < 10


def test_a_stalled_token_endpoint_times_out_too(make_remote, drive, tmp_path):
    r = make_remote(timeout_s=0.5)
    drive.stall("token", seconds=1.5)
    r.write_bytes("run/x", b"1")  # the refresh before the upload timed out once, then worked
    assert drive.count["token"] == 2 and _stored(drive, "backups/run/x") == b"1"


def test_listing_lag_never_hides_our_own_writes(remote, drive, tmp_path):
    drive.lag_s = 30.0  # nothing written below shows in a listing during the test
    src, data = _src(tmp_path, n=CHUNK + 1)
    remote.put_file(src, "run/checkpoint-1.partial/model.bin")
    remote.write_bytes("run/checkpoint-1.partial/syncd-manifest.json", b"{}")
    assert remote.stat("run/checkpoint-1.partial/model.bin").size == CHUNK + 1
    remote.rename_dir("run/checkpoint-1.partial", "run/checkpoint-1")
    assert remote.list_dirs("run") == ["checkpoint-1"]
    assert [f.path for f in remote.list_files("run")] == [
        "checkpoint-1/model.bin", "checkpoint-1/syncd-manifest.json"]
    with remote.open_read("run/checkpoint-1/model.bin") as fh:
        assert fh.read() == data
    remote.write_bytes("run/checkpoint-1/syncd-manifest.json", b'{"v": 2}')  # overwrite under lag
    assert remote.open_read("run/checkpoint-1/syncd-manifest.json").read() == b'{"v": 2}'
    # commit over an older copy, as the uploader does for the final model, all under lag
    remote.write_bytes("run/final.partial/m", b"new")
    remote.rename_dir("run/checkpoint-1", "run/final")
    drive.settle()  # listings now show "final"; the renames below they will not see
    remote.rename_dir("run/final", "run/final.old")
    remote.rename_dir("run/final.partial", "run/final")
    assert remote.list_dirs("run") == ["final", "final.old"]
    assert remote.open_read("run/final/m").read() == b"new"
    assert remote.stat("run/final.old/model.bin").size == CHUNK + 1
    remote.delete("run/final.old")
    remote.rename_dir("run/final", "run/checkpoint-1")
    remote.delete("run/checkpoint-1")
    assert remote.list_dirs("run") == []
    assert remote.stat("run/checkpoint-1/model.bin") is None
    # a second folder made while the listing still lags is not created twice
    remote.write_bytes("run/checkpoint-2/a", b"a")
    remote.write_bytes("run/checkpoint-2/b", b"b")
    assert len(drive.children(drive.find("backups/run").id, "checkpoint-2")) == 1


def test_lagging_listing_still_shows_deleted_files_we_ignore(remote, drive):
    remote.write_bytes("run/c/a", b"a")
    remote.write_bytes("run/c/b", b"b")
    drive.settle()
    drive.lag_s = 30.0  # the writes are visible, what follows is not yet
    remote.delete("run/c/a")
    assert [f.path for f in remote.list_files("run")] == ["c/b"]


def test_duplicate_titles_are_reconciled_on_upload(remote, drive, tmp_path):
    remote.write_bytes("run/c/keep", b"k")
    folder = drive.find("backups/run/c").id
    drive.add_item(folder, "model.bin", b"old one")
    drive.add_item(folder, "model.bin", b"older twin")
    # stat picks one (the newest) while twins exist
    assert remote.stat("run/c/model.bin").size in (7, 10)
    src, data = _src(tmp_path, n=1000)
    remote.put_file(src, "run/c/model.bin")
    assert [i.data for i in drive.children(folder, "model.bin")] == [data]
    assert remote.stat("run/c/model.bin").md5 == hashlib.md5(data).hexdigest()


def test_twin_folders_resolve_to_the_same_one_every_time(make_remote, drive):
    base = drive.find("") or drive.items[drive.root_id]
    top = drive.add_item(base.id, "backups", folder=True)
    first = drive.add_item(top, "run", folder=True)
    drive.add_item(top, "run", folder=True)
    r = make_remote()
    r.write_bytes("run/x", b"1")
    assert drive.children(first, "x")
    assert r.list_dirs("") == ["run"]


def test_checksum_mismatch_is_an_error_and_the_bad_copy_is_removed(remote, drive, tmp_path):
    src, _ = _src(tmp_path, n=1000)
    drive.corrupt_next_upload = True
    with pytest.raises(RemoteError, match="md5"):
        remote.put_file(src, "run/f.bin")
    assert drive.find("backups/run/f.bin") is None


def test_storage_full_stops_at_once(remote, drive, tmp_path):
    src, _ = _src(tmp_path)
    remote.write_bytes("run/small", b"x")
    drive.quota_limit = CHUNK
    starts = drive.count["upload_start"]
    with pytest.raises(QuotaError, match="storage is full.*backup_keep_last"):
        remote.put_file(src, "run/f.bin")
    assert drive.count["upload_start"] == starts + 1  # no retries against a full Drive


def test_daily_upload_limit_stops_at_once(remote, drive, tmp_path):
    src, _ = _src(tmp_path)
    drive.daily_limit_bytes = CHUNK
    t0 = time.monotonic()
    with pytest.raises(QuotaError, match="daily upload limit"):
        remote.put_file(src, "run/f.bin")
    assert drive.count["upload_start"] == 1 and time.monotonic() - t0 < 5


def test_daily_limit_mid_file_stops_and_keeps_the_session(remote, drive, tmp_path):
    src, data = _src(tmp_path)
    drive.fail("chunk", 403, "uploadLimitExceeded", skip=2)
    with pytest.raises(QuotaError, match="daily upload limit"):
        remote.put_file(src, "run/f.bin")
    sessions = list((tmp_path / "state").glob("*.json"))
    assert len(sessions) == 1 and (sessions[0].stat().st_mode & 0o777) == 0o600
    received = drive.bytes_received
    remote.put_file(src, "run/f.bin")  # the next day: continue where Drive stopped
    assert _stored(drive, "backups/run/f.bin") == data
    assert drive.bytes_received - received == len(data) - 2 * CHUNK
    assert not list((tmp_path / "state").glob("*.json"))


def test_forgotten_session_starts_over(remote, drive, tmp_path):
    src, data = _src(tmp_path)
    drive.fail("chunk", 403, "uploadLimitExceeded", skip=1)
    with pytest.raises(QuotaError):
        remote.put_file(src, "run/f.bin")
    drive.expire_sessions()
    remote.put_file(src, "run/f.bin")
    assert _stored(drive, "backups/run/f.bin") == data


def test_changed_source_discards_the_old_session(remote, drive, tmp_path):
    src, _ = _src(tmp_path)
    drive.fail("chunk", 403, "uploadLimitExceeded", skip=1)
    with pytest.raises(QuotaError):
        remote.put_file(src, "run/f.bin")
    data = blob(3 * CHUNK, seed=9)
    src.write_bytes(data)
    remote.put_file(src, "run/f.bin")
    assert _stored(drive, "backups/run/f.bin") == data


def test_service_account_on_my_drive_says_what_to_do(make_remote, drive, tmp_path):
    import json
    import os

    key = tmp_path / "sa.json"
    key.write_text(json.dumps(service_account_key(drive)))
    os.chmod(key, 0o600)
    r = make_remote(credentials=str(key))
    with pytest.raises(QuotaError, match="service accounts have no storage.*Shared Drive.*OAuth"):
        r.write_bytes("run/x", b"1")


def test_service_account_on_a_shared_drive_works(make_remote, drive, tmp_path):
    import json
    import os

    key = tmp_path / "sa.json"
    key.write_text(json.dumps(service_account_key(drive)))
    os.chmod(key, 0o600)
    sd = drive.add_shared_drive("Team")
    r = make_remote(credentials=str(key), root_id=sd)
    r.write_bytes("run/x", b"1")
    assert r.open_read("run/x").read() == b"1"
    assert any(p.startswith("sa:") for p in drive.tokens.values())


def test_revoked_refresh_token_is_one_clear_line(make_remote, drive, tmp_path):
    drive.refresh_tokens.clear()
    r = make_remote()
    with pytest.raises(CredentialsError) as ei:
        r.write_bytes("x", b"1")
    msg = str(ei.value)
    assert "syncd auth" in msg and "\n" not in msg and "invalid_grant" in msg
    assert "fake-refresh" not in msg and "ya29" not in msg


def test_close_stops_a_retry_loop(make_remote, drive, tmp_path):
    import threading

    r = make_remote(backoff_base_s=5.0)
    drive.fail("list", 500, times=None)
    errors = []
    t = threading.Thread(target=lambda: errors.append(pytest.raises(RemoteError, r.list_dirs, "")))
    t.start()
    time.sleep(0.3)
    r.close()
    t.join(5)
    assert not t.is_alive() and errors


def test_a_reader_never_creates_the_folder_a_lagging_listing_hides(make_remote, drive):
    drive.lag_s = 30.0
    writer = make_remote()
    writer.write_bytes("run/checkpoint-1/syncd-manifest.json", b"{}")
    reader = make_remote()  # another process: `syncd wait`, `restore`, `verify`
    assert reader.list_dirs("run") == [] and reader.stat("run/checkpoint-1/syncd-manifest.json") is None
    assert reader.list_files("") == [] and reader.quota().used_bytes == 2
    assert len(drive.children(drive.root_id, "backups")) == 1  # no twin made by the reader
    drive.settle()
    assert reader.list_dirs("run") == ["checkpoint-1"]


def test_listing_of_a_folder_renamed_meanwhile(make_remote, drive):
    r = make_remote()
    r.write_bytes("run/c.partial/sub/a", b"a")
    drive.add_item(drive.find("backups/run/c.partial/sub").id, "b", b"b")  # not written by r
    drive.settle()
    drive.lag_s = 30.0
    r.rename_dir("run/c.partial", "run/c")
    assert r.list_dirs("run") == ["c"]
    assert r.list_files("run/c.partial") == []
    assert [f.path for f in r.list_files("run")] == ["c/sub/a", "c/sub/b"]


def test_a_reader_follows_a_rename_made_by_another_process(make_remote, drive, monkeypatch):
    import syncd.remotes.gdrive as gd

    writer, reader = make_remote(), make_remote()
    writer.write_bytes("run/checkpoint-1.partial/syncd-manifest.json", b"{}")
    assert reader.stat("run/checkpoint-1.partial/syncd-manifest.json") is not None  # looked up
    writer.rename_dir("run/checkpoint-1.partial", "run/checkpoint-1")
    monkeypatch.setattr(gd, "LOOKUP_TTL_S", 0.0)  # as after a poll interval
    assert reader.list_dirs("run") == ["checkpoint-1"]
    assert reader.stat("run/checkpoint-1/syncd-manifest.json") is not None
    assert reader.stat("run/checkpoint-1.partial/syncd-manifest.json") is None


def test_a_reader_does_not_see_what_another_process_just_deleted(make_remote, drive):
    writer, reader = make_remote(), make_remote()
    writer.write_bytes("run/checkpoint-1/syncd-manifest.json", b"{}")
    writer.write_bytes("run/checkpoint-2/syncd-manifest.json", b"{}")
    drive.settle()
    drive.lag_s = 30.0  # the deletes below stay invisible to listings
    writer.delete("run/checkpoint-1")
    writer.delete("run/checkpoint-2/syncd-manifest.json")
    assert reader.list_dirs("run") == ["checkpoint-2"]
    assert reader.stat("run/checkpoint-2/syncd-manifest.json") is None


def test_folders_deleted_behind_our_back_are_made_again(remote, drive, tmp_path):
    remote.write_bytes("run/checkpoint-1.partial/a", b"a")
    with drive.lock:  # someone empties the backup folder in the Drive web page
        for d in drive._descendants(drive.find("backups").id):
            del drive.items[d.id]
    src, data = _src(tmp_path, n=1000)
    remote.put_file(src, "run/checkpoint-1.partial/b")
    remote.write_bytes("run/checkpoint-1.partial/c", b"c")
    assert _stored(drive, "backups/run/checkpoint-1.partial/b") == data
    assert [f.path for f in remote.list_files("run")] == ["checkpoint-1.partial/b", "checkpoint-1.partial/c"]
