"""Which Drive folder a path means: twins made under listing lag, and folders a person
moved or renamed in the Drive web page.

Listings lag here until the test releases them (``drive.lag()`` ... ``drive.settle()``),
as Drive's do for a while after a create; nothing sleeps.
"""

from __future__ import annotations

import pytest

from syncd.errors import RemoteError

from .fake_drive import FOLDER

URL = "gdrive://tess_backups"


def _twins(drive, parent_id, title):
    """Folders titled so in ``parent_id``, oldest first (Drive's createdDate, then id)."""
    return sorted((i for i in drive.children(parent_id, title) if i.mime == FOLDER), key=lambda i: (i.created, i.id))


def _tree(drive, item_id, prefix=""):
    out = []
    for i in sorted(drive.children(item_id), key=lambda i: i.title):
        path = f"{prefix}{i.title}"
        out += _tree(drive, i.id, path + "/") if i.mime == FOLDER else [path]
    return out


def _all_files(drive):
    return sorted((i.id, i.data) for i in drive.items.values() if i.mime != FOLDER)


def test_daemons_of_two_runs_starting_together_converge_on_one_base_folder(make_remote, drive):
    a, b = make_remote(URL), make_remote(URL)  # two processes: nothing shared but Drive
    drive.lag()
    a.write_bytes("run_a/checkpoint-1/syncd-manifest.json", b"a1")
    b.write_bytes("run_b/checkpoint-1/syncd-manifest.json", b"b1")
    bases = _twins(drive, drive.root_id, "tess_backups")
    assert len(bases) == 2  # each made its own: neither could see the other's
    drive.settle()
    # readers see both runs, whichever twin they would have picked
    reader = make_remote(URL)
    assert reader.list_dirs("") == ["run_a", "run_b"]
    assert reader.stat("run_b/checkpoint-1/syncd-manifest.json").size == 2
    assert reader.open_read("run_b/checkpoint-1/syncd-manifest.json").read() == b"b1"
    assert [f.path for f in reader.list_files("run_b")] == ["checkpoint-1/syncd-manifest.json"]
    files_before = _all_files(drive)
    # each writer's next commit moves what it made into the oldest twin
    b.write_bytes("run_b/checkpoint-2/syncd-manifest.json", b"b2")
    a.write_bytes("run_a/checkpoint-2/syncd-manifest.json", b"a2")
    canonical, newer = bases
    assert _tree(drive, canonical.id) == [
        "run_a/checkpoint-1/syncd-manifest.json", "run_a/checkpoint-2/syncd-manifest.json",
        "run_b/checkpoint-1/syncd-manifest.json", "run_b/checkpoint-2/syncd-manifest.json"]
    assert newer.id in drive.items and _tree(drive, newer.id) == []  # moved out, not deleted
    assert set(files_before) <= set(_all_files(drive))  # every byte is still there, same ids
    drive.settle()  # and, once listings caught up, the same view from every side
    for r in (a, b, make_remote(URL)):
        assert r.list_dirs("") == ["run_a", "run_b"]
        assert r.list_dirs("run_b") == ["checkpoint-1", "checkpoint-2"]


def test_a_daemon_restarted_within_the_lag_converges_its_run_folder(make_remote, drive, tmp_path, monkeypatch):
    import syncd.remotes.gdrive as gd

    drive.lag()
    first = make_remote(URL)
    first.write_bytes("run/syncd-run.json", b"{}")
    first.write_bytes("run/checkpoint-1/syncd-manifest.json", b"1")
    first.close()
    second = make_remote(URL)  # the restart: its listings do not show the folders above yet
    src = tmp_path / "model.bin"
    src.write_bytes(b"weights")
    second.put_file(src, "run/checkpoint-2.partial/model.bin")
    second.write_bytes("run/checkpoint-2.partial/syncd-manifest.json", b"2")
    assert len(_twins(drive, drive.root_id, "tess_backups")) == 2
    drive.settle()
    assert make_remote(URL).list_dirs("run") == ["checkpoint-1", "checkpoint-2.partial"]
    monkeypatch.setattr(gd, "LOOKUP_TTL_S", 0.0)  # as after a poll interval
    assert second.list_dirs("run") == ["checkpoint-1", "checkpoint-2.partial"]  # the writer sees both
    # the commit (the rename) lands in the canonical run folder, with its files
    second.rename_dir("run/checkpoint-2.partial", "run/checkpoint-2")
    base = _twins(drive, drive.root_id, "tess_backups")[0]
    run = _twins(drive, base.id, "run")[0]
    assert _tree(drive, run.id) == ["checkpoint-1/syncd-manifest.json", "checkpoint-2/model.bin",
                                    "checkpoint-2/syncd-manifest.json", "syncd-run.json"]
    assert sum(1 for i in drive.items.values() if i.title == "tess_backups") == 2  # the twin stays
    drive.settle()
    reader = make_remote(URL)
    assert reader.list_dirs("run") == ["checkpoint-1", "checkpoint-2"]
    assert reader.open_read("run/checkpoint-2/model.bin").read() == b"weights"


def test_a_reader_looks_through_every_twin_for_a_file(make_remote, drive):
    base = drive.add_item(drive.root_id, "tess_backups", folder=True)
    twin = drive.add_item(drive.root_id, "tess_backups", folder=True)
    drive.add_item(drive.add_item(twin, "run", folder=True), "syncd-run.json", b"{}")
    drive.add_item(base, "other", folder=True)
    r = make_remote(URL)
    assert r.list_dirs("") == ["other", "run"]
    assert r.stat("run/syncd-run.json").size == 2
    assert [f.path for f in r.list_files("")] == ["run/syncd-run.json"]
    r.delete("run")  # a path is every twin of it
    assert r.list_dirs("") == ["other"] and drive.find("tess_backups/run") is None


@pytest.mark.parametrize("how", ["rename the backup folder", "move the backup folder", "rename the run folder",
                                 "move the run folder"])
def test_a_folder_moved_or_renamed_in_drive_stops_the_commits_with_one_line(make_remote, drive, how):
    r = make_remote(URL)
    r.write_bytes("run/checkpoint-1/syncd-manifest.json", b"1")
    r.write_bytes("run/checkpoint-2.partial/a", b"a")
    archive = drive.add_item(drive.root_id, "archive", folder=True)
    target = drive.find("tess_backups" if "backup" in how else "tess_backups/run")
    title = target.title
    if how.startswith("rename"):
        drive.move(target.id, title=title + "-old")
        now = f"{'' if 'backup' in how else 'tess_backups/'}{title}-old"
    else:
        drive.move(target.id, parent=archive)
        now = f"archive/{title}"
    ids_before = set(drive.items)
    with pytest.raises(RemoteError) as ei:
        r.write_bytes("run/checkpoint-2.partial/syncd-manifest.json", b"2")
    msg = str(ei.value)
    assert "\n" not in msg and "moved or renamed" in msg
    assert f"now My Drive/{now}" in msg
    with pytest.raises(RemoteError, match="moved or renamed"):
        r.rename_dir("run/checkpoint-2.partial", "run/checkpoint-2")
    assert set(drive.items) == ids_before  # nothing written where readers cannot find it
    assert drive.find(f"{now}/{'run/' if 'backup' in how else ''}checkpoint-2") is None


def test_listings_notice_a_moved_folder_too_and_moving_it_back_heals(make_remote, drive, monkeypatch):
    import syncd.remotes.gdrive as gd

    r = make_remote(URL)
    r.write_bytes("run/checkpoint-1/syncd-manifest.json", b"1")
    run = drive.find("tess_backups/run")
    drive.move(run.id, title="run (renamed)")
    monkeypatch.setattr(gd, "LOOKUP_TTL_S", 0.0)  # as after a poll interval
    with pytest.raises(RemoteError, match=r"tess_backups/run was moved or renamed .*now My Drive/tess_backups/run \(renamed\)"):
        r.list_dirs("run")
    assert make_remote(URL).list_dirs("run") == []  # restore, which looks by path, finds nothing
    drive.move(run.id, title="run")
    assert r.list_dirs("run") == ["checkpoint-1"]
    r.write_bytes("run/checkpoint-2/syncd-manifest.json", b"2")
    assert sorted(i.title for i in drive.children(run.id)) == ["checkpoint-1", "checkpoint-2"]
