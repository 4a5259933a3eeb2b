"""A plain Hugging Face Trainer on a tiny RobertaForMaskedLM, as any user script would be.

Not our TESS trainer: syncd must work beside any Trainer. Run as a subprocess:

    python tests/helpers/hf_train.py OUT --max-steps 20 --save-steps 5 --save-total-limit 2

With ``--best-first`` it evaluates at every save and keeps the best model as
``load_best_model_at_end`` does, ranking ``eval_loss`` with ``greater_is_better``:
the loss only falls, so the first evaluation stays the best, an old step.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from transformers import (
    RobertaConfig,
    RobertaForMaskedLM,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)


class RandomMLM(torch.utils.data.Dataset):
    def __init__(self, n: int, length: int, vocab: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(5, vocab, (n, length), generator=g)
        self.mask = torch.rand((n, length), generator=g) < 0.15

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        labels = torch.where(self.mask[i], self.ids[i], torch.tensor(-100))
        inputs = torch.where(self.mask[i], torch.tensor(4), self.ids[i])
        return {"input_ids": inputs, "labels": labels}


class Slow(TrainerCallback):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_step_end(self, args, state, control, **kw):
        time.sleep(self.seconds)


class LateShards(TrainerCallback):
    """Files that land after trainer_state.json, as other ranks' shards or a user's callback do."""

    def __init__(self, count: int, gap: float) -> None:
        self.count, self.gap = count, gap

    def on_save(self, args, state, control, **kw):
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}", "late")
        os.makedirs(folder, exist_ok=True)
        for i in range(self.count):
            time.sleep(self.gap)
            with open(os.path.join(folder, f"shard-{i}.bin"), "wb") as f:
                f.write(os.urandom(4096))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("output_dir")
    p.add_argument("--max-steps", type=int, default=20)
    p.add_argument("--save-steps", type=int, default=5)
    p.add_argument("--save-total-limit", type=int, default=2)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--step-sleep", type=float, default=0.0)
    p.add_argument("--late-shards", type=int, default=0, help="files each save adds after trainer_state.json")
    p.add_argument("--late-gap", type=float, default=0.5, help="seconds before each late shard")
    p.add_argument("--save-final", action="store_true", help="trainer.save_model() at the end")
    p.add_argument("--resume", default=None, help="'auto' for the newest checkpoint, or a path")
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--data-seed", type=int, default=0, help="another one after a resume forks the run")
    p.add_argument("--syncd", nargs="?", const="", default=None, metavar="CONFIG",
                   help="add syncd.hf.SyncdCallback (given a config, it starts syncd when none runs)")
    p.add_argument("--syncd-wait", type=float, default=None, help="SyncdCallback's wait_timeout_seconds")
    p.add_argument("--best-first", action="store_true",
                   help="evaluate at each save; load_best_model_at_end with the highest eval_loss as best")
    a = p.parse_args()
    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=a.vocab, hidden_size=a.hidden, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=a.hidden * 2, max_position_embeddings=40)
    model = RobertaForMaskedLM(cfg)
    args = TrainingArguments(
        output_dir=a.output_dir, max_steps=a.max_steps, per_device_train_batch_size=4,
        save_strategy="steps", save_steps=a.save_steps, save_total_limit=a.save_total_limit,
        logging_steps=1, report_to="none", use_cpu=True, disable_tqdm=True, seed=0,
        dataloader_num_workers=0, learning_rate=a.learning_rate,
        **(dict(eval_strategy="steps", eval_steps=a.save_steps, load_best_model_at_end=True,
                metric_for_best_model="eval_loss", greater_is_better=True, per_device_eval_batch_size=8)
           if a.best_first else {}),
    )
    callbacks = [Slow(a.step_sleep)] if a.step_sleep else []
    if a.late_shards:
        callbacks.append(LateShards(a.late_shards, a.late_gap))
    if a.syncd is not None:
        from syncd.hf import SyncdCallback

        callbacks.append(SyncdCallback(a.syncd or None, wait_timeout_seconds=a.syncd_wait))
    train = RandomMLM(64, 16, a.vocab, a.data_seed)
    trainer = Trainer(model=model, args=args, train_dataset=train, callbacks=callbacks,
                      eval_dataset=torch.utils.data.Subset(train, range(16)) if a.best_first else None)
    trainer.train(resume_from_checkpoint=True if a.resume == "auto" else a.resume)
    if a.save_final:
        trainer.save_model()
    print(f"GLOBAL_STEP {trainer.state.global_step}", flush=True)


if __name__ == "__main__":
    main()
