"""End to end with real processes: a plain Hugging Face Trainer, `syncd run`, a folder remote.

Everything here is a subprocess talking through the filesystem, as on a real VM:
inotify is real, checkpoints are written by transformers.Trainer, kills are SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from syncd.checkpoints import MARKER
from syncd.manifest import MANIFEST_NAME
from syncd.upload import read_journal
from tests.conftest import stop_gracefully, syncd, wait_for, write_config

# A RoBERTa whose checkpoint (weights + Adam state) is ~230 MB: big enough that an
# upload and a save take long enough to be interrupted.
BIG_MODEL = ("--vocab", "50265", "--hidden", "384")


def committed(remote_run: Path) -> list[str]:
    if not remote_run.is_dir():
        return []
    return sorted((p.name for p in remote_run.iterdir() if (p / MANIFEST_NAME).is_file() and not p.name.endswith(".partial")),
                  key=lambda n: int(n.split("-")[1]))


def assert_same_files(local: Path, remote: Path) -> None:
    """Byte-identical, and the manifest lists exactly the local files.

    A restored copy of a checkpoint written without our marker gains one, so the
    marker alone may be extra locally.
    """
    files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    manifest = sorted(f["path"] for f in json.loads((remote / MANIFEST_NAME).read_text())["files"])
    assert manifest, f"{remote} is empty"
    assert set(files) - set(manifest) <= {MARKER} and set(manifest) <= set(files)
    for rel in manifest:
        assert (remote / rel).read_bytes() == (local / rel).read_bytes(), rel


def make_config(tmp_path: Path, **extra) -> Path:
    keys = dict(output_dir="out", gdrive_backup_dir="remote", run_name="run", backup_keep_last=2,
                save_total_limit=3, syncd_settle_seconds=0.5, syncd_interval_seconds=2,
                syncd_stale_seconds=1.0, syncd_min_free_gb=0, learning_rate=1e-3)
    keys.update(extra)
    return write_config(tmp_path / "cfg.json", **keys)


def test_mirrors_a_training_run_keeping_the_newest_commits(tmp_path, procs):
    cfg = make_config(tmp_path)
    daemon = procs.syncd_run(cfg, cwd=tmp_path)
    train = procs.hf_train(tmp_path / "out", "--max-steps", "30", "--save-steps", "5",
                           "--save-total-limit", "2", "--step-sleep", "0.05", cwd=tmp_path)
    assert train.wait(120) == 0
    r = syncd("wait", str(cfg), "--timeout", "60", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    remote_run = tmp_path / "remote" / "run"
    assert committed(remote_run) == ["checkpoint-25", "checkpoint-30"]
    for name in committed(remote_run):
        assert_same_files(tmp_path / "out" / name, remote_run / name)
    wait_for(lambda: not any((tmp_path / "out" / ".syncd" / "staging").iterdir()), 20, what="staging drained")
    assert sorted(p.name for p in remote_run.iterdir() if p.is_dir() and not p.name.startswith(".")) == ["checkpoint-25", "checkpoint-30"]
    assert stop_gracefully(daemon) == 0
    # No spurious errors on the way (a commit racing the pass that finishes interrupted ones).
    assert " ERROR syncd" not in (tmp_path / "syncd-0.log").read_text()


def test_trainer_rotation_deletes_folders_mid_upload(tmp_path, procs):
    # ~3.5 MB checkpoints at 2 MB/s, saved every ~0.8 s: the trainer's own
    # save_total_limit deletes checkpoints while syncd is still sending them.
    cfg = make_config(tmp_path, syncd_bwlimit_mbps=2.0, syncd_upload_workers=2, syncd_settle_seconds=0.3)
    daemon = procs.syncd_run(cfg, cwd=tmp_path)
    train = procs.hf_train(tmp_path / "out", "--max-steps", "40", "--save-steps", "4", "--save-total-limit", "2",
                           "--hidden", "128", "--vocab", "1000", "--step-sleep", "0.2", cwd=tmp_path)
    assert train.wait(180) == 0
    r = syncd("wait", str(cfg), "--timeout", "90", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    remote_run = tmp_path / "remote" / "run"
    # `wait` promises the newest; the window's second member may still be in flight.
    wait_for(lambda: sorted(p.name for p in remote_run.iterdir() if p.is_dir() and not p.name.startswith(".")) == ["checkpoint-36", "checkpoint-40"], 30,
             what="the remote to converge on the newest two, with no partial left")
    assert committed(remote_run) == ["checkpoint-36", "checkpoint-40"]
    for name in committed(remote_run):
        assert_same_files(tmp_path / "out" / name, remote_run / name)
    assert stop_gracefully(daemon) == 0
    log = (tmp_path / "syncd-0.log").read_text()
    # Uploads overlapped the rotation: more checkpoints were committed (and later
    # pruned) than the trainer ever kept on disk at once.
    assert log.count(": committed") > 2
    assert "pruned (beyond backup_keep_last)" in log


def test_sigkill_mid_upload_resumes_without_resending_verified_files(tmp_path, procs):
    train = procs.hf_train(tmp_path / "out", "--max-steps", "2", "--save-steps", "2", *BIG_MODEL, cwd=tmp_path)
    assert train.wait(180) == 0
    ckpt = tmp_path / "out" / "checkpoint-2"
    sizes = {p.relative_to(ckpt).as_posix(): p.stat().st_size for p in ckpt.rglob("*") if p.is_file()}
    assert sum(sizes.values()) > 150e6
    cfg = make_config(tmp_path)
    state_file = tmp_path / "out" / ".syncd" / "state" / "uploads" / "checkpoint-2.jsonl"

    slow = procs.syncd_run(cfg, "--syncd_bwlimit_mbps", "60", "--syncd_upload_workers", "1", cwd=tmp_path)
    verified = wait_for(lambda: read_journal(state_file)[1],
                        90, interval=0.01, what="a first verified file")
    os.kill(slow.pid, signal.SIGKILL)
    slow.wait(10)
    verified = read_journal(state_file)[1]  # what the journal says after the kill
    assert verified and len(verified) < len(sizes)

    partial = tmp_path / "remote" / "run" / "checkpoint-2.partial"
    before = {rel: (partial / rel).stat() for rel in verified}
    # Killed mid-way: nothing is committed, so nothing can be restored.
    assert committed(tmp_path / "remote" / "run") == []
    r = syncd("restore", str(cfg), "--to", str(tmp_path / "elsewhere"), cwd=tmp_path)
    assert r.returncode == 5 and "no committed checkpoint" in r.stderr
    assert not (tmp_path / "elsewhere" / "checkpoint-2").exists()

    again = procs.syncd_run(cfg, cwd=tmp_path)
    r = syncd("wait", str(cfg), "--timeout", "120", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    final = tmp_path / "remote" / "run" / "checkpoint-2"
    for rel, st in before.items():
        now = (final / rel).stat()
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), f"{rel} was sent again"
    status = json.loads((tmp_path / "out" / ".syncd" / "status.json").read_text())
    assert status["uploaded_bytes"] == sum(sizes.values()) - sum(sizes[rel] for rel in verified)
    assert_same_files(ckpt, final)
    assert stop_gracefully(again) == 0


def test_half_written_checkpoint_is_never_mirrored_and_is_cleaned_once_stale(tmp_path, procs):
    cfg = make_config(tmp_path, syncd_stale_seconds=2.0)
    daemon = procs.syncd_run(cfg, cwd=tmp_path)
    out = tmp_path / "out"
    train = procs.hf_train(out, "--max-steps", "6", "--save-steps", "2", "--save-total-limit", "5",
                           *BIG_MODEL, cwd=tmp_path)
    wait_for(lambda: (out / "checkpoint-4").exists() or train.poll() is not None, 180, interval=0.005,
             what="checkpoint-4 to start")
    os.killpg(train.pid, signal.SIGKILL)
    train.wait(10)
    half = out / "checkpoint-4"
    assert half.is_dir() and not (half / "trainer_state.json").exists(), "the kill was meant to land mid-save"
    assert syncd("wait", str(cfg), "--timeout", "120", cwd=tmp_path).returncode == 0
    remote_run = tmp_path / "remote" / "run"
    assert committed(remote_run) == ["checkpoint-2"]
    assert not any(p.name.startswith("checkpoint-4") for p in remote_run.iterdir() if p.is_dir())
    r = syncd("restore", str(cfg), "--to", str(tmp_path / "fresh"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "fresh").iterdir() if p.is_dir() and not p.name.startswith(".")) == ["checkpoint-2"]
    # Not stale-and-superseded yet: the half folder may still be written, so it stays.
    assert half.exists()
    # Training starts again and saves a newer complete checkpoint: now the half one goes.
    again = procs.hf_train(out, "--max-steps", "5", "--save-steps", "5", "--save-total-limit", "5",
                           *BIG_MODEL, cwd=tmp_path)
    assert again.wait(180) == 0
    wait_for(lambda: not half.exists(), 30, what="the stale half checkpoint to be retired")
    assert syncd("wait", str(cfg), "--timeout", "120", cwd=tmp_path).returncode == 0
    assert "checkpoint-4" not in committed(remote_run)
    assert stop_gracefully(daemon) == 0
    assert "checkpoint-4: local copy retired (incomplete and stale" in (tmp_path / "syncd-0.log").read_text()


def mirrored_run(tmp_path: Path, procs, **keys) -> Path:
    """A finished 10-step Trainer run (checkpoints 5 and 10) mirrored by a daemon since stopped."""
    cfg = make_config(tmp_path, **keys)
    train = procs.hf_train(tmp_path / "out", "--max-steps", "10", "--save-steps", "5", cwd=tmp_path)
    assert train.wait(120) == 0
    daemon = procs.syncd_run(cfg, cwd=tmp_path)
    assert syncd("wait", str(cfg), "--timeout", "60", cwd=tmp_path).returncode == 0
    assert stop_gracefully(daemon) == 0
    return cfg


def test_restore_into_empty_folder_then_trainer_resumes(tmp_path, procs):
    cfg = mirrored_run(tmp_path, procs)
    fresh = tmp_path / "fresh-vm" / "out"
    r = syncd("restore", str(cfg), "--to", str(fresh), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in fresh.iterdir() if p.is_dir() and not p.name.startswith(".")) == ["checkpoint-10"]
    original = json.loads((tmp_path / "out" / "checkpoint-10" / "trainer_state.json").read_text())
    resume = procs.hf_train(fresh, "--max-steps", "15", "--save-steps", "5", "--resume", "auto", cwd=tmp_path)
    assert resume.wait(120) == 0
    state = json.loads((fresh / "checkpoint-15" / "trainer_state.json").read_text())
    assert state["global_step"] == 15
    # The history up to step 10 is the original run's: training continued, it did not restart.
    assert state["log_history"][:10] == original["log_history"][:10]
    assert len([h for h in state["log_history"] if "loss" in h]) == 15


def test_flipped_byte_is_reported_and_restore_falls_back(tmp_path, procs):
    cfg = mirrored_run(tmp_path, procs)
    r = syncd("verify", str(cfg), cwd=tmp_path)
    assert r.returncode == 0 and "checkpoint-10: ok" in r.stdout, r.stdout + r.stderr

    victim = tmp_path / "remote" / "run" / "checkpoint-10" / "model.safetensors"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))

    r = syncd("verify", str(cfg), cwd=tmp_path)
    assert r.returncode == 4
    assert "checkpoint-10: BAD: model.safetensors checksum differs" in r.stdout
    assert "checkpoint-5: ok" in r.stdout
    r = syncd("restore", str(cfg), "--to", str(tmp_path / "fresh"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "checkpoint-10 failed verification" in r.stderr and "falling back" in r.stderr
    assert sorted(p.name for p in (tmp_path / "fresh").iterdir() if p.is_dir() and not p.name.startswith(".")) == ["checkpoint-5"]
    assert_same_files(tmp_path / "fresh" / "checkpoint-5", tmp_path / "remote" / "run" / "checkpoint-5")
    r = syncd("restore", str(cfg), "--step", "10", "--to", str(tmp_path / "fresh2"), cwd=tmp_path)
    assert r.returncode == 4 and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "fresh2" / "checkpoint-10").exists()
