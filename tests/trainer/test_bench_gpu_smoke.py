"""bench/gpu.sh keeps running: its CPU smoke mode (tiny shape, one step each), as `make test` runs it."""

from __future__ import annotations

import subprocess

import torch
from trainer_testlib import REPO, subprocess_env


def test_gpu_bench_smoke_mode_runs_and_reports_every_figure():
    # Without a GPU the plain call must say so and fall back to the smoke mode; with one
    # (the lent device), --smoke keeps this test short.
    args = ["bash", "bench/gpu.sh"] + (["--smoke"] if torch.cuda.is_available() else [])
    env = subprocess_env() | {"PY": str(REPO / ".venv" / "bin" / "python")}
    r = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    out = r.stdout
    if not torch.cuda.is_available():
        assert "no GPU on this machine: these are NOT GPU figures" in out
    assert "[smoke mode: tiny shape, figures mean nothing]" in out
    assert "plain RobertaForMaskedLM step" in out and "TESS step (self_condition logits_addition)" in out
    assert "without syncd" in out and "with syncd mirroring" in out
    assert "syncd committed the checkpoint to the folder remote" in out, out
