"""`syncd stop` / SIGTERM mid-upload: an upload that fits in syncd_stop_grace_seconds commits;
otherwise it is abandoned cleanly (nothing half-committed) and resumes at the next start."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from syncd.checkpoints import write_checkpoint_marker
from syncd.manifest import MANIFEST_NAME
from tests.conftest import wait_for, write_config

CHECKPOINT_BYTES = 6_000_000
BWLIMIT_MBPS = 1  # six seconds of upload: SIGTERM lands in the middle of it, even on a loaded machine


def _status(out: Path) -> dict:
    try:
        return json.loads((out / ".syncd" / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _committed(remote_run: Path) -> list[str]:
    if not remote_run.is_dir():
        return []
    return sorted(p.name for p in remote_run.iterdir() if (p / MANIFEST_NAME).is_file()
                  and not p.name.endswith((".partial", ".deleting")))


@pytest.mark.parametrize("grace, commits_before_exit", [(120, True), (0, False)],
                         ids=["upload-fits-in-grace", "no-grace"])
def test_sigterm_mid_upload(tmp_path, procs, grace, commits_before_exit):
    out, remote = tmp_path / "out", tmp_path / "remote"
    cfg = write_config(tmp_path / "cfg.json", output_dir=str(out), gdrive_backup_dir=str(remote), run_name="run",
                       syncd_bwlimit_mbps=BWLIMIT_MBPS, syncd_stop_grace_seconds=grace, syncd_min_free_gb=0,
                       syncd_settle_seconds=0)
    ck = out / "checkpoint-1"
    ck.mkdir(parents=True)
    (ck / "model.safetensors").write_bytes(os.urandom(CHECKPOINT_BYTES))
    (ck / "trainer_state.json").write_text("{}")
    write_checkpoint_marker(ck, 1)
    proc = procs.syncd_run(cfg, cwd=tmp_path)
    wait_for(lambda: (_status(out).get("current") or {}).get("bytes_done", 0) > 0, 60, what="the upload to start")

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(180) == 0
    assert _committed(remote / "run") == (["checkpoint-1"] if commits_before_exit else [])
    assert _status(out)["state"] == "stopped"
    if not commits_before_exit:
        # Abandoned cleanly: its claimed upload folder stays for the next start to finish.
        journal = out / ".syncd" / "state" / "uploads"
        assert any(journal.iterdir()), "the upload journal was dropped: the next start would send everything again"
        procs.syncd_run(cfg, cwd=tmp_path)
        wait_for(lambda: _committed(remote / "run") == ["checkpoint-1"], 60, what="the resumed upload to commit")
