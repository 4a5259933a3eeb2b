"""`syncd start` is ready while Drive answers errors that may pass; a verdict on the config still fails it.

A Drive that answers 503 or 429 is retried by every pass, and status says why nothing
moves; rejected credentials, a Drive that cannot be reached at all, or a folder remote
whose drive is not mounted fail the start at once with their exit codes. Real pydrive2
against the loopback Drive server; the daemon in-process for the table, a real
`syncd start` for the command.
"""

from __future__ import annotations

import json
import random
import socket
from pathlib import Path

import pytest

from syncd.checkpoints import write_checkpoint_marker
from syncd.config import build_config
from syncd.daemon import Daemon
from syncd.errors import CredentialsError, RemoteError, RemoteUnavailable
from syncd.manifest import MANIFEST_NAME
from tests.conftest import syncd, wait_for, write_config

from .helpers_gdrive import REFRESH


def _keys(drive, creds: Path, **extra) -> dict:
    keys = dict(output_dir="out", run_name="run", gdrive_backup_dir="gdrive://backups", backup_keep_last=2,
                save_total_limit=5, syncd_settle_seconds=0.2, syncd_interval_seconds=0.5, syncd_stale_seconds=1.0,
                syncd_min_free_gb=0, syncd_gdrive_credentials=str(creds), syncd_gdrive_root_url=drive.url,
                syncd_gdrive_chunk_mb=0.25)
    keys.update(extra)
    return keys


def _checkpoint(out: Path, step: int) -> Path:
    d = out / f"checkpoint-{step}"
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(random.Random(step).randbytes(8192))
    (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    write_checkpoint_marker(d, step)
    return d


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _committed(drive, name: str) -> bool:
    return drive.find(f"backups/run/{name}/{MANIFEST_NAME}") is not None


def test_daemon_starts_while_drive_rate_limits(tmp_path, drive, creds, make_remote):
    status = 429  # 503 is the command's test below
    _checkpoint(tmp_path / "out", 1)
    drive.fail("any", status, times=None)  # every request, the token refresh too, until cleared
    cfg = build_config(_keys(drive, creds), base_dir=tmp_path)
    # The daemon's own backoff budget (9 tries) would give up here too: only the start's
    # short one may let it through, and only because these errors may pass.
    daemon = Daemon(cfg, remote=make_remote("gdrive://backups", backoff_base_s=0.05))
    daemon.start()
    try:
        assert daemon.status.state == "running"
        assert "unavailable for now" in daemon.status.last_error and f"HTTP {status}" in daemon.status.last_error
        assert not _committed(drive, "checkpoint-1")
        with drive.lock:
            drive.faults.clear()
        wait_for(lambda: _committed(drive, "checkpoint-1"), 30, what="the commit once Drive answers")
    finally:
        daemon.stop()


def _revoked(drive, creds, tmp_path) -> dict:
    drive.revoke(REFRESH)
    return {}


def _nothing_listening(drive, creds, tmp_path) -> dict:
    return {"syncd_gdrive_root_url": f"http://127.0.0.1:{_dead_port()}/"}


def _not_mounted(drive, creds, tmp_path) -> dict:
    return {"gdrive_backup_dir": str(tmp_path / "no-such-mount" / "backups")}


@pytest.mark.parametrize("setup, error, exit_code, words", [
    (_revoked, CredentialsError, 2, "credentials"),
    (_nothing_listening, RemoteError, 3, "cannot reach Google Drive"),
    (_not_mounted, RemoteError, 3, "is the drive mounted"),
], ids=["revoked-credentials", "nothing-listening", "folder-not-mounted"])
def test_a_verdict_on_the_config_still_fails_the_start(tmp_path, drive, creds, setup, error, exit_code, words):
    cfg = build_config(_keys(drive, creds, **setup(drive, creds, tmp_path)), base_dir=tmp_path)
    daemon = Daemon(cfg)
    with pytest.raises(error) as info:
        daemon.start()
    assert not isinstance(info.value, RemoteUnavailable)
    assert info.value.exit_code == exit_code and words in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


def test_syncd_start_reports_ready_during_503s_and_the_checkpoint_commits_after(tmp_path, drive, creds):
    cfg = write_config(tmp_path / "cfg.json", **_keys(drive, creds))
    _checkpoint(tmp_path / "out", 5)
    drive.fail("any", 503, times=None)
    try:
        r = syncd("start", str(cfg), cwd=tmp_path, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("syncd started"), r.stdout
        r = syncd("status", str(cfg), "--json", cwd=tmp_path)
        assert r.returncode == 3, r.stderr  # the remote could not be read: said in one line, within seconds
        assert r.stderr.strip().splitlines()[-1].startswith("syncd: error: the remote could not be read")
        status = json.loads(r.stdout)
        assert "unavailable for now" in status["last_error"] and "HTTP 503" in status["last_error"], status
        assert "this may pass" in status["remote_error"], status  # status's own look, seconds not minutes
        assert not _committed(drive, "checkpoint-5")
        with drive.lock:
            drive.faults.clear()
        r = syncd("wait", str(cfg), "--timeout", "60", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert _committed(drive, "checkpoint-5")
    finally:
        with drive.lock:
            drive.faults.clear()
        r = syncd("stop", str(cfg), cwd=tmp_path, timeout=120)
        assert r.returncode == 0, r.stderr
