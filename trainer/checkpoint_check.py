"""Before step one: every file Trainer will read from the resume checkpoint must load.

Trainer reads a checkpoint piecemeal, deep inside ``train()``: a truncated weights
file or optimizer state surfaces as a traceback after minutes of setup, and a
missing ``optimizer.pt`` or ``scheduler.pt`` is silently replaced by a fresh
optimizer (a different run from then on). This module reads each file up front,
the way Trainer will, and stops with one line naming the file and the problem.

    checkpoint-N/
        trainer_state.json            a JSON object with an integer global_step
        model.safetensors             header and data coverage (safetensors checks both);
          or model.safetensors.index.json + the shards it names,
          or pytorch_model.bin[.index.json]   torch.load(weights_only=True)
        optimizer.pt                  required; torch.load(weights_only=True), a state dict
        scheduler.pt                  required; torch.load(weights_only=True), a dict
        rng_state*.pth, scaler.pt     optional; when present they must load
        an original TESS checkpoint   also maps onto the model and optimizer (original_format.py)

Everything loads with ``weights_only=True``, as Trainer itself does, so a file that
needs arbitrary unpickling fails here rather than being executed.
"""

from __future__ import annotations

import json
from pathlib import Path

from syncd.errors import SyncdError

SAFE_WEIGHTS = "model.safetensors"
SAFE_WEIGHTS_INDEX = "model.safetensors.index.json"
TORCH_WEIGHTS = "pytorch_model.bin"
TORCH_WEIGHTS_INDEX = "pytorch_model.bin.index.json"
OPTIMIZER = "optimizer.pt"
SCHEDULER = "scheduler.pt"
STATE = "trainer_state.json"
OPTIONAL_TORCH_FILES = ("scaler.pt",)  # plus rng_state*.pth, found by glob

START_OVER = "pass --resume_from_checkpoint false to start over"


class CheckpointError(SyncdError):
    """The checkpoint chosen for resuming cannot be loaded."""

    exit_code = 2


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return line[:200]


def _fail(ckpt: Path, name: str, problem: str, hint: str = START_OVER) -> CheckpointError:
    return CheckpointError(f"cannot resume from {ckpt}: {name} {problem}; {hint}")


def _check_state(ckpt: Path) -> int:
    path = ckpt / STATE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _fail(ckpt, STATE, "is missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise _fail(ckpt, STATE, f"is not valid JSON ({_first_line(e)})") from None
    if not isinstance(state, dict):
        raise _fail(ckpt, STATE, f"must hold a JSON object, not {type(state).__name__}")
    step = state.get("global_step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise _fail(ckpt, STATE, f"has no integer global_step (found {step!r})")
    return step


def _torch_load(ckpt: Path, name: str, *, numpy_ok: bool = False):
    import torch

    path = ckpt / name
    try:
        if numpy_ok:  # RNG states hold numpy arrays: exactly these are allowed, as the resume does
            from .original_format import numpy_safe_globals

            with numpy_safe_globals():
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - whatever a damaged file raises, it does not load
        raise _fail(ckpt, name, f"does not load ({type(e).__name__}: {_first_line(e)})") from None


def _check_safetensors(ckpt: Path, name: str) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(ckpt / name), framework="pt") as f:
            # Opening checks the header and that the data exactly covers the file.
            for key in f.keys():
                f.get_slice(key).get_shape()
    except Exception as e:  # noqa: BLE001 - whatever a damaged file raises, it does not load
        raise _fail(ckpt, name, f"does not load ({_first_line(e)})") from None


def _check_weights(ckpt: Path) -> str:
    for index_name, loader in ((SAFE_WEIGHTS_INDEX, _check_safetensors), (TORCH_WEIGHTS_INDEX, None)):
        index = ckpt / index_name
        if not index.is_file():
            continue
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise _fail(ckpt, index_name, f"is not a valid shard index ({_first_line(e)})") from None
        for shard in shards:
            if not isinstance(shard, str) or "/" in shard or shard in (".", ".."):
                raise _fail(ckpt, index_name, f"names an invalid shard {shard!r}")
            if not (ckpt / shard).is_file():
                raise _fail(ckpt, shard, f"is missing (named in {index_name})")
            if loader is not None:
                loader(ckpt, shard)
            else:
                _torch_load(ckpt, shard)
        return index_name
    if (ckpt / SAFE_WEIGHTS).is_file():
        _check_safetensors(ckpt, SAFE_WEIGHTS)
        return SAFE_WEIGHTS
    if (ckpt / TORCH_WEIGHTS).is_file():
        _torch_load(ckpt, TORCH_WEIGHTS)
        return TORCH_WEIGHTS
    raise _fail(ckpt, SAFE_WEIGHTS, f"is missing (nor is there {TORCH_WEIGHTS} or a shard index)")


def check_checkpoint(ckpt: str | Path, trainer=None) -> int:
    """Raise CheckpointError unless every file Trainer resumes from loads; returns global_step.

    With ``trainer``, a checkpoint of the original TESS is also mapped onto its model and
    optimizer (trainer/original_format.py), so one that cannot continue stops here.
    """
    ckpt = Path(ckpt)
    if not ckpt.is_dir():
        raise CheckpointError(f"cannot resume from {ckpt}: not a folder; {START_OVER}")
    step = _check_state(ckpt)
    _check_weights(ckpt)
    weights_only = f"{START_OVER}, or add --model_name_or_path {ckpt} to init the weights only from it"
    for name, kind in ((OPTIMIZER, "optimizer"), (SCHEDULER, "learning-rate scheduler")):
        if not (ckpt / name).is_file():
            # Trainer would silently start a fresh optimizer here: a different run.
            raise _fail(ckpt, name, f"is missing, so the {kind} state would restart from scratch", weights_only)
        state = _torch_load(ckpt, name)
        if not isinstance(state, dict) or (name == OPTIMIZER and not {"state", "param_groups"} <= state.keys()):
            raise _fail(ckpt, name, f"does not hold a {kind} state dict", weights_only)
    for path in sorted(ckpt.glob("rng_state*.pth")):
        _torch_load(ckpt, path.name, numpy_ok=True)
    for name in OPTIONAL_TORCH_FILES:
        if (ckpt / name).is_file():
            _torch_load(ckpt, name)
    if trainer is not None:
        from . import original_format

        if original_format.is_original(ckpt):
            original_format.check(ckpt, trainer)
    return step
