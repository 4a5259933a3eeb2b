"""Fixtures for the trainer tests; the helpers live in trainer_testlib.py."""

from __future__ import annotations

import pytest
from trainer_testlib import Procs


@pytest.fixture
def procs():
    """Trainer subprocesses, every one killed (with its process group) at teardown."""
    pr = Procs()
    try:
        yield pr
    finally:
        pr.close()




DEMO_FIXTURE_STEPS = 600  # of the demo's 1200: ~40 s of CPU, and the kg-rank test's margin is wide there


@pytest.fixture(scope="session")
def demo_trained_model(tmp_path_factory):
    """configs/tess_tiny_cpu.json (what `make demo` trains) for its first 600 steps, shared by the session.

    Same model, data, seed and optimiser as the demo; only the step count, the output
    folder, and the saves, evaluations and backups (which would cost time and change
    nothing in the weights) differ. Returns the output folder holding the final model.
    """
    import subprocess
    import sys

    from trainer_testlib import REPO, subprocess_env

    tmp = tmp_path_factory.mktemp("demo-model")
    out = tmp / "out"
    log = tmp / "train.log"
    cmd = [sys.executable, "-m", "trainer", str(REPO / "configs" / "tess_tiny_cpu.json"),
           "--output_dir", str(out), "--cache_dir", str(tmp / "hf-cache"), "--max_steps", str(DEMO_FIXTURE_STEPS),
           "--save_strategy", "no", "--eval_strategy", "no", "--time_save_interval_seconds", "null",
           "--gdrive_backup_dir", "null", "--resume_from_checkpoint", "false"]
    with open(log, "wb") as f:
        rc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), stdout=f, stderr=subprocess.STDOUT,
                            timeout=600).returncode
    assert rc == 0, log.read_text()[-3000:]
    return out
