"""Bad input to the trainer, in process: one ``tess-train: error:`` line, exit 2, nothing lost.

Covers what the config table in test_trainer_config.py cannot express: files made per
test (empty, not UTF-8), model shapes, and damaged checkpoints to resume from. The
checkpoints come from one 2-step run of the tiny model per module, copied and then
damaged per test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from trainer_testlib import write_config

from trainer.__main__ import main
from trainer.checkpoint_check import CheckpointError, check_checkpoint

TINY_MODEL = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
              "max_position_embeddings": 64}


def one_error_line(capsys, argv) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [ln for ln in err.splitlines() if ln.startswith("tess-train: error: ")]
    assert code == 2 and len(errors) == 1, err
    # Only INFO/WARNING log lines may precede the error; nothing after it.
    assert err.strip().splitlines()[-1] == errors[0], err
    return errors[0]


# -- 8. batch sizes and accumulation ---------------------------------------------------
@pytest.mark.parametrize("key, value", [
    ("per_device_train_batch_size", 0), ("per_device_train_batch_size", -4), ("per_device_eval_batch_size", 0),
    ("gradient_accumulation_steps", 0), ("eval_accumulation_steps", 0),
])
def test_non_positive_batch_sizes_are_exit_2(tmp_path, capsys, key, value):
    cfg = write_config(tmp_path)
    line = one_error_line(capsys, [cfg, f"--{key}", str(value)])
    assert f"config key {key} must be at least 1" in line
    assert not (tmp_path / "out").exists()


# -- 9. empty or unreadable training text -----------------------------------------------
@pytest.mark.parametrize("key", ["train_file", "validation_file"])
@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"\n   \n\t\n", "has no line with anything to generate"),
    ("caf\u00e9\tx\ty\tz\n".encode("latin-1"), "is not UTF-8 text"),
], ids=["zero-bytes", "blank-lines", "latin-1"])
def test_empty_or_undecodable_text_is_exit_2(tmp_path, capsys, key, content, message):
    text = tmp_path / "text.txt"
    text.write_bytes(content)
    cfg = write_config(tmp_path, **{key: str(text)})
    line = one_error_line(capsys, [cfg])
    assert f"{key} {text} {message}" in line


# -- 10. model shapes ---------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    ({"hidden_size": 33}, "hidden_size 33 is not a multiple of num_attention_heads 2"),
    ({"num_attention_heads": 0}, "model_config key num_attention_heads must be a positive integer"),
    ({"hidden_size": "big"}, "model_config key hidden_size: "),
    ({"num_hidden_layers": 0}, "model_config key num_hidden_layers must be a positive integer"),
], ids=["not-a-multiple", "zero-heads", "not-a-number", "zero-layers"])
def test_bad_model_shape_is_exit_2_before_tokenising(tmp_path, capsys, change, message):
    cfg = write_config(tmp_path, model_config={**TINY_MODEL, **change},
                       cache_dir=str(tmp_path / "own-cache"))
    line = one_error_line(capsys, [cfg])
    assert message in line
    assert not (tmp_path / "own-cache").exists(), "the shape is checked before any text is tokenised"


# -- 11. damaged checkpoints ----------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step run of the tiny model that saved checkpoint-2; tests copy it before damaging."""
    import torch

    tmp = tmp_path_factory.mktemp("bad-input-run")
    cfg = write_config(tmp, max_steps=2, save_steps=2, logging_steps=1, max_train_samples=32,
                       validation_file=None, resume_from_checkpoint=False)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([str(cfg)]) == 0
    finally:
        torch.set_num_threads(before)
    out = tmp / "out"
    assert (out / "checkpoint-2" / "optimizer.pt").is_file()
    return out


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "model-truncated": (lambda c: truncate(c / "model.safetensors"), "model.safetensors does not load"),
    "model-missing": (lambda c: (c / "model.safetensors").unlink(), "model.safetensors is missing"),
    "optimizer-truncated": (lambda c: truncate(c / "optimizer.pt"), "optimizer.pt does not load"),
    "optimizer-empty": (lambda c: (c / "optimizer.pt").write_bytes(b""), "optimizer.pt does not load"),
    "optimizer-missing": (lambda c: (c / "optimizer.pt").unlink(),
                          "optimizer.pt is missing, so the optimizer state would restart from scratch"),
    "optimizer-not-a-state": (lambda c: __import__("torch").save([1, 2], c / "optimizer.pt"),
                              "optimizer.pt does not hold a optimizer state dict"),
    "scheduler-missing": (lambda c: (c / "scheduler.pt").unlink(), "scheduler.pt is missing"),
    "scheduler-truncated": (lambda c: truncate(c / "scheduler.pt"), "scheduler.pt does not load"),
    "rng-truncated": (lambda c: truncate(c / "rng_state.pth"), "rng_state.pth does not load"),
    "state-garbage": (lambda c: (c / "trainer_state.json").write_bytes(b"\x00garbage{"),
                      "trainer_state.json is not valid JSON"),
    "state-not-object": (lambda c: (c / "trainer_state.json").write_text("[2]"),
                         "trainer_state.json must hold a JSON object"),
    "state-no-step": (lambda c: (c / "trainer_state.json").write_text('{"global_step": "2"}'),
                      "trainer_state.json has no integer global_step"),
    "state-missing": (lambda c: (c / "trainer_state.json").unlink(), "trainer_state.json is missing"),
}


def test_an_intact_checkpoint_passes(trained):
    assert check_checkpoint(trained / "checkpoint-2") == 2


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_checkpoint_is_named_with_its_problem(trained, tmp_path, case):
    ckpt = shutil.copytree(trained / "checkpoint-2", tmp_path / "checkpoint-2")
    damage, message = DAMAGE[case]
    damage(ckpt)
    with pytest.raises(CheckpointError) as err:
        check_checkpoint(ckpt)
    line = str(err.value)
    assert line.startswith(f"cannot resume from {ckpt}: ") and message in line, line
    assert "\n" not in line and "--resume_from_checkpoint false" in line
    if case.endswith("-missing") and case.split("-")[0] in ("optimizer", "scheduler"):
        assert f"--model_name_or_path {ckpt}" in line, "a lost optimizer may still seed the weights"


def _copy_run(trained: Path, tmp_path: Path) -> tuple[Path, Path]:
    out = shutil.copytree(trained, tmp_path / "out")
    cfg = write_config(tmp_path, max_steps=4, save_steps=2, logging_steps=1, max_train_samples=32,
                       validation_file=None, syncd_settle_seconds=0)
    return out, cfg


@pytest.mark.parametrize("case", ["model-truncated", "optimizer-truncated", "optimizer-missing"])
def test_resume_from_a_damaged_path_is_exit_2_and_loses_nothing(trained, tmp_path, capsys, one_thread, case):
    out, cfg = _copy_run(trained, tmp_path)
    ckpt = out / "checkpoint-2"
    DAMAGE[case][0](ckpt)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    line = one_error_line(capsys, [cfg, "--resume_from_checkpoint", ckpt])
    assert f"cannot resume from {ckpt}: {DAMAGE[case][1]}" in line
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before, "a refused resume must not touch the run (loss log, checkpoints)"


def test_auto_resume_from_garbage_state_is_exit_2(trained, tmp_path, capsys, one_thread):
    """A checkpoint without our marker (another writer, or an older syncd) that auto picks up."""
    out, cfg = _copy_run(trained, tmp_path)
    ckpt = out / "checkpoint-2"
    (ckpt / "checkpoint-complete.json").unlink(missing_ok=True)
    (ckpt / "trainer_state.json").write_text("{ garbage")
    before = (out / "loss_log.jsonl").read_bytes()
    line = one_error_line(capsys, [cfg])
    assert f"cannot resume from {ckpt}: trainer_state.json is not valid JSON" in line
    assert (out / "loss_log.jsonl").read_bytes() == before
    assert json.loads((trained / "checkpoint-2" / "trainer_state.json").read_text())["global_step"] == 2
