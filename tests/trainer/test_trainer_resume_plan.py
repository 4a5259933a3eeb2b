"""Where ``resume_from_checkpoint: auto`` resumes from, on real folders and a real folder remote."""

from __future__ import annotations

import os
import time

import pytest
from trainer_testlib import commit_to_remote, fake_checkpoint

from syncd.config import build_config
from syncd.errors import ConfigError, RemoteError
from trainer.resume import ResumeError, plan_resume


def sync_cfg(tmp_path, remote=None):
    data = {"output_dir": str(tmp_path / "out"), "run_name": "tiny", "syncd_settle_seconds": 30}
    if remote is not None:
        data["gdrive_backup_dir"] = str(remote)
    return build_config(data, base_dir=tmp_path)


def test_newest_complete_skips_a_half_written_newer_folder(tmp_path):
    out = tmp_path / "out"
    fake_checkpoint(out, 10)
    fake_checkpoint(out, 20)
    half = fake_checkpoint(out, 30, marker=False)  # killed mid-save: no marker, files still fresh
    (half / "trainer_state.json").unlink()
    plan = plan_resume("auto", sync_cfg(tmp_path))
    assert plan.path == out / "checkpoint-20"
    assert "newest complete local checkpoint" in plan.why and "step 20" in plan.why


def test_a_marker_that_does_not_match_the_files_is_not_complete(tmp_path):
    out = tmp_path / "out"
    fake_checkpoint(out, 10)
    torn = fake_checkpoint(out, 20)
    with open(torn / "model.safetensors", "r+b") as f:
        f.truncate(10)
    assert plan_resume("auto", sync_cfg(tmp_path)).path == out / "checkpoint-10"


def test_settled_checkpoint_without_marker_counts(tmp_path):
    out = tmp_path / "out"
    ckpt = fake_checkpoint(out, 40, marker=False)  # another Hugging Face trainer's save
    old = time.time() - 120
    for f in ckpt.iterdir():
        os.utime(f, (old, old))
    assert plan_resume("auto", sync_cfg(tmp_path)).path == ckpt


def test_only_unusable_checkpoints_is_a_clear_error(tmp_path):
    out = tmp_path / "out"
    half = fake_checkpoint(out, 30, marker=False)
    (half / "trainer_state.json").unlink()
    with pytest.raises(ResumeError, match=r"holds checkpoints but none is usable: checkpoint-30 \(no trainer_state"):
        plan_resume("auto", sync_cfg(tmp_path))


def test_empty_folder_without_remote_starts_fresh(tmp_path):
    plan = plan_resume("auto", sync_cfg(tmp_path))
    assert plan.fresh and "starting fresh" in plan.why


@pytest.mark.parametrize("setting", [False, None, "false"])
def test_false_starts_fresh_even_with_checkpoints(tmp_path, setting):
    fake_checkpoint(tmp_path / "out", 10)
    assert plan_resume(setting, sync_cfg(tmp_path)).fresh


def test_explicit_path_is_honoured(tmp_path):
    elsewhere = fake_checkpoint(tmp_path / "elsewhere", 5)
    fake_checkpoint(tmp_path / "out", 10)
    plan = plan_resume(str(elsewhere), sync_cfg(tmp_path))
    assert plan.path == elsewhere and "given in resume_from_checkpoint" in plan.why
    with pytest.raises(ResumeError, match="is not a folder"):
        plan_resume(str(tmp_path / "missing"), sync_cfg(tmp_path))


def test_empty_folder_with_populated_remote_restores_first(tmp_path):
    remote = tmp_path / "remote"
    source = tmp_path / "source"
    commit_to_remote(fake_checkpoint(source, 10), remote, "tiny")
    commit_to_remote(fake_checkpoint(source, 20), remote, "tiny")
    cfg = sync_cfg(tmp_path, remote)
    plan = plan_resume("auto", cfg)
    restored = tmp_path / "out" / "checkpoint-20"
    assert plan.path == restored and "restored from the remote" in plan.why
    assert (restored / "model.safetensors").read_bytes() == (source / "checkpoint-20" / "model.safetensors").read_bytes()


def test_local_complete_checkpoint_wins_over_the_remote(tmp_path):
    remote = tmp_path / "remote"
    commit_to_remote(fake_checkpoint(tmp_path / "source", 50), remote, "tiny")
    fake_checkpoint(tmp_path / "out", 10)
    plan = plan_resume("auto", sync_cfg(tmp_path, remote))
    assert plan.path == tmp_path / "out" / "checkpoint-10"


def test_empty_remote_and_empty_folder_start_fresh(tmp_path):
    (tmp_path / "remote").mkdir()
    plan = plan_resume("auto", sync_cfg(tmp_path, tmp_path / "remote"))
    assert plan.fresh and "or on the remote" in plan.why


def test_unmounted_drive_stops_instead_of_starting_over(tmp_path):
    # Neither the remote folder nor its parent exists: most often a Drive not mounted yet.
    # Starting from scratch would fork the run; it stops with one line naming the mount.
    remote = tmp_path / "drive" / "MyDrive" / "tess_backups"
    with pytest.raises(RemoteError, match="is the drive mounted"):
        plan_resume("auto", sync_cfg(tmp_path, remote))
    assert not (tmp_path / "drive").exists()


def test_output_inside_the_remote_run_folder_is_refused(tmp_path):
    # Training into MyDrive/tess_out while backing up to MyDrive with run_name tess_out.
    drive = tmp_path / "MyDrive"
    cfg = build_config({"output_dir": str(drive / "tiny"), "run_name": "tiny", "gdrive_backup_dir": str(drive)},
                       base_dir=tmp_path)
    with pytest.raises(ConfigError, match="overlap"):
        plan_resume("auto", cfg)
