"""The ranking maths of kg_rank.py against ranks worked out by hand on five quads.

The five quads (entities A..E):

    0  A r1 B 2014-01-01
    1  A r1 C 2014-01-01   another right tail of (A, r1, ?, 01-01): filtered from query 0's list
    2  A r1 D 2014-01-02   same (A, r1) a day later: NOT filtered from queries 0 and 1 (time-aware)
    3  E r2 B 2014-01-01
    4  C r2 B 2014-01-01   another right head of (?, r2, B, 01-01): filtered from query 3's list

Every query ranks all five entities minus the filtered ones. A table gives each
candidate's score; the expected (better, tied) pairs below were counted by hand.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from syncd.errors import ConfigError
from trainer import kg_rank as K

QUADS = [("A", "r1", "B", "2014-01-01"), ("A", "r1", "C", "2014-01-01"), ("A", "r1", "D", "2014-01-02"),
         ("E", "r2", "B", "2014-01-01"), ("C", "r2", "B", "2014-01-01")]

# (mode, quad) -> the score of each entity; the answer's is marked in the comment
SCORES = {
    ("tail", 0): dict(A=.9, B=.5, C=.99, D=.5, E=.1),  # B: A above, D tied; C (.99) filtered
    ("tail", 1): dict(A=.7, B=.99, C=.7, D=.7, E=.7),  # C: tied with A, D, E; B (.99) filtered
    ("tail", 2): dict(A=.1, B=.9, C=.95, D=.8, E=.1),  # D: B and C above (not filtered: other date)
    ("tail", 3): dict(A=.1, B=.6, C=.1, D=.1, E=.1),  # B: alone on top
    ("tail", 4): dict(A=.3, B=.2, C=.3, D=.1, E=.2),  # B: A and C above, E tied
    ("head", 0): dict(A=.5, B=.4, C=.4, D=.4, E=.4),  # A: on top
    ("head", 1): dict(A=.1, B=.4, C=.4, D=.4, E=.4),  # A: last of five
    ("head", 2): dict(A=.5, B=.5, C=.5, D=.5, E=.5),  # A: all five tied
    ("head", 3): dict(A=.3, B=.9, C=1., D=.0, E=.3),  # E: B above, A tied; C (1.0) filtered
    ("head", 4): dict(A=.3, B=.9, C=.3, D=.0, E=.99),  # C: B above, A tied; E (.99) filtered
}
EXPECTED = {  # (mode, quad) -> (better, tied, candidates after filtering)
    ("tail", 0): (1, 1, 4), ("tail", 1): (0, 3, 4), ("tail", 2): (2, 0, 5), ("tail", 3): (0, 0, 5),
    ("tail", 4): (2, 1, 5), ("head", 0): (0, 0, 5), ("head", 1): (4, 0, 5), ("head", 2): (0, 4, 5),
    ("head", 3): (1, 1, 4), ("head", 4): (1, 1, 4),
}


def table_scores(plan: K.RankingPlan) -> list[list[float]]:
    return [[SCORES[(q.mode, QUADS.index(q.quad))][c] for c in cands]
            for q, cands in zip(plan.queries, plan.candidates, strict=True)]


def hand_metrics(pairs) -> dict[str, Fraction]:
    """MR, MRR, Hits@k from (better, tied) with exact fractions: the answer's position is uniform over the tie."""
    def positions(b, t):
        return range(b + 1, b + t + 2)

    n = len(pairs)
    out = {"MR": sum(Fraction(sum(positions(b, t)), t + 1) for b, t in pairs) / n,
           "MRR": sum(sum(Fraction(1, r) for r in positions(b, t)) / (t + 1) for b, t in pairs) / n}
    for k in (1, 3, 10):
        out[f"Hits@{k}"] = sum(Fraction(sum(r <= k for r in positions(b, t)), t + 1) for b, t in pairs) / n
    return out


@pytest.mark.parametrize("mode", ["tail", "head", "both"])
def test_ranks_on_five_quads_match_the_hand_count(mode):
    plan = K.plan_ranking(QUADS, mode)
    assert [q.mode for q in plan.queries] == (["tail"] * 5 if mode != "head" else []) + \
        (["head"] * 5 if mode != "tail" else [])
    ranks = K.rank_all(plan, table_scores(plan))
    keys = [(q.mode, QUADS.index(q.quad)) for q in plan.queries]
    assert [(r.better, r.tied) for r in ranks] == [EXPECTED[k][:2] for k in keys]
    assert [len(c) for c in plan.candidates] == [EXPECTED[k][2] for k in keys]
    assert all(c[0] == q.answer for q, c in zip(plan.queries, plan.candidates, strict=True))
    got = K.summarize(ranks)
    want = hand_metrics([EXPECTED[k][:2] for k in keys])
    for name, value in want.items():
        assert got[name] == pytest.approx(float(value), abs=1e-12), name


def test_hand_worked_values_of_single_ranks():
    # tail query 0: A above, D tied -> position 2 or 3
    r = K.rank_of([.5, .9, .5, .1])
    assert (r.better, r.tied) == (1, 1)
    assert r.mean == 2.5 and r.reciprocal == pytest.approx(5 / 12) and r.hits(1) == 0 and r.hits(3) == 1
    # tail query 1: four-way tie -> positions 1..4
    r = K.rank_of([.7, .7, .7, .7])
    assert r.mean == 2.5 and r.reciprocal == pytest.approx(25 / 48) and r.hits(1) == .25 and r.hits(3) == .75
    # NaN is the worst score, for the answer and for the others
    assert K.rank_of([math.nan, 0.0, -1.0]) == K.Rank(2, 0)
    assert K.rank_of([0.0, math.nan]) == K.Rank(0, 0)


def test_time_aware_filter_removes_only_same_date_answers():
    plan = K.plan_ranking(QUADS, "tail")
    by_key = {(q.mode, QUADS.index(q.quad)): c for q, c in zip(plan.queries, plan.candidates, strict=True)}
    assert "C" not in by_key[("tail", 0)] and "B" not in by_key[("tail", 1)]
    assert {"B", "C"} <= set(by_key[("tail", 2)])  # true on 01-01, asked on 01-02
    assert plan.filtered_out == 2
    # a known quad from outside the test file filters too
    extra = [("E", "r2", "D", "2014-01-01")]
    plan = K.plan_ranking(QUADS, "tail", known=extra)
    assert "D" not in plan.candidates[3] and plan.filtered_out == 3


def test_sampled_negatives_are_seeded_filtered_and_exclude_the_answer():
    entities = [f"X{i}" for i in range(50)]
    a = K.plan_ranking(QUADS, "both", entities=entities, neg_k=8, seed=3)
    b = K.plan_ranking(QUADS, "both", entities=entities, neg_k=8, seed=3)
    c = K.plan_ranking(QUADS, "both", entities=entities, neg_k=8, seed=4)
    assert a.candidates == b.candidates and a.candidates != c.candidates
    for q, cands in zip(a.queries, a.candidates, strict=True):
        assert len(cands) == 9 and cands[0] == q.answer and q.answer not in cands[1:]
        assert len(set(cands)) == 9
    assert "C" not in a.candidates[0]  # filtered before sampling


def test_max_queries_is_a_seeded_sample_in_file_order():
    plan = K.plan_ranking(QUADS, "both", max_queries=4, seed=1)
    assert len(plan.queries) == 4
    order = K.make_queries(QUADS, "both")
    idx = [order.index(q) for q in plan.queries]
    assert idx == sorted(idx) and plan.queries == K.plan_ranking(QUADS, "both", max_queries=4, seed=1).queries


def test_baselines_random_is_the_exact_expectation_and_counts_come_from_training_only():
    plan = K.plan_ranking(QUADS, "tail")
    train = [("A", "r1", "C", "2013-05-05"), ("A", "r1", "C", "2013-05-06"), ("Z", "r1", "D", "2013-01-01")]
    scores = K.baseline_scores(plan, train)
    random_metrics = K.summarize(K.rank_all(plan, scores["random"]))
    n = [len(c) for c in plan.candidates]
    assert random_metrics["MR"] == pytest.approx(sum((m + 1) / 2 for m in n) / len(n))
    # frequency: answers of r1 (tail side) in training: C twice, D once
    assert dict(zip(plan.candidates[2], scores["frequency"][2], strict=True)) == \
        {"D": 1.0, "A": 0.0, "B": 0.0, "C": 2.0, "E": 0.0}
    # recurrence: (A, r1, ?) in training: C twice; (Z, r1, D) is another head's
    assert dict(zip(plan.candidates[2], scores["recurrence"][2], strict=True)) == \
        {"D": 0.0, "A": 0.0, "B": 0.0, "C": 2.0, "E": 0.0}
    assert "frequency" not in K.baseline_scores(plan, None)


def test_text_with_places_the_candidate_in_the_training_format():
    q = K.Query(("Police (Iraq)", "Arrest", "Citizen (Iraq)", "2014-03-01"), "tail")
    text, (s, e) = q.text_with("Media (Iran)")
    assert text == "Police (Iraq)\tArrest\tMedia (Iran)\t2014-03-01" and text[s:e] == "Media (Iran)"
    text, (s, e) = K.Query(q.quad, "head").text_with("Court (Iraq)")
    assert text == "Court (Iraq)\tArrest\tCitizen (Iraq)\t2014-03-01" and text[s:e] == "Court (Iraq)"


@pytest.mark.parametrize("line, problem", [
    ("A\tr\tB", "not a quad"),
    ("A\tr\tB\t2014-01-01 ||| C\tr\t\t2014-01-02", "not a quad"),
    ("A\tr\tB\t2014\textra", "not a quad"),
])
def test_malformed_quad_lines_name_the_line(tmp_path, line, problem):
    f = tmp_path / "q.txt"
    f.write_text("A\tr\tB\t2014-01-01\n" + line + "\n")
    with pytest.raises(ConfigError, match=rf"line 2: {problem}"):
        K.read_quads(f)


def test_reading_keeps_several_quads_a_line_and_skips_blank_lines(tmp_path):
    f = tmp_path / "q.txt"
    f.write_text("A\tr\tB\t2014-01-01 ||| C\tr\tD\t2014-01-02\n\nE\tr\tF\t2014-01-03\n")
    assert K.read_quads(f) == [("A", "r", "B", "2014-01-01"), ("C", "r", "D", "2014-01-02"),
                               ("E", "r", "F", "2014-01-03")]


@pytest.mark.parametrize("schedule", ["squaredcos_improved_ddpm", "linear", None])
def test_scores_noise_with_the_schedule_the_model_learned(schedule):
    """kg-rank's one-step noise is the model's own schedule, read from its config."""
    from types import SimpleNamespace

    from trainer.kg_rank import scoring_alpha_bar
    from trainer.schedule import alpha_bars

    config = SimpleNamespace(num_diffusion_steps=500, beta_schedule=schedule)
    want = alpha_bars(schedule or "squaredcos_improved_ddpm", 500)[60]  # None: saved before the key existed
    assert scoring_alpha_bar(config, 60) == pytest.approx(float(want))
    if schedule == "linear":
        assert scoring_alpha_bar(config, 60) != pytest.approx(float(alpha_bars("squaredcos_improved_ddpm", 500)[60]))
