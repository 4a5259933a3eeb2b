"""Pure pieces: the schedule, the simplex, and the span masks of each conditional mode."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.data import (
    kg_entity_char_spans,
    mask_from_char_spans,
    prefix_lm_batch_mask,
    span_infilling_batch_mask,
)
from trainer.sampling import entity_exact_match, entity_spans
from trainer.schedule import cosine_alpha_bars, previous_alpha_bars, scaled_timesteps
from trainer.simplex import ids_to_simplex, logits_to_simplex, noisy_simplex, top_p_filter


def test_cosine_schedule_matches_formula():
    n, s = 50, 1e-4
    a = cosine_alpha_bars(n)
    f = lambda t: math.cos(((t / n + s) / (1 + s)) * math.pi / 2) ** 2  # noqa: E731
    assert a.shape == (n,)
    for t in (0, 1, 17, 49):
        assert a[t].item() == pytest.approx(f(t) / f(0), rel=1e-12)
    assert a[0].item() == pytest.approx(1.0)
    assert torch.all(a[1:] < a[:-1])  # strictly more noise as t grows
    prev = previous_alpha_bars(a)
    assert prev[0] == 1.0 and torch.equal(prev[1:], a[:-1])
    assert torch.allclose(scaled_timesteps(torch.tensor([0, 25]), n), torch.tensor([0.0, 0.5]))


def test_ids_to_simplex_is_plus_minus_k():
    ids = torch.tensor([[2, 0], [1, 1]])
    s = ids_to_simplex(ids, 3, 5.0)
    assert s.shape == (2, 2, 3)
    assert torch.equal(s[0, 0], torch.tensor([-5.0, -5.0, 5.0]))
    assert torch.equal(s[1, 1], torch.tensor([-5.0, 5.0, -5.0]))


@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.0])
def test_noisy_simplex_is_the_forward_process(alpha):
    k, vocab = 5.0, 7
    ids = torch.tensor([3, 1, 6, 0])
    a = torch.full((4,), alpha, dtype=torch.float64)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    x = noisy_simplex(ids, a, vocab, k, generator=g1)
    eps = torch.randn((4, vocab), generator=g2)
    expected = math.sqrt(alpha) * ids_to_simplex(ids, vocab, k) + math.sqrt(1 - alpha) * k * eps
    assert x.shape == (4, vocab)
    assert torch.allclose(x, expected, atol=1e-5)


def test_noisy_simplex_uses_the_global_generator_by_default():
    ids = torch.tensor([1, 2])
    a = torch.tensor([0.3, 0.9])
    torch.manual_seed(3)
    x1 = noisy_simplex(ids, a, 5, 5.0)
    torch.manual_seed(3)
    x2 = noisy_simplex(ids, a, 5, 5.0)
    assert torch.equal(x1, x2)


def test_logits_to_simplex_argmax_and_sample():
    logits = torch.tensor([[0.1, 3.0, -1.0], [2.0, 0.0, 0.5]])
    s, ids = logits_to_simplex(logits, 5.0)
    assert ids.tolist() == [1, 0]
    assert torch.equal(s, ids_to_simplex(ids, 3, 5.0))
    g = torch.Generator().manual_seed(0)
    _, sampled = logits_to_simplex(logits * 100, 5.0, sample=True, generator=g)  # near one-hot
    assert sampled.tolist() == [1, 0]


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = top_p_filter(probs, 0.7)
    assert torch.allclose(kept, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    assert torch.allclose(top_p_filter(probs, 0.01), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))


def test_kg_entity_spans_are_head_and_tail_of_each_quad():
    line = "Police (India)\tMake statement\tCitizen (India)\t2014-01-02 ||| Xi Jinping\tConsult\tShinzo Abe\t2014-01-03"
    spans = kg_entity_char_spans(line)
    assert [line[s:e] for s, e in spans] == ["Police (India)", "Citizen (India)", "Xi Jinping", "Shinzo Abe"]
    assert kg_entity_char_spans("not a quad ||| a\tb\tc") == []  # malformed quads stay context


def test_mask_from_char_spans_marks_overlapping_tokens_only():
    offsets = [(0, 0), (0, 6), (7, 9), (9, 10), (10, 14), (0, 0)]  # <s> ... </s>
    assert mask_from_char_spans(offsets, [(0, 6), (10, 14)]) == [False, True, False, False, True, False]


def test_prefix_lm_batch_mask_keeps_s_and_a_short_prefix_as_context():
    lengths = torch.tensor([10, 7, 4])
    g = torch.Generator().manual_seed(0)
    prefixes = set()
    for _ in range(30):
        m = prefix_lm_batch_mask(lengths, 12, g)
        for row, length in zip(m.tolist(), lengths.tolist(), strict=True):
            first = row.index(True)
            assert not any(row[:first]) and all(row[first:length]) and not any(row[length:])
            prefixes.add((length, first - 1))
    # the original's draw: p in [1, (length - 1) // 2), and 1 below length 5
    assert {p for n, p in prefixes if n == 10} == {1, 2, 3} and {p for n, p in prefixes if n == 4} == {1}
    assert {p for n, p in prefixes if n == 7} == {1, 2}
    fixed = prefix_lm_batch_mask(lengths, 12, evaluating=True)
    assert fixed[0].tolist().index(True) == 1 + 4 and fixed[1].tolist().index(True) == 1 + 3
    sized = prefix_lm_batch_mask(lengths, 12, evaluating=True, eval_context_size=3)
    assert [r.index(True) for r in sized.tolist()] == [3, 3, 3]


def test_span_infilling_batch_mask_ratio_and_spans():
    m = span_infilling_batch_mask(torch.tensor([202, 20]), 210, 0.15, 3.0, torch.Generator().manual_seed(0))
    assert int(m[0].sum()) == 30 and int(m[1].sum()) == 3  # int(length * ratio) tokens
    assert not m[0, 202:].any() and not m[1, 20:].any()  # nothing past the row's length
    runs = [b - a for a, b in entity_spans(m[:1])[0]]
    assert len(runs) == 10 and sum(runs) == 30  # int(30 / 3) spans
    again = span_infilling_batch_mask(torch.tensor([202, 20]), 210, 0.15, 3.0, torch.Generator().manual_seed(1))
    assert not torch.equal(m, again)


def test_entity_exact_match_counts_whole_runs():
    ref = torch.tensor([[0, 5, 6, 0, 7, 8, 0]])
    mask = torch.tensor([[0, 1, 1, 0, 1, 1, 0]]).bool()
    pred = torch.tensor([[0, 5, 6, 0, 7, 9, 0]])
    assert entity_spans(mask) == [[(1, 3), (4, 6)]]
    assert entity_exact_match(pred, ref, mask) == (1, 2)
