"""`tess-train plot`: the PNG shows exactly the run's files (loss log, eval history,
resumes, syncd's commits), compared series by series rather than by pixels."""

from __future__ import annotations

import json

import pytest
from trainer_testlib import read_losses, write_config

from syncd.cli import main as syncd_main
from trainer.__main__ import main as tess_main
from trainer.plot import write_plot


@pytest.fixture(scope="module")
def synced_resumed_run(tmp_path_factory):
    """10 steps with syncd running beside it, then a resume to 16: the demo in small."""
    import torch

    tmp = tmp_path_factory.mktemp("plotrun")
    cfg = write_config(tmp, max_steps=10, eval_strategy="steps", eval_steps=8, save_steps=5,
                       gdrive_backup_dir=str(tmp / "remote"), syncd_settle_seconds=1,
                       syncd_interval_seconds=1, syncd_wait_timeout_seconds=60)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    assert syncd_main(["start", str(cfg)]) == 0
    try:
        assert tess_main([str(cfg)]) == 0
        assert tess_main([str(cfg), "--max_steps", "16"]) == 0  # resumes from checkpoint-10
        assert syncd_main(["wait", str(cfg), "--timeout", "60"]) == 0
    finally:
        syncd_main(["stop", str(cfg)])
        torch.set_num_threads(before)
    return tmp / "out"


def _line(fig, gid):
    found = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_gid() == gid]
    assert found, f"no line {gid!r} in the figure"
    return found


def test_plot_draws_the_loss_log_evals_resume_and_commits(synced_resumed_run, capsys):
    out = synced_resumed_run
    assert tess_main(["plot", str(out)]) == 0
    assert f"wrote {out / 'loss.png'}" in capsys.readouterr().out
    png = (out / "loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"

    path, fig, _data = write_plot(out, out / "again.png")
    # Training loss: every step of loss_log.jsonl, in order, nothing else.
    losses = read_losses(out)
    (train,) = _line(fig, "train_loss")
    assert list(train.get_xdata()) == sorted(losses) == list(range(1, 17))
    assert list(train.get_ydata()) == [losses[s] for s in sorted(losses)]
    # Eval loss and the entity metric: the newest checkpoint's log_history.
    history = json.loads((out / "checkpoint-16" / "trainer_state.json").read_text())["log_history"]
    evals = {h["step"]: h for h in history if "eval_loss" in h}
    steps = sorted(evals)
    assert steps[0] == 8 and steps[-1] == 16  # every eval_steps, and where each run ended
    (ev,) = _line(fig, "eval_loss")
    assert list(ev.get_xdata()) == steps
    assert list(ev.get_ydata()) == [evals[s]["eval_loss"] for s in steps]
    (em,) = _line(fig, "eval_entity_exact_match")
    assert list(em.get_ydata()) == [evals[s]["eval_entity_exact_match"] for s in steps]
    # The resume at step 10: a dashed line on both panels.
    resumed = _line(fig, "resumed")
    assert len(resumed) == 2 and all(list(r.get_xdata()) == [10, 10] for r in resumed)
    # Commits: the checkpoints syncd committed (it records each one), the last among them.
    committed_names = {p.stem for p in (out / ".syncd" / "state" / "committed").glob("checkpoint-*.json")}
    (ticks,) = _line(fig, "committed")
    assert sorted(ticks.get_xdata()) == sorted(int(n.split("-")[1]) for n in committed_names)
    assert 16 in ticks.get_xdata() and set(ticks.get_xdata()) <= {5, 10, 15, 16}
    (final,) = _line(fig, "final_committed")
    assert list(final.get_xdata()) == [16]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_of_a_folder_without_a_loss_log_is_one_line(tmp_path, capsys):
    assert tess_main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no loss_log.jsonl" in err


def test_plot_skips_a_torn_line_and_marks_a_log_that_starts_after_a_restore(tmp_path):
    # A run restored from the remote into a fresh folder logs only the steps after it.
    lines = [json.dumps({"step": s, "loss": 1.0 / s}) for s in range(41, 46)] + ['{"step": 46, "lo']
    (tmp_path / "loss_log.jsonl").write_text("\n".join(lines))
    _path, fig, data = write_plot(tmp_path)
    (train,) = _line(fig, "train_loss")
    assert list(train.get_xdata()) == [41, 42, 43, 44, 45]
    assert data.resumed_at == [40]
    assert not data.eval_metrics and len(fig.axes) == 1
