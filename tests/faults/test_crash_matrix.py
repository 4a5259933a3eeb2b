"""Kill the daemon (SIGKILL) at every phase of its work, on each remote kind; restart;
check the invariants of DESIGN.md.

The kill is real: ``SYNCD_CRASH_AT=<phase>`` makes syncd SIGKILL itself on reaching
that point (syncd/faults.py). After each kill:

- nothing uncommitted looks committed, and every committed checkpoint verifies;
- a good copy exists locally or remotely (the last one is never deleted);
- a plain restart converges without help: the newest checkpoints committed, no
  ``.partial``/``.deleting`` folders, staging and trash empty;
- no file verified before the kill is sent again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from syncd.errors import RemoteError
from syncd.hashing import hash_stream
from syncd.manifest import MANIFEST_NAME
from syncd.remote_state import RemoteIndex
from syncd.remotes.base import join
from syncd.remotes.fsspec_remote import FsspecRemote
from syncd.remotes.local import LocalRemote
from syncd.upload import read_journal
from tests.conftest import PY, REPO, stop_gracefully, syncd, wait_for, write_config

UPLOAD_PHASES = ["before_stage", "mid_stage", "mid_file", "before_manifest", "before_rename"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Checkpoints 5, 10 and 15 of a real Trainer run; ~24 MB each, files of several chunks."""
    out = tmp_path_factory.mktemp("trained") / "out"
    subprocess.run([PY, str(REPO / "tests" / "helpers" / "hf_train.py"), str(out), "--max-steps", "15",
                    "--save-steps", "5", "--save-total-limit", "10", "--hidden", "256", "--vocab", "8000"],
                   check=True, capture_output=True, timeout=300)
    return out


def place(trained: Path, out: Path, *steps: int) -> None:
    for s in steps:
        shutil.copytree(trained / f"checkpoint-{s}", out / f"checkpoint-{s}", copy_function=os.link)


KINDS = ("folder", "s3", "gdrive")
# Keys that point syncd at a test's fake Drive, filled in by make_url.
DRIVE_KEYS: dict[str, dict] = {}


def open_remote(kind: str, url: str):
    if kind == "folder":
        return LocalRemote(Path(url))
    if kind == "s3":
        return FsspecRemote(url)
    from syncd.remotes.gdrive import GDriveRemote

    keys = DRIVE_KEYS[url]
    return GDriveRemote(url, credentials=keys["syncd_gdrive_credentials"], root_url=keys["syncd_gdrive_root_url"],
                        chunk_bytes=1024 * 1024, state_dir=Path(keys["syncd_gdrive_credentials"]).parent / "probe",
                        backoff_base_s=0.01, timeout_s=10.0)


def make_url(kind: str, request, tmp_path: Path) -> str:
    if kind == "folder":
        return str(tmp_path / "remote")
    if kind == "s3":
        request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")
        return f"s3://{bucket}/backups-{uuid.uuid4().hex[:6]}"
    from tests.gdrive.fake_drive import FakeDrive
    from tests.gdrive.helpers_gdrive import REFRESH, write_user_creds

    drive = FakeDrive()
    drive.add_refresh_token(REFRESH)
    drive.start()
    request.addfinalizer(drive.stop)
    url = f"gdrive://backups-{uuid.uuid4().hex[:6]}"
    DRIVE_KEYS[url] = {"syncd_gdrive_credentials": str(write_user_creds(tmp_path / "gdrive-creds.json", drive)),
                       "syncd_gdrive_root_url": drive.url, "syncd_gdrive_chunk_mb": 1}
    return url


@pytest.fixture(params=KINDS)
def remote_url(request, tmp_path) -> tuple[str, str]:
    return request.param, make_url(request.param, request, tmp_path)


def check_invariants(remote, out: Path) -> list[str]:
    """The invariants that must hold at any instant; returns the committed names."""
    entries = RemoteIndex(remote, "run").scan()
    committed = []
    for e in entries:
        if not e.committed:
            continue
        try:
            for mf in e.manifest.files:
                with remote.open_read(join("run", e.name, mf.path)) as fh:
                    assert hash_stream(fh).sha256 == mf.sha256, f"committed {e.name}/{mf.path} does not verify"
        except RemoteError:
            # Pruned while we read: fine only if it was un-committed first.
            assert remote.stat(join("run", e.name, MANIFEST_NAME)) is None, f"{e.name} lost files while committed"
            continue
        committed.append(e.name)
    local_good = [p for p in out.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    assert committed or local_good, "no good copy left anywhere"
    return sorted(committed)


def verified_bytes(out: Path) -> int:
    total = 0
    for journal in (out / ".syncd" / "state" / "uploads").glob("*.jsonl"):
        total += sum(f["size"] for f in read_journal(journal)[1].values())
    return total


def folder_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def run_until_crash(procs, cfg: Path, cwd: Path, phase: str):
    proc = procs.syncd_run(cfg, cwd=cwd, env={"SYNCD_CRASH_AT": phase}, ready=False)
    assert proc.wait(120) == -9, f"the daemon was meant to die at {phase}"


def converge(procs, cfg: Path, cwd: Path, remote, out: Path, expect: list[str]) -> dict:
    proc = procs.syncd_run(cfg, cwd=cwd)
    assert syncd("wait", str(cfg), "--timeout", "120", cwd=cwd).returncode == 0
    wait_for(lambda: check_invariants(remote, out) == expect, 60, what=f"remote to hold {expect}")
    wait_for(lambda: sorted(remote.list_dirs("run")) == expect, 60, what="no leftovers on the remote")
    wait_for(lambda: not any((out / ".syncd" / "staging").iterdir()), 30, what="staging drained")
    status = json.loads((out / ".syncd" / "status.json").read_text())
    assert stop_gracefully(proc) == 0
    assert not (out / ".syncd" / "trash").exists() or not any((out / ".syncd" / "trash").iterdir())
    r = syncd("verify", str(cfg), cwd=cwd)
    assert r.returncode == 0, r.stdout + r.stderr
    return status


def config(tmp_path: Path, url: str, **extra) -> Path:
    keys = dict(output_dir="out", gdrive_backup_dir=url, run_name="run", backup_keep_last=2, save_total_limit=10,
                syncd_settle_seconds=0.3, syncd_interval_seconds=1, syncd_min_free_gb=0, syncd_upload_workers=1,
                **DRIVE_KEYS.get(url, {}))
    keys.update(extra)
    return write_config(tmp_path / "cfg.json", **keys)


# Object stores commit by the manifest alone: they have no rename phase.
MATRIX = [(k, p) for k in KINDS for p in UPLOAD_PHASES if (k, p) != ("s3", "before_rename")]


@pytest.mark.parametrize("kind, phase", MATRIX, ids=[f"{k}-{p}" for k, p in MATRIX])
def test_kill_during_upload_phases(kind, phase, request, trained, tmp_path, procs):
    url = make_url(kind, request, tmp_path)
    out = tmp_path / "out"
    place(trained, out, 5, 10)
    cfg = config(tmp_path, url)
    remote = open_remote(kind, url)
    run_until_crash(procs, cfg, tmp_path, phase)
    check_invariants(remote, out)
    r = syncd("restore", str(cfg), "--to", str(tmp_path / "probe"), cwd=tmp_path)
    assert r.returncode in (0, 5), r.stderr  # a verified checkpoint, or nothing: never half of one
    already = {n for n in check_invariants(remote, out)}
    todo = sum(folder_bytes(out / n) for n in ("checkpoint-5", "checkpoint-10") if n not in already)
    expected_sent = todo - verified_bytes(out)
    status = converge(procs, cfg, tmp_path, remote, out, ["checkpoint-10", "checkpoint-5"])
    if kind == "s3":
        # The kill left an S3 multipart upload that nobody completes (billed): the restarted
        # daemon aborted it.
        import boto3

        bucket = url.split("/")[2]
        assert not boto3.client("s3").list_multipart_uploads(Bucket=bucket).get("Uploads"), "stale multipart upload"
    if remote.capabilities.resumable_upload:
        # The file cut in half resumes from its session: less than a full re-send.
        assert status["uploaded_bytes"] <= expected_sent, "a file verified before the kill was sent again"
    else:
        assert status["uploaded_bytes"] == expected_sent, "a file verified before the kill was sent again"


def test_kill_during_remote_prune(remote_url, trained, tmp_path, procs):
    kind, url = remote_url
    out = tmp_path / "out"
    place(trained, out, 5, 10)
    cfg = config(tmp_path, url)
    remote = open_remote(kind, url)
    converge(procs, cfg, tmp_path, remote, out, ["checkpoint-10", "checkpoint-5"])
    place(trained, out, 15)
    run_until_crash(procs, cfg, tmp_path, "mid_prune")
    committed = check_invariants(remote, out)
    assert committed == ["checkpoint-10", "checkpoint-15"], "checkpoint-5 must be un-committed before deletion"
    converge(procs, cfg, tmp_path, remote, out, ["checkpoint-10", "checkpoint-15"])


def test_kill_during_local_retirement(remote_url, trained, tmp_path, procs):
    kind, url = remote_url
    out = tmp_path / "out"
    place(trained, out, 5, 10)
    cfg = config(tmp_path, url, save_total_limit=1)
    remote = open_remote(kind, url)
    run_until_crash(procs, cfg, tmp_path, "mid_retire")
    assert not (out / "checkpoint-5").exists(), "retired by rename: never a half folder in place"
    check_invariants(remote, out)
    converge(procs, cfg, tmp_path, remote, out, ["checkpoint-10", "checkpoint-5"])
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-10"]


def test_kill_while_the_trainer_writes(remote_url, tmp_path, procs):
    kind, url = remote_url
    cfg = config(tmp_path, url)
    remote = open_remote(kind, url)
    daemon = procs.syncd_run(cfg, cwd=tmp_path)
    train = procs.hf_train(tmp_path / "out", "--max-steps", "12", "--save-steps", "2", "--save-total-limit", "10",
                           "--hidden", "256", "--vocab", "8000", "--step-sleep", "0.1", cwd=tmp_path)
    wait_for(lambda: (tmp_path / "out" / "checkpoint-6").exists(), 120, interval=0.01, what="checkpoint-6")
    daemon.kill()
    daemon.wait(10)
    check_invariants(remote, tmp_path / "out")
    assert train.wait(120) == 0
    converge(procs, cfg, tmp_path, remote, tmp_path / "out", ["checkpoint-10", "checkpoint-12"])
