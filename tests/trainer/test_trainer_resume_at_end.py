"""Resumed from a checkpoint already at max_steps, the trainer trains nothing more.

Hugging Face's loop checks max_steps only after a step, so a run resumed at its last
step (20 of 20, with 50 steps an epoch) used to train step 21 and write checkpoint-21.
"""

from __future__ import annotations

import json

from trainer_testlib import read_losses, write_config

from syncd.checkpoints import FINAL_MARKER
from trainer.__main__ import main


def test_resume_at_max_steps_trains_no_extra_step(tmp_path, one_thread, capsys):
    cfg = write_config(tmp_path, max_steps=20, save_steps=10)
    assert main([str(cfg)]) == 0
    out = tmp_path / "out"
    weights = (out / "checkpoint-20" / "model.safetensors").read_bytes()

    assert main([str(cfg)]) == 0  # auto-resumes from checkpoint-20
    assert "resum" in capsys.readouterr().err.lower()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-20"]
    assert max(read_losses(out)) == 20
    # The final model is the checkpoint's, saved again at step 20, untouched by any step.
    assert json.loads((out / FINAL_MARKER).read_text())["step"] == 20
    assert (out / "model.safetensors").read_bytes() == weights
