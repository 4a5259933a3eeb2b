"""SIGTERM at a random step of our trainer, with a real syncd running: the step's checkpoint
is saved with the marker and committed, the trainer exits with one line and code 75, and
the resumed run repeats an uninterrupted one to 1e-5."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys

import pytest
from trainer_testlib import REPO, read_losses, subprocess_env, wait_for, write_config

from syncd.checkpoints import inspect_checkpoint
from syncd.hf import PREEMPTED_EXIT_CODE
from syncd.manifest import MANIFEST_NAME
from trainer.__main__ import main


def _last_loss_step(out) -> int:
    try:
        lines = (out / "loss_log.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["step"] if lines else 0
    except (OSError, ValueError, KeyError):
        return 0  # not written yet, or a line being appended


def test_sigterm_at_a_random_step_is_saved_committed_and_resumed_exactly(tmp_path, procs, one_thread):
    at = random.randint(3, 12)  # the step after which the notice arrives
    print(f"SIGTERM once step {at} is logged")
    keys = dict(logging_steps=1, save_steps=5)
    killed = tmp_path / "killed"
    killed.mkdir()
    remote = tmp_path / "remote"
    cfg = write_config(killed, gdrive_backup_dir=str(remote), syncd_settle_seconds=30, backup_keep_last=10,
                       syncd_wait_at_end=False, **keys)
    out = killed / "out"

    syncd_log = tmp_path / "syncd.log"
    with open(syncd_log, "wb") as f:
        daemon = subprocess.Popen([sys.executable, "-m", "syncd", "run", str(cfg)], cwd=REPO, stdout=f,
                                  stderr=subprocess.STDOUT, env=subprocess_env(), start_new_session=True)
    try:
        def ready() -> bool:
            try:
                return json.loads((out / ".syncd" / "status.json").read_text()).get("pid") == daemon.pid
            except (OSError, ValueError):
                return False

        wait_for(ready, 60, "syncd to be ready", daemon, syncd_log)
        log = tmp_path / "killed.log"
        p = procs.start([str(cfg), "--max_steps", "100000"], log)  # would go on for ever
        wait_for(lambda: _last_loss_step(out) >= at, 180, f"step {at}", p, log)
        p.send_signal(signal.SIGTERM)
        assert p.wait(120) == PREEMPTED_EXIT_CODE, log.read_text()[-3000:]
        last = log.read_text().strip().splitlines()[-1]
        m = re.fullmatch(r"preempted: saved checkpoint-(\d+); resume with tess-train (\S+) .*", last)
        assert m and m.group(2) == str(cfg), last
        step = int(m.group(1))
        assert step >= at
        ckpt = out / f"checkpoint-{step}"
        assert inspect_checkpoint(ckpt).reason == "marker"
        assert json.loads((ckpt / "trainer_state.json").read_text())["global_step"] == step
        assert not (out / "training-complete.json").exists()  # no final model from a stopped run
        assert _last_loss_step(out) == step
        wait_for((remote / "tiny" / ckpt.name / MANIFEST_NAME).exists, 60, f"{ckpt.name} committed", daemon,
                 syncd_log)
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait(30)

    total = step + 4  # the resumed run goes a few steps past the preemption
    (tmp_path / "ref").mkdir()
    assert main([str(write_config(tmp_path / "ref", max_steps=total, **keys))]) == 0
    expected = read_losses(tmp_path / "ref" / "out")
    assert main([str(cfg), "--max_steps", str(total)]) == 0  # resumes from checkpoint-<step> by itself
    got = read_losses(out)
    assert sorted(got) == sorted(expected) == list(range(1, total + 1))
    for s in range(1, total + 1):
        assert got[s] == pytest.approx(expected[s], abs=1e-5), (s, got[s], expected[s])
