"""syncd never destroys or hides a good copy: one test per way a user's setup could make it.

The daemon runs in-process here (real watchdog, real scheduler, real folders) so a test
can hold a remote at the worst moment; every remote is audited, and each test ends
asserting that no delete happened that the plan did not justify. The item numbers are
those of the safety issue.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from syncd import api, identity
from syncd.checkpoints import write_checkpoint_marker
from syncd.config import build_config
from syncd.daemon import Daemon
from syncd.deleter import AuditedRemote, unjustified
from syncd.errors import ConfigError, IntegrityError, RemoteError, SyncdError
from syncd.manifest import MANIFEST_NAME
from syncd.overlap import overlapping
from syncd.remote_state import CLAIM_NAME, RemoteIndex
from syncd.remotes.local import LocalRemote
from syncd.restore import restore
from syncd.upload import size_text
from tests.conftest import PY, syncd, wait_for, write_config

BASE = dict(output_dir="out", gdrive_backup_dir="remote", run_name="run", backup_keep_last=2, save_total_limit=3,
            syncd_settle_seconds=0.2, syncd_interval_seconds=0.5, syncd_stale_seconds=1.0, syncd_min_free_gb=0)


def cfg_of(tmp_path: Path, **kw):
    return build_config({**BASE, **kw}, base_dir=tmp_path)


def ckpt(out: Path, step: int, seed: int = 0, size: int = 4096) -> Path:
    """A checkpoint-shaped folder with our completion marker, written last."""
    d = out / f"checkpoint-{step}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.safetensors").write_bytes(random.Random(seed * 100_000 + step).randbytes(size))
    (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    write_checkpoint_marker(d, step)
    return d


def committed(run_dir: Path) -> list[str]:
    if not run_dir.is_dir():
        return []
    return sorted(p.name for p in run_dir.iterdir()
                  if (p / MANIFEST_NAME).is_file() and not p.name.endswith((".partial", ".deleting")))


@contextmanager
def running(cfg, tmp_path: Path, remote=None) -> Iterator[Daemon]:
    audit = tmp_path / "deletes.jsonl"
    inner = remote if remote is not None else LocalRemote(Path(cfg.remote_url))
    daemon = Daemon(cfg, remote=AuditedRemote(inner, audit))
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()
    assert not unjustified(audit), unjustified(audit)


def one_pass(daemon: Daemon, full: bool = False) -> None:
    daemon.pass_now(full=full)


# -- 1: overlapping folders -------------------------------------------------------

def test_output_dir_inside_the_remote_run_folder_is_refused_and_nothing_deleted(tmp_path):
    drive = tmp_path / "MyDrive"
    ckpt(drive / "tess_out", 10)
    cfg = build_config({**BASE, "output_dir": str(drive / "tess_out"), "gdrive_backup_dir": str(drive),
                        "run_name": None}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="overlap") as e:
        Daemon(cfg).start()
    assert str(drive / "tess_out") in str(e.value) and "remote run folder" in str(e.value)
    assert (drive / "tess_out" / "checkpoint-10" / "model.safetensors").is_file()


def test_overlap_is_seen_through_symlinks_and_bind_mounts(tmp_path):
    real = tmp_path / "real"
    (real / "run").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(real)
    assert overlapping(tmp_path / "alias" / "run" / "out", real / "run")
    assert overlapping(real, tmp_path / "alias" / "run")
    assert not overlapping(tmp_path / "out", real / "run")
    bound = tmp_path / "bound"
    bound.mkdir()
    subprocess.run(["mount", "--bind", str(real), str(bound)], check=True)
    try:
        assert overlapping(bound / "run", real / "run")
        assert overlapping(bound / "run" / "sub", real / "run")
        assert not overlapping(bound / "other", real / "run")
    finally:
        subprocess.run(["umount", str(bound)], check=True)


# -- 2 and 11: what cannot be verified, or could not be read, is never deleted -------

def test_unverifiable_manifests_are_reported_and_never_pruned(tmp_path):
    out = tmp_path / "out"
    for step in (1, 2, 3):
        ckpt(out, step)
    cfg = cfg_of(tmp_path)
    run = tmp_path / "remote" / "run"
    with running(cfg, tmp_path):
        wait_for(lambda: committed(run) == ["checkpoint-2", "checkpoint-3"], 30, what="first commits")
    # A damaged and a newer-format manifest, and a key set on a remote of unsigned commits.
    (run / "checkpoint-2" / MANIFEST_NAME).write_text('{"format": 1, "files": [')
    doc = json.loads((run / "checkpoint-3" / MANIFEST_NAME).read_text())
    doc["format"] = 2
    (run / "checkpoint-3" / MANIFEST_NAME).write_text(json.dumps(doc))
    ckpt(out, 4)
    keyed = cfg_of(tmp_path, syncd_manifest_key="s3cret", backup_keep_last=1)
    with running(keyed, tmp_path) as d:
        wait_for(lambda: "checkpoint-4" in committed(run), 30, what="checkpoint-4 signed and committed")
        for _ in range(3):
            one_pass(d)
        notes = d.snapshot()["remote_notes"]
    assert (run / "checkpoint-2" / "model.safetensors").is_file() and (run / "checkpoint-3" / "model.safetensors").is_file()
    assert notes["checkpoint-2"].startswith("unverified") and notes["checkpoint-3"].startswith("unverified")


class FlakyReads:
    """A real folder remote whose manifest reads fail (a 403, a run of 503s) while ``on``;
    only those of ``folder`` when one is named."""

    def __init__(self, inner: LocalRemote, folder: str | None = None) -> None:
        self.inner, self.on, self.folder = inner, True, folder

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def open_read(self, path: str):
        if self.on and path.endswith(f"/{self.folder}/{MANIFEST_NAME}" if self.folder else MANIFEST_NAME):
            raise RemoteError(f"read {path}: HTTP 403 forbidden")
        return self.inner.open_read(path)


def test_manifests_that_could_not_be_read_are_not_evidence_of_anything(tmp_path):
    out = tmp_path / "out"
    run = tmp_path / "remote" / "run"
    for step in (1, 2, 3):
        ckpt(out, step)
    with running(cfg_of(tmp_path, backup_keep_last=3), tmp_path):
        wait_for(lambda: committed(run) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"], 30, what="commits")
    flaky = FlakyReads(LocalRemote(tmp_path / "remote"))
    with running(cfg_of(tmp_path, backup_keep_last=1), tmp_path, remote=flaky) as d:
        for _ in range(3):
            one_pass(d)
        assert sorted(p.name for p in run.iterdir() if p.is_dir()) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
        assert all(d.snapshot()["remote_notes"][f"checkpoint-{s}"].startswith("unreadable") for s in (1, 2, 3))
        with pytest.raises(RemoteError):  # and restore says "could not read", not "nothing there"
            restore(flaky, "run", tmp_path / "fresh")
        flaky.on = False
        wait_for(lambda: committed(run) == ["checkpoint-3"], 30, what="pruning once reads work again")


# -- 3: one writer per remote run -----------------------------------------------------

def test_a_second_run_with_the_same_run_name_is_refused(tmp_path):
    run = tmp_path / "remote" / "run"
    ckpt(tmp_path / "out", 30)
    with running(cfg_of(tmp_path), tmp_path):
        wait_for(lambda: committed(run) == ["checkpoint-30"], 30, what="run A commits")
    for step in (10, 40, 50):
        ckpt(tmp_path / "other", step, seed=7)
    with pytest.raises(ConfigError, match="another run_name"):
        Daemon(cfg_of(tmp_path, output_dir="other")).start()
    assert committed(run) == ["checkpoint-30"]
    # Started on an empty folder, it waits; once restored from the run, it is that run.
    fresh = cfg_of(tmp_path, output_dir="fresh")
    with running(fresh, tmp_path) as d:
        one_pass(d)
        assert d.snapshot()["identity"].startswith("waiting")
        api.restore(fresh)
        one_pass(d)
        assert d.snapshot()["identity"] == "this run"
        ckpt(tmp_path / "fresh", 31)
        wait_for(lambda: "checkpoint-31" in committed(run), 30, what="the adopted run commits")


def test_two_runs_with_different_run_names_work_side_by_side(tmp_path):
    ckpt(tmp_path / "a", 5)
    ckpt(tmp_path / "b", 7, seed=3)
    with running(cfg_of(tmp_path, output_dir="a", run_name="ra"), tmp_path), \
            running(cfg_of(tmp_path, output_dir="b", run_name="rb"), tmp_path):
        wait_for(lambda: committed(tmp_path / "remote" / "ra") == ["checkpoint-5"]
                 and committed(tmp_path / "remote" / "rb") == ["checkpoint-7"], 30, what="both runs commit")


# -- 4: a step saved again with other bytes -------------------------------------------

def test_a_resaved_step_replaces_its_remote_copy_and_a_restore_is_not_resent(tmp_path):
    out = tmp_path / "out"
    run = tmp_path / "remote" / "run"
    cfg = cfg_of(tmp_path)
    ckpt(out, 4)
    with running(cfg, tmp_path):
        wait_for(lambda: committed(run) == ["checkpoint-4"], 30, what="first commit")
    ckpt(out, 4, seed=9)  # resumed from an earlier step, trained on differently: same sizes
    snap = api.index_for(cfg, LocalRemote(tmp_path / "remote")).scan()
    assert api.pending(cfg, snap, include_final=False) == ["checkpoint-4"]  # wait/status see it stale
    with running(cfg, tmp_path):
        wait_for(lambda: committed(run) == ["checkpoint-4.v2"], 30, what="the new bytes committed, the old pruned")
    new = (out / "checkpoint-4" / "model.safetensors").read_bytes()
    assert (run / "checkpoint-4.v2" / "model.safetensors").read_bytes() == new
    got = restore(LocalRemote(tmp_path / "remote"), "run", tmp_path / "fresh")
    assert (got / "model.safetensors").read_bytes() == new
    # The restored copy has new times but the same bytes: a daemon there uploads nothing.
    with running(cfg_of(tmp_path, output_dir="fresh"), tmp_path) as d:
        for _ in range(3):
            one_pass(d)
        assert d.snapshot()["stale"] == [] and committed(run) == ["checkpoint-4.v2"]


def test_a_trainer_resumed_on_another_path_gets_its_resaved_step_mirrored(tmp_path, procs):
    # Real processes: a Hugging Face Trainer resumes from checkpoint-5 on other data, so
    # checkpoint-10 is saved again with other bytes of the same sizes.
    cfg = write_config(tmp_path / "cfg.json", **BASE)
    procs.syncd_run(cfg, cwd=tmp_path)
    out = tmp_path / "out"
    assert procs.hf_train(out, "--max-steps", "10", "--save-steps", "5", cwd=tmp_path).wait(120) == 0
    assert syncd("wait", str(cfg), "--timeout", "60", cwd=tmp_path).returncode == 0
    run = tmp_path / "remote" / "run"
    first = (run / "checkpoint-10" / "model.safetensors").read_bytes()
    assert procs.hf_train(out, "--max-steps", "10", "--save-steps", "5", "--resume", str(out / "checkpoint-5"),
                          "--data-seed", "1", cwd=tmp_path).wait(120) == 0
    now = (out / "checkpoint-10" / "model.safetensors").read_bytes()
    assert now != first and len(now) == len(first)
    r = syncd("wait", str(cfg), "--timeout", "60", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = syncd("restore", str(cfg), "--to", str(tmp_path / "fresh"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "fresh" / "checkpoint-10" / "model.safetensors").read_bytes() == now


# -- 5: mounts --------------------------------------------------------------------------

def test_an_unmounted_drive_is_an_error_not_a_local_folder(tmp_path):
    ckpt(tmp_path / "out", 1)
    cfg = cfg_of(tmp_path, gdrive_backup_dir=str(tmp_path / "content" / "drive" / "MyDrive" / "tess_backups"))
    with pytest.raises(RemoteError, match="is the drive mounted"):
        Daemon(cfg).start()
    assert not (tmp_path / "content").exists()
    cfg = cfg_of(tmp_path, gdrive_backup_dir="backups")  # a plain new folder beside us still works
    with running(cfg, tmp_path):
        wait_for(lambda: committed(tmp_path / "backups" / "run") == ["checkpoint-1"], 30, what="./backups")


def test_a_remote_unmounted_mid_run_is_reported_and_never_recreated(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], check=True)
    mounted = True
    try:
        ckpt(tmp_path / "out", 1)
        cfg = cfg_of(tmp_path, gdrive_backup_dir=str(mnt / "backups"))
        with running(cfg, tmp_path) as d:
            wait_for(lambda: committed(mnt / "backups" / "run") == ["checkpoint-1"], 30, what="commit on tmpfs")
            subprocess.run(["umount", str(mnt)], check=True)
            mounted = False
            ckpt(tmp_path / "out", 2)
            wait_for(lambda: "disappeared" in (d.snapshot()["last_error"] or ""), 30, what="the error")
            one_pass(d)
        assert not (mnt / "backups").exists()
        assert (tmp_path / "out" / "checkpoint-2").is_dir()  # not uploaded, so not retired either
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)], check=False)


# -- 6: no torn files -----------------------------------------------------------------

class RewritesMidRead:
    """A real folder remote; while the first big file is being read, its source is
    rewritten in place to the same size and its old mtime is put back (torch.save and
    safetensors rewrite files in place)."""

    def __init__(self, inner: LocalRemote, new_bytes: bytes) -> None:
        self.inner, self.new_bytes, self.done = inner, new_bytes, False

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def put_file(self, src, dest, progress=None):
        def hook(n: int) -> None:
            if not self.done and dest.endswith("model.safetensors"):
                self.done = True
                st = os.stat(src)
                with open(src, "r+b") as fh:  # same inode, same size
                    fh.write(self.new_bytes)
                os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
            if progress:
                progress(n)
        return self.inner.put_file(src, dest, hook)


def test_a_file_rewritten_while_it_is_read_is_never_committed_torn(tmp_path):
    out = tmp_path / "out"
    size = 10 * 1024 * 1024  # three read chunks: the rewrite lands between the first and the rest
    ckpt(out, 3, size=size)
    new = random.Random(99).randbytes(size)
    remote = RewritesMidRead(LocalRemote(tmp_path / "remote"), new)
    run = tmp_path / "remote" / "run"
    with running(cfg_of(tmp_path), tmp_path, remote=remote):
        wait_for(lambda: committed(run) == ["checkpoint-3"], 60, what="a commit")
    assert remote.done
    assert (run / "checkpoint-3" / "model.safetensors").read_bytes() == new
    assert (out / "checkpoint-3" / "model.safetensors").read_bytes() == new


# -- 7 and the restored pin: local retention ---------------------------------------------

def test_save_total_limit_null_keeps_every_checkpoint(tmp_path):
    cfg = build_config({**BASE, "save_total_limit": None, "backup_keep_last": 1}, base_dir=tmp_path)
    for step in range(1, 9):
        ckpt(tmp_path / "out", step)
    with running(cfg, tmp_path) as d:
        wait_for(lambda: committed(tmp_path / "remote" / "run") == ["checkpoint-8"], 30, what="commit")
        one_pass(d)
    assert sorted(p.name for p in (tmp_path / "out").glob("checkpoint-*")) == [f"checkpoint-{s}" for s in range(1, 9)]


def test_an_older_step_restored_under_a_running_daemon_stays(tmp_path):
    out = tmp_path / "out"
    cfg = cfg_of(tmp_path, save_total_limit=1, backup_keep_last=3)
    run = tmp_path / "remote" / "run"
    with running(cfg, tmp_path) as d:
        for step in (1, 2, 3):
            ckpt(out, step)
            wait_for(lambda s=step: f"checkpoint-{s}" in committed(run), 30, what=f"checkpoint-{step}")
        wait_for(lambda: not (out / "checkpoint-1").exists(), 30, what="retention")
        api.restore(cfg, step=1)
        for _ in range(3):
            one_pass(d)
        assert (out / "checkpoint-1" / "model.safetensors").is_file()
        ckpt(out, 4)  # training moved on from the restored step: normal retention again
        wait_for(lambda: not (out / "checkpoint-1").exists(), 30, what="retention after training moved on")


# -- 8: an unreadable file stops only its checkpoint -------------------------------------

def test_an_unreadable_file_is_that_checkpoints_error_and_the_others_move(tmp_path):
    # Root reads anything, so syncd runs as root without the capabilities that override
    # file permissions, and one file belongs to another user with mode 0600.
    out = tmp_path / "out"
    ckpt(out, 1)
    ckpt(out, 2)
    secret = out / "checkpoint-2" / "optimizer.pt"
    secret.write_bytes(b"x" * 100)
    write_checkpoint_marker(out / "checkpoint-2", 2)
    os.chown(secret, 65534, 65534)
    os.chmod(secret, 0o600)
    cfg = write_config(tmp_path / "cfg.json", **BASE)
    caps = "-dac_override,-dac_read_search,-fowner"
    log = tmp_path / "syncd.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}", PY, "-m", "syncd",
                                 "run", str(cfg)], cwd=tmp_path, stdout=fh, stderr=subprocess.STDOUT)
    try:
        run = tmp_path / "remote" / "run"
        ckpt(out, 3)
        wait_for(lambda: "checkpoint-3" in committed(run), 60, what="the newer checkpoint committed anyway")
        status = json.loads((out / ".syncd" / "status.json").read_text())
        assert "checkpoint-2" in status["errors"] and "Permission denied" in status["errors"]["checkpoint-2"]
        assert "bug" not in log.read_text()
    finally:
        proc.kill()
        proc.wait(10)


# -- 10: the smaller ones -------------------------------------------------------------

def test_restore_of_a_step_with_a_missing_file_is_an_integrity_error(tmp_path):
    ckpt(tmp_path / "out", 5)
    with running(cfg_of(tmp_path), tmp_path):
        wait_for(lambda: committed(tmp_path / "remote" / "run") == ["checkpoint-5"], 30, what="commit")
    (tmp_path / "remote" / "run" / "checkpoint-5" / "model.safetensors").unlink()
    with pytest.raises(IntegrityError, match="missing"):
        restore(LocalRemote(tmp_path / "remote"), "run", tmp_path / "fresh", step=5)


def test_a_damaged_remote_copy_is_repaired_from_the_local_one(tmp_path):
    ckpt(tmp_path / "out", 5)
    run = tmp_path / "remote" / "run"
    with running(cfg_of(tmp_path), tmp_path) as d:
        wait_for(lambda: committed(run) == ["checkpoint-5"], 30, what="commit")
        (run / "checkpoint-5" / "model.safetensors").unlink()
        one_pass(d, full=True)
        assert "damaged" in d.snapshot()["damaged"]["checkpoint-5"]
        wait_for(lambda: committed(run) == ["checkpoint-5.v2"], 30, what="repaired as a new version")
    assert (run / "checkpoint-5.v2" / "model.safetensors").is_file()


def test_users_folders_in_the_run_folder_are_never_touched(tmp_path):
    run = tmp_path / "remote" / "run"
    mine = {"checkpoint-1.old": "notes", "checkpoint-2.partial": "draft", "checkpoint-3": "manual copy",
            "checkpoint-1": "a folder named like a pruned checkpoint"}
    for name, text in mine.items():
        (run / name).mkdir(parents=True)
        (run / name / "README.txt").write_text(text)
    for step in (1, 2, 3, 4):
        ckpt(tmp_path / "out", step)
    with running(cfg_of(tmp_path, backup_keep_last=1), tmp_path) as d:
        wait_for(lambda: committed(run) == ["checkpoint-4"], 30, what="commit")
        for _ in range(3):
            one_pass(d)
        notes = d.snapshot()["remote_notes"]
    for name, text in mine.items():
        assert (run / name / "README.txt").read_text() == text
        assert notes[name].startswith("foreign")


def test_checkpoint_007_is_not_checkpoint_7(tmp_path):
    ckpt(tmp_path / "out", 7)
    odd = tmp_path / "out" / "checkpoint-007"
    shutil.copytree(tmp_path / "out" / "checkpoint-7", odd)
    with running(cfg_of(tmp_path), tmp_path):
        wait_for(lambda: committed(tmp_path / "remote" / "run") == ["checkpoint-7"], 30, what="commit")
    assert odd.is_dir()


def test_symlinks_in_a_checkpoint_are_reported(tmp_path, caplog):
    d = ckpt(tmp_path / "out", 2)
    (d / "tokenizer.json").symlink_to(tmp_path / "elsewhere.json")
    with caplog.at_level("WARNING", logger="syncd"), running(cfg_of(tmp_path), tmp_path):
        wait_for(lambda: committed(tmp_path / "remote" / "run") == ["checkpoint-2"], 30, what="commit")
    assert any("symlink" in r.getMessage() and "tokenizer.json" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("n, text", [(0, "0 B"), (12_300_000, "12.3 MB"), (10_800_000, "10.8 MB"),
                                     (999_499, "999 KB"), (1_500_000_000, "1.5 GB")])
def test_sizes_in_messages_keep_three_digits(n, text):
    assert size_text(n) == text


# -- the records ------------------------------------------------------------------------

def test_every_upload_is_claimed_and_every_commit_names_the_run(tmp_path):
    ckpt(tmp_path / "out", 1)
    with running(cfg_of(tmp_path), tmp_path) as d:
        wait_for(lambda: committed(tmp_path / "remote" / "run") == ["checkpoint-1"], 30, what="commit")
        run_id = d.claim.run_id
    folder = tmp_path / "remote" / "run" / "checkpoint-1"
    assert json.loads((folder / CLAIM_NAME).read_text())["run_id"] == run_id
    assert json.loads((folder / MANIFEST_NAME).read_text())["run_id"] == run_id
    assert identity.read_local_record(tmp_path / "out" / ".syncd") == run_id
    remote = LocalRemote(tmp_path / "remote")
    assert identity.read_remote_record(remote, "run") == run_id
    assert [e.owner for e in RemoteIndex(remote, "run").scan()] == ["ours"]


# -- the same refusals as real processes: one line, the right exit, nothing touched ---------

def _last_line(r) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def test_refusals_at_start_are_one_line_from_a_real_process(tmp_path):
    drive = tmp_path / "MyDrive"
    ckpt(drive / "tess_out", 10)
    overlap = write_config(tmp_path / "overlap.json", **{**BASE, "output_dir": str(drive / "tess_out"),
                                                          "gdrive_backup_dir": str(drive), "run_name": None})
    r = syncd("run", str(overlap), cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "overlap" in _last_line(r), r.stderr
    assert (drive / "tess_out" / "checkpoint-10" / "model.safetensors").is_file()

    unmounted = write_config(tmp_path / "unmounted.json", **{**BASE, "gdrive_backup_dir": str(
        tmp_path / "content" / "drive" / "MyDrive" / "tess_backups")})
    ckpt(tmp_path / "out", 1)
    r = syncd("run", str(unmounted), cwd=tmp_path, timeout=60)
    assert r.returncode == 3 and "is the drive mounted" in _last_line(r), r.stderr
    assert not (tmp_path / "content").exists()

    # Run A commits; run B, with checkpoints of its own under the same run_name, is refused.
    with running(cfg_of(tmp_path), tmp_path):
        wait_for(lambda: committed(tmp_path / "remote" / "run") == ["checkpoint-1"], 30, what="run A")
    ckpt(tmp_path / "other", 40, seed=5)
    other = write_config(tmp_path / "other.json", **{**BASE, "output_dir": "other"})
    r = syncd("run", str(other), cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "set another run_name" in _last_line(r), r.stderr
    assert committed(tmp_path / "remote" / "run") == ["checkpoint-1"]


def test_a_file_name_with_a_backslash_is_one_error_and_the_rest_moves(tmp_path):
    d = ckpt(tmp_path / "out", 1)
    (d / "odd\\name.bin").write_bytes(b"x")
    write_checkpoint_marker(d, 1)
    with running(cfg_of(tmp_path), tmp_path) as daemon:
        ckpt(tmp_path / "out", 2)
        wait_for(lambda: committed(tmp_path / "remote" / "run") == ["checkpoint-2"], 30, what="checkpoint-2")
        assert "backslash" in daemon.snapshot()["errors"]["checkpoint-1"]
        failures = daemon.snapshot()["failures"]
        for _ in range(3):
            one_pass(daemon)
        assert daemon.snapshot()["failures"] == failures  # not retried in a loop


def test_restore_onto_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    ckpt(tmp_path / "out", 1, size=4 * 1024 * 1024)
    with running(cfg_of(tmp_path), tmp_path):
        wait_for(lambda: committed(tmp_path / "remote" / "run") == ["checkpoint-1"], 30, what="commit")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        cfg = write_config(tmp_path / "cfg.json", **BASE)
        r = syncd("restore", str(cfg), "--to", str(small / "fresh"), cwd=tmp_path, timeout=60)
        assert r.returncode != 0 and "free" in _last_line(r) and "Traceback" not in r.stderr, r.stderr
        assert not list((small / "fresh").glob("checkpoint-*"))
        # The trainer's auto-restore says the same, in one line, before step one.
        from trainer.resume import plan_resume

        with pytest.raises(SyncdError, match="free"):
            plan_resume("auto", cfg_of(tmp_path, output_dir=str(small / "out2")))
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


# -- real processes for the rest: `syncd run` in the background, the files changed under it -----

def test_real_daemon_keeps_unverifiable_commits_and_every_checkpoint_with_null_limit(tmp_path, procs):
    out = tmp_path / "out"
    run = tmp_path / "remote" / "run"
    for step in (1, 2):
        ckpt(out, step)
    cfg = write_config(tmp_path / "cfg.json", **BASE)
    daemon = procs.syncd_run(cfg, cwd=tmp_path)
    assert syncd("wait", str(cfg), "--timeout", "60", cwd=tmp_path).returncode == 0
    daemon.kill()
    daemon.wait(10)
    # Restarted with a manifest key over unsigned commits, keeping one copy and every local checkpoint.
    keyed = write_config(tmp_path / "keyed.json", **{**BASE, "syncd_manifest_key": "k", "backup_keep_last": 1,
                                                      "save_total_limit": None})
    for step in range(3, 9):
        ckpt(out, step)
    procs.syncd_run(keyed, cwd=tmp_path)
    assert syncd("wait", str(keyed), "--timeout", "60", cwd=tmp_path).returncode == 0
    status = json.loads(syncd("status", str(keyed), "--json", cwd=tmp_path).stdout)
    rows = {r["name"]: r["remote"] for r in status["checkpoints"]}
    assert rows["checkpoint-1"] == rows["checkpoint-2"] == "unverified"
    assert (run / "checkpoint-1" / "model.safetensors").is_file() and (run / "checkpoint-2" / "model.safetensors").is_file()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == [f"checkpoint-{s}" for s in range(1, 9)]


def test_real_daemon_never_commits_a_file_rewritten_while_it_is_sent(tmp_path, procs):
    out = tmp_path / "out"
    size = 12 * 1024 * 1024  # three 4 MiB reads, each followed by a 2 s wait at 2 MB/s
    ckpt(out, 3, size=size)
    cfg = write_config(tmp_path / "cfg.json", **{**BASE, "syncd_bwlimit_mbps": 2.0, "syncd_upload_workers": 1})
    procs.syncd_run(cfg, cwd=tmp_path)
    status_file = out / ".syncd" / "status.json"

    def sending() -> bool:
        current = json.loads(status_file.read_text()).get("current") or {}
        return current.get("name") == "checkpoint-3" and 0 < current.get("bytes_done", 0) < size

    wait_for(sending, 60, what="the upload under way")
    target = out / "checkpoint-3" / "model.safetensors"
    st = os.stat(target)
    new = random.Random(5).randbytes(size)
    with open(target, "r+b") as fh:  # in place: same inode, same size, old mtime put back
        fh.write(new)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert syncd("wait", str(cfg), "--timeout", "90", cwd=tmp_path).returncode == 0
    committed_copy = tmp_path / "remote" / "run" / committed(tmp_path / "remote" / "run")[-1] / "model.safetensors"
    assert committed_copy.read_bytes() == new


def test_a_run_restored_elsewhere_while_the_first_machine_lives_has_one_writer(tmp_path):
    # A second VM restores the run and resumes while the first still runs: the second
    # writes from then on; the first stops uploading and deleting instead of fighting.
    run = tmp_path / "remote" / "run"
    ckpt(tmp_path / "out", 1)
    first = cfg_of(tmp_path)
    with running(first, tmp_path) as a:
        wait_for(lambda: committed(run) == ["checkpoint-1"], 30, what="the first machine commits")
        second = cfg_of(tmp_path, output_dir="out2")
        api.restore(second)
        with running(second, tmp_path) as b:
            one_pass(b)
            ckpt(tmp_path / "out2", 2, seed=2)
            wait_for(lambda: committed(run) == ["checkpoint-1", "checkpoint-2"], 30, what="the second machine commits")
            ckpt(tmp_path / "out", 2, seed=1)  # the first machine saves the same step, other bytes
            for _ in range(3):
                one_pass(a)
                one_pass(b)
            assert a.snapshot()["identity"].startswith("displaced")
            assert b.snapshot()["identity"] == "this run"
            assert committed(run) == ["checkpoint-1", "checkpoint-2"]
    assert (run / "checkpoint-2" / "model.safetensors").read_bytes() == \
        (tmp_path / "out2" / "checkpoint-2" / "model.safetensors").read_bytes()


def test_a_copied_output_folder_is_another_writer(tmp_path):
    # `cp -r out out2` copies the run record too: the copy must not write as the original.
    run = tmp_path / "remote" / "run"
    ckpt(tmp_path / "out", 1)
    with running(cfg_of(tmp_path), tmp_path) as a:
        wait_for(lambda: committed(run) == ["checkpoint-1"], 30, what="the original commits")
        shutil.copytree(tmp_path / "out", tmp_path / "out2", ignore=shutil.ignore_patterns("*.lock", "*.pid"))
        with running(cfg_of(tmp_path, output_dir="out2"), tmp_path) as b:
            ckpt(tmp_path / "out2", 2, seed=2)
            wait_for(lambda: "checkpoint-2" in committed(run), 30, what="the copy commits")
            ckpt(tmp_path / "out", 2, seed=1)
            for _ in range(3):
                one_pass(a)
                one_pass(b)
            assert a.snapshot()["identity"].startswith("displaced") and committed(run) == ["checkpoint-1", "checkpoint-2"]
