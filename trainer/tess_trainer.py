"""The Hugging Face Trainer, taught TESS's loss, sampling at evaluation, and safe saves.

Files this module writes under ``output_dir``::

    checkpoint-N/checkpoint-complete.json   after every rank finished writing checkpoint-N (rank 0)
    loss_log.jsonl                          {"step": N, "loss": x} for every optimizer step (rank 0)
    samples/step-N.txt                      generated validation lines at each evaluation (rank 0)

All training randomness (timesteps, noise, the self-conditioning coin, dropout) comes
from torch's global generators, whose state every checkpoint saves and a resume
restores: a resumed run repeats an uninterrupted one step for step. Evaluation uses
its own generators, seeded the same at every evaluation, so eval losses are
comparable across steps and evaluating never shifts the training stream.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import Trainer, TrainerCallback

from syncd.hf import drop_stale_marker, mark_saved_checkpoint

from .args import DiffusionArguments
from .data import SpanMasking
from .original_format import OriginalResumeMixin
from .sampling import SamplingOptions, entity_exact_match, generate, previous_prediction
from .schedule import alpha_bars, scaled_timesteps
from .simplex import noisy_simplex

logger = logging.getLogger("tessync.trainer")

LOSS_LOG = "loss_log.jsonl"
SAMPLES_DIR = "samples"
SELF_CONDITION_PROBABILITY = 0.5  # TESS: half the batches see their own previous prediction
GUIDANCE_CONDITION_DROPOUT = 0.1  # the original: a tenth of the batches train without their condition


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def tess_loss(model, inputs, alpha_bars: torch.Tensor, diffusion: DiffusionArguments, vocab_size: int,
              cpu_generator: torch.Generator | None = None, device_generator: torch.Generator | None = None,
              masking: SpanMasking | None = None, evaluating: bool = False):
    """One TESS training loss: noise the clean tokens at a random t, maybe self-condition, denoise.

    inputs: input_ids (B, L), span_mask (B, L), attention_mask (B, L), lengths (B,). The
    per-batch masks, timesteps, the self-conditioning coin and the guidance dropout come from
    ``cpu_generator``, the (n, V) noise and any sampled projection from ``device_generator``;
    None means torch's global generators (saved with every checkpoint).
    """
    masking = masking or SpanMasking()
    batch = masking.apply(inputs, cpu_generator, evaluating)
    ids = batch["input_ids"]  # (B, L)
    span_mask = batch["span_mask"]  # (B, L): positions to generate
    n_steps = diffusion.num_diffusion_steps
    t = torch.randint(0, n_steps, (ids.shape[0],), generator=cpu_generator)  # (B,), on CPU: no device sync
    batch_index = span_mask.nonzero(as_tuple=True)[0]  # (n,)
    alpha = alpha_bars[t].to(ids.device)[batch_index]  # (n,)
    labels = ids[span_mask]  # (n,)
    x_t = noisy_simplex(labels, alpha, vocab_size, diffusion.simplex_value, generator=device_generator)  # (n, V)
    common = dict(input_ids=ids, simplex=x_t, timesteps=scaled_timesteps(t, n_steps).to(ids.device),
                  span_mask=span_mask, attention_mask=batch["attention_mask"])
    previous = None
    if diffusion.self_condition is not None:
        coin = torch.rand((), generator=cpu_generator)  # torch's CPU generator: checkpointed with the run
        if coin.item() < SELF_CONDITION_PROBABILITY:
            with torch.no_grad():
                first = model(**common).logits  # (n, V)
            previous = previous_prediction(diffusion.self_condition, first, diffusion.simplex_value,
                                           diffusion.sampling_type, diffusion.temperature, diffusion.top_p,
                                           device_generator)
    drop = False
    if not evaluating and diffusion.guidance_scale > 1.0 and masking.mode is not None:
        # As the original: the condition is dropped after the self-conditioning pass, for the whole batch.
        drop = torch.rand((), generator=cpu_generator).item() < GUIDANCE_CONDITION_DROPOUT
    return model(**common, previous_pred=previous, labels=labels, drop_condition=drop, generator=device_generator)


class TessTrainer(OriginalResumeMixin, Trainer):
    kg_eval = None  # kg_rank.EvalRanking: the small kg-rank at each evaluation of a kg_quad run
    sample_metrics = None  # text_metrics.SampleMetrics: dist-n, repetition, zipf, perplexity of the samples

    def __init__(self, *args, diffusion: DiffusionArguments, sample_dataset=None, conditional: str | None = None,
                 masking: SpanMasking | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.diffusion = diffusion
        self.alpha_bars = alpha_bars(diffusion.beta_schedule, diffusion.num_diffusion_steps)  # (N,) float64, CPU
        self.sample_dataset = sample_dataset
        self.conditional = conditional
        self.masking = masking or SpanMasking(conditional)
        self.model_accepts_loss_kwargs = False  # our loss is a per-batch mean; let Trainer scale for accumulation
        self.step_losses: list[torch.Tensor] = []
        self._eval_generators: tuple[torch.Generator, torch.Generator] | None = None
        self.save_seconds: list[float] = []  # wall time of each checkpoint save, marker included
        self._save_started: float | None = None

    # ---- the TESS loss ------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        cpu_gen, dev_gen = self._eval_generators if not model.training and self._eval_generators else (None, None)
        outputs = tess_loss(model, inputs, self.alpha_bars, self.diffusion, self.model.config.vocab_size,
                            cpu_gen, dev_gen, self.masking, evaluating=not model.training)
        loss = outputs.loss
        if model.training:
            self.step_losses.append(loss.detach())
        return (loss, outputs) if return_outputs else loss

    def _save_checkpoint(self, model, trial):
        self._save_started = time.perf_counter()  # CompletionMarkerCallback reports the whole save
        # Re-saving over an older run's checkpoint-N (resumed from an earlier step): its marker
        # must not vouch for files that are being rewritten.
        drop_stale_marker(self.args, self.state)
        super()._save_checkpoint(model, trial)

    def _init_training_state(self, max_steps, num_update_steps_per_epoch, num_train_epochs, *args, **kwargs):
        epochs, steps = super()._init_training_state(max_steps, num_update_steps_per_epoch, num_train_epochs,
                                                     *args, **kwargs)
        if 0 < max_steps <= self.state.global_step:
            # Resumed at (or past) max_steps: Hugging Face checks it only after a step, and would
            # train one more and save checkpoint-{max_steps + 1}. No epoch left: nothing runs.
            logger.info("the checkpoint is at step %d of max_steps %d: nothing left to train",
                        self.state.global_step, max_steps)
            return num_train_epochs, 0
        return epochs, steps

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # ---- evaluation: loss on fixed noise, then a handful of samples ---------------

    def _make_eval_generators(self) -> tuple[torch.Generator, torch.Generator]:
        cpu = torch.Generator().manual_seed(self.args.seed)
        device = self.args.device
        dev = cpu if device.type == "cpu" else torch.Generator(device=device).manual_seed(self.args.seed)
        return cpu, dev

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        self._eval_generators = self._make_eval_generators()
        try:
            output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                             metric_key_prefix)
        finally:
            self._eval_generators = None
        if self.sample_dataset is not None and len(self.sample_dataset) and self.is_world_process_zero():
            output.metrics.update(self.write_samples(metric_key_prefix))
        if self.kg_eval is not None and self.is_world_process_zero():
            output.metrics.update(self.kg_eval(self.accelerator.unwrap_model(self.model), self.processing_class,
                                               metric_key_prefix))
        return output

    def write_samples(self, prefix: str = "eval") -> dict[str, float]:
        """Generate the sample lines, write samples/step-N.txt, and score entities for kg_quad."""
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        options = self.sampling_options()
        batch = self.data_collator([self.sample_dataset[i] for i in range(len(self.sample_dataset))])
        batch = {k: v.to(self.args.device) for k, v in batch.items()}
        cpu_gen, generator = self._make_eval_generators()
        if not self.diffusion.generate_with_seed:  # a fresh seed each time, the training stream untouched
            generator.seed()
        masked = self.masking.apply(batch, cpu_gen, evaluating=True)
        predicted = generate(model, masked["input_ids"], masked["span_mask"], masked["attention_mask"], options,
                             generator)
        width = masked["input_ids"].shape[1]  # after truncation_length
        batch = {**masked, "attention_mask": batch["attention_mask"][:, :width]}  # the real tokens, for the file
        model.train(was_training)
        metrics = {}
        if self.conditional == "kg_quad":
            right, total = entity_exact_match(predicted.cpu(), batch["input_ids"].cpu(), batch["span_mask"].cpu())
            metrics[f"{prefix}_entity_exact_match"] = right / max(total, 1)
        if self.sample_metrics is not None:
            metrics.update(self.sample_metrics(predicted, batch["span_mask"], prefix))
        self._write_sample_file(predicted, batch, metrics)
        return metrics

    def sampling_options(self) -> SamplingOptions:
        d = self.diffusion
        return SamplingOptions(d.simplex_value, d.num_inference_diffusion_steps, d.temperature, d.top_p,
                               sampling_type=d.sampling_type, beta_schedule=d.beta_schedule,
                               clip_sample=d.clip_sample, guidance_scale=d.guidance_scale,
                               guidance_softmax_combination=d.guidance_softmax_combination,
                               conditional=self.conditional is not None)

    def _write_sample_file(self, predicted, batch, metrics) -> None:
        tok = self.processing_class
        folder = Path(self.args.output_dir) / SAMPLES_DIR
        folder.mkdir(parents=True, exist_ok=True)
        lines = [f"# step {self.state.global_step}; " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())]
        for i in range(predicted.shape[0]):
            keep = batch["attention_mask"][i].bool()
            ref = batch["input_ids"][i][keep]
            mask = batch["span_mask"][i][keep]
            context = ref.masked_fill(mask, tok.mask_token_id) if tok.mask_token_id is not None else ref
            lines += [f"context:   {tok.decode(context, skip_special_tokens=False)!r}",
                      f"generated: {tok.decode(predicted[i][keep], skip_special_tokens=True)!r}",
                      f"reference: {tok.decode(ref, skip_special_tokens=True)!r}", ""]
        path = folder / f"step-{self.state.global_step}.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        logger.info("samples at step %d written to %s %s", self.state.global_step, path, metrics or "")
        logger.info("first sample: %s", lines[2].removeprefix("generated: "))


class TimeSaveCallback(TrainerCallback):
    """Ask for a full checkpoint once ``interval_seconds`` of wall time passed since the last save.

    Ranks agree through rank 0's clock (a one-number broadcast), since a save is a
    collective: one rank saving alone would hang the others.
    """

    def __init__(self, interval_seconds: float):
        self.interval_seconds = interval_seconds
        self.last_save = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        self.last_save = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        due = time.monotonic() - self.last_save >= self.interval_seconds
        if _distributed():
            device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
            flag = torch.tensor([int(due)], device=device)
            dist.broadcast(flag, src=0)
            due = bool(flag.item())
        if due and not control.should_save:
            control.should_save = True
            logger.info("time-based save at step %d (%.0f s since the last save)", state.global_step,
                        time.monotonic() - self.last_save)
        return control

    def on_save(self, args, state, control, **kwargs):
        self.last_save = time.monotonic()


class CompletionMarkerCallback(TrainerCallback):
    """After every rank has written checkpoint-N, the writing process adds its completion marker.

    The marker is syncd.hf's (the same one SyncdCallback writes for any Trainer script);
    this callback adds the timing of the whole save for the logs and the benchmark.
    """

    def __init__(self, trainer: TessTrainer):
        self.trainer = trainer

    def on_save(self, args, state, control, **kwargs):
        ckpt = mark_saved_checkpoint(args, state)  # barriers on both sides
        started, self.trainer._save_started = self.trainer._save_started, None
        seconds = time.perf_counter() - started if started is not None else float("nan")
        self.trainer.save_seconds.append(seconds)
        if ckpt is not None:
            logger.info("checkpoint %s complete (%.2f s)", ckpt, seconds)


class LossLogCallback(TrainerCallback):
    """One JSON line per optimizer step with its exact loss (rank 0's), for humans and tests.

    Losses stay on the device until a log, save, eval or the end, so there is no
    per-step host sync on a GPU.
    """

    def __init__(self, trainer: TessTrainer, path: Path):
        self.trainer = trainer
        self.path = path
        self.pending: list[tuple[int, torch.Tensor]] = []

    def on_step_end(self, args, state, control, **kwargs):
        losses = self.trainer.step_losses
        if losses:
            self.pending.append((state.global_step, torch.stack(losses).mean()))
            losses.clear()
        if control.should_log or control.should_save or control.should_evaluate or control.should_training_stop:
            self.flush(state)

    def on_train_end(self, args, state, control, **kwargs):
        self.flush(state)

    def flush(self, state) -> None:
        if not self.pending:
            return
        values = torch.stack([v for _, v in self.pending]).float().cpu().tolist()
        if state.is_world_process_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                for (step, _), value in zip(self.pending, values, strict=True):
                    f.write(json.dumps({"step": step, "loss": value}) + "\n")
                f.flush()
                os.fsync(f.fileno())
        self.pending.clear()


def truncate_loss_log(path: Path, last_step: int) -> None:
    """Drop lines after ``last_step``: a resumed run rewrites them, so the log stays one history."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line from a killed run
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
    os.replace(tmp, path)
