"""The tidy command line: --version, a closed pipe, `syncd wait`'s exit codes, restore
without a config, and the detached daemon's rotating log."""

from __future__ import annotations

import json
import os
import subprocess
from importlib.metadata import version

import pytest

from syncd.checkpoints import write_checkpoint_marker
from syncd.cli import main as syncd_main
from syncd.errors import NoDaemon
from syncd.locking import running_pid
from tests.conftest import PY, REPO, write_config
from trainer.__main__ import main as tess_main


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def checkpoint(out, step: int, size: int = 300):
    ckpt = out / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(bytes([step % 256]) * size)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    write_checkpoint_marker(ckpt, step)
    return ckpt


def config(tmp_path, **keys):
    return write_config(tmp_path / "cfg.json", **{
        "output_dir": str(tmp_path / "out"), "gdrive_backup_dir": str(tmp_path / "remote"),
        "run_name": "run", "syncd_interval_seconds": 1, "syncd_settle_seconds": 1, **keys})


@pytest.fixture
def stop_after(tmp_path):
    """Configs whose daemon is stopped at teardown, whatever the test did."""
    configs = []
    yield configs.append
    for cfg in configs:
        syncd_main(["stop", str(cfg), "--timeout", "60"])


def test_version_of_both_commands(capsys):
    with pytest.raises(SystemExit) as e:
        syncd_main(["--version"])
    assert e.value.code == 0
    assert tess_main(["--version"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"syncd {version('tessync')}", f"tess-train {version('tessync')}"]


@pytest.mark.parametrize("argv", [
    ["-m", "syncd", "list", "CFG"],
    ["-m", "syncd", "status", "CFG"],
    ["-m", "trainer", "--help"],
    ["-m", "trainer", "--version"],
], ids=["syncd-list", "syncd-status", "tess-train-help", "tess-train-version"])
def test_output_into_a_closed_pipe_ends_quietly(tmp_path, argv):
    # `... | head -1` where head has already gone: the read end is closed before the
    # program writes, so every write fails, deterministically.
    cfg = config(tmp_path)
    for step in range(1, 40):
        checkpoint(tmp_path / "out", step, size=8)
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([PY, *[str(cfg) if a == "CFG" else a for a in argv]], stdout=w,
                           stderr=subprocess.PIPE, cwd=REPO, timeout=60, text=True)
    finally:
        os.close(w)
    assert p.stderr == ""
    assert p.returncode == 141  # what a shell shows for a program stopped by SIGPIPE


def test_wait_exit_codes(tmp_path, capsys, stop_after):
    cfg = config(tmp_path)
    # 2: nothing to wait for without a remote.
    no_remote = write_config(tmp_path / "no-remote.json", output_dir=str(tmp_path / "out"))
    assert syncd_main(["wait", str(no_remote)]) == 2
    # 0: no daemon, and nothing is left to commit.
    assert syncd_main(["wait", str(cfg), "--timeout", "30"]) == 0
    assert "everything is committed" in capsys.readouterr().out
    # 7: no daemon (nor one starting, within the timeout) while checkpoint-1 is uncommitted.
    checkpoint(tmp_path / "out", 1)
    assert syncd_main(["wait", str(cfg), "--timeout", "0.3"]) == NoDaemon.exit_code == 7
    line = one_line(capsys.readouterr().err)
    assert "syncd is not running" in line and "checkpoint-1" in line
    # 1: a daemon holds the folder but commits nothing before the timeout.
    holder = subprocess.Popen([PY, "-c", "import sys; from pathlib import Path; from syncd.locking import DaemonLock;"
                               "DaemonLock(Path(sys.argv[1])).acquire(); print('held', flush=True); sys.stdin.read()",
                               str(tmp_path / "out" / ".syncd")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert syncd_main(["wait", str(cfg), "--timeout", "0.5"]) == 1
        assert "timed out after 0.5s" in one_line(capsys.readouterr().err)
    finally:
        holder.stdin.close()
        holder.wait(30)
    # 0: a daemon that is only starting (not yet holding the folder) gets its grace.
    daemon = subprocess.Popen([PY, "-m", "syncd", "run", str(cfg)], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    stop_after(cfg)
    try:
        assert running_pid(tmp_path / "out" / ".syncd") is None  # still importing
        assert syncd_main(["wait", str(cfg), "--timeout", "60"]) == 0
        assert (tmp_path / "remote" / "run" / "checkpoint-1" / "syncd-manifest.json").is_file()
    finally:
        daemon.terminate()
        daemon.wait(60)


@pytest.fixture
def committed_remote(tmp_path, stop_after):
    """A folder remote holding run `run` with checkpoints 1 and 2, committed by a real daemon."""
    cfg = config(tmp_path)
    for step in (1, 2):
        checkpoint(tmp_path / "out", step)
    assert syncd_main(["start", str(cfg)]) == 0
    stop_after(cfg)
    assert syncd_main(["wait", str(cfg), "--timeout", "60"]) == 0
    assert syncd_main(["stop", str(cfg)]) == 0
    return tmp_path / "remote"


def test_restore_from_a_remote_url_without_a_config(tmp_path, committed_remote, capsys):
    source = tmp_path / "out" / "checkpoint-2" / "model.safetensors"
    # The run's folder: its last part names the run.
    assert syncd_main(["restore", str(committed_remote / "run"), "--to", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "checkpoint-2" / "model.safetensors").read_bytes() == source.read_bytes()
    # The remote and --run, as a file:// URL.
    assert syncd_main(["restore", f"file://{committed_remote}", "--run", "run", "--to", str(tmp_path / "b"),
                       "--step", "2"]) == 0
    assert (tmp_path / "b" / "checkpoint-2" / "checkpoint-complete.json").is_file()
    capsys.readouterr()
    # Bad input: one line each, nothing written.
    for argv, code, message in [
        ([str(committed_remote / "run")], 2, "needs --to DIR"),
        (["s3://bucket", "--to", str(tmp_path / "c")], 2, "cannot tell the run name"),
        ([f"file://{committed_remote}/other", "--to", str(tmp_path / "d")], 5, ""),
        ([str(committed_remote / "run"), "--to", str(tmp_path / "e"), "--bogus", "1"], 2, "unknown option --bogus"),
    ]:
        assert syncd_main(["restore", *argv]) == code, argv
        assert message in one_line(capsys.readouterr().err)
    assert not (tmp_path / "c").exists() and not (tmp_path / "e").exists()


def test_the_daemon_log_rotates(tmp_path, monkeypatch, stop_after):
    monkeypatch.setenv("SYNCD_LOG_MAX_BYTES", "1500")
    cfg = config(tmp_path)
    assert syncd_main(["start", str(cfg)]) == 0
    stop_after(cfg)
    for step in range(1, 7):  # each one logs a few lines: detected, staged, committed, pruned
        checkpoint(tmp_path / "out", step)
    assert syncd_main(["wait", str(cfg), "--timeout", "60"]) == 0
    assert syncd_main(["stop", str(cfg)]) == 0
    logs = tmp_path / "out" / ".syncd"
    current = (logs / "syncd.log").read_text()
    older = [logs / f"syncd.log.{i}" for i in (1, 2, 3)]
    assert older[0].is_file() and not (logs / "syncd.log.4").exists()
    assert all(p.stat().st_size <= 1500 + 300 for p in [logs / "syncd.log", *older] if p.exists())
    assert "stopped by SIGTERM" in current  # the newest lines are in the current file
    text = "".join(p.read_text() for p in older if p.exists()) + current
    assert "checkpoint-6: committed" in text


def test_a_bad_log_size_stops_start_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SYNCD_LOG_MAX_BYTES", "lots")
    cfg = config(tmp_path)
    assert syncd_main(["start", str(cfg)]) == 2
    assert "SYNCD_LOG_MAX_BYTES must be a whole number" in one_line(capsys.readouterr().err)
    assert running_pid(tmp_path / "out" / ".syncd") is None
