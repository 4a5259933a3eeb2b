"""GDriveRemote through pydrive2 + google-api-python-client against the fake Drive."""

from __future__ import annotations

import hashlib

import pytest

from syncd.errors import RemoteError
from syncd.remotes import Capabilities, Remote
from syncd.remotes.gdrive import GDriveRemote, parse_url

from .fake_drive import FOLDER
from .helpers_gdrive import CHUNK, blob


def test_protocol_and_capabilities(remote):
    assert isinstance(remote, Remote)
    assert remote.capabilities == Capabilities(rename=True, server_md5=True, quota=True, resumable_upload=True)


@pytest.mark.parametrize("url, parts", [
    ("gdrive://backups", ["backups"]),
    ("gdrive://My Drive/backups", ["backups"]),
    ("gdrive://My%20Drive/a/b/", ["a", "b"]),
    ("gdrive://", []),
    ("gdrive://My Drive", []),
])
def test_parse_url(url, parts):
    assert parse_url(url) == parts


def test_put_stat_read_list(remote, drive, tmp_path):
    data = blob(3 * CHUNK + 1234)
    src = tmp_path / "model.bin"
    src.write_bytes(data)
    seen = []
    digest = remote.put_file(src, "run/checkpoint-1.partial/model.bin", progress=seen.append)
    assert digest.size == len(data) and sum(seen) == len(data)
    assert digest.md5 == hashlib.md5(data).hexdigest()
    assert digest.sha256 == hashlib.sha256(data).hexdigest()
    # on the server: folder chain created under My Drive, content intact, chunked
    item = drive.find("backups/run/checkpoint-1.partial/model.bin")
    assert item is not None and item.data == data
    assert drive.find("backups/run").mime == FOLDER
    assert drive.count["chunk"] == 4
    st = remote.stat("run/checkpoint-1.partial/model.bin")
    assert (st.size, st.md5) == (len(data), digest.md5)
    assert remote.stat("run/checkpoint-1.partial/nope.bin") is None
    assert remote.stat("nowhere/x") is None
    with remote.open_read("run/checkpoint-1.partial/model.bin") as fh:
        assert fh.read() == data
    assert remote.list_dirs("") == ["run"]
    assert remote.list_dirs("run") == ["checkpoint-1.partial"]
    assert remote.list_dirs("missing") == []
    assert [(f.path, f.size) for f in remote.list_files("run")] == [("checkpoint-1.partial/model.bin", len(data))]
    assert remote.list_files("missing") == []


def test_my_drive_prefix_is_the_same_folder(make_remote, drive):
    a = make_remote("gdrive://My Drive/tess")
    b = make_remote("gdrive://tess")
    a.write_bytes("x/m.json", b"{}")
    assert b.stat("x/m.json").size == 2
    assert len(drive.children(drive.root_id, "tess")) == 1


def test_empty_file_and_write_bytes_overwrite(remote, drive, tmp_path):
    src = tmp_path / "empty"
    src.write_bytes(b"")
    d = remote.put_file(src, "r/empty")
    assert d.size == 0 and drive.find("backups/r/empty").data == b""
    remote.write_bytes("r/m.json", b"one")
    remote.write_bytes("r/m.json", b"two!")
    parent = drive.find("backups/r")
    assert [i.data for i in drive.children(parent.id, "m.json")] == [b"two!"]
    assert remote.open_read("r/m.json").read() == b"two!"


def test_ranged_reads_are_chunked(remote, drive, tmp_path):
    data = blob(5 * CHUNK + 7)
    remote.write_bytes("big", data)
    before = drive.count["media"]
    with remote.open_read("big") as fh:
        parts = []
        while block := fh.read(100_000):
            parts.append(block)
    assert b"".join(parts) == data
    assert drive.count["media"] - before == 6  # one ranged GET per chunk, never the whole file
    for size in (1, 8192, 3 * CHUNK):  # small reads do not cost a request each
        before = drive.count["media"]
        with remote.open_read("big") as fh:
            got = b"".join(iter(lambda: fh.read(size), b""))  # noqa: B023
        assert got == data and drive.count["media"] - before == 6
    before = drive.count["media"]
    assert remote.open_read("big").read() == data and drive.count["media"] - before == 6


def test_rename_dir_and_delete(remote, drive, tmp_path):
    remote.write_bytes("run/checkpoint-2.partial/a", b"a")
    remote.write_bytes("run/checkpoint-2.partial/sub/b", b"bb")
    remote.rename_dir("run/checkpoint-2.partial", "run/checkpoint-2")
    assert remote.list_dirs("run") == ["checkpoint-2"]
    assert [f.path for f in remote.list_files("run/checkpoint-2")] == ["a", "sub/b"]
    assert drive.find("backups/run/checkpoint-2/sub/b").data == b"bb"
    assert drive.find("backups/run/checkpoint-2.partial") is None
    with pytest.raises(RemoteError, match="exists"):
        remote.write_bytes("run/x/y", b"")
        remote.rename_dir("run/x", "run/checkpoint-2")
    with pytest.raises(RemoteError, match="no such folder"):
        remote.rename_dir("run/nope", "run/nope2")
    remote.delete("run/checkpoint-2")
    remote.delete("run/checkpoint-2")  # idempotent
    remote.delete("run/never-there")
    assert remote.list_dirs("run") == ["x"]
    assert drive.find("backups/run/checkpoint-2") is None
    assert not any(i.title in ("a", "b") for i in drive.items.values())  # permanently gone


def test_delete_mode_trash_keeps_files_in_the_bin(make_remote, drive):
    r = make_remote(delete_mode="trash")
    r.write_bytes("run/c/a", b"abc")
    r.delete("run/c")
    assert r.list_dirs("run") == []
    trashed = [i for i in drive.items.values() if i.title == "a"]
    assert len(trashed) == 1 and trashed[0].trashed
    assert r.quota().trash_bytes == 3
    r.empty_trash()
    assert not any(i.title == "a" for i in drive.items.values())


def test_quota_from_about(remote, drive):
    drive.quota_limit = 10_000
    remote.write_bytes("q", b"x" * 1000)
    q = remote.quota()
    assert (q.limit_bytes, q.used_bytes, q.free_bytes) == (10_000, 1000, 9000)


def test_refuses_to_delete_the_root(remote):
    with pytest.raises(RemoteError):
        remote.delete("")


def test_root_id_and_shared_drive(make_remote, drive, tmp_path):
    sd = drive.add_shared_drive("Team")
    r = make_remote("gdrive://tess", root_id=sd)
    r.write_bytes("run/c/m", b"shared")
    assert drive.find("tess/run/c/m", root=sd).data == b"shared"
    assert r.list_files("run") and r.list_dirs("") == ["run"]
    assert r.quota().limit_bytes is None
    r.rename_dir("run/c", "run/d")
    assert r.open_read("run/d/m").read() == b"shared"
    r.delete("run/d")
    assert drive.find("tess/run/d", root=sd) is None


def test_chunk_size_must_be_256k_multiple(creds, drive):
    with pytest.raises(RemoteError, match="256 KiB"):
        GDriveRemote("gdrive://x", credentials=str(creds), root_url=drive.url, chunk_bytes=1000)


def test_from_config(drive, creds, tmp_path):
    from syncd.config import build_config

    cfg = build_config({"output_dir": str(tmp_path / "out"), "gdrive_backup_dir": "gdrive://My Drive/b",
                        "syncd_gdrive_credentials": str(creds), "syncd_gdrive_root_url": drive.url,
                        "syncd_gdrive_chunk_mb": 0.25, "syncd_delete_mode": "trash"})
    from syncd.remotes import open_remote

    r = open_remote(cfg)
    try:
        assert isinstance(r, GDriveRemote)
        r.write_bytes("k", b"v")
        assert drive.find("b/k").data == b"v"
    finally:
        r.close()


def test_connections_of_finished_threads_are_closed(remote, drive):
    import threading
    import time

    remote.write_bytes("warm", b"")
    for i in range(6):  # upload pools come and go over a daemon's life
        t = threading.Thread(target=remote.write_bytes, args=(f"t{i}", b"x"))
        t.start()
        t.join()
    deadline = time.monotonic() + 5
    while len(drive._conns) > 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(drive._conns) <= 3
    remote.close()
    deadline = time.monotonic() + 5
    while drive._conns and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not drive._conns


def test_listings_follow_next_page_tokens(make_remote, drive):
    writer = make_remote()
    for i in range(8):
        writer.write_bytes(f"run/c/f{i}", b"x")
    for i in range(4):
        writer.write_bytes(f"run/d{i}/f", b"x")
    drive.page_size = 3
    reader = make_remote()  # knows nothing: only the listing tells it
    before = drive.count["list"]
    assert [f.path for f in reader.list_files("run/c")] == [f"f{i}" for i in range(8)]
    assert reader.list_dirs("run") == ["c", "d0", "d1", "d2", "d3"]
    assert drive.count["list"] - before >= 3 + 2  # it did page


@pytest.mark.parametrize("name", ["it's", "back\\slash", 'quote"s', "spaces and (parens) or and"])
def test_odd_titles_survive_the_query_language(make_remote, name):
    r = make_remote()
    r.write_bytes(f"run/{name}/{name}.bin", b"odd")
    other = make_remote()  # no cache: finds it through q expressions only
    assert other.list_dirs("run") == [name]
    assert other.stat(f"run/{name}/{name}.bin").size == 3
    assert other.open_read(f"run/{name}/{name}.bin").read() == b"odd"
