"""The evaluation of a kg_quad run logs kg-rank and, when asked, the text metrics."""

from __future__ import annotations

import json

from trainer_testlib import write_config


def test_evaluation_logs_kg_rank_and_text_metrics(tmp_path, procs):
    cfg = write_config(tmp_path, max_steps=2, eval_strategy="steps", eval_steps=2, save_steps=2,
                       eval_kg_rank_queries=12, eval_kg_rank_neg_k=4, eval_kg_rank_t=90, eval_text_metrics=True)
    log = tmp_path / "train.log"
    assert procs.run([str(cfg)], log) == 0, log.read_text()[-3000:]
    state = json.loads((tmp_path / "out" / "checkpoint-2" / "trainer_state.json").read_text())
    evals = [h for h in state["log_history"] if "eval_loss" in h]
    assert len(evals) == 1
    e = evals[0]
    for key in ("eval_kg_mrr", "eval_kg_mr", "eval_kg_hits@1", "eval_kg_hits@10", "eval_kg_random_mrr",
                "eval_kg_frequency_mrr", "eval_kg_recurrence_mrr", "eval_dist-1", "eval_repetition",
                "eval_zipf_minus_a"):
        assert key in e, (key, sorted(e))
    assert 0 < e["eval_kg_mrr"] <= 1 and 1 <= e["eval_kg_mr"] <= 5  # 4 negatives: ranks 1..5
    assert abs(e["eval_kg_random_mrr"] - (1 + 1 / 2 + 1 / 3 + 1 / 4 + 1 / 5) / 5) < 1e-9  # 5 candidates, all tied
    assert "kg-rank at t = 90 on 12 validation queries" in log.read_text()


def test_a_bad_eval_kg_rank_timestep_stops_before_training(tmp_path, procs):
    cfg = write_config(tmp_path, eval_strategy="steps", eval_steps=2, eval_kg_rank_t=100)
    log = tmp_path / "train.log"
    assert procs.run([str(cfg)], log) == 2
    text = log.read_text()
    assert "eval_kg_rank_t must be in [0, num_diffusion_steps 100), not 100" in text
    assert not (tmp_path / "out" / "checkpoint-2").exists()
