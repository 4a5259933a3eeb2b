"""Through the Drive API: a read that failed is evidence of nothing.

A fresh daemon that meets 403s on every committed manifest must not delete them, and
restore (and the trainer's auto-resume) must say "could not read" (exit 3), never
"nothing to restore" (exit 5). Real pydrive2 against the loopback Drive server.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd.config import build_config
from syncd.daemon import Daemon
from syncd.deleter import AuditedRemote, unjustified
from syncd.errors import RemoteError
from syncd.restore import restore
from tests.conftest import syncd, wait_for, write_config
from tests.syncd.test_safety import ckpt
from trainer.resume import plan_resume


def _cfg(tmp_path: Path, drive, creds: Path, **extra) -> dict:
    keys = dict(output_dir="out", run_name="run", gdrive_backup_dir="gdrive://backups", backup_keep_last=3,
                save_total_limit=5, syncd_settle_seconds=0.2, syncd_interval_seconds=0.5, syncd_stale_seconds=1.0,
                syncd_min_free_gb=0, syncd_gdrive_credentials=str(creds), syncd_gdrive_root_url=drive.url,
                syncd_gdrive_chunk_mb=0.25, syncd_upload_workers=2)
    keys.update(extra)
    return keys


def _committed(drive) -> list[str]:
    run = drive.find("backups/run")
    if run is None:
        return []
    return sorted(i.title for i in drive.children(run.id) if i.is_folder and drive.find(
        f"backups/run/{i.title}/syncd-manifest.json") is not None)


def _run_daemon(tmp_path, keys, make_remote, until, what):
    cfg = build_config(keys, base_dir=tmp_path)
    audit = tmp_path / "deletes.jsonl"
    daemon = Daemon(cfg, remote=AuditedRemote(make_remote("gdrive://backups"), audit))
    daemon.start()
    try:
        wait_for(until(daemon), 60, what=what)
    finally:
        daemon.stop()
    assert not unjustified(audit)


def test_manifests_behind_403s_are_not_deleted_and_restore_says_unreadable(tmp_path, drive, creds, make_remote):
    for step in (1, 2, 3):
        ckpt(tmp_path / "out", step)
    keys = _cfg(tmp_path, drive, creds)
    _run_daemon(tmp_path, keys, make_remote,
                lambda d: lambda: _committed(drive) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"], "commits")
    drive.fail("media", 403, reason="forbidden", times=None)  # every download refused for now

    def passes(d):
        def three() -> bool:
            for _ in range(3):
                d.pass_now()
            return True
        return three

    _run_daemon(tmp_path, {**keys, "backup_keep_last": 1}, make_remote, passes, "three passes")
    assert _committed(drive) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    with pytest.raises(RemoteError):
        restore(make_remote("gdrive://backups"), "run", tmp_path / "fresh")
    cfg = write_config(tmp_path / "cfg.json", **{**keys, "output_dir": "fresh"})
    r = syncd("restore", str(cfg), cwd=tmp_path, timeout=120)
    assert r.returncode == 3, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("syncd: error: could not read")
    with pytest.raises(RemoteError, match="not starting over"):
        plan_resume("auto", build_config({**keys, "output_dir": "fresh2"}, base_dir=tmp_path))
    assert not (tmp_path / "fresh2").exists() or not any((tmp_path / "fresh2").glob("checkpoint-*"))
    drive.faults.clear()
    _run_daemon(tmp_path, {**keys, "backup_keep_last": 1}, make_remote,
                lambda d: lambda: _committed(drive) == ["checkpoint-3"], "pruning once reads work")
