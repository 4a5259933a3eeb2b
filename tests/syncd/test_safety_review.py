"""Regressions found by attacking the safety rules: each failed before its fix.

A read that failed picks no older step; staged copies outlive a pass that could not
read the remote; an upload never takes another commit of its version for its own; a
restore never adopts a folder of another training; a growing log beside a final model
saved without a marker is not part of it.
"""

from __future__ import annotations

import json
import logging
import random
import threading

import pytest

from syncd import api, freshness, identity
from syncd.checkpoints import inspect_checkpoint
from syncd.completeness import WRITER_STOPPED, judge
from syncd.daemon import Daemon
from syncd.errors import ConfigError, IntegrityError, RemoteError
from syncd.manifest import MANIFEST_NAME
from syncd.remote_state import RemoteIndex
from syncd.remotes.local import LocalRemote
from syncd.restore import restore
from syncd.stage import stage
from syncd.upload import Uploader, UploadJob
from tests.conftest import wait_for
from tests.syncd.test_safety import FlakyReads, cfg_of, ckpt, committed, one_pass, running


def test_restore_never_takes_an_older_step_for_one_it_could_not_read(tmp_path):
    run = tmp_path / "remote" / "run"
    with running(cfg_of(tmp_path, backup_keep_last=3), tmp_path):
        for step in (1, 2, 3):
            ckpt(tmp_path / "out", step)
        wait_for(lambda: committed(run) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"], 30, what="commits")
    with pytest.raises(RemoteError, match="checkpoint-3"):
        restore(FlakyReads(LocalRemote(tmp_path / "remote"), "checkpoint-3"), "run", tmp_path / "fresh")
    assert not list((tmp_path / "fresh").glob("checkpoint-*"))


class Gate:
    """A real folder remote that holds uploads until released and can fail reads on demand."""

    def __init__(self, inner: LocalRemote) -> None:
        self.inner = inner
        self.go = threading.Event()
        self.fail_record = False
        self.fail_list = False

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def put_file(self, src, dest, progress=None):
        self.go.wait(60)
        return self.inner.put_file(src, dest, progress)

    def stat(self, path):
        if self.fail_record and path.endswith("syncd-run.json"):
            raise RemoteError("stat syncd-run.json: HTTP 503")
        return self.inner.stat(path)

    def list_dirs(self, prefix):
        if self.fail_list:
            raise RemoteError("list: HTTP 503")
        return self.inner.list_dirs(prefix)


def test_staged_copies_outlive_a_pass_that_could_not_read_the_remote(tmp_path):
    out = tmp_path / "out"
    run = tmp_path / "remote" / "run"
    for step in (1, 2, 3):
        ckpt(out, step)
    gate = Gate(LocalRemote(tmp_path / "remote"))
    with running(cfg_of(tmp_path, save_total_limit=1, backup_keep_last=3), tmp_path, remote=gate) as d:
        # checkpoint-3 uploads (held at the gate); 1 and 2 are staged, their local folders retired.
        wait_for(lambda: not (out / "checkpoint-1").exists() and not (out / "checkpoint-2").exists(), 30,
                 what="local retention of the staged 1 and 2")
        gate.fail_record = True
        one_pass(d)
        gate.fail_record = False
        gate.go.set()
        wait_for(lambda: committed(run) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"], 30,
                 what="1, 2 and 3 committed from their staged copies")


def test_staged_copies_outlive_a_restart_whose_first_listings_fail(tmp_path):
    out = tmp_path / "out"
    run = tmp_path / "remote" / "run"
    for step in (1, 2, 3):
        ckpt(out, step)
    cfg = cfg_of(tmp_path, save_total_limit=1, backup_keep_last=3)
    gate = Gate(LocalRemote(tmp_path / "remote"))
    with running(cfg, tmp_path, remote=gate):
        wait_for(lambda: not (out / "checkpoint-1").exists() and not (out / "checkpoint-2").exists(), 30,
                 what="local retention of the staged 1 and 2")
        gate.go.set()
    flaky = Gate(LocalRemote(tmp_path / "remote"))
    flaky.go.set()
    flaky.fail_list = True
    with running(cfg, tmp_path, remote=flaky) as d:
        for _ in range(3):
            one_pass(d)
        flaky.fail_list = False
        wait_for(lambda: {"checkpoint-1", "checkpoint-2"} <= set(committed(run)), 30, what="1 and 2 committed")


def test_an_upload_never_takes_another_commit_of_its_version_for_its_own(tmp_path):
    remote = LocalRemote(tmp_path / "remote")
    run_id = identity.new_run_id()
    identity.write_remote_record(remote, "run", run_id)
    state = tmp_path / "out" / ".syncd"
    uploader = Uploader(remote, RemoteIndex(remote, "run", run_id=run_id), state)
    (state / "state" / "uploads").mkdir(parents=True)
    out = tmp_path / "out"
    ckpt(out, 5, seed=1)  # saved again: committed as checkpoint-5.v2
    first = stage(judge(inspect_checkpoint(out / "checkpoint-5"), WRITER_STOPPED, 0), tmp_path / "staged-a")
    uploader.upload(UploadJob("checkpoint-5", 5, first, 2), threading.Event(), run_id)
    ckpt(out, 5, seed=2)  # and again, planned from a snapshot taken before v2 was committed
    second = stage(judge(inspect_checkpoint(out / "checkpoint-5"), WRITER_STOPPED, 0), tmp_path / "staged-b")
    with pytest.raises(IntegrityError, match="other bytes"):
        uploader.upload(UploadJob("checkpoint-5", 5, second, 2), threading.Event(), run_id)
    local = judge(inspect_checkpoint(out / "checkpoint-5"), WRITER_STOPPED, 0)
    manifest = RemoteIndex(remote, "run", run_id=run_id).scan().copies()["checkpoint-5"].manifest
    assert not freshness.same_as_committed(state, "checkpoint-5", local.path, local.files, manifest,
                                           "checkpoint-5.v2")


def test_restore_never_adopts_a_folder_holding_another_trainings_checkpoints(tmp_path):
    run = tmp_path / "remote" / "run"
    ckpt(tmp_path / "a", 10)
    with running(cfg_of(tmp_path, output_dir="a"), tmp_path):
        wait_for(lambda: committed(run) == ["checkpoint-10"], 30, what="run A commits")
    for step in (5, 15, 25):
        ckpt(tmp_path / "b", step, seed=42)  # an unrelated training
    b = cfg_of(tmp_path, output_dir="b")
    with pytest.raises(ConfigError, match="not restored from it"):
        Daemon(b).start()
    with pytest.raises(ConfigError, match="restore into an empty folder"):
        api.restore(b)
    assert not (tmp_path / "b" / ".syncd" / "run.json").exists()
    assert committed(run) == ["checkpoint-10"]


def test_a_log_beside_a_final_model_without_a_marker_is_not_part_of_it(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text('{"model_type": "roberta"}')
    (out / "model.safetensors").write_bytes(random.Random(1).randbytes(1 << 20))
    handler = logging.FileHandler(out / "syncd.log")  # `syncd run cfg > out/syncd.log`
    logger = logging.getLogger("syncd")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        with running(cfg_of(tmp_path), tmp_path) as d:
            wait_for(lambda: "final" in committed(tmp_path / "remote" / "run"), 30, what="the final model")
            for _ in range(5):
                one_pass(d)
            commits = d.snapshot()["commits"]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert commits == 1
    manifest = json.loads((tmp_path / "remote" / "run" / "final" / MANIFEST_NAME).read_text())
    assert sorted(f["path"] for f in manifest["files"]) == ["config.json", "model.safetensors"]
    assert "uploading it again" not in (out / "syncd.log").read_text()


@pytest.mark.parametrize("command", ["wait", "stop"])
@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_a_timeout_that_could_never_pass_is_refused(tmp_path, command, value, capsys):
    from syncd.cli import main

    with pytest.raises(SystemExit) as e:
        main([command, str(tmp_path / "cfg.json"), "--timeout", value])
    assert e.value.code == 2 and "seconds" in capsys.readouterr().err


def test_a_run_record_that_is_not_one_is_never_written_over(tmp_path):
    run = tmp_path / "remote" / "run"
    run.mkdir(parents=True)
    (run / "syncd-run.json").write_text("my notes, not JSON")
    ckpt(tmp_path / "out", 1)
    with running(cfg_of(tmp_path), tmp_path) as d:
        for _ in range(3):
            one_pass(d)
        assert d.snapshot()["identity"].startswith("unknown: run record")
    assert (run / "syncd-run.json").read_text() == "my notes, not JSON"
    assert committed(run) == []
