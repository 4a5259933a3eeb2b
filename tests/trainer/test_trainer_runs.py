"""Real training runs: loss goes down, time-triggered saves, exact resume after SIGKILL,
two-process gloo DDP, and auto-resume from a remote into an empty folder."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from trainer_testlib import (
    REPO,
    commit_to_remote,
    read_losses,
    wait_for,
    write_config,
)

from trainer.__main__ import main


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_in_process(config, *overrides) -> None:
    code = main([str(config), *overrides])
    assert code == 0


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    """A few hundred steps of the tiny model, with time-triggered saves and evaluation."""
    import torch

    tmp = tmp_path_factory.mktemp("long")
    cfg = write_config(tmp, max_steps=300, save_steps=1000, time_save_interval_seconds=0.25,
                       eval_strategy="steps", eval_steps=150, logging_steps=50, learning_rate=3e-3)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_in_process(cfg)
    finally:
        torch.set_num_threads(before)
    return tmp / "out"


def test_loss_decreases(long_run):
    losses = read_losses(long_run)
    assert sorted(losses) == list(range(1, 301))
    first = sum(losses[s] for s in range(1, 21)) / 20
    last = sum(losses[s] for s in range(281, 301)) / 20
    assert last < 0.6 * first, (first, last)


def test_time_trigger_saves_between_step_saves(long_run):
    from syncd.checkpoints import inspect_checkpoint

    steps = sorted(int(p.name.split("-")[1]) for p in long_run.glob("checkpoint-*"))
    by_time = [s for s in steps if s % 1000 and s < 300]  # save_steps is 1000: these came from the clock
    assert by_time, steps
    ckpt = long_run / f"checkpoint-{by_time[0]}"
    assert inspect_checkpoint(ckpt).reason == "marker"
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["global_step"] == by_time[0]
    assert (ckpt / "optimizer.pt").is_file() and (ckpt / "rng_state.pth").is_file()  # a full, resumable save


def test_evaluation_writes_samples_and_entity_accuracy(long_run):
    text = (long_run / "samples" / "step-300.txt").read_text()
    assert "eval_entity_exact_match" in text.splitlines()[0]
    assert text.count("generated: ") == 4 and text.count("context: ") == 4


def test_final_model_and_marker(long_run):
    from syncd.checkpoints import inspect_final

    final = inspect_final(long_run)
    assert final is not None and final.complete and final.reason == "marker" and final.step == 300
    names = {f.path for f in final.files}
    assert {"config.json", "model.safetensors"} <= names
    assert "loss_log.jsonl" not in names


@pytest.mark.parametrize(
    "mode, train_lines",
    # 400 lines: the kill lands mid-epoch; 80 lines (10 steps an epoch): checkpoint-10 closes
    # an epoch; 120 lines: the resumed run crosses epoch boundaries.
    [("logits_addition", 400), ("logits_mean", 80), ("logits_with_projection", 120)],
)
def test_sigkill_and_resume_repeats_the_uninterrupted_run(tmp_path, procs, one_thread, mode, train_lines):
    # Evaluation (loss and samples) at step 15 must not shift the training randomness either.
    run_opts = dict(self_condition=mode, eval_strategy="steps", eval_steps=15, max_train_samples=train_lines)
    (tmp_path / "ref").mkdir()
    run_in_process(write_config(tmp_path / "ref", **run_opts))
    expected = read_losses(tmp_path / "ref" / "out")
    assert sorted(expected) == list(range(1, 31))

    (tmp_path / "killed").mkdir()
    # The killed run is told to go on for ever (the LR is constant, so max_steps changes nothing else).
    cfg = write_config(tmp_path / "killed", **run_opts)
    log = tmp_path / "killed.log"
    p = procs.start([str(cfg), "--max_steps", "100000"], log)
    marker = tmp_path / "killed" / "out" / "checkpoint-10" / "checkpoint-complete.json"
    wait_for(marker.exists, 180, "checkpoint-10", p, log)
    procs.kill(p)  # SIGKILL, mid-training
    assert p.returncode == -9

    run_in_process(cfg)  # resumes with the same config (max_steps 30)
    got = read_losses(tmp_path / "killed" / "out")
    assert sorted(got) == list(range(1, 31))
    for step in range(1, 31):
        assert got[step] == pytest.approx(expected[step], abs=1e-5), (step, got[step], expected[step])
    assert (tmp_path / "killed" / "out" / "checkpoint-30" / "checkpoint-complete.json").exists()


def test_ddp_two_processes_gloo(tmp_path, procs):
    # The clock trigger runs too: ranks must agree on it, or a lone save would hang the other rank.
    cfg = write_config(tmp_path, max_steps=20, eval_strategy="steps", eval_steps=10, time_save_interval_seconds=0.3)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(free_port()), "-m"]
    log = tmp_path / "ddp.log"
    assert procs.run([str(cfg)], log, timeout=120, launcher=launcher) == 0, log.read_text()[-3000:]
    out = tmp_path / "out"
    text = log.read_text()
    steps = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert {10, 20} <= set(steps)
    for step in steps:
        marker = json.loads((out / f"checkpoint-{step}" / "checkpoint-complete.json").read_text())
        listed = {f["path"] for f in marker["files"]}
        assert {"rng_state_0.pth", "rng_state_1.pth", "model.safetensors", "optimizer.pt"} <= listed
        assert text.count(f"checkpoint-{step} complete") == 1  # one writer: rank 0
    assert text.count("final model saved") == 1

    log2 = tmp_path / "ddp2.log"
    launcher[launcher.index("--master_port") + 1] = str(free_port())
    assert procs.run([str(cfg), "--max_steps", "30"], log2, timeout=120, launcher=launcher) == 0, log2.read_text()[-3000:]
    text2 = log2.read_text()
    assert text2.count("resuming from") == 1 and f"{out}/checkpoint-20" in text2
    assert (out / "checkpoint-30" / "checkpoint-complete.json").exists()
    assert sorted(read_losses(out)) == list(range(1, 31))


def test_empty_output_dir_with_remote_restores_and_resumes(tmp_path, one_thread, capsys):
    first = tmp_path / "first"
    first.mkdir()
    run_in_process(write_config(first, max_steps=20))
    remote = tmp_path / "remote"
    commit_to_remote(first / "out" / "checkpoint-20", remote, "tiny")

    second = tmp_path / "second"
    second.mkdir()
    cfg = write_config(second, max_steps=30, gdrive_backup_dir=str(remote), syncd_wait_at_end=False)
    run_in_process(cfg)
    assert "restored from the remote" in capsys.readouterr().err
    out = second / "out"
    assert (out / "checkpoint-20" / "checkpoint-complete.json").exists()  # restored, then resumed
    state = json.loads((out / "checkpoint-30" / "trainer_state.json").read_text())
    assert state["global_step"] == 30
    assert min(read_losses(out)) == 21  # nothing re-trained before the restored step


def test_folder_with_only_unusable_checkpoints_stops(tmp_path, capsys):
    cfg = write_config(tmp_path)
    half = tmp_path / "out" / "checkpoint-10"
    half.mkdir(parents=True)
    (half / "model.safetensors").write_bytes(b"partial")
    code = main([str(cfg)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("tess-train: error: ") and "holds checkpoints but none is usable" in err[-1]
    assert not (tmp_path / "out" / "loss_log.jsonl").exists()


def test_tiny_cpu_config_builds(tmp_path, monkeypatch):
    """The shipped tiny config builds its data, tokenizer and model (training itself is the demo's)."""
    from trainer.args import parse_config
    from trainer.build import build_trainer

    monkeypatch.chdir(REPO)
    cfg = parse_config([str(REPO / "configs" / "tess_tiny_cpu.json"), "--output_dir", str(tmp_path / "o"),
                        "--cache_dir", str(tmp_path.parent / "hf-cache")])
    run = build_trainer(cfg)
    assert run.trainer.model.config.self_condition == "logits_addition"
    assert run.trainer.model.config.vocab_size == len(run.trainer.processing_class)
    shutil.rmtree(tmp_path / "o", ignore_errors=True)


def test_resave_over_an_older_checkpoint_drops_its_stale_marker(tmp_path, one_thread, monkeypatch):
    """Resumed from step 10 with an older run's complete checkpoint-20 on disk: while step 20 is
    being rewritten, no marker may vouch for that folder."""
    from transformers import Trainer

    cfg = write_config(tmp_path, max_steps=20)
    run_in_process(cfg)
    out = tmp_path / "out"
    assert (out / "checkpoint-20" / "checkpoint-complete.json").exists()

    seen = {}
    original = Trainer._save_checkpoint

    def spy(self, model, trial):
        seen[self.state.global_step] = (out / f"checkpoint-{self.state.global_step}" / "checkpoint-complete.json").exists()
        return original(self, model, trial)

    monkeypatch.setattr(Trainer, "_save_checkpoint", spy)
    run_in_process(cfg, "--resume_from_checkpoint", str(out / "checkpoint-10"))
    assert seen == {20: False}
    assert (out / "checkpoint-20" / "checkpoint-complete.json").exists()
