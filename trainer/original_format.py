"""Continuing a checkpoint of the original TESS on this trainer.

The original is allenai/tess-diffusion at 63f039b (``RobertaForDiffusionLM`` in
sdlm/models/modeling_roberta.py, trained by transformers 4.25's Trainer). Its
checkpoint folder::

    checkpoint-N/
        config.json          "architectures": ["RobertaForDiffusionLM"], the self-conditioning keys
        pytorch_model.bin    roberta.*, lm_head.* (lm_head.decoder.* left out: tied to E and
                             lm_head.bias), vocab_to_hidden_dim_embed.weight (H, V),
                             timestep_embed.*, project_to_hidden_size.*, and the buffer
                             roberta.embeddings.position_ids
        optimizer.pt         AdamW over two groups of named_parameters(): decay, no decay
                             (or, with ssdlm_optimizer, the original's own split)
        scheduler.pt         the LambdaLR state
        rng_state.pth        python, numpy (pickled by numpy 1), cpu and cuda generator states
        scaler.pt            fp16 runs: the GradScaler state
        trainer_state.json   global_step, log_history, ...

``vocab_to_hidden_dim_embed`` is the original's second view of the word embeddings E:
its ``post_init`` sets the Linear's weight to ``E.T`` on E's storage, so the optimizer
holds two parameters on one storage and E gets two Adam updates per step. That holds
on a CPU only: ``model.to(device)`` copies the transposed view into memory of its own,
so on a GPU the two matrices train apart and the checkpoint holds two different
tensors. How each case continues here depends on ``simplex_embedding``:

    the checkpoint's copy   tied (ours)              original_shared          original_separate
    equals E.T              E; the copy's Adam       both Adam states kept    both kept, apart
                            state dropped
    differs from E.T        stops before step one    stops before step one    both kept

Everything is checked against this model before step one (``check``), and a
checkpoint that cannot be mapped stops with one line; ``init_from_checkpoint`` takes
the weights alone. Nothing is written into the checkpoint folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from syncd.errors import ConfigError

from .checkpoint_check import CheckpointError

logger = logging.getLogger("tessync.trainer")

ORIGINAL_ARCHITECTURE = "RobertaForDiffusionLM"
WEIGHTS = "pytorch_model.bin"
OPTIMIZER = "optimizer.pt"
SCHEDULER = "scheduler.pt"
COPY = "vocab_to_hidden_dim_embed.weight"
E_NAME = "roberta.embeddings.word_embeddings.weight"
# In the original's weights but never a parameter here: a constant buffer, the tied
# decoder (equal to E and lm_head.bias), the pooler the original ignores on load.
DROPPABLE = ("roberta.embeddings.position_ids", "lm_head.decoder.weight", "lm_head.decoder.bias")
DROPPABLE_PREFIXES = ("roberta.pooler.",)
# The original's RobertaDiffusionConfig (sdlm/models/configuration_roberta.py) keys that
# change the forward pass, with its defaults.
MODE_KEYS = {
    "self_condition": None,
    "self_condition_zeros_after_softmax": False,
    "deepmind_conditional": False,
    "self_condition_mlp_projection": False,
    "self_condition_mix_before_weights": False,
    "self_condition_mix_logits_before_weights": False,
    "classifier_free_simplex_inputs": False,
    "classifier_free_uncond_input": "empty_token",
    "empty_token_be_mask": False,
}
ADAM_STATE = ("step", "exp_avg", "exp_avg_sq")
# Our optimizers that take an Adam state (torch's Adam/AdamW, whatever the kernel).
ADAM_OPTIMS = ("adamw_torch", "adamw_torch_fused", "adamw_torch_npu_fused", "adamw_torch_xla")
# The way on, said at the end of each refusal.
INIT_HINT = "start from its weights alone with --init_from_checkpoint {ckpt} --resume_from_checkpoint false"
SHAPE_HINT = ("give this run the model shape and self_condition of its config.json, or pass "
              "--resume_from_checkpoint false to start over")
START_OVER_HINT = "pass --resume_from_checkpoint false to start over"


def _fail(ckpt: Path, problem: str, hint: str | None = None) -> CheckpointError:
    hint = hint or INIT_HINT.format(ckpt=ckpt)
    error = CheckpointError(f"cannot continue the original TESS checkpoint {ckpt}: {problem}; {hint}")
    error.problem = problem  # without the way on, for init_from_checkpoint's own line
    return error


# ---- recognising one --------------------------------------------------------------


def read_config(ckpt: Path) -> dict | None:
    try:
        data = json.loads((Path(ckpt) / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_original(ckpt: str | Path) -> bool:
    """Written by the original's Trainer: its config names the original's model class."""
    config = read_config(Path(ckpt))
    return bool(config) and ORIGINAL_ARCHITECTURE in (config.get("architectures") or [])


# ---- the original's parameter layout ----------------------------------------------


def original_parameter_names(config: dict) -> list[str]:
    """``named_parameters()`` of the original's model, in order (transformers 4.25's RoBERTa).

    Tied parameters appear once, under their first name: the decoder's weight is E and
    its bias is ``lm_head.bias`` (a parameter of lm_head itself, so it comes first there).
    """
    names = [f"roberta.embeddings.{n}" for n in ("word_embeddings.weight", "position_embeddings.weight",
                                                 "token_type_embeddings.weight", "LayerNorm.weight",
                                                 "LayerNorm.bias")]
    per_layer = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                 "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm")
    for i in range(int(config.get("num_hidden_layers", 12))):
        names += [f"roberta.encoder.layer.{i}.{m}.{w}" for m in per_layer for w in ("weight", "bias")]
    names += ["lm_head.bias", "lm_head.dense.weight", "lm_head.dense.bias", "lm_head.layer_norm.weight",
              "lm_head.layer_norm.bias", COPY, "timestep_embed.weight", "timestep_embed.bias"]
    mode = config.get("self_condition")
    if mode is not None and (config.get("deepmind_conditional") or mode not in (
            "logits_addition", "logits_with_projection_addition", "logits_max", "logits_mean")):
        if config.get("self_condition_mlp_projection") and not config.get("deepmind_conditional"):
            names += ["project_to_hidden_size.0.weight", "project_to_hidden_size.2.weight"]
        else:
            names += ["project_to_hidden_size.weight"]
    return names


def original_groups(names: list[str], ssdlm: bool) -> list[list[str]]:
    """The optimizer groups the original built over ``names``: [decay, no decay].

    4.25's Trainer.create_optimizer: no decay for biases and for parameters inside a
    LayerNorm module. The original's ssdlm_optimizer (sdlm/trainer.py): no decay for
    names containing bias, LayerNorm.weight or timestep_embed.
    """
    if ssdlm:
        no_decay = ("bias", "LayerNorm.weight", "timestep_embed.weight", "timestep_embed.bias")
        decays = [not any(nd in n for nd in no_decay) for n in names]
    else:
        decays = [not ("bias" in n or ".LayerNorm." in n or n.startswith("lm_head.layer_norm.")) for n in names]
    return [[n for n, d in zip(names, decays, strict=True) if d], [n for n, d in zip(names, decays, strict=True)
                                                                   if not d]]


# ---- loading files ------------------------------------------------------------------


def _load(ckpt: Path, name: str, hint: str | None = None, **kwargs):
    try:
        return torch.load(ckpt / name, map_location="cpu", weights_only=True, **kwargs)
    except FileNotFoundError:
        raise _fail(ckpt, f"{name} is missing", hint) from None
    except Exception as e:  # noqa: BLE001 - whatever a damaged file raises, it does not load
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise _fail(ckpt, f"{name} does not load ({type(e).__name__}: {first})", hint) from None


def load_weights_file(ckpt: Path) -> dict[str, torch.Tensor]:
    state = _load(ckpt, WEIGHTS, START_OVER_HINT, mmap=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _fail(ckpt, f"{WEIGHTS} does not hold a state dict of tensors", START_OVER_HINT)
    return state


@contextlib.contextmanager
def numpy_safe_globals() -> Iterator[None]:
    """Allow exactly what a numpy RNG state needs, under numpy 2's names and numpy 1's.

    The original's rng_state.pth was pickled by numpy 1, which names its array
    constructor ``numpy.core.multiarray._reconstruct``; numpy 2 calls the same function
    ``numpy._core.multiarray._reconstruct``. Nothing else is allowed: no arbitrary code.
    """
    import numpy as np

    core = np._core if hasattr(np, "_core") else np.core
    reconstruct = core.multiarray._reconstruct
    allowed = [reconstruct, (reconstruct, "numpy.core.multiarray._reconstruct"),
               (reconstruct, "numpy._core.multiarray._reconstruct"), np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    with torch.serialization.safe_globals(allowed):
        yield


# ---- weights --------------------------------------------------------------------------


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(d) for d in t.shape) + ")"


def map_weights(source: dict[str, torch.Tensor], model, ckpt: Path, *, strict_copy: bool = True,
                what: str = WEIGHTS) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors under this model's state-dict names; raises CheckpointError.

    ``strict_copy``: a vocab_to_hidden_dim_embed that differs from E.T stops unless this
    model keeps it apart (original_separate); without it (weights alone) E is taken.
    """
    mode = getattr(model, "simplex_embedding", "tied")
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, ours in target.items():
        if key in source:
            value = source[key]
        elif key == "lm_head.decoder.weight" and E_NAME in source:
            value = source[E_NAME]
        elif key == "lm_head.decoder.bias" and "lm_head.bias" in source:
            value = source["lm_head.bias"]
        elif key == COPY and mode == "original_separate" and E_NAME in source:
            value = source[E_NAME].T  # a checkpoint of ours made without the copy: it starts as E
        else:
            raise _fail(ckpt, f"{what} has no tensor {key}", SHAPE_HINT)
        if value.shape != ours.shape:
            raise _fail(ckpt, f"{what} has {key} of shape {_shape(value)}, this model's is {_shape(ours)}",
                        SHAPE_HINT)
        out[key] = value
    for key in source:
        if key in out or key in DROPPABLE or key.startswith(DROPPABLE_PREFIXES):
            continue
        if key == COPY:
            E = source.get(E_NAME)
            if E is None or source[key].shape != E.T.shape:
                raise _fail(ckpt, f"{what} has {COPY} of shape {_shape(source[key])}, not E's transpose",
                            SHAPE_HINT)
            if not torch.equal(source[key], E.T):
                delta = (source[key].float() - E.T.float()).abs().max().item()
                if strict_copy:
                    raise _fail(ckpt, f"its {COPY} differs from the word embeddings (max |difference| {delta:.3g}): "
                                      "the original trained them apart, as it does on a GPU",
                                "continue it with --simplex_embedding original_separate, or "
                                + INIT_HINT.format(ckpt=ckpt))
                logger.warning("%s: its %s differs from the word embeddings (max |difference| %.3g); this model "
                               "(simplex_embedding %s) takes the word embeddings", ckpt, COPY, delta, mode)
            continue
        raise _fail(ckpt, f"{what} holds {key}, which this model has no place for "
                          f"(self_condition {getattr(model.config, 'self_condition', None)})", SHAPE_HINT)
    return out


def check_modes(config: dict, model, ckpt: Path) -> None:
    """The original's forward-pass switches must match ours: the tensors alone cannot tell."""
    for key, default in MODE_KEYS.items():
        theirs = config.get(key, default)
        if not hasattr(model.config, key):
            if theirs != default:
                raise _fail(ckpt, f"its config.json has {key} {json.dumps(theirs)}, which this trainer does not "
                                  "implement", START_OVER_HINT)
            continue
        ours = getattr(model.config, key)
        if theirs != ours:
            raise _fail(ckpt, f"its config.json has {key} {json.dumps(theirs)}, this run {json.dumps(ours)}",
                        f"set --{key} {json.dumps(theirs)} to continue it, or " + INIT_HINT.format(ckpt=ckpt))


def load_weights(model, ckpt: str | Path) -> None:
    """Resume: the original's weights into ``model``, after every check."""
    ckpt = Path(ckpt)
    check_modes(read_config(ckpt) or {}, model, ckpt)
    mapped = map_weights(load_weights_file(ckpt), model, ckpt)
    _load_into(model, mapped)


def _load_into(model, mapped: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        result = model.load_state_dict(mapped, strict=False)
    if result.unexpected_keys or set(result.missing_keys) - {"lm_head.decoder.weight", "lm_head.decoder.bias"}:
        raise CheckpointError(f"loading the mapped weights left {result}")  # a bug: map_weights covers every key
    model.tie_weights()


def init_weights(model, path: str | Path) -> None:
    """``init_from_checkpoint``: weights alone from an original checkpoint or one of ours."""
    path = Path(path).expanduser()
    try:
        if not path.is_dir():
            raise ConfigError(f"init_from_checkpoint {path} is not a folder")
        if is_original(path):
            source = load_weights_file(path)
            what = WEIGHTS
        elif (path / "model.safetensors").is_file():
            from safetensors.torch import load_file

            try:
                source = load_file(str(path / "model.safetensors"))
            except Exception as e:  # noqa: BLE001 - whatever a damaged file raises, it does not load
                raise ConfigError(f"init_from_checkpoint {path}: model.safetensors does not load ({e})") from None
            what = "model.safetensors"
        elif (path / WEIGHTS).is_file():
            source = load_weights_file(path)
            what = WEIGHTS
        else:
            raise ConfigError(f"init_from_checkpoint {path} has no model.safetensors or {WEIGHTS}")
        mapped = map_weights(source, model, path, strict_copy=False, what=what)
    except CheckpointError as e:
        raise ConfigError(f"init_from_checkpoint {path}: {getattr(e, 'problem', e)}") from None
    _load_into(model, mapped)
    logger.info("weights initialised from %s (%d tensors); optimizer, schedule and step start fresh",
                path, len(mapped))


# ---- optimizer ----------------------------------------------------------------------


@dataclass(frozen=True)
class OptimizerMap:
    """Where each of our optimizer's parameters takes its state from."""

    layout: str  # "Trainer" or "ssdlm_optimizer"
    sources: list[list[int | None]]  # per our group, per our parameter: the original's index (None: no state)
    group_of_source: dict[int, int]  # the original's index -> its group
    dropped: list[str]  # original parameters whose state is not kept


def _index_layout(groups: list, state: dict, layout: list[list[str]], shapes: dict[str, tuple],
                  ckpt: Path) -> tuple[dict[str, int], dict[int, int]]:
    """The saved index of each named parameter under one layout; every Adam state checked."""
    index: dict[str, int] = {}
    group_of_source: dict[int, int] = {}
    for g, (group, group_names) in enumerate(zip(groups, layout, strict=True)):
        for i, name in zip(group["params"], group_names, strict=True):
            index[name] = i
            group_of_source[i] = g
            entry = state.get(i)
            if entry is None:
                continue
            if not isinstance(entry, dict) or not set(ADAM_STATE) <= entry.keys():
                kinds = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
                raise _fail(ckpt, f"{OPTIMIZER} holds {kinds} for {name}, not an Adam state ({', '.join(ADAM_STATE)})")
            for key in ("exp_avg", "exp_avg_sq"):
                t = entry[key]
                if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(shapes[name]):
                    got = _shape(t) if isinstance(t, torch.Tensor) else type(t).__name__
                    raise _fail(ckpt, f"{OPTIMIZER} has {key} of {name} of shape {got}, the weight's is "
                                      f"({', '.join(map(str, shapes[name]))})")
    return index, group_of_source


def plan_optimizer(saved: dict, names: list[str], shapes: dict[str, tuple], ours: list[list[tuple[str, tuple]]],
                   ckpt: Path, simplex_embedding: str) -> OptimizerMap:
    """Match the saved 4.25 optimizer state to our groups by parameter name.

    ``names``: the original's parameters in order; ``shapes``: their shapes (from its
    weights); ``ours``: our optimizer's groups as (name, shape) lists.
    """
    if not isinstance(saved, dict) or not {"state", "param_groups"} <= saved.keys():
        raise _fail(ckpt, f"{OPTIMIZER} does not hold an optimizer state dict")
    groups = saved["param_groups"]
    state = saved["state"]
    sizes = [len(g.get("params", [])) if isinstance(g, dict) else -1 for g in groups] \
        if isinstance(groups, list) else []
    # The two layouts can have equal group sizes: the one whose every moment fits its
    # parameter's shape is the one that wrote the file.
    failures: list[CheckpointError] = []
    for candidate, ssdlm in (("Trainer", False), ("ssdlm_optimizer", True)):
        expected = original_groups(names, ssdlm)
        if sizes != [len(g) for g in expected]:
            continue
        try:
            index, group_of_source = _index_layout(groups, state, expected, shapes, ckpt)
            layout = candidate
            break
        except CheckpointError as e:
            failures.append(e)
    else:
        if failures:
            raise failures[0]
        want = [len(g) for g in original_groups(names, False)]
        raise _fail(ckpt, f"{OPTIMIZER} has groups of {sizes} parameters, the original's Trainer would have "
                          f"{want} for this model's config")
    sources: list[list[int | None]] = []
    used: set[str] = set()
    for group in ours:
        row = []
        for name, shape in group:
            if name not in index:
                raise _fail(ckpt, f"{OPTIMIZER} has no state slot for this model's {name}")
            if tuple(shapes[name]) != tuple(shape):
                raise _fail(ckpt, f"{OPTIMIZER}'s {name} has shape ({', '.join(map(str, shapes[name]))}), "
                                  f"this model's ({', '.join(map(str, shape))})")
            used.add(name)
            row.append(index[name] if index[name] in state else None)
        sources.append(row)
    dropped = [n for n in names if n not in used and index[n] in state]
    if simplex_embedding != "tied" and COPY in dropped:
        raise _fail(ckpt, f"this model keeps {COPY} but its optimizer does not train it")
    if set(dropped) - {COPY}:
        raise _fail(ckpt, f"{OPTIMIZER} holds state for {', '.join(sorted(set(dropped) - {COPY}))}, "
                          "which this model does not train")
    return OptimizerMap(layout, sources, group_of_source, dropped)


def our_groups_from_trainer(trainer) -> list[list[tuple[str, tuple]]]:
    """Our optimizer's groups before it exists, as Trainer.create_optimizer will build them."""
    model = trainer.model
    decay = set(trainer.get_decay_parameter_names(model))
    params = [(n, tuple(p.shape)) for n, p in model.named_parameters() if p.requires_grad]
    return [[x for x in params if x[0] in decay], [x for x in params if x[0] not in decay]]


def our_groups_from_optimizer(optimizer, model) -> list[list[tuple[str, tuple]]]:
    name_of = {id(p): n for n, p in model.named_parameters()}
    return [[(name_of[id(p)], tuple(p.shape)) for p in g["params"]] for g in optimizer.param_groups]


def _adam_like(optimizer) -> bool:
    inner = getattr(optimizer, "optimizer", optimizer)
    return isinstance(inner, (torch.optim.Adam, torch.optim.AdamW))


def mapped_optimizer_state(saved: dict, plan: OptimizerMap, optimizer) -> dict:
    """Our optimizer's state dict carrying the original's moments, step and learning rates."""
    current = optimizer.state_dict()
    state: dict[int, dict] = {}
    groups = []
    i = 0
    for group, row in zip(current["param_groups"], plan.sources, strict=True):
        group = dict(group)
        first = next((s for s in row if s is not None), None)
        if first is not None:
            theirs = saved["param_groups"][plan.group_of_source[first]]
            for key in ("lr", "initial_lr", "betas", "eps"):
                if key in theirs:
                    group[key] = theirs[key]
        groups.append(group)
        for src in row:
            if src is not None:
                entry = saved["state"][src]
                step = entry["step"]
                step = step.detach().clone().float() if isinstance(step, torch.Tensor) else torch.tensor(float(step))
                state[i] = {"step": step, "exp_avg": entry["exp_avg"].float(),
                            "exp_avg_sq": entry["exp_avg_sq"].float()}
            i += 1
    return {"state": state, "param_groups": groups}


def _original_names_and_shapes(ckpt: Path, weights: dict[str, torch.Tensor]) -> tuple[list[str], dict]:
    config = read_config(ckpt) or {}
    names = original_parameter_names(config)
    missing = [n for n in names if n not in weights]
    if missing:
        raise _fail(ckpt, f"{WEIGHTS} has no tensor {missing[0]}", SHAPE_HINT)
    return names, {n: tuple(weights[n].shape) for n in names}


# ---- the whole check, before step one --------------------------------------------------


def check(ckpt: str | Path, trainer) -> None:
    """Everything ``OriginalResumeMixin`` will load, mapped onto this trainer's model; raises CheckpointError."""
    ckpt = Path(ckpt)
    model = trainer.model
    if getattr(model.config, "position_embedding_type", "absolute") != "absolute":
        raise _fail(ckpt, "only absolute position embeddings are mapped", START_OVER_HINT)
    check_modes(read_config(ckpt) or {}, model, ckpt)
    weights = load_weights_file(ckpt)
    map_weights(weights, model, ckpt)
    names, shapes = _original_names_and_shapes(ckpt, weights)
    optim = str(getattr(trainer.args.optim, "value", trainer.args.optim))
    if optim not in ADAM_OPTIMS:
        raise _fail(ckpt, f"its Adam state cannot feed optim {optim}", "use --optim adamw_torch, or "
                    + INIT_HINT.format(ckpt=ckpt))
    saved = _load(ckpt, OPTIMIZER)
    plan = plan_optimizer(saved, names, shapes, our_groups_from_trainer(trainer), ckpt,
                          getattr(model, "simplex_embedding", "tied"))
    scheduler = _load(ckpt, SCHEDULER)
    if not isinstance(scheduler, dict) or "base_lrs" not in scheduler:
        raise _fail(ckpt, f"{SCHEDULER} does not hold a learning-rate scheduler state")
    if len(scheduler["base_lrs"]) != len(plan.sources):
        raise _fail(ckpt, f"{SCHEDULER} schedules {len(scheduler['base_lrs'])} groups, this optimizer has "
                          f"{len(plan.sources)}")
    logger.info("original TESS checkpoint %s: weights, optimizer (%s groups%s), scheduler, RNG and step map "
                "onto this model", ckpt, plan.layout,
                f"; {COPY}'s Adam state dropped (simplex_embedding tied)" if plan.dropped else "")


@contextlib.contextmanager
def _complete_old_trainer_state(trainer) -> Iterator[None]:
    """4.25's trainer_state.json lacks fields that Trainer now reads: train_batch_size (its
    argument check divides it: a TypeError) and stateful_callbacks (the next save indexes
    it: a KeyError), plus the step intervals. For one train() call, a missing field takes
    this run's value from the fresh state Trainer built just before reading the file."""
    from unittest import mock

    from transformers.trainer_callback import TrainerState

    load = TrainerState.load_from_json

    def load_completed(json_path):
        state = load(json_path)
        written = json.loads(Path(json_path).read_text(encoding="utf-8"))
        fresh, args = trainer.state, trainer.args
        for key, value in (("train_batch_size", fresh.train_batch_size), ("logging_steps", args.logging_steps),
                           ("eval_steps", args.eval_steps), ("save_steps", args.save_steps),
                           ("stateful_callbacks", fresh.stateful_callbacks)):
            if key not in written and value is not None:
                setattr(state, key, value)
        return state

    with mock.patch.object(TrainerState, "load_from_json", load_completed):
        yield


class OriginalResumeMixin:
    """Trainer hooks: an original checkpoint resumes through the maps above; ours as before."""

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if isinstance(resume_from_checkpoint, (str, Path)) and is_original(resume_from_checkpoint):
            with _complete_old_trainer_state(self):
                return super().train(resume_from_checkpoint, *args, **kwargs)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if not is_original(resume_from_checkpoint):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_weights(self.accelerator.unwrap_model(model if model is not None else self.model),
                     resume_from_checkpoint)
        logger.info("weights of the original TESS checkpoint %s loaded", resume_from_checkpoint)

    def _load_optimizer_and_scheduler(self, checkpoint):
        if checkpoint is None or not is_original(checkpoint):
            return super()._load_optimizer_and_scheduler(checkpoint)
        ckpt = Path(checkpoint)
        if not _adam_like(self.optimizer):
            raise _fail(ckpt, f"its Adam state cannot feed {type(self.optimizer).__name__}")
        model = self.accelerator.unwrap_model(self.model)
        weights = load_weights_file(ckpt)
        names, shapes = _original_names_and_shapes(ckpt, weights)
        saved = _load(ckpt, OPTIMIZER)
        plan = plan_optimizer(saved, names, shapes, our_groups_from_optimizer(self.optimizer, model), ckpt,
                              getattr(model, "simplex_embedding", "tied"))
        self.optimizer.load_state_dict(mapped_optimizer_state(saved, plan, self.optimizer))
        self.lr_scheduler.load_state_dict(_load(ckpt, SCHEDULER))
        logger.info("optimizer (%s layout) and scheduler of the original TESS checkpoint loaded%s", plan.layout,
                    f"; not kept: the Adam state of {', '.join(plan.dropped)}" if plan.dropped else "")

    def _load_rng_state(self, checkpoint):
        with numpy_safe_globals():
            return super()._load_rng_state(checkpoint)

    def _load_scaler(self, checkpoint):
        if checkpoint is not None and (Path(checkpoint) / "scaler.pt").is_file() and self.accelerator.scaler is None:
            logger.info("%s/scaler.pt not used: this run has no fp16 loss scaling", checkpoint)
            return None
        return super()._load_scaler(checkpoint)

    @staticmethod
    def get_optimizer_cls_and_kwargs(args, model=None):
        from transformers import Trainer

        cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
        shared = getattr(model, "simplex_embedding", "tied") == "original_shared"
        if shared and isinstance(cls, type) and issubclass(cls, (torch.optim.Adam, torch.optim.AdamW)):
            # Two parameters on one storage: a fused or foreach kernel updates them at once and
            # races; one tensor at a time applies the two updates in order, as the original.
            kwargs = {**kwargs, "fused": False, "foreach": False}
        return cls, kwargs
