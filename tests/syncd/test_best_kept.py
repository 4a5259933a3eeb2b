"""The best checkpoint survives remote retention, end to end with a real Trainer.

The Trainer evaluates at every save with ``load_best_model_at_end`` and ranks
``eval_loss`` with ``greater_is_better``: the loss only falls, so the first evaluation
(checkpoint-5) stays the best while training goes on to checkpoint-30.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.conftest import stop_gracefully, syncd, wait_for, write_config
from tests.syncd.test_e2e_folder import assert_same_files, committed, make_config


def _folders(run: Path) -> list[str]:
    return sorted((p.name for p in run.iterdir() if p.is_dir()), key=lambda n: int(n.split("-")[1]))


def test_best_is_kept_beside_the_newest_restored_with_best_and_learned_from_the_remote(tmp_path, procs):
    cfg = make_config(tmp_path, backup_keep_last=3, save_total_limit=2)
    out, run = tmp_path / "out", tmp_path / "remote" / "run"
    daemon = procs.syncd_run(cfg, cwd=tmp_path)
    # The trainer keeps everything itself: what goes is syncd's choice alone.
    train = procs.hf_train(out, "--max-steps", "30", "--save-steps", "5", "--save-total-limit", "50",
                           "--best-first", cwd=tmp_path)
    assert train.wait(180) == 0, (tmp_path / "train-1.log").read_text()[-3000:]
    r = syncd("wait", str(cfg), "--timeout", "60", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    state = json.loads((out / "checkpoint-30" / "trainer_state.json").read_text())
    assert Path(state["best_model_checkpoint"]).name == "checkpoint-5"  # an old step, as intended

    # The remote holds the newest three and the best, nothing else of ours; locally the
    # newest two (save_total_limit) and the best.
    newest_and_best = ["checkpoint-5", "checkpoint-20", "checkpoint-25", "checkpoint-30"]
    wait_for(lambda: _folders(run) == newest_and_best, 30, what="remote pruned to the newest three and the best")
    assert committed(run) == newest_and_best
    wait_for(lambda: sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-25", "checkpoint-30",
                                                                       "checkpoint-5"], 30,
             what="local retention to keep the newest two and the best")
    for name in ("checkpoint-5", "checkpoint-25", "checkpoint-30"):
        assert_same_files(out / name, run / name)

    r = syncd("status", str(cfg), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["best_step"] == 5
    r = syncd("status", str(cfg), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    marked = [ln.split()[0:2] for ln in r.stdout.splitlines() if "(best)" in ln]
    assert marked == [["checkpoint-5", "(best)"]], r.stdout

    r = syncd("restore", str(cfg), "--best", "--to", str(tmp_path / "restored"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [p.name for p in (tmp_path / "restored").glob("checkpoint-*")] == ["checkpoint-5"]
    assert_same_files(tmp_path / "restored" / "checkpoint-5", run / "checkpoint-5")
    assert stop_gracefully(daemon) == 0

    # Nothing local any more (the checkpoints wiped; the folder's run record kept): the
    # best is known only from the newest committed trainer_state.json on the remote. With
    # backup_keep_last 2, checkpoint-20 goes and the best stays.
    for p in out.glob("checkpoint-*"):
        shutil.rmtree(p)
    keys = json.loads(cfg.read_text())
    write_config(cfg, **{**keys, "backup_keep_last": 2})
    daemon = procs.syncd_run(cfg, cwd=tmp_path)
    wait_for(lambda: _folders(run) == ["checkpoint-5", "checkpoint-25", "checkpoint-30"], 30,
             what="checkpoint-20 pruned, the best kept")
    status = json.loads((out / ".syncd" / "status.json").read_text())
    assert status["best_step"] == 5 and not list(out.glob("checkpoint-*"))
    assert stop_gracefully(daemon) == 0
