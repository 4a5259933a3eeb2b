"""End to end through Drive: a Hugging Face Trainer, `syncd run`, the fake Drive, `syncd restore`.

Real processes only: the trainer writes checkpoints, the daemon (a subprocess) mirrors
them over HTTP through pydrive2 to the loopback Drive, kills are SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from syncd.manifest import MANIFEST_NAME
from tests.conftest import stop_gracefully, syncd, wait_for, write_config

from .helpers_gdrive import CHUNK, REFRESH


def _config(tmp_path: Path, drive, creds: Path, **extra) -> Path:
    keys = dict(output_dir="out", run_name="run", gdrive_backup_dir="gdrive://My Drive/tess_backups",
                backup_keep_last=2, save_total_limit=3, syncd_settle_seconds=0.5,
                syncd_interval_seconds=1, syncd_stale_seconds=1.0, syncd_min_free_gb=0,
                syncd_gdrive_credentials=str(creds), syncd_gdrive_root_url=drive.url,
                syncd_gdrive_chunk_mb=0.25, syncd_upload_workers=2, learning_rate=1e-3)
    keys.update(extra)
    return write_config(tmp_path / "cfg.json", **keys)


def _remote_names(drive, path: str) -> list[str]:
    folder = drive.find(path)
    return sorted(i.title for i in drive.children(folder.id) if i.is_folder) if folder else []


def _local_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_mirror_prune_and_restore_through_drive(tmp_path, procs, drive, creds):
    drive.lag_s = 1.0  # listings trail the writes, as Drive's do
    cfg = _config(tmp_path, drive, creds)
    daemon = procs.syncd_run(cfg, cwd=tmp_path)
    train = procs.hf_train(tmp_path / "out", "--max-steps", "20", "--save-steps", "5",
                           "--save-total-limit", "2", "--step-sleep", "0.05", cwd=tmp_path)
    assert train.wait(180) == 0
    r = syncd("wait", str(cfg), "--timeout", "90", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # committed, pruned beyond backup_keep_last, no half uploads left behind
    wait_for(lambda: _remote_names(drive, "tess_backups/run") == ["checkpoint-15", "checkpoint-20"], 30,
             what="remote pruned to the newest two commits")
    local = _local_files(tmp_path / "out" / "checkpoint-20")
    for rel, data in local.items():
        assert drive.find(f"tess_backups/run/checkpoint-20/{rel}").data == data, rel
    manifest = json.loads(drive.find(f"tess_backups/run/checkpoint-20/{MANIFEST_NAME}").data)
    assert sorted(f["path"] for f in manifest["files"]) == sorted(local)
    r = syncd("status", str(cfg), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    quota = json.loads(r.stdout)["quota"]
    assert quota["used_bytes"] == drive.used_bytes() and quota["free_bytes"] == drive.quota_limit - quota["used_bytes"]
    assert stop_gracefully(daemon) == 0
    r = syncd("verify", str(cfg), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "checkpoint-20: ok" in r.stdout

    # debris a crash could leave: a half upload and a folder without a manifest
    run = drive.find("tess_backups/run").id
    partial = drive.add_item(run, "checkpoint-25.partial", folder=True)
    drive.add_item(partial, "model.safetensors", b"half")
    unmanifested = drive.add_item(run, "checkpoint-30", folder=True)
    drive.add_item(unmanifested, "model.safetensors", b"no manifest")

    # a fresh machine: only the config and the credentials file
    r = syncd("restore", str(cfg), "--to", str(tmp_path / "fresh"), "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "fresh").iterdir() if p.is_dir() and not p.name.startswith(".")) == ["checkpoint-20"]
    restored = _local_files(tmp_path / "fresh" / "checkpoint-20")
    for rel, data in local.items():
        assert restored[rel] == data, rel
    r = syncd("restore", str(cfg), "--step", "15", "--to", str(tmp_path / "older"), "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert _local_files(tmp_path / "older" / "checkpoint-15")
    # no token ever reaches a log or the status file
    texts = [p.read_text(errors="replace") for p in [*tmp_path.glob("syncd-*.log"),
                                                       tmp_path / "out" / ".syncd" / "status.json"]]
    assert texts and not any(REFRESH in t or "ya29." in t for t in texts)


def test_daemon_sigkilled_mid_file_resumes_the_drive_session(tmp_path, procs, drive, creds):
    # one worker: the biggest file (optimizer.pt, ~10 chunks) goes first and alone
    cfg = _config(tmp_path, drive, creds, syncd_upload_workers=1)
    drive.hold(after_bytes=3 * CHUNK)
    daemon = procs.syncd_run(cfg, cwd=tmp_path)
    train = procs.hf_train(tmp_path / "out", "--max-steps", "5", "--save-steps", "5",
                           "--vocab", "4000", "--hidden", "64", cwd=tmp_path)
    assert train.wait(180) == 0
    try:
        assert drive.held.wait(90), "the upload never reached the held chunk"
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait(10)
    finally:
        drive.release()
    held = [s for s in drive.sessions.values() if s.n == 3 * CHUNK and s.done_id is None]
    assert len(held) == 1
    session = held[0]
    title = session.meta["title"]
    assert list((tmp_path / "out" / ".syncd" / "gdrive-uploads").glob("*.json"))

    procs.syncd_run(cfg, cwd=tmp_path)
    r = syncd("wait", str(cfg), "--timeout", "90", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    try:
        wait_for(lambda: _remote_names(drive, "tess_backups/run") == ["checkpoint-5"], 30, what="commit")
    except AssertionError:
        logs = "".join(p.read_text()[-2500:] for p in sorted(tmp_path.glob("syncd-*.log")))
        raise AssertionError(f"remote holds {_remote_names(drive, 'tess_backups/run')}; logs:\n{logs}") from None
    size = (tmp_path / "out" / "checkpoint-5" / title).stat().st_size
    assert size > 4 * CHUNK
    # the same session finished the file, and no byte of it was sent twice
    assert session.done_id is not None
    assert session.received == size
    assert [s for s in drive.sessions.values() if s.meta["title"] == title] == [session]
    assert drive.find(f"tess_backups/run/checkpoint-5/{title}").data == \
        (tmp_path / "out" / "checkpoint-5" / title).read_bytes()
