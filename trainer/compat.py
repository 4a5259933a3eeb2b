"""The original TESS's configs on this trainer: every key it knows, and what it means here.

allenai/tess-diffusion (commit 63f039b) parses four dataclasses with
HfArgumentParser (``sdlm/arguments.py``: ModelArguments, DataTrainingArguments, its
TrainingArguments on top of transformers 4.25's, DiffusionArguments); its fork
prettyidol/tess-diffusion adds ``time_save_interval_seconds``, ``gdrive_backup_dir``
and ``backup_keep_last``. A config written for either runs here unchanged:

* keys we implement live in args.py's dataclasses (or transformers' own
  TrainingArguments) under the original's names; a model/sampling key that a build
  lacks parses into a stand-in here and says, in one line, that it has no effect;
* keys the original declares but its own ``run_mlm.py`` never reads (GLUE and seq2seq
  options) parse into ``OriginalArguments`` and are ignored here too (NO_EFFECT);
  keys it reads that mean something else here are accepted (DIFFERS, and the lines of
  ``notes``); either says so in one start-up line when set away from its default;
* a few are translated: the accelerate-script names of the original's shipped configs
  (``max_train_steps``, ``num_warmup_steps``, ``checkpointing_steps``), the metric
  switches (``without_compute_metrics``, ``autoregressive_eval_model``),
  ``config_overrides``, ``top_p`` without ``sampling_type``, and the nulls of
  ``max_seq_length`` and ``resume_from_checkpoint``;
* keys that change training in a way this trainer cannot reproduce stop the run
  before anything is built, with one line naming the key (``check``);
* ``overwrite_output_dir: true`` never trains over a run's checkpoints, local or on
  the remote (``check_overwrite``).

A config that looks written for the original also hears, in one line, which keys it
leaves out default differently here.

Path keys expand ``~``, ``$NAME``/``${NAME}`` and ``%NAME%`` as the fork's
``run_mlm.py`` does (syncd.config.expand_path; an unset variable is an error).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from syncd.config import expand_path
from syncd.errors import ConfigError

logger = logging.getLogger("tessync.trainer")

FORK = "prettyidol/tess-diffusion"

# The original's configs/*.json were written for an accelerate script (Hugging Face's
# run_mlm_no_trainer.py names); its Trainer-based run_mlm.py calls them this.
LEGACY_NAMES = {
    "max_train_steps": "max_steps",
    "num_warmup_steps": "warmup_steps",
    # Declared in the original's TrainingArguments ("Specifies the checkpoint step.")
    # but read by nothing there; the Trainer saves every save_steps.
    "checkpointing_steps": "save_steps",
}

# Keys that hold a local path; expanded before anything reads them. output_dir and
# gdrive_backup_dir are expanded by syncd.config for both programs.
PATH_KEYS = ("train_file", "validation_file", "test_file", "cache_dir", "logging_dir", "tokenizer_name",
             "model_name_or_path", "config_name", "output_dir", "resume_from_checkpoint")

UNSUPPORTED_CONDITIONAL = {
    "ul2": "a per-batch mix of span infilling, aggressive span infilling and prefix LM",
    "ul2_with_unconditional": "ul2 plus unconditional batches",
    "ul2_variable": "ul2 with a mask ratio drawn up to half the sequence",
    "seq2seq": "the original's summarisation and translation scripts",
}


@dataclass
class OriginalArguments:
    """Keys of the original that change nothing in its own run_mlm.py, nor here.

    Defaults are the original's, so "left at its default" is exactly "not given".
    """

    # ModelArguments
    model_type: str | None = None  # run_mlm.py always builds RoBERTa, whatever this says
    config_overrides: str | None = None  # read as model_config (see apply)
    use_fast_tokenizer: bool = True  # transformers 5 has no slow tokenizers
    use_auth_token: bool = False  # transformers 5 sends the saved token whenever there is one
    autoregressive_eval_model: str = "EleutherAI/gpt-neo-1.3B"
    resize_position_embeddings: bool | None = None  # seq2seq scripts only
    resize_position_embeddings_alternatively: bool = False  # seq2seq scripts only
    # DataTrainingArguments
    split_glue: bool = True  # run_glue.py only
    glue_split_seed: int = 42  # run_glue.py only
    tokenized_data_path: str | None = None  # unsupported when set (check)
    dataset_name: str | None = None  # unsupported when set
    dataset_config_name: str | None = None  # unsupported when set
    dataset_folder: str | None = None  # unsupported when set
    test_file: str | None = None  # not read by run_mlm.py
    validation_split_ratio: float = 0.01  # its split is commented out in run_mlm.py
    extra_padding_ratio: float = 0.0  # unsupported above 0
    max_source_length: int = 1024  # seq2seq scripts only
    max_target_length: int = 128
    val_max_target_length: int | None = None
    max_predict_samples: int | None = None
    num_beams: int | None = None
    source_lang: str | None = None
    target_lang: str | None = None
    add_t5_tags: bool = False  # run_glue.py only
    skip_special_tokens: bool = True  # how generated text is decoded for its metrics
    # Seq2SeqTrainingArguments: the original's summarisation and translation scripts only.
    sortish_sampler: bool = False
    generation_max_length: int | None = None
    generation_num_beams: int | None = None
    # TrainingArguments (the original's additions, and 4.25 keys transformers 5 dropped)
    overwrite_output_dir: bool = False  # checked against every checkpoint (check_overwrite)
    logging_dir: str | None = None  # tensorboard's folder (build.py)
    log_generated_texts: bool = True  # generated texts into tensorboard (DIFFERS)
    checkpoint_best_model: bool = False  # run_glue.py only
    eval_for_all_metrics: bool = False
    load_states_in_eval_from_model_path: bool = True
    without_compute_metrics: bool = False
    compute_eval_loss_with_simplex: bool = False  # DIFFERS
    ssdlm_optimizer: bool = False  # DIFFERS
    # The conditional set-up of the DeepMind paper (masked inputs concatenated, projected).
    deepmind_conditional: bool = False  # unsupported when true
    # In the original's shipped configs, from before 63f039b: what became
    # conditional_generation ul2_with_unconditional. Unsupported when true.
    mixed_pretrain_objectives: bool = False
    # Model and sampling options of the original, implemented in args.py's dataclasses (which
    # take them first, under these names); these stand in only where a build lacks one.
    beta_schedule: str = "squaredcos_improved_ddpm"
    clip_sample: bool = False
    guidance_scale: float = 1.0
    classifier_free_uncond_input: str = "empty_token"
    classifier_free_simplex_inputs: bool = False
    empty_token_be_mask: bool = False
    guidance_softmax_combination: bool = True
    generate_with_seed: bool = False
    self_condition_mix_before_weights: bool = False
    self_condition_mix_logits_before_weights: bool = False
    self_condition_mlp_projection: bool = False
    eval_context_size: int | None = None
    truncation_length: int | None = 0
    # Set from the config's own do_eval (transformers 5 turns do_eval on with any eval_strategy).
    final_evaluation: bool = dataclasses.field(default=False, init=False)


ORIGINAL_FIELDS = {f.name: f for f in dataclasses.fields(OriginalArguments) if f.init}
STAND_INS = ("beta_schedule", "clip_sample", "guidance_scale", "classifier_free_uncond_input",
             "classifier_free_simplex_inputs", "empty_token_be_mask", "guidance_softmax_combination",
             "generate_with_seed", "self_condition_mix_before_weights", "self_condition_mix_logits_before_weights",
             "self_condition_mlp_projection", "eval_context_size", "truncation_length")


def implemented(cfg, key: str) -> bool:
    """Whether one of our dataclasses (not OriginalArguments) holds ``key``."""
    return any(dataclasses.is_dataclass(part) and key in {f.name for f in dataclasses.fields(part)}
               for part in (cfg.model, cfg.data, cfg.diffusion, cfg.run))

# Keys accepted with no effect, as in the original's run_mlm.py: one line when set
# away from the default. Name -> why.
NO_EFFECT = {
    "split_glue": "only the original's run_glue.py reads it",
    "glue_split_seed": "only the original's run_glue.py reads it",
    "add_t5_tags": "only the original's run_glue.py reads it",
    "checkpoint_best_model": "only the original's run_glue.py reads it",
    "max_source_length": "only the original's seq2seq scripts read it",
    "max_target_length": "only the original's seq2seq scripts read it",
    "val_max_target_length": "only the original's seq2seq scripts read it",
    "max_predict_samples": "only the original's seq2seq scripts read it",
    "num_beams": "only the original's seq2seq scripts read it",
    "sortish_sampler": "only the original's seq2seq scripts read it",
    "generation_max_length": "only the original's seq2seq scripts read it",
    "generation_num_beams": "only the original's seq2seq scripts read it",
    "source_lang": "only the original's seq2seq scripts read it",
    "target_lang": "only the original's seq2seq scripts read it",
    "resize_position_embeddings": "only the original's seq2seq scripts read it; a max_seq_length beyond "
                                  "max_position_embeddings is an error here",
    "resize_position_embeddings_alternatively": "only the original's seq2seq scripts read it",
    "model_type": "the original's run_mlm.py always builds RoBERTa, and so does this trainer",
    "test_file": "the original's run_mlm.py does not read it; tess-eval kg-rank --test_file does",
    "validation_split_ratio": "the original's run_mlm.py has the split commented out; give validation_file",
    "eval_for_all_metrics": "MAUVE and the other all-metrics scores are not computed here",
    "use_fast_tokenizer": "transformers 5 has one tokenizer class per model, backed by the tokenizers library; "
                          "it splits text as the original's slow and fast RoBERTa tokenizers both do",
}

# Keys the original reads, accepted here with another meaning: one line when set away
# from the default. Name -> what happens here instead.
DIFFERS = {
    "log_generated_texts": "the original then leaves generated texts out of tensorboard; here they go to "
                           "output_dir/samples/ at each evaluation either way (eval_num_samples 0 turns them off)",
    "compute_eval_loss_with_simplex": "the original then scores the sampled simplex against the reference; here "
                                      "the eval loss is always the denoising loss at random timesteps",
    "ssdlm_optimizer": "the original then uses SSD-LM's AdamW, which also exempts the timestep embedding from "
                       "weight decay; here the Trainer's AdamW decays it (bias and LayerNorm exempt in both)",
}

UNSUPPORTED = {
    "tokenized_data_path": "a dataset saved by the original's process_data.py cannot be read here; give "
                           "train_file and validation_file as text, one example per line",
    "dataset_name": "Hub datasets are not read here; give train_file and validation_file as text, one "
                    "example per line",
    "dataset_config_name": "Hub datasets are not read here; give train_file and validation_file as text",
    "dataset_folder": "dataset folders are not read here; give train_file and validation_file as text",
}


# max_seq_length null: the original's tokenize step takes the tokenizer's model_max_length,
# which is 512 for every RoBERTa tokenizer (ours in data/tokenizer too).
ROBERTA_MAX_LENGTH = 512


def rename_legacy(data: dict[str, Any], training_fields: set[str]) -> dict[str, Any]:
    """``max_train_steps`` and friends to the Trainer's names, one line each."""
    out = {}
    if "resume_from_checkpoint" in data and data["resume_from_checkpoint"] is None:
        # HF 4.25's default, which the original's run_mlm.py reads as "the newest checkpoint-N".
        logger.info("resume_from_checkpoint null: the original resumes from the newest checkpoint in output_dir "
                    "(unless overwrite_output_dir); read as auto (false starts fresh)")
        data = {**data, "resume_from_checkpoint": "auto"}
    if "max_seq_length" in data and data["max_seq_length"] is None:
        logger.info("max_seq_length null: the original takes the tokenizer's limit, %d for RoBERTa; read as %d",
                    ROBERTA_MAX_LENGTH, ROBERTA_MAX_LENGTH)
        data = {**data, "max_seq_length": ROBERTA_MAX_LENGTH}
    for key, value in data.items():
        new = LEGACY_NAMES.get(key)
        if new is not None and key not in training_fields:
            if new in data:
                raise ConfigError(f"config has both {key} and {new}; keep {new}")
            logger.info("config key %s (the name in the original TESS's accelerate-era configs) is read as "
                        "%s: %s", key, new, value)
            if key == "checkpointing_steps" and "save_strategy" not in data:
                out["save_strategy"] = "steps"
            key = new
        out[key] = value
    return out


def _our_fields() -> set[str]:
    from . import args  # late: args imports this module

    return {f.name for cls in (args.ModelArguments, args.DataArguments, args.DiffusionArguments, args.RunArguments)
            for f in dataclasses.fields(cls)}


def apply_metrics(data: dict[str, Any]) -> dict[str, Any]:
    """The original's metric switches onto ours (eval_text_metrics, eval_perplexity_model).

    The original computes its generation metrics at every evaluation unless
    ``without_compute_metrics``, perplexity under ``autoregressive_eval_model``
    (gpt-neo-1.3B by default). Here they are off unless asked: a config that says
    ``without_compute_metrics: false`` asks for them, and a config that names
    ``autoregressive_eval_model`` names the perplexity model.
    """
    ours = _our_fields()
    if not {"eval_text_metrics", "eval_perplexity_model"} <= ours:
        return data  # a build without the text metrics: OriginalArguments keeps the keys
    off = data.get("without_compute_metrics")
    asked = [k for k in ("eval_text_metrics", "eval_perplexity_model") if data.get(k)]
    if off is True and asked:
        raise ConfigError(f"without_compute_metrics true turns the generation metrics off, but {asked[0]} asks for "
                          "them; keep one")
    out = dict(data)
    if off is False and "eval_text_metrics" not in data:
        out["eval_text_metrics"] = True
        logger.info("without_compute_metrics false: the generation metrics (dist-n, repetition, zipf) are computed "
                    "at each evaluation, as in the original (here as eval_text_metrics true)")
    named = data.get("autoregressive_eval_model")
    if isinstance(named, str) and named and off is not True:
        current = data.get("eval_perplexity_model")
        if current not in (None, named):
            raise ConfigError(f"config has both autoregressive_eval_model {named!r} and eval_perplexity_model "
                              f"{current!r}; keep eval_perplexity_model")
        out["eval_perplexity_model"] = named
        logger.info("autoregressive_eval_model %s is read as eval_perplexity_model: the causal LM that scores "
                    "the generated text", named)
    return out


def apply_sampling(data: dict[str, Any]) -> dict[str, Any]:
    """``top_p`` without ``sampling_type``: the original's default sampling_type is top_p, so nucleus sampling."""
    from . import args  # late: args imports this module

    if data.get("top_p") is None or "sampling_type" in data or "top_p" not in getattr(args, "SAMPLING_TYPES", ()):
        return data
    logger.info("top_p %s without sampling_type: nucleus sampling, as under the original's default sampling_type "
                "top_p (ours is argmax, which would ignore top_p); read as sampling_type top_p", data["top_p"])
    return {**data, "sampling_type": "top_p"}


def apply_overrides(data: dict[str, Any]) -> dict[str, Any]:
    """``config_overrides`` ("n_layer=2,hidden_size=64") as model_config entries, as the original means it."""
    data = apply_sampling(apply_metrics(data))
    text = data.get("config_overrides")
    if not text:
        return data
    if not isinstance(text, str):
        raise ConfigError(f"config key config_overrides must be a string like hidden_size=64,num_hidden_layers=2, "
                          f"not {text!r}")
    if data.get("model_name_or_path"):
        raise ConfigError("config_overrides can't be used in combination with model_name_or_path (as in the "
                          "original): it describes a model trained from scratch")
    import json

    merged = dict(data.get("model_config") or {})
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"config key config_overrides: {item!r} is not name=value")
        try:
            value = json.loads(raw.strip())
        except ValueError:
            value = raw.strip()
        if name.strip() in merged and merged[name.strip()] != value:
            raise ConfigError(f"config_overrides sets {name.strip()} to {value!r} but model_config says "
                              f"{merged[name.strip()]!r}; keep one")
        merged[name.strip()] = value
    logger.info("config_overrides %r is applied as model_config entries", text)
    return {**data, "model_config": merged}


def expand_paths(groups: dict[str, dict[str, Any]]) -> None:
    """Expand path keys in place, except in the sync group (syncd.config expands its own)."""
    for group, values in groups.items():
        if group == "sync":
            continue
        for key in PATH_KEYS:
            value = values.get(key)
            if isinstance(value, str) and value:
                values[key] = expand_path(key, value)


def check(given: dict[str, Any]) -> None:
    """Stop with one line on an original key this trainer cannot honour (raw values, before building)."""
    for key, why in UNSUPPORTED.items():
        if given.get(key) is not None:
            raise ConfigError(f"config key {key} is not supported: {why}")
    if given.get("extra_padding_ratio"):
        raise ConfigError("config key extra_padding_ratio is not supported: the original inserts random pads "
                          "into span-infilling training examples; set it to 0")
    mode = given.get("conditional_generation")
    if isinstance(mode, str) and mode in UNSUPPORTED_CONDITIONAL:
        raise ConfigError(f"conditional_generation {mode} ({UNSUPPORTED_CONDITIONAL[mode]}) is not supported: "
                          "use span_infilling, prefix_lm or kg_quad, or null for unconditional")
    if given.get("mixed_pretrain_objectives") not in (False, None):
        raise ConfigError("config key mixed_pretrain_objectives (the original's earlier name for "
                          "conditional_generation ul2_with_unconditional: a per-batch mix of unconditional, "
                          "span-infilling and prefix objectives) is not supported: use conditional_generation "
                          "span_infilling or prefix_lm, or set it to false")
    if given.get("deepmind_conditional") not in (False, None):
        raise ConfigError("config key deepmind_conditional is not supported: the DeepMind paper's conditioning "
                          "(masks concatenated to the inputs, then projected) is not built here; set it to false")
    if given.get("do_train") is False:
        raise ConfigError("config key do_train false (evaluation only) is not supported: tess-train always "
                          "trains; drop do_train or set it to true")


def notes(cfg, given: dict[str, Any]) -> list[str]:
    """One line for each key that was given and means something other here than in the original."""
    out = []
    original = cfg.original
    for key in STAND_INS:
        if key in given and not implemented(cfg, key) and getattr(original, key) != ORIGINAL_FIELDS[key].default:
            out.append(f"config key {key} = {getattr(original, key)!r} is accepted but not implemented in this "
                       "version: it has no effect")
    for key, why in NO_EFFECT.items():
        if key in given and getattr(original, key) != ORIGINAL_FIELDS[key].default:
            out.append(f"config key {key} = {getattr(original, key)!r} has no effect: {why}")
    for key, how in DIFFERS.items():
        if key in given and getattr(original, key) != ORIGINAL_FIELDS[key].default:
            out.append(f"config key {key} = {getattr(original, key)!r}: {how}")
    if "conditional_generation" in given and cfg.data.conditional_generation is None:
        out.append("conditional_generation null: unconditional generation (every position noised and "
                   f"generated), as in the original TESS; the fork {FORK} reads null as its KG objective (in 15% "
                   "of the lines, a random 30% of the tokens of the first quad's head and tail are generated, "
                   "and nothing in the rest), whose nearest mode here is conditional_generation kg_quad: the head "
                   "and tail of every quad on the line, in every line")
    if original.use_auth_token:
        out.append("use_auth_token true: transformers 5 sends the saved Hugging Face token (hf auth login, or "
                   "HF_TOKEN) whenever there is one; nothing else to do")
    if "overwrite_output_dir" in given and original.overwrite_output_dir:
        out.append("overwrite_output_dir true: a fresh start only where output_dir and the remote hold no "
                   "checkpoint of this run; where they do, the run stops before step one instead of training "
                   "over them (the original would)")
    if not original.skip_special_tokens:
        out.append("skip_special_tokens false: the original decodes generated text with its special tokens and "
                   "cuts it at the first </s> for its text metrics; here the samples files show the generated "
                   "tokens without special tokens either way, and the eval loss is unaffected")
    if original.without_compute_metrics:
        out.append("without_compute_metrics true: no generation metrics (perplexity under a causal LM, dist-n, "
                   "MAUVE), as in the original; the eval loss and the sample lines are still computed")
    elif "without_compute_metrics" not in given and "eval_text_metrics" not in given and \
            implemented(cfg, "eval_text_metrics") and _looks_original(given):
        out.append("without_compute_metrics not given: the original computes its generation metrics at every "
                   "evaluation by default; here they are off unless eval_text_metrics is true")
    if "load_states_in_eval_from_model_path" in given:
        out.append("load_states_in_eval_from_model_path: evaluation uses the model being trained, as the fork "
                   "does; the original reloaded model_name_or_path's states before its final evaluation")
    if given.get("do_eval") is True:
        out.append("do_eval true: the model is evaluated on validation_file at the last step, as the original's "
                   "final evaluation, besides the eval_strategy schedule")
    if _looks_original(given):
        differ = default_differences(cfg, given)
        if differ:
            out.append("this config leaves out keys whose default here differs from the original's: "
                       + ", ".join(differ))
    if cfg.training.fp16 and not _cuda(cfg.training):
        out.append("fp16 true without a CUDA device: training runs in float32 here (fp16 autocast is CUDA's; "
                   "the original needs a GPU for it too)")
    if given.get("gdrive_backup_dir"):
        out.append("gdrive_backup_dir: checkpoints are mirrored by the syncd daemon (syncd start CONFIG, beside "
                   "the trainer), not copied by the training process as in the fork")
    return out


# The original's defaults where ours differ; a config written for the original that leaves
# one of these out gets ours, and one start-up line lists them.
ORIGINAL_DEFAULTS = {
    "num_diffusion_steps": 2500,
    "num_inference_diffusion_steps": 2500,
    "line_by_line": False,
    "pad_to_max_length": False,
    "generate_with_seed": False,
    "mask_padding": False,
    "report_to": "all",
}


def default_differences(cfg, given: dict[str, Any]) -> list[str]:
    """``key ours (original X)`` for each key left out whose default here is not the original's."""
    out = []
    for key, theirs in ORIGINAL_DEFAULTS.items():
        if key in given:
            continue
        part = next((p for p in (cfg.model, cfg.data, cfg.diffusion, cfg.run, cfg.training) if hasattr(p, key)), None)
        if part is None:
            continue
        here = getattr(part, key)
        if isinstance(here, list) and len(here) <= 1:
            here = here[0] if here else "none"
        if here != theirs:
            out.append(f"{key} {json_value(here)} (original {json_value(theirs)})")
    return out


def json_value(value: Any) -> str:
    import json

    return json.dumps(value) if not isinstance(value, str) else value


def _looks_original(given: dict[str, Any]) -> bool:
    """A config written for the original: it carries a key only the original knows."""
    return any((k in ORIGINAL_FIELDS and k not in STAND_INS) or k in LEGACY_NAMES for k in given)


def _cuda(training) -> bool:
    if getattr(training, "use_cpu", False):
        return False
    import torch

    return torch.cuda.is_available()


def explain(cfg, given: dict[str, Any]) -> None:
    """Last checks, then one start-up line per difference (parse_config calls this last)."""
    check_config(cfg, given)
    cfg.original.final_evaluation = given.get("do_eval") is True
    for line in notes(cfg, given):
        logger.info("%s", line)


def check_config(cfg, given: dict[str, Any]) -> None:
    """Checks that need the built config (parse_config calls this before explain)."""
    if given.get("do_eval") is True and not cfg.data.validation_file:
        raise ConfigError("config key do_eval true needs a validation_file (as in the original)")


def _resume_is_auto(setting: Any) -> bool:
    return isinstance(setting, str) and setting.lower() in ("auto", "true") or setting is True


def check_overwrite(cfg) -> None:
    """``overwrite_output_dir: true`` never trains over a run that has checkpoints.

    In the original it means "do not resume, start at step 0 in output_dir". Here a
    fresh start is taken only when neither output_dir nor the remote holds a checkpoint
    of this run; otherwise the run stops before anything is built. An explicit
    ``resume_from_checkpoint`` (a path, or false) is followed as given, as the
    original follows it.
    """
    original = cfg.original
    if original is None or not original.overwrite_output_dir or not _resume_is_auto(cfg.run.resume_from_checkpoint):
        return
    from syncd.checkpoints import step_of

    sync = cfg.sync
    found: list[str] = []
    try:
        found = sorted((p.name for p in sync.output_dir.iterdir() if p.is_dir() and step_of(p.name) is not None),
                       key=step_of)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise ConfigError(f"overwrite_output_dir: cannot list {sync.output_dir}: {e.strerror or e}") from None
    where = str(sync.output_dir)
    if not found and sync.remote_url:
        found = _remote_checkpoints(sync)
        where = f"the remote {sync.remote_url} (run {sync.run_name})"
    if found:
        shown = ", ".join(found[-3:]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise ConfigError(f"overwrite_output_dir is true but {where} holds checkpoints of this run ({shown}); "
                          "not training over them: to continue the run, drop overwrite_output_dir (or pass "
                          "--overwrite_output_dir false) and it resumes from the newest; to start another, "
                          "choose a new run_name or output_dir")
    logger.info("overwrite_output_dir true: no checkpoint of this run in %s%s; starting fresh", sync.output_dir,
                f" or on the remote {sync.remote_url}" if sync.remote_url else "")


def _remote_checkpoints(sync) -> list[str]:
    from syncd import api
    from syncd.errors import RemoteError
    from syncd.remotes import open_remote

    try:
        remote = open_remote(sync)
        try:
            snap = api.index_for(sync, remote).scan()
        finally:
            remote.close()
    except RemoteError as e:
        raise ConfigError(f"overwrite_output_dir: cannot tell whether {sync.remote_url} holds checkpoints of this "
                          f"run ({e}); not starting over: fix the remote, or pass --resume_from_checkpoint false "
                          "to start a new run on purpose") from None
    committed = sorted((e.name for e in snap if e.committed), key=lambda n: step_of_remote(n))
    if not committed and snap.io_errors:
        raise ConfigError(f"overwrite_output_dir: cannot tell whether {sync.remote_url} holds checkpoints of this "
                          f"run ({snap.io_errors[0]}); not starting over")
    return committed


def step_of_remote(name: str) -> float:
    from syncd.checkpoints import step_of

    step = step_of(name.split(".")[0])
    return float("inf") if step is None else step


def apply_runtime(cfg, trainer) -> None:
    """What some original keys change once the Trainer exists (build.py calls this)."""
    import os

    original = cfg.original
    if original is None:
        return
    if original.logging_dir:
        # transformers 5 dropped TrainingArguments.logging_dir: its tensorboard callback reads
        # TENSORBOARD_LOGGING_DIR when it is made, which the Trainer has done by now.
        from transformers.integrations import TensorBoardCallback

        os.environ["TENSORBOARD_LOGGING_DIR"] = original.logging_dir
        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, TensorBoardCallback):
                callback.logging_dir = original.logging_dir
    if original.final_evaluation:
        trainer.add_callback(_final_evaluation())


def _final_evaluation():
    """``do_eval: true``: evaluate at the last step, as the original's final trainer.evaluate()."""
    from transformers import TrainerCallback

    class FinalEvaluation(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.max_steps and state.global_step >= state.max_steps:
                control.should_evaluate = True
            return control

    return FinalEvaluation()
