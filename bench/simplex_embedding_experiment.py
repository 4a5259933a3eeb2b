"""Does one Adam update of the word embeddings per step (``simplex_embedding: tied``, our
default) train as well as the original's second parameter on E's storage
(``original_shared``: two updates of E per step) or its GPU behaviour, where that copy
trains apart from E (``original_separate``)? Prints figures, asserts nothing.

    .venv/bin/python bench/simplex_embedding_experiment.py [--steps 300] [--seeds 1 2 3]

The tiny CPU config (configs/tess_tiny_cpu.json), ``--steps`` steps per seed and mode,
then Trainer's evaluation: the mean TESS loss over the validation lines with the
evaluation's fixed generators (the same noise, timesteps and self-conditioning coin for
every model).
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

MODES = ("tied", "original_shared", "original_separate")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--modes", nargs="+", default=list(MODES))
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            for seed in args.seeds:
                out = Path(tmp) / f"{mode}-{seed}"
                argv = [str(REPO / "configs" / "tess_tiny_cpu.json"), "--output_dir", str(out),
                        "--max_steps", str(args.steps), "--seed", str(seed), "--simplex_embedding", mode,
                        "--eval_strategy", "no", "--save_strategy", "no", "--time_save_interval_seconds", "null",
                        "--resume_from_checkpoint", "false", "--eval_num_samples", "0",
                        "--logging_steps", str(args.steps), "--cache_dir", str(Path(tmp) / "cache")]
                run = build_trainer(parse_config(argv))
                run.trainer.train()
                loss = run.trainer.evaluate()["eval_loss"]
                results.setdefault(mode, []).append(loss)
                print(f"{mode:18s} seed {seed}: eval loss {loss:.4f}", flush=True)
    print(f"\neval loss after {args.steps} steps, mean ± sd over seeds {args.seeds}")
    for mode, losses in results.items():
        sd = statistics.stdev(losses) if len(losses) > 1 else 0.0
        print(f"  {mode:18s} {statistics.mean(losses):.4f} ± {sd:.4f}  ({', '.join(f'{x:.4f}' for x in losses)})")


if __name__ == "__main__":
    main()
