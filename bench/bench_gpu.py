"""GPU figures for the user's setup; prints figures, asserts nothing.

    .venv/bin/python bench/bench_gpu.py            # on a CUDA machine (bench/gpu.sh runs it)
    .venv/bin/python bench/bench_gpu.py --smoke    # tiny shape, a few CPU steps: keeps the script alive

1. Step time and peak memory of a TESS training step against a plain masked-LM step
   (``RobertaForMaskedLM``) on the same batch, predicting the same positions: the
   roberta-base shape written as ``model_config`` (no download; vocab 50,265), fp16
   autocast with a gradient scaler as the Trainer's ``fp16: true``, batch 16, length
   256 padded, and the diffusion settings of configs/tess_gpu_oneline_sc.json
   (simplex 5, 500 steps, self-conditioning by logits addition, zeros after softmax,
   kg_quad spans).
2. One checkpoint save (weights + optimizer, our completion marker) in the middle of
   a run, with ``syncd run`` mirroring it to a local folder remote, against the same
   run without syncd: the trainer's step time after the save, and how long syncd took
   to commit the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
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

GPU_CONFIG = json.loads((REPO / "configs" / "tess_gpu_oneline_sc.json").read_text())
# roberta-base's shape, as a config's "model_config" would give it (no download).
ROBERTA_BASE = {"vocab_size": 50265, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                "intermediate_size": 3072, "max_position_embeddings": 514, "type_vocab_size": 1,
                "layer_norm_eps": 1e-5}
SMOKE_SHAPE = {"vocab_size": 1024, "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
               "intermediate_size": 128, "max_position_embeddings": 130, "type_vocab_size": 1}


def describe_device(device: torch.device) -> str:
    if device.type != "cuda":
        return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    p = torch.cuda.get_device_properties(device)
    return (f"{p.name} ({p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}), "
            f"torch {torch.__version__}, CUDA {torch.version.cuda}")


def quad_batch(batch_size: int, length: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Real kg_quad lines through the shipped tokenizer, padded to ``length`` as the GPU config pads."""
    from transformers import AutoTokenizer

    from trainer.data import Collator, tokenize_function

    tok = AutoTokenizer.from_pretrained(REPO / "data" / "tokenizer")
    lines = (REPO / "data" / "kg_quads" / "train.txt").read_text().splitlines()
    # several lines joined fill the length, as the user's long one-line examples do
    joined = [" ||| ".join(lines[i * 6:(i + 1) * 6]) for i in range(batch_size)]
    fn = tokenize_function(tok, "kg_quad", length, True, 0, 0.15, 3.0)
    enc = fn({"text": joined}, list(range(batch_size)))
    batch = Collator(tok.pad_token_id)([{k: enc[k][i] for k in enc} for i in range(batch_size)])
    batch = {k: v.to(device) for k, v in batch.items()}
    batch["mask_id"] = tok.mask_token_id
    return batch


def model_config(shape: dict) -> RobertaConfig:
    cfg = RobertaConfig(pad_token_id=1, bos_token_id=0, eos_token_id=2, **shape)
    cfg.self_condition = GPU_CONFIG["self_condition"]
    cfg.self_condition_zeros_after_softmax = GPU_CONFIG["self_condition_zeros_after_softmax"]
    cfg.simplex_value = float(GPU_CONFIG["simplex_value"])
    cfg.num_diffusion_steps = GPU_CONFIG["num_diffusion_steps"]
    return cfg


def diffusion_args() -> DiffusionArguments:
    return DiffusionArguments(simplex_value=float(GPU_CONFIG["simplex_value"]),
                              num_diffusion_steps=GPU_CONFIG["num_diffusion_steps"],
                              self_condition=GPU_CONFIG["self_condition"],
                              self_condition_zeros_after_softmax=GPU_CONFIG["self_condition_zeros_after_softmax"])


class Stepper:
    """One optimizer step of a model, fp16 autocast + GradScaler on CUDA (the Trainer's fp16)."""

    def __init__(self, model, loss_fn, device: torch.device, fp16: bool):
        self.model = model.to(device).train()
        self.loss_fn = loss_fn
        self.device = device
        self.fp16 = fp16
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
        self.scaler = torch.amp.GradScaler("cuda", enabled=fp16)

    def __call__(self) -> float:
        sync(self.device)
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.fp16):
            loss = self.loss_fn(self.model)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        sync(self.device)
        return time.perf_counter() - t0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_steppers(shape: dict, batch: dict, device: torch.device, fp16: bool) -> dict[str, Stepper]:
    span = batch["span_mask"]
    mlm_inputs = batch["input_ids"].masked_fill(span, batch["mask_id"])
    mlm_labels = batch["input_ids"].masked_fill(~span, -100)
    inputs = {k: v for k, v in batch.items() if k != "mask_id"}
    diffusion = diffusion_args()
    alpha_bars = cosine_alpha_bars(diffusion.num_diffusion_steps)
    vocab = shape["vocab_size"]
    torch.manual_seed(0)
    plain = RobertaForMaskedLM(model_config(shape))
    torch.manual_seed(0)
    tess = TessRobertaModel(model_config(shape))
    return {
        "plain RobertaForMaskedLM step": Stepper(
            plain, lambda m: m(input_ids=mlm_inputs, attention_mask=batch["attention_mask"], labels=mlm_labels).loss,
            device, fp16),
        f"TESS step (self_condition {diffusion.self_condition})": Stepper(
            tess, lambda m: tess_loss(m, inputs, alpha_bars, diffusion, vocab).loss, device, fp16),
    }


def bench_steps(shape: dict, batch: dict, device: torch.device, fp16: bool, steps: int) -> None:
    steppers = make_steppers(shape, batch, device, fp16)
    times: dict[str, list[float]] = {name: [] for name in steppers}
    peaks: dict[str, float] = {}
    for name, step in steppers.items():  # peak memory: each alone, after a warm-up
        step()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(4 if device.type == "cuda" else 1):  # on CUDA: the self-conditioning coin comes up heads
            step()
        if device.type == "cuda":
            peaks[name] = torch.cuda.max_memory_allocated(device) / 2**30
    for _ in range(steps):  # interleaved, so that anything else on the machine hits both alike
        for name, step in steppers.items():
            times[name].append(step())
    B, L = batch["input_ids"].shape
    print(f"step time: {shape['num_hidden_layers']} layers, hidden {shape['hidden_size']}, vocab {shape['vocab_size']}, "
          f"batch {B} x {L} tokens ({int(batch['span_mask'].sum())} generated positions), "
          f"{'fp16 autocast' if fp16 else 'fp32'}, {steps} interleaved steps each (mean; the self-conditioning "
          "pass runs on about half of them)")
    base = statistics.mean(times["plain RobertaForMaskedLM step"])
    for name, ts in times.items():
        m = statistics.mean(ts)
        peak = f"   peak {peaks[name]:6.2f} GiB" if name in peaks else ""
        print(f"  {name:<46}{m * 1e3:9.2f} ms   {m / base:5.2f}x{peak}")
    for step in steppers.values():
        step.model.to("cpu")
    del steppers
    if device.type == "cuda":
        torch.cuda.empty_cache()


def save_checkpoint(step: Stepper, folder: Path, number: int) -> float:
    from syncd.checkpoints import write_checkpoint_marker

    t0 = time.perf_counter()
    ckpt = folder / f"checkpoint-{number}"
    ckpt.mkdir(parents=True)
    step.model.save_pretrained(ckpt)
    torch.save(step.opt.state_dict(), ckpt / "optimizer.pt")
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": number}))
    write_checkpoint_marker(ckpt, number)
    return time.perf_counter() - t0


def run_with_save(shape: dict, batch: dict, device: torch.device, fp16: bool, steps: int, tmp: Path,
                  with_syncd: bool) -> dict:
    out = tmp / ("with" if with_syncd else "without") / "out"
    remote = tmp / ("with" if with_syncd else "without") / "remote"
    out.mkdir(parents=True)
    remote.mkdir(parents=True)
    diffusion = diffusion_args()
    alpha_bars = cosine_alpha_bars(diffusion.num_diffusion_steps)
    inputs = {k: v for k, v in batch.items() if k != "mask_id"}
    torch.manual_seed(0)
    step = Stepper(TessRobertaModel(model_config(shape)),
                   lambda m: tess_loss(m, inputs, alpha_bars, diffusion, shape["vocab_size"]).loss, device, fp16)
    daemon = None
    cfg = tmp / f"syncd-{'with' if with_syncd else 'without'}.json"
    cfg.write_text(json.dumps({"output_dir": str(out), "run_name": "bench", "gdrive_backup_dir": str(remote),
                               "backup_keep_last": 2, "save_total_limit": None, "syncd_interval_seconds": 1,
                               "syncd_settle_seconds": 1}))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if with_syncd:
        daemon = subprocess.Popen([sys.executable, "-m", "syncd", "run", str(cfg)], cwd=REPO, env=env,
                                  stdout=subprocess.DEVNULL, stderr=open(tmp / "syncd.log", "wb"),
                                  start_new_session=True)
    try:
        for _ in range(3 if device.type == "cuda" else 1):
            step()  # warm-up, and time for the daemon to start watching
        before = [step() for _ in range(steps)]
        save_seconds = save_checkpoint(step, out, steps + 3)
        saved_at = time.monotonic()
        manifest = remote / "bench" / f"checkpoint-{steps + 3}" / "syncd-manifest.json"
        after, committed = [], None
        while len(after) < steps or (daemon is not None and committed is None and len(after) < 50 * steps):
            after.append(step())
            if committed is None and manifest.is_file():
                committed = time.monotonic() - saved_at
        size = sum(f.stat().st_size for f in (out / f"checkpoint-{steps + 3}").rglob("*") if f.is_file())
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()
        step.model.to("cpu")
        del step
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {"before": before, "after": after, "save": save_seconds, "committed": committed, "bytes": size}


def bench_save_with_syncd(shape: dict, batch: dict, device: torch.device, fp16: bool, steps: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        without = run_with_save(shape, batch, device, fp16, steps, Path(tmp), with_syncd=False)
        with_ = run_with_save(shape, batch, device, fp16, steps, Path(tmp), with_syncd=True)
    print(f"one save mid-run ({with_['bytes'] / 1e6:.0f} MB: weights, optimizer, marker), "
          f"TESS step time in the {steps} steps before and the steps after it:")
    for name, r in (("without syncd", without), ("with syncd mirroring", with_)):
        b, a = statistics.mean(r["before"]), statistics.mean(r["after"])
        print(f"  {name:<22} before {b * 1e3:8.2f} ms   after {a * 1e3:8.2f} ms ({len(r['after'])} steps)   "
              f"save {r['save']:.2f} s")
    ratio = statistics.mean(with_["after"]) / statistics.mean(without["after"])
    print(f"  step time after the save, with syncd / without: {ratio:.2f}x")
    if with_["committed"] is not None:
        print(f"  syncd committed the checkpoint to the folder remote {with_['committed']:.1f} s after the save")
    else:
        print(f"  syncd had not committed the checkpoint after {len(with_['after'])} steps (see its log)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shape, a few fp32 steps on the CPU")
    ap.add_argument("--steps", type=int, default=None, help="measured steps (default 30, smoke 2)")
    args = ap.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" at each save
    cuda = torch.cuda.is_available() and not args.smoke
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda and not args.smoke:
        print("bench_gpu: no CUDA device on this machine; nothing to measure (--smoke checks the script on the CPU)")
        return 0
    shape = ROBERTA_BASE if not args.smoke else SMOKE_SHAPE
    batch_size = GPU_CONFIG["per_device_train_batch_size"] if not args.smoke else 4
    length = GPU_CONFIG["max_seq_length"] if not args.smoke else 64
    steps = args.steps or (30 if not args.smoke else 1)
    fp16 = bool(GPU_CONFIG.get("fp16")) and cuda
    print(f"device: {describe_device(device)}" + ("   [smoke mode: tiny shape, figures mean nothing]"
                                                  if args.smoke else ""))
    batch = quad_batch(batch_size, length, device)
    bench_steps(shape, batch, device, fp16, steps)
    bench_save_with_syncd(shape, batch, device, fp16, steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
