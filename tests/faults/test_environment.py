"""The world misbehaving around a running daemon: full disks, a vanishing remote,
saves faster than uploads, odd checkpoint shapes, the output folder replaced."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from syncd.checkpoints import write_checkpoint_marker
from syncd.remotes.local import LocalRemote
from tests.conftest import stop_gracefully, syncd, wait_for
from tests.faults.test_crash_matrix import check_invariants, config, place, trained  # noqa: F401 - fixture


@pytest.fixture
def small_fs(tmp_path):
    """A 12 MB tmpfs mounted for one test (the tests run as root, as CI does)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def grow(mnt: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mnt)], check=True)


def test_full_folder_remote_reports_and_recovers(trained, small_fs, tmp_path, procs):  # noqa: F811
    out = tmp_path / "out"
    place(trained, out, 5, 10)  # ~24 MB each: neither fits in 12 MB
    cfg = config(tmp_path, str(small_fs / "remote"))
    daemon = procs.syncd_run(cfg, cwd=tmp_path)

    def error():
        s = json.loads(syncd("status", str(cfg), "--json", cwd=tmp_path).stdout)
        return s["last_error"]

    # Seen before a byte is sent: the checkpoint cannot fit in what is free.
    assert "MB free" in wait_for(error, 60, what="the out-of-space error in status")
    remote = LocalRemote(small_fs / "remote")
    assert check_invariants(remote, out) == [], "nothing half-sent may look committed"
    grow(small_fs, "200m")  # space returns
    assert syncd("wait", str(cfg), "--timeout", "180", cwd=tmp_path, timeout=200).returncode == 0
    wait_for(lambda: check_invariants(remote, out) == ["checkpoint-10", "checkpoint-5"], 60, what="recovery")
    assert stop_gracefully(daemon) == 0


def test_full_output_disk_prunes_locally_and_keeps_working(tmp_path, procs):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=30m", "tmpfs", str(mnt)], check=True)
    try:
        out = mnt / "out"
        cfg = config(tmp_path, str(tmp_path / "remote"), output_dir=str(out), syncd_min_free_gb=0.012,
                     syncd_interval_seconds=0.5)
        daemon = procs.syncd_run(cfg, cwd=tmp_path)
        train = procs.hf_train(out, "--max-steps", "30", "--save-steps", "5", "--save-total-limit", "50",
                               "--hidden", "128", "--vocab", "1000", "--step-sleep", "0.1", cwd=tmp_path)
        assert train.wait(120) == 0, "the trainer must not run out of disk: syncd prunes ahead of it"
        assert syncd("wait", str(cfg), "--timeout", "60", cwd=tmp_path).returncode == 0
        assert stop_gracefully(daemon) == 0
        log = (tmp_path / "syncd-0.log").read_text()
        assert "low disk" in log
        assert (out / "checkpoint-30").exists()
        r = syncd("verify", str(cfg), cwd=tmp_path)
        assert r.returncode == 0 and "checkpoint-30: ok" in r.stdout
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_remote_that_vanishes_and_returns(trained, tmp_path, procs):  # noqa: F811
    out = tmp_path / "out"
    place(trained, out, 5, 10)
    cfg = config(tmp_path, str(tmp_path / "remote"))
    daemon = procs.syncd_run(cfg, cwd=tmp_path)
    assert syncd("wait", str(cfg), "--timeout", "60", cwd=tmp_path).returncode == 0
    remote = LocalRemote(tmp_path / "remote")
    wait_for(lambda: check_invariants(remote, out) == ["checkpoint-10", "checkpoint-5"], 30, what="first mirror")
    shutil.rmtree(tmp_path / "remote")  # an unmounted Drive, a wiped disk

    def error():
        return json.loads(syncd("status", str(cfg), "--json", cwd=tmp_path).stdout)["last_error"] or ""

    # The timer's pass notices; the folder is never re-created on the local disk...
    assert "disappeared" in wait_for(error, 60, what="the vanished remote in status")
    assert not (tmp_path / "remote").exists()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-5"]
    # ... until a person brings it back: then the window is mirrored again from local copies.
    (tmp_path / "remote").mkdir()
    remote = LocalRemote(tmp_path / "remote")
    wait_for(lambda: check_invariants(remote, out) == ["checkpoint-10", "checkpoint-5"], 60, what="re-mirror")
    assert stop_gracefully(daemon) == 0


def test_saves_faster_than_uploads_newest_first_and_bounded(tmp_path, procs):
    cfg = config(tmp_path, str(tmp_path / "remote"), syncd_bwlimit_mbps=3.0, backup_keep_last=2,
                 save_total_limit=2, syncd_upload_workers=2)
    daemon = procs.syncd_run(cfg, cwd=tmp_path)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    queue_lengths, order = [], []
    blob = os.urandom(3_000_000)  # ~1 s of upload each at 3 MB/s; one save every 0.3 s
    for step in range(1, 21):
        ck = out / f"checkpoint-{step}"
        ck.mkdir()
        (ck / "model.safetensors").write_bytes(blob[step:] + blob[:step])
        (ck / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        write_checkpoint_marker(ck, step)
        time.sleep(0.3)
        status = json.loads((out / ".syncd" / "status.json").read_text())
        queue_lengths.append(len(status["queue"]))
        if status["current"]:
            order.append(int(status["current"]["name"].split("-")[1]))
    assert max(queue_lengths) <= 2, "the queue holds at most the keep window"
    assert syncd("wait", str(cfg), "--timeout", "60", cwd=tmp_path).returncode == 0
    wait_for(lambda: sorted(p.name for p in (tmp_path / "remote" / "run").iterdir() if p.is_dir())
             == ["checkpoint-19", "checkpoint-20"], 60,
             what="the newest two, and only them")
    assert stop_gracefully(daemon) == 0
    # Each upload started on the newest checkpoint of its moment: the sequence only climbs.
    assert order == sorted(order)
    assert len(set(order)) < 20, "most checkpoints were skipped rather than queued"


def test_ten_thousand_small_files_in_nested_folders(tmp_path, procs):
    out = tmp_path / "out"
    ck = out / "checkpoint-1"
    for i in range(10_000):
        d = ck / f"shard_{i // 1000:02d}" / f"rank_{i // 100 % 10}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"param_{i:05d}.distcp").write_bytes(i.to_bytes(4, "little") * 16)
    (ck / "trainer_state.json").write_text("{}")
    write_checkpoint_marker(ck, 1)
    cfg = config(tmp_path, str(tmp_path / "remote"), syncd_upload_workers=8)
    daemon = procs.syncd_run(cfg, cwd=tmp_path)
    assert syncd("wait", str(cfg), "--timeout", "300", cwd=tmp_path, timeout=320).returncode == 0
    assert stop_gracefully(daemon) == 0
    r = syncd("restore", str(cfg), "--to", str(tmp_path / "fresh"), cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    restored = tmp_path / "fresh" / "checkpoint-1"
    assert sum(1 for p in restored.rglob("*.distcp")) == 10_000
    sample = "shard_07/rank_3/param_07345.distcp"
    assert (restored / sample).read_bytes() == (ck / sample).read_bytes()


def test_output_folder_deleted_and_recreated_under_the_daemon(trained, tmp_path, procs):  # noqa: F811
    out = tmp_path / "out"
    place(trained, out, 5)
    cfg = config(tmp_path, str(tmp_path / "remote"))
    daemon = procs.syncd_run(cfg, cwd=tmp_path)
    assert syncd("wait", str(cfg), "--timeout", "60", cwd=tmp_path).returncode == 0
    shutil.rmtree(out)  # a user's `rm -rf output && python -m trainer ...`
    time.sleep(0.5)
    place(trained, out, 10)
    assert syncd("wait", str(cfg), "--timeout", "60", cwd=tmp_path).returncode == 0
    remote = LocalRemote(tmp_path / "remote")
    wait_for(lambda: check_invariants(remote, out) == ["checkpoint-10", "checkpoint-5"], 30,
             what="the new folder to be watched and mirrored")
    assert daemon.poll() is None
    assert stop_gracefully(daemon) == 0


def test_one_four_gigabyte_file(tmp_path, procs):
    out = tmp_path / "out"
    ck = out / "checkpoint-1"
    ck.mkdir(parents=True)
    block = os.urandom(64 * 1024 * 1024)
    with open(ck / "model.safetensors", "wb") as fh:
        for i in range(64):  # 4 GiB: past every 32-bit offset
            fh.write(i.to_bytes(8, "little") + block[8:])
    (ck / "trainer_state.json").write_text("{}")
    write_checkpoint_marker(ck, 1)
    cfg = config(tmp_path, str(tmp_path / "remote"))
    daemon = procs.syncd_run(cfg, cwd=tmp_path)
    assert syncd("wait", str(cfg), "--timeout", "600", cwd=tmp_path, timeout=620).returncode == 0
    peak_kb = next(int(line.split()[1]) for line in Path(f"/proc/{daemon.pid}/status").read_text().splitlines()
                   if line.startswith("VmHWM:"))
    assert stop_gracefully(daemon) == 0
    assert peak_kb < 150 * 1024, f"syncd's memory grew with the file: peak {peak_kb / 1024:.0f} MB"
    manifest = json.loads((tmp_path / "remote" / "run" / "checkpoint-1" / "syncd-manifest.json").read_text())
    entry = next(f for f in manifest["files"] if f["path"] == "model.safetensors")
    assert entry["size"] == 4 * 1024**3
    h = hashlib.sha256()
    with open(ck / "model.safetensors", "rb") as fh:
        while chunk := fh.read(16 * 1024 * 1024):
            h.update(chunk)
    assert entry["sha256"] == h.hexdigest()
    assert (tmp_path / "remote" / "run" / "checkpoint-1" / "model.safetensors").stat().st_size == 4 * 1024**3


def test_remote_that_turns_read_only_then_writable(trained, tmp_path, procs):  # noqa: F811
    backing = tmp_path / "backing"
    backing.mkdir()
    mnt = tmp_path / "remote"
    mnt.mkdir()
    subprocess.run(["mount", "--bind", str(backing), str(mnt)], check=True)
    try:
        out = tmp_path / "out"
        place(trained, out, 5)
        cfg = config(tmp_path, str(mnt))
        daemon = procs.syncd_run(cfg, cwd=tmp_path)
        assert syncd("wait", str(cfg), "--timeout", "60", cwd=tmp_path).returncode == 0
        subprocess.run(["mount", "-o", "remount,ro,bind", str(mnt)], check=True)
        place(trained, out, 10)

        def error():
            return json.loads(syncd("status", str(cfg), "--json", cwd=tmp_path).stdout)["last_error"] or ""

        assert "Read-only file system" in wait_for(error, 60, what="the read-only error in status")
        remote = LocalRemote(mnt)
        assert check_invariants(remote, out) == ["checkpoint-5"]
        subprocess.run(["mount", "-o", "remount,rw,bind", str(mnt)], check=True)
        wait_for(lambda: check_invariants(remote, out) == ["checkpoint-10", "checkpoint-5"], 90, what="recovery")
        assert stop_gracefully(daemon) == 0
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
