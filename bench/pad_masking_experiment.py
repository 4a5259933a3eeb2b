"""Does leaving pads out of attention and of the generated positions (``mask_padding``,
our default) train as well as the original, which attends to pads and, in
unconditional mode, scores them? Prints figures, asserts nothing.

    .venv/bin/python bench/pad_masking_experiment.py [--steps 150] [--seeds 1 2 3]

The tiny CPU config (configs/tess_tiny_cpu.json), padded to max_seq_length as the
user's GPU config is, trained ``--steps`` steps per seed, with mask_padding true and
false, in kg_quad mode and unconditionally. Each model is then scored on the same
positions (the real tokens to generate: pads are never counted, whichever way the
model was trained), under its own attention (pads hidden or seen), with the same
noise, timesteps and self-conditioning coin: the mean TESS loss over the validation
lines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from trainer.args import parse_config  # noqa: E402
from trainer.build import build_trainer  # noqa: E402
from trainer.data import Collator, SpanMasking  # noqa: E402
from trainer.tess_trainer import tess_loss  # noqa: E402


def eval_loss(run, mask_padding: bool) -> float:
    trainer = run.trainer
    model = trainer.model.eval()
    collate = Collator(trainer.processing_class.pad_token_id)
    ds = trainer.eval_dataset
    cpu = torch.Generator().manual_seed(1234)
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ds), 32):
            batch = collate([ds[i] for i in range(start, min(start + 32, len(ds)))])
            real = batch["attention_mask"].bool()
            span = batch["span_mask"] & real  # the same positions for both trainings
            inputs = {"input_ids": batch["input_ids"], "span_mask": span, "attention_mask": batch["attention_mask"]}
            # a fixed-mask mode keeps the span as given; attention kept, or None as the original
            masking = SpanMasking("kg_quad", mask_padding=mask_padding)
            out = tess_loss(model, inputs, trainer.alpha_bars, trainer.diffusion, model.config.vocab_size, cpu, cpu,
                            masking=masking, evaluating=True)
            n = int(span.sum())
            total += out.loss.item() * n
            count += n
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--modes", nargs="+", default=["kg_quad", "none"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict[tuple[str, bool], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            for mask_padding in (True, False):
                for seed in args.seeds:
                    out = Path(tmp) / f"{mode}-{mask_padding}-{seed}"
                    argv = [str(REPO / "configs" / "tess_tiny_cpu.json"), "--output_dir", str(out),
                            "--max_steps", str(args.steps), "--seed", str(seed), "--pad_to_max_length", "true",
                            "--mask_padding", "true" if mask_padding else "false", "--eval_strategy", "no",
                            "--save_strategy", "no", "--time_save_interval_seconds", "null",
                            "--resume_from_checkpoint", "false", "--eval_num_samples", "0",
                            "--logging_steps", str(args.steps), "--cache_dir", str(Path(tmp) / "cache"),
                            "--conditional_generation", "null" if mode == "none" else mode]
                    cfg = parse_config(argv)
                    run = build_trainer(cfg)
                    run.trainer.train()
                    loss = eval_loss(run, mask_padding)
                    results.setdefault((mode, mask_padding), []).append(loss)
                    print(f"{mode:8s} mask_padding={str(mask_padding):5s} seed {seed}: eval loss {loss:.4f}",
                          flush=True)
    print(f"\neval loss after {args.steps} steps (real tokens only), mean ± sd over seeds {args.seeds}")
    for (mode, mask_padding), losses in results.items():
        sd = statistics.stdev(losses) if len(losses) > 1 else 0.0
        print(f"  {mode:8s} mask_padding={str(mask_padding):5s}  {statistics.mean(losses):.4f} ± {sd:.4f}  "
              f"({', '.join(f'{x:.4f}' for x in losses)})")


if __name__ == "__main__":
    main()
