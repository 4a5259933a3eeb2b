"""One rank of a plain Hugging Face Trainer run across nodes, resuming as ``syncd.hf`` says.

    torchrun --nnodes 2 --node_rank I ... multinode_train.py CONFIG [--hang-at STEP]

CONFIG is the node's syncd config (its ``output_dir`` is where this node's ranks save).
Each rank resumes from ``resume_checkpoint(CONFIG)`` (restoring every node's part from
the remote when the node's disk has none) and prints, on stdout:

    RESUME <rank> <path or None>
    LOSS <rank> <step> <this rank's loss, repr>      every step (dropout makes it rank-RNG dependent)
    HANG <rank> <step>                               then sleeps, as a run killed mid-way would be

The model is tiny (hidden 32, one layer) and the data fixed, so a step takes milliseconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from hf_train import RandomMLM
from transformers import (
    RobertaConfig,
    RobertaForMaskedLM,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from syncd.hf import SyncdCallback, resume_checkpoint


class LossTrainer(Trainer):
    def training_step(self, model, inputs, *args, **kwargs):
        loss = super().training_step(model, inputs, *args, **kwargs)
        print(f"LOSS {self.args.process_index} {self.state.global_step + 1} {loss.item()!r}", flush=True)
        return loss


class Hang(TrainerCallback):
    def __init__(self, step: int | None) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step:
            print(f"HANG {args.process_index} {state.global_step}", flush=True)
            while True:
                time.sleep(3600)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("--max-steps", type=int, default=12)
    p.add_argument("--save-steps", type=int, default=4)
    p.add_argument("--hang-at", type=int, default=None)
    a = p.parse_args()
    out = json.loads(Path(a.config).read_text())["output_dir"]
    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=512, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=40)
    args = TrainingArguments(
        output_dir=out, max_steps=a.max_steps, per_device_train_batch_size=4, save_strategy="steps",
        save_steps=a.save_steps, logging_steps=1, report_to="none", use_cpu=True, disable_tqdm=True, seed=0,
        dataloader_num_workers=0, learning_rate=1e-3, ddp_backend="gloo",
    )
    callbacks = [SyncdCallback(wait_at_end=False, preemption=False), Hang(a.hang_at)]
    trainer = LossTrainer(model=RobertaForMaskedLM(cfg), args=args, train_dataset=RandomMLM(64, 16, 512),
                          callbacks=callbacks)
    path = resume_checkpoint(a.config)
    print(f"RESUME {args.process_index} {path}", flush=True)
    trainer.train(resume_from_checkpoint=path)
    print(f"DONE {args.process_index} {trainer.state.global_step}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
