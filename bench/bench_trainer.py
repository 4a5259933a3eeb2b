"""Trainer benchmarks; prints figures, asserts nothing.

    .venv/bin/python bench/bench_trainer.py [--steps 40] [--threads 1] [--no-base]

1. Step time: a TESS training step (noise, the self-conditioning pass when the coin
   says so, loss, backward, AdamW) against a plain Hugging Face masked-LM step of
   ``RobertaForMaskedLM`` on the same tiny model (the tiny CPU config's) and the same
   batch, predicting the same positions. Target: at most 1.6x.
2. Save time: the trainer's time inside a checkpoint save (Hugging Face's save plus
   our completion marker) against ``cp -r`` of the very same checkpoint folder, for
   the tiny model and for a roberta-base-sized one (random weights, no download).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from transformers import RobertaConfig, RobertaForMaskedLM  # noqa: E402

from trainer.args import DiffusionArguments  # noqa: E402
from trainer.model import TessRobertaModel  # noqa: E402
from trainer.schedule import cosine_alpha_bars  # noqa: E402
from trainer.tess_trainer import tess_loss  # noqa: E402

TINY = json.loads((REPO / "configs" / "tess_tiny_cpu.json").read_text())


def tiny_batch(batch_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A real batch of the tiny config: kg_quad lines through the shipped tokenizer."""
    import random

    from transformers import AutoTokenizer

    from trainer.data import Collator, tokenize_function

    tok = AutoTokenizer.from_pretrained(REPO / TINY["tokenizer_name"])
    lines = (REPO / TINY["train_file"]).read_text().splitlines()[:batch_size]
    fn = tokenize_function(tok, "kg_quad", TINY["max_seq_length"], False, seed, 0.15, 3.0)
    enc = fn({"text": lines}, list(range(len(lines))))
    examples = [{k: enc[k][i] for k in enc} for i in range(len(lines))]
    random.Random(seed).shuffle(examples)
    return Collator(tok.pad_token_id)(examples) | {"vocab_size": len(tok), "mask_id": tok.mask_token_id}


def tiny_roberta_config(vocab_size: int) -> RobertaConfig:
    return RobertaConfig(vocab_size=vocab_size, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                         **TINY["model_config"])


def bench_steps(steps: int) -> None:
    batch = tiny_batch(TINY["per_device_train_batch_size"])
    vocab = batch.pop("vocab_size")
    mask_id = batch.pop("mask_id")
    span = batch["span_mask"]

    torch.manual_seed(0)
    cfg = tiny_roberta_config(vocab)
    plain = RobertaForMaskedLM(cfg).train()
    plain_opt = torch.optim.AdamW(plain.parameters(), lr=1e-3)
    mlm_inputs = batch["input_ids"].masked_fill(span, mask_id)
    mlm_labels = batch["input_ids"].masked_fill(~span, -100)

    def plain_step():
        loss = plain(input_ids=mlm_inputs, attention_mask=batch["attention_mask"], labels=mlm_labels).loss
        loss.backward()
        plain_opt.step()
        plain_opt.zero_grad(set_to_none=True)

    variants = {"plain RobertaForMaskedLM step": plain_step}
    for mode in (TINY["self_condition"], None):
        torch.manual_seed(0)
        cfg = tiny_roberta_config(vocab)
        cfg.self_condition = mode
        cfg.self_condition_zeros_after_softmax = True
        model = TessRobertaModel(cfg).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        diffusion = DiffusionArguments(simplex_value=5.0, num_diffusion_steps=TINY["num_diffusion_steps"],
                                       self_condition=mode)
        alpha_bars = cosine_alpha_bars(diffusion.num_diffusion_steps)

        def tess_step(model=model, opt=opt, diffusion=diffusion, alpha_bars=alpha_bars):
            loss = tess_loss(model, batch, alpha_bars, diffusion, vocab).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        variants[f"TESS step, self_condition={mode}"] = tess_step

    # Interleaved, so that load from anything else on the machine hits every variant alike.
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(steps + 5):
        for name, step in variants.items():
            t0 = time.perf_counter()
            step()
            if i >= 5:  # warm-up
                times[name].append(time.perf_counter() - t0)

    n = int(span.sum())
    print(f"step time, tiny model ({cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, vocab {vocab}), "
          f"batch {span.shape[0]} x {span.shape[1]} tokens, {n} generated positions, "
          f"{torch.get_num_threads()} thread(s), {steps} interleaved steps each:")
    print("  (mean over steps: the self-conditioning pass runs on half of them, so the mean is the real cost)")
    base = statistics.mean(times["plain RobertaForMaskedLM step"])
    for name, ts in times.items():
        m = statistics.mean(ts)
        print(f"  {name:<43}{m * 1e3:8.2f} ms   {m / base:.2f}x   (median {statistics.median(ts) * 1e3:.2f} ms)")
    print("  target: TESS step at most 1.6x the plain step")


class FlushBeforeSave:
    """Flush dirty pages before each save, as before each cp, so neither pays for the other's writes."""

    def __getattr__(self, name):
        if name.startswith("on_"):
            return self._noop
        raise AttributeError(name)

    @staticmethod
    def _noop(args, state, control, **kwargs):
        return None

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save:
            os.sync()


def bench_save(name: str, config: RobertaConfig, batch_shape: tuple[int, int], repeats: int) -> None:
    """Time Trainer saves inside a real TessTrainer (marker included) against cp -r of the result."""
    from transformers import AutoTokenizer, TrainingArguments

    from trainer.data import Collator
    from trainer.tess_trainer import CompletionMarkerCallback, TessTrainer

    tok = AutoTokenizer.from_pretrained(REPO / TINY["tokenizer_name"])
    torch.manual_seed(0)
    config.self_condition = "logits_addition"
    model = TessRobertaModel(config)
    B, L = batch_shape
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, config.vocab_size, (B, L), generator=g)
    rows = [{"input_ids": ids[i].tolist(), "attention_mask": [1] * L,
             "span_mask": [int(j % 2 == 0) for j in range(L)]} for i in range(B)]

    with tempfile.TemporaryDirectory(dir=REPO / "output" if (REPO / "output").is_dir() else None) as tmp:
        out = Path(tmp) / "out"
        args = TrainingArguments(output_dir=str(out), max_steps=repeats, save_strategy="steps", save_steps=1,
                                 per_device_train_batch_size=B, report_to="none", disable_tqdm=True,
                                 use_cpu=True, logging_strategy="no", save_total_limit=None)
        trainer = TessTrainer(model=model, args=args, train_dataset=rows, data_collator=Collator(tok.pad_token_id),
                              processing_class=tok, diffusion=DiffusionArguments(self_condition="logits_addition",
                                                                                 num_diffusion_steps=500))
        trainer.add_callback(CompletionMarkerCallback(trainer))
        trainer.add_callback(FlushBeforeSave())
        trainer.train()
        saves = trainer.save_seconds
        ckpt = out / f"checkpoint-{repeats}"
        size = sum(f.stat().st_size for f in ckpt.rglob("*") if f.is_file())
        from syncd.checkpoints import write_checkpoint_marker

        t0 = time.perf_counter()
        write_checkpoint_marker(ckpt, repeats)  # our share of a save: list the files, write a small JSON
        marker_ms = (time.perf_counter() - t0) * 1e3
        cps = []
        for i in range(repeats):
            dest = Path(tmp) / f"copy-{i}"
            os.sync()  # both sides start with no dirty pages left by the other
            t0 = time.perf_counter()
            subprocess.run(["cp", "-r", str(ckpt), str(dest)], check=True)
            cps.append(time.perf_counter() - t0)
            shutil.rmtree(dest)
    s, c = statistics.median(saves), statistics.median(cps)
    print(f"save time, {name}: checkpoint of {size / 1e6:.1f} MB, median of {repeats}:")
    print(f"  trainer save (HF save + marker)      {s * 1e3:8.1f} ms   {s / c:.2f}x")
    print(f"  cp -r of the same folder             {c * 1e3:8.1f} ms   1.00x")
    print(f"  of the trainer save, the completion marker takes {marker_ms:.1f} ms; the rest is Hugging Face's "
          "save (safetensors weights, torch.save of optimizer, scheduler, RNG, trainer state)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="timed steps per variant")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the tiny config uses 1)")
    parser.add_argument("--no-base", action="store_true", help="skip the roberta-base-sized save")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    bench_steps(args.steps)
    print()
    vocab = len(json.loads((REPO / TINY["tokenizer_name"] / "vocab.json").read_text()))
    bench_save("tiny model", tiny_roberta_config(vocab), (16, 48), repeats=5)
    if not args.no_base:
        print()
        base = RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                             bos_token_id=0, eos_token_id=2)  # roberta-base's shape
        bench_save("roberta-base-sized model (random weights)", base, (1, 16), repeats=3)
    if not torch.cuda.is_available():
        print("\nno GPU here: the roberta-base fp16 step time and peak memory need a GPU run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
