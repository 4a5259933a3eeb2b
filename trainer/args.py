"""One JSON config for the whole run: model, data, diffusion, Hugging Face
``TrainingArguments``, and the backup keys that syncd reads.

Every key must belong to one of the dataclasses below, to ``TrainingArguments``,
or to syncd (``gdrive_backup_dir``, ``backup_keep_last``, ``syncd_*``); anything
else is an error naming the key. Keys starting with ``_`` are comments (each config
carries its launch command in ``_comment``). ``--key value`` on the command line
overrides the file, with the config's own key names; values parse as JSON when they
can (``--max_steps 20``, ``--resume_from_checkpoint false``) and are strings
otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syncd.config import KEYS as SYNCD_KEYS
from syncd.config import SyncConfig, build_config, parse_overrides, read_config_file
from syncd.config_check import Spec, check, spec_for_hint
from syncd.errors import ConfigError

from . import compat

logger = logging.getLogger("tessync.trainer")

# Keys that older configs use and transformers 5 renamed: old -> new.
RENAMED_KEYS = {
    "evaluation_strategy": "eval_strategy",
    "no_cuda": "use_cpu",
    "per_gpu_train_batch_size": "per_device_train_batch_size",
    "per_gpu_eval_batch_size": "per_device_eval_batch_size",
}
# The original's self-conditioning modes (sdlm/arguments.py, allenai/tess-diffusion 63f039b),
# listed here once: the config check and trainer/model.py both read this tuple.
SELF_CONDITION_CHOICES = (
    "logits",  # concatenate [x_t embedding, previous embedding], project 2H -> H
    "logits_with_projection",  # the same, the previous prediction fed as its +-k simplex corner
    "logits_addition",  # x_t embedding + previous embedding
    "logits_with_projection_addition",  # the same sum, the previous prediction as its simplex corner
    "logits_mean",  # (x_t embedding + previous embedding) / 2
    "logits_max",  # elementwise maximum
    "logits_multiply",  # elementwise product
)
BETA_SCHEDULES = ("squaredcos_improved_ddpm", "linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
SAMPLING_TYPES = ("argmax", "sample", "top_p")
CLASSIFIER_FREE_UNCOND_INPUTS = ("empty_token", "noisy_simplex")
CONDITIONAL_CHOICES = ("prefix_lm", "span_infilling", "kg_quad")
SIMPLEX_EMBEDDINGS = ("tied", "original_shared", "original_separate")  # as trainer/model.py


@dataclass
class ModelArguments:
    # "roberta-base" fine-tunes pretrained weights; None trains from scratch.
    model_name_or_path: str | None = None
    # A config (hub name or folder) for a from-scratch model; default: model_name_or_path's.
    config_name: str | None = None
    # Inline RobertaConfig fields applied on top: how the tiny CPU model is described.
    model_config: dict | None = None
    # Default: model_name_or_path; the tiny config points at the BPE built in data/tokenizer.
    tokenizer_name: str | None = None
    # Hub downloads and the datasets cache; None keeps Hugging Face's defaults.
    cache_dir: str | None = None
    # Pin hub weights to a revision for reproducible fine-tuning.
    model_revision: str = "main"


@dataclass
class DataArguments:
    # Plain text, one example per line; validation is optional (no evaluation without it).
    train_file: str | None = None
    validation_file: str | None = None
    # The user's setting: long enough for a few quads on one line.
    max_seq_length: int = 256
    # Fixed shapes keep memory flat from step to step (no surprise OOM on a long batch).
    pad_to_max_length: bool = True
    # None: every line; a small number makes a quick trial run.
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    # None (unconditional), prefix_lm, span_infilling or kg_quad.
    conditional_generation: str | None = None
    # T5's span-corruption defaults, as TESS uses for span_infilling.
    mask_ratio: float = 0.15
    mean_mask_span_length: float = 3.0
    # The only mode there is; accepted so the reference's configs load.
    line_by_line: bool = True
    # Tokenising ~10k lines takes seconds; processes only pay off for big corpora.
    preprocessing_num_workers: int | None = None
    # The tokenised dataset is cached by datasets; true re-tokenises (after editing the files in place).
    overwrite_cache: bool = False
    # The original's: drop this many tokens from the end of every batch (0: none).
    truncation_length: int = 0
    # prefix_lm at evaluation: the context is this many tokens (<s> included); None: half the line.
    eval_context_size: int | None = None
    # Pads are left out of attention and of the generated positions (so of the loss); false
    # reproduces the original, which attends to pads and, padded to max length, generates them.
    mask_padding: bool = True


@dataclass
class DiffusionArguments:
    # k of the +-k simplex; TESS's default.
    simplex_value: float = 5.0
    # N of the training schedule; TESS trains with 5000 (the user's config says 500).
    num_diffusion_steps: int = 5000
    # M of the sampling schedule: far fewer than N is TESS's speed trade-off.
    num_inference_diffusion_steps: int = 100
    # None, logits_addition, logits_mean, logits_with_projection (alias: logits).
    self_condition: str | None = None
    # "No previous prediction" as zeros rather than softmax(0) = uniform.
    self_condition_zeros_after_softmax: bool = False
    # The original's self-conditioning variants: mix softmax(x_t) and softmax(previous) before
    # the embedding (mix_before_weights), or the logits themselves (mix_logits_before_weights);
    # a Linear-GELU-Linear instead of one Linear for the concatenating modes (mlp_projection).
    self_condition_mix_before_weights: bool = False
    self_condition_mix_logits_before_weights: bool = False
    self_condition_mlp_projection: bool = False
    # Noise schedule of training and sampling (see trainer/schedule.py); the cosine one is TESS's.
    beta_schedule: str = "squaredcos_improved_ddpm"
    # Clamp the projected clean simplex to [-1, 1] at each sampling step, as the original's option.
    clip_sample: bool = False
    # Sampling: argmax is TESS's default projection; "sample" draws from softmax(logits / T);
    # "top_p" is the original's: a nucleus draw when top_p is set, else argmax.
    sampling_type: str = "argmax"
    temperature: float = 1.0  # only matters when drawing: argmax ignores it
    top_p: float | None = None  # nucleus for "sample"/"top_p"; None keeps the whole distribution
    # Evaluation samples from a generator seeded with the run's seed (the same at every
    # evaluation); false draws a fresh seed each time, like the original's unseeded default.
    generate_with_seed: bool = True
    # Classifier-free guidance (conditional modes only): above 1, sampling mixes in a pass that
    # sees only empty tokens, and training replaces the context by them in 10% of the batches.
    guidance_scale: float = 1.0
    guidance_softmax_combination: bool = True  # combine probabilities (the original's default), not logits
    classifier_free_uncond_input: str = "empty_token"  # or noisy_simplex (with classifier_free_simplex_inputs)
    classifier_free_simplex_inputs: bool = False  # the empty tokens enter as a simplex, not as embeddings
    empty_token_be_mask: bool = False  # the empty token is <mask> rather than <pad>
    # Validation lines generated at each evaluation (and scored for kg_quad); sampling
    # runs M full passes per line, so a handful keeps evaluation short.
    eval_num_samples: int = 8
    # At each evaluation of a kg_quad run, tess-eval kg-rank's small version: this many
    # validation queries (0: off) against eval_kg_rank_neg_k sampled negatives, scored at
    # timestep eval_kg_rank_t (the fork's 60; near num_diffusion_steps scores from the context alone).
    eval_kg_rank_queries: int = 200
    eval_kg_rank_neg_k: int = 64
    eval_kg_rank_t: int = 60
    # The original's generation metrics on the evaluation samples (dist-n, repetition, zipf),
    # and their perplexity under this causal LM (hub name or folder) when one is named.
    eval_text_metrics: bool = False
    eval_perplexity_model: str | None = None
    # The matrix that embeds softmax(x_t): "tied" is E itself, one Adam update of E per step;
    # "original_shared" / "original_separate" keep the original's vocab_to_hidden_dim_embed
    # (on E's storage, as written; or apart from E, as it runs on a GPU), to continue an
    # original checkpoint exactly (docs/tess.md, "Continuing an original checkpoint").
    simplex_embedding: str = "tied"


@dataclass
class RunArguments:
    # A full checkpoint whenever this much wall time passed since the last save, so a
    # preempted run loses minutes, not save_steps worth of steps; None: step saves only.
    time_save_interval_seconds: float | None = None
    # "auto": the newest complete local checkpoint, else the remote's newest; a path;
    # or false to start fresh.
    resume_from_checkpoint: Any = "auto"
    # A checkpoint (ours or the original's) whose weights alone start this run: fresh
    # optimizer, scheduler and step; a resume from this run's own checkpoints still wins.
    init_from_checkpoint: str | None = None
    # CPU threads for torch; None keeps torch's default. Tiny models want 1: their ops
    # are too small to split, and a second thread on a shared core stalls every op.
    torch_num_threads: int | None = None


@dataclass
class TrainConfig:
    model: ModelArguments
    data: DataArguments
    diffusion: DiffusionArguments
    run: RunArguments
    training: Any  # transformers.TrainingArguments
    sync: SyncConfig
    source: str
    # Keys of the original TESS that change nothing here (compat.OriginalArguments).
    original: Any = None


# Defaults we choose differently from TrainingArguments, each with its reason.
TRAINING_DEFAULTS: dict[str, Any] = {
    # syncd's default too: five full checkpoints, not Hugging Face's "keep all".
    "save_total_limit": SYNCD_KEYS["save_total_limit"].default,
    # No experiment trackers unless asked: nothing to log in to on a fresh VM.
    "report_to": "none",
    # RoBERTa's buffers are constants; broadcasting them would add a collective to the
    # self-conditioning pass, which ranks may take or skip independently.
    "ddp_broadcast_buffers": False,
    "ddp_find_unused_parameters": False,
}


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Check a JSON value against a dataclass field's type with syncd's checker: one set of
    messages for both programs; ints become floats where floats are due."""
    return check(name, spec_for_hint(hint), value)


def _field_hints(cls) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an unresolvable annotation only loses the type check
        hints = {}
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def _build(cls, values: dict[str, Any]):
    hints = _field_hints(cls)
    kwargs = {k: _coerce(k, v, hints[k]) for k, v in values.items() if k in hints}
    return cls(**kwargs)


def _check_choices(model: ModelArguments, data: DataArguments, diffusion: DiffusionArguments,
                   run: RunArguments) -> None:
    check("self_condition", Spec(str, nullable=True, choices=SELF_CONDITION_CHOICES), diffusion.self_condition)
    check("conditional_generation", Spec(str, nullable=True, choices=CONDITIONAL_CHOICES),
          data.conditional_generation)
    for name, value, choices in (("sampling_type", diffusion.sampling_type, SAMPLING_TYPES),
                                 ("beta_schedule", diffusion.beta_schedule, BETA_SCHEDULES),
                                 ("classifier_free_uncond_input", diffusion.classifier_free_uncond_input,
                                  CLASSIFIER_FREE_UNCOND_INPUTS)):
        check(name, Spec(str, choices=choices), value)
    if diffusion.self_condition in ("logits", "logits_with_projection") and (
            diffusion.self_condition_mix_before_weights or diffusion.self_condition_mix_logits_before_weights):
        raise ConfigError(f"self_condition {diffusion.self_condition} concatenates, so it cannot mix before the "
                          "weights; use an elementwise mode (logits_addition, logits_mean, logits_max, ...)")
    if diffusion.self_condition_mix_logits_before_weights and diffusion.self_condition_zeros_after_softmax:
        raise ConfigError("self_condition_mix_logits_before_weights mixes logits, so "
                          "self_condition_zeros_after_softmax cannot apply; set one of them false")
    if diffusion.guidance_scale < 1:
        raise ConfigError(f"config key guidance_scale must be at least 1 (1: no guidance), "
                          f"not {diffusion.guidance_scale!r}")
    if data.truncation_length < 0 or data.truncation_length > data.max_seq_length - 4:
        raise ConfigError(f"config key truncation_length must be between 0 and max_seq_length - 4, "
                          f"not {data.truncation_length!r}")
    if data.eval_context_size is not None and not 1 <= data.eval_context_size < data.max_seq_length - \
            data.truncation_length:
        raise ConfigError("config key eval_context_size must be at least 1 and below max_seq_length - "
                          f"truncation_length, not {data.eval_context_size!r}")
    if diffusion.simplex_embedding not in SIMPLEX_EMBEDDINGS:
        raise ConfigError(f"config key simplex_embedding must be one of {', '.join(SIMPLEX_EMBEDDINGS)}, "
                          f"not {diffusion.simplex_embedding!r}")
    for name, value in (("simplex_value", diffusion.simplex_value), ("temperature", diffusion.temperature)):
        if value <= 0:
            raise ConfigError(f"config key {name} must be positive, not {value!r}")
    for name, value, low in (("num_diffusion_steps", diffusion.num_diffusion_steps, 1),
                             ("num_inference_diffusion_steps", diffusion.num_inference_diffusion_steps, 1),
                             ("max_seq_length", data.max_seq_length, 4),
                             ("eval_num_samples", diffusion.eval_num_samples, 0)):
        if value < low:
            raise ConfigError(f"config key {name} must be at least {low}, not {value!r}")
    if diffusion.top_p is not None and not 0 < diffusion.top_p <= 1:
        raise ConfigError(f"config key top_p must be in (0, 1], not {diffusion.top_p!r}")
    if run.torch_num_threads is not None and run.torch_num_threads < 1:
        raise ConfigError("config key torch_num_threads must be at least 1 (or null for torch's default)")
    if run.time_save_interval_seconds is not None and run.time_save_interval_seconds <= 0:
        raise ConfigError("config key time_save_interval_seconds must be positive (or null to turn it off)")
    if not data.line_by_line:
        raise ConfigError("config key line_by_line: only line-by-line text files are supported")
    if not data.train_file:
        raise ConfigError("config has no train_file")
    for key in ("train_file", "validation_file"):
        path = getattr(data, key)
        if path is None:
            continue
        if "\0" in path:
            raise ConfigError(f"config key {key} must not contain a NUL byte: {path!r}")
        file = Path(path).expanduser()
        if not file.is_file():
            raise ConfigError(f"{key} not found: {path}")
        if file.stat().st_size == 0:
            raise ConfigError(f"{key} {path} is empty: it needs one example per line")
    if model.model_name_or_path is None and model.tokenizer_name is None:
        raise ConfigError("config needs tokenizer_name when no model_name_or_path is given")
    resume = run.resume_from_checkpoint
    if not (resume is None or isinstance(resume, (bool, str))):
        raise ConfigError(f"config key resume_from_checkpoint must be auto, a path or false, not {resume!r}")


def _check_batches(training) -> None:
    """TrainingArguments accepts these at 0 or below; the DataLoader or a division fails later."""
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        value = getattr(training, name)
        if value < 1:
            raise ConfigError(f"config key {name} must be at least 1, not {value!r}")
    if training.eval_accumulation_steps is not None and training.eval_accumulation_steps < 1:
        raise ConfigError("config key eval_accumulation_steps must be at least 1 (or null), "
                          f"not {training.eval_accumulation_steps!r}")


def split_keys(data: dict[str, Any], training_fields: set[str]) -> dict[str, dict[str, Any]]:
    """Route each key to its dataclass; unknown keys are an error naming the key."""
    groups = {"model": ModelArguments, "data": DataArguments, "diffusion": DiffusionArguments, "run": RunArguments}
    owner = {f.name: g for g, cls in groups.items() for f in dataclasses.fields(cls)}
    out: dict[str, dict[str, Any]] = {g: {} for g in (*groups, "training", "sync", "original")}
    for key, value in data.items():
        if key.startswith("_"):
            continue  # a comment, such as the launch command
        if key in owner:
            out[owner[key]][key] = value
        elif key in training_fields:
            out["training"][key] = value
        elif key in compat.ORIGINAL_FIELDS:
            out["original"][key] = value  # the original TESS's, read by compat.py
        elif key not in SYNCD_KEYS:
            raise ConfigError(f"unknown config key {key}")
        if key in SYNCD_KEYS:
            out["sync"][key] = value
    return out


def apply_renames(data: dict[str, Any], training_fields: set[str]) -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        new = RENAMED_KEYS.get(key)
        if new is not None and key not in training_fields:
            if new in data:
                raise ConfigError(f"config has both {key} and its new name {new}; keep {new}")
            logger.warning("config key %s was renamed %s in transformers 5; reading it as %s", key, new, new)
            key = new
        out[key] = value
    return out


def parse_config(argv: list[str], base_dir: Path | None = None) -> TrainConfig:
    """``CONFIG [--key value ...]`` to a validated TrainConfig; every problem is a ConfigError."""
    from transformers import TrainingArguments

    if not argv or argv[0].startswith("-"):
        raise ConfigError("usage: python -m trainer CONFIG.json [--key value ...]")
    source = argv[0]
    data = read_config_file(source)
    data.update(parse_overrides(argv[1:]))
    training_fields = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
    data = apply_renames(data, training_fields)
    data = compat.apply_overrides(compat.rename_legacy(data, training_fields))
    compat.check(data)
    if not data.get("output_dir"):
        raise ConfigError(f"config {source} has no output_dir")
    groups = split_keys(data, training_fields)
    compat.expand_paths(groups)
    model = _build(ModelArguments, groups["model"])
    data_args = _build(DataArguments, groups["data"])
    diffusion = _build(DiffusionArguments, groups["diffusion"])
    run = _build(RunArguments, groups["run"])
    original = _build(compat.OriginalArguments, groups["original"])
    _check_choices(model, data_args, diffusion, run)
    sync = build_config(groups["sync"], source=source, base_dir=base_dir or Path.cwd())
    training_values = {**{k: v for k, v in TRAINING_DEFAULTS.items() if k in training_fields},
                       **groups["training"]}
    training_values.pop("resume_from_checkpoint", None)  # ours, in RunArguments
    hints = _field_hints(TrainingArguments)
    kwargs = {k: _coerce(k, v, hints.get(k, Any)) for k, v in training_values.items()}
    try:
        training = TrainingArguments(**kwargs)
    except (ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"invalid training arguments: {first}") from None
    _check_batches(training)
    cfg = TrainConfig(model, data_args, diffusion, run, training, sync, source, original=original)
    compat.explain(cfg, data)
    return cfg
