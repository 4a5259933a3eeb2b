"""From a validated TrainConfig to a ready TessTrainer: tokenizer, datasets, model, callbacks."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syncd.errors import ConfigError
from syncd.hf import PreemptionCallback

from . import compat, kg_rank, text_metrics
from .data import Collator, SpanMasking, load_text_datasets, prepare_dataset
from .model import build_model
from .tess_trainer import (
    LOSS_LOG,
    CompletionMarkerCallback,
    LossLogCallback,
    TessTrainer,
    TimeSaveCallback,
)

logger = logging.getLogger("tessync.trainer")


try:  # what a strict (transformers 5) config raises for a value of the wrong type
    from huggingface_hub.errors import StrictDataclassError

    _CONFIG_VALIDATION_ERRORS: tuple[type[BaseException], ...] = (StrictDataclassError,)
except ImportError:  # older huggingface_hub: configs do not validate
    _CONFIG_VALIDATION_ERRORS = ()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def load_tokenizer(model_args):
    from transformers import AutoTokenizer

    name = model_args.tokenizer_name or model_args.model_name_or_path
    try:
        return AutoTokenizer.from_pretrained(name, cache_dir=model_args.cache_dir, revision=model_args.model_revision)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load tokenizer {name}: {_first_line(e)}") from None


def load_model_config(model_args, diffusion, tokenizer, max_seq_length: int):
    from transformers import AutoConfig, RobertaConfig

    name = model_args.config_name or model_args.model_name_or_path
    try:
        config = AutoConfig.from_pretrained(name, cache_dir=model_args.cache_dir) if name else RobertaConfig()
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load model config {name}: {_first_line(e)}") from None
    for key, value in (model_args.model_config or {}).items():
        if not hasattr(config, key):
            raise ConfigError(f"unknown model_config key {key} for {type(config).__name__}")
        try:
            setattr(config, key, value)
        except (ValueError, TypeError, *_CONFIG_VALIDATION_ERRORS) as e:  # transformers 5 checks field types
            raise ConfigError(f"model_config key {key}: {_first_line(e.__cause__ or e)}") from None
    check_shape(config)
    if not model_args.model_name_or_path:
        config.vocab_size = len(tokenizer)
    config.pad_token_id = tokenizer.pad_token_id
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    # Saved with the model so that sampling needs nothing but the checkpoint.
    config.self_condition = diffusion.self_condition
    config.simplex_embedding = diffusion.simplex_embedding
    config.self_condition_zeros_after_softmax = diffusion.self_condition_zeros_after_softmax
    for key in ("self_condition_mix_before_weights", "self_condition_mix_logits_before_weights",
                "self_condition_mlp_projection", "classifier_free_uncond_input", "classifier_free_simplex_inputs",
                "empty_token_be_mask"):
        setattr(config, key, getattr(diffusion, key))
    config.mask_token_id = tokenizer.mask_token_id  # classifier-free guidance's empty token, with empty_token_be_mask
    if diffusion.empty_token_be_mask and tokenizer.mask_token_id is None:
        raise ConfigError("empty_token_be_mask needs a tokenizer with a mask token; this one has none")
    config.simplex_value = diffusion.simplex_value
    config.num_diffusion_steps = diffusion.num_diffusion_steps
    config.beta_schedule = diffusion.beta_schedule  # kg-rank noises with the schedule the model learned
    if max_seq_length + 2 > config.max_position_embeddings:  # RoBERTa's positions start after the pad index
        raise ConfigError(f"max_seq_length {max_seq_length} needs max_position_embeddings of at least "
                          f"{max_seq_length + 2}, the model has {config.max_position_embeddings}")
    return config


def check_shape(config) -> None:
    """The sizes RoBERTa divides and allocates by, checked before any weight is drawn."""
    for key in ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size",
                "max_position_embeddings"):
        value = getattr(config, key, None)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"model_config key {key} must be a positive integer, not {value!r}")
    heads, hidden = getattr(config, "num_attention_heads", None), getattr(config, "hidden_size", None)
    if heads and hidden and hidden % heads:
        raise ConfigError(f"model_config hidden_size {hidden} is not a multiple of num_attention_heads {heads}")


def build_datasets(cfg, tokenizer):
    d, training = cfg.data, cfg.training
    if training.disable_tqdm:
        import datasets
        from transformers.utils import logging as hf_logging

        datasets.disable_progress_bars()
        hf_logging.disable_progress_bar()  # "Writing model shards" at every save
    with training.main_process_first(desc="tokenise"):
        raw = load_text_datasets(d.train_file, d.validation_file, cfg.model.cache_dir)
        common = dict(mode=d.conditional_generation, max_seq_length=d.max_seq_length,
                      pad_to_max_length=d.pad_to_max_length, seed=training.seed, ratio=d.mask_ratio,
                      mean_span_length=d.mean_mask_span_length, num_proc=d.preprocessing_num_workers,
                      overwrite_cache=d.overwrite_cache)
        train = prepare_dataset(raw["train"], tokenizer, max_samples=d.max_train_samples, **common)
        evaluation = None
        if "validation" in raw:
            evaluation = prepare_dataset(raw["validation"], tokenizer, max_samples=d.max_eval_samples, **common)
    if len(train) == 0:
        raise ConfigError(f"train_file {d.train_file} has no line with anything to generate")
    if evaluation is not None and len(evaluation) == 0:
        raise ConfigError(f"validation_file {d.validation_file} has no line with anything to generate")
    return train, evaluation


@dataclass
class Run:
    """Everything built from one config."""

    cfg: Any  # args.TrainConfig
    trainer: TessTrainer
    resume: Any  # resume.ResumePlan, once decided
    loss_log: Path
    preemption: Any = None  # syncd.hf.PreemptionCallback: its stopped_at is the step saved on SIGTERM


def build_trainer(cfg) -> Run:
    from transformers import set_seed

    training = cfg.training
    compat.check_overwrite(cfg)  # before anything is built: never train over a run's checkpoints
    if cfg.run.torch_num_threads:
        import torch

        torch.set_num_threads(cfg.run.torch_num_threads)
    tokenizer = load_tokenizer(cfg.model)
    # The model's shape first: a bad one fails in a second, not after tokenising.
    config = load_model_config(cfg.model, cfg.diffusion, tokenizer, cfg.data.max_seq_length)
    train_ds, eval_ds = build_datasets(cfg, tokenizer)
    set_seed(training.seed)  # before the weights are drawn, so a run is a function of its config
    try:
        model = build_model(config, cfg.model.model_name_or_path, cfg.model.cache_dir,
                            revision=cfg.model.model_revision)
    except OSError as e:
        raise ConfigError(f"cannot load model {cfg.model.model_name_or_path}: {_first_line(e)}") from None
    if model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    if cfg.run.init_from_checkpoint:
        from .original_format import init_weights

        init_weights(model, cfg.run.init_from_checkpoint)  # a resume below still loads its own weights
    samples = None
    if eval_ds is not None and cfg.diffusion.eval_num_samples:
        samples = eval_ds.select(range(min(cfg.diffusion.eval_num_samples, len(eval_ds))))
    trainer = TessTrainer(
        model=model,
        args=training,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=Collator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        diffusion=cfg.diffusion,
        sample_dataset=samples,
        conditional=cfg.data.conditional_generation,
        masking=SpanMasking(cfg.data.conditional_generation, cfg.data.mask_ratio, cfg.data.mean_mask_span_length,
                            cfg.data.eval_context_size, cfg.data.mask_padding, cfg.data.truncation_length),
    )
    if cfg.run.time_save_interval_seconds:
        trainer.add_callback(TimeSaveCallback(cfg.run.time_save_interval_seconds))
    trainer.add_callback(CompletionMarkerCallback(trainer))
    compat.apply_runtime(cfg, trainer)  # the original's logging_dir and final evaluation
    trainer.kg_eval = kg_rank.eval_hook(cfg)  # None unless a kg_quad run with a validation file
    trainer.sample_metrics = text_metrics.eval_hook(cfg, tokenizer)  # None unless the config asks
    # SIGTERM (spot VM notice, systemctl stop, kubectl delete): save at the step end and stop;
    # __main__ then exits with syncd.hf.PREEMPTED_EXIT_CODE instead of saving a final model.
    preemption = PreemptionCallback(exit_on_preemption=False,
                                    resume_hint=f"tess-train {cfg.source} (and the same flags): it resumes by itself")
    trainer.add_callback(preemption)
    loss_log = Path(training.output_dir) / LOSS_LOG
    trainer.add_callback(LossLogCallback(trainer, loss_log))
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("model: %s, %.2fM parameters, vocab %d; %d training lines, %s validation lines",
                "pretrained " + cfg.model.model_name_or_path if cfg.model.model_name_or_path else "from scratch",
                n_params / 1e6, config.vocab_size, len(train_ds), len(eval_ds) if eval_ds is not None else "no")
    return Run(cfg, trainer, None, loss_log, preemption)
