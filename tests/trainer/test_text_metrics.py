"""The original TESS's generation metrics (trainer/text_metrics.py) on hand-checked inputs."""

from __future__ import annotations

import math

import pytest
import torch
from trainer_testlib import REPO

from trainer import text_metrics as T


@pytest.mark.parametrize("texts, want", [
    (["a b a b"], {"dist-1": 2 / 4, "dist-2": 2 / 4, "dist-3": 2 / 4, "dist-4": 1 / 4}),
    (["a b c", ""], {"dist-1": (1 + 0) / 2, "dist-2": (2 / 3) / 2, "dist-3": (1 / 3) / 2, "dist-4": 0.0}),
    (["x x x x x"], {"dist-1": 1 / 5, "dist-2": 1 / 5, "dist-3": 1 / 5, "dist-4": 1 / 5}),
])
def test_distinct_n(texts, want):
    got = T.distinct_n(texts)
    assert got == pytest.approx(want)


@pytest.mark.parametrize("tokens, repeats", [
    ([1, 2, 3, 1, 2, 3], True),  # a 3-token phrase twice
    ([9, 1, 2, 1, 2], False),  # a 2-token phrase twice: too short to count
    ([5] * 50, False),  # one token 50 times: a 1-token phrase needs more than 50 repeats
    ([5] * 51, True),
    ([1, 2, 3, 4], False),
    ([], False),
])
def test_repetition_rule(tokens, repeats):
    assert T.repeats_at_end(tokens) == repeats


def test_repetition_share_ignores_a_trailing_end_token():
    assert T.repetition([[1, 2, 3, 1, 2, 3, 2], [1, 2, 3, 4]], end_id=2) == 0.5
    assert T.repetition([[1, 2, 3, 1, 2, 3, 2], [1, 2, 3, 4]]) == 0.0


def test_zipf_recovers_a_power_law():
    # token i appears round(1000 / i) times: slope -1 on the log-log plot
    tokens = [i for i in range(1, 30) for _ in range(round(1000 / i))]
    z = T.zipf([tokens])
    assert z["zipf_minus_a"] == pytest.approx(1.0, abs=0.01) and z["zipf_minus_r"] == pytest.approx(1.0, abs=1e-3)
    assert math.isnan(T.zipf([[7, 7]])["zipf_minus_a"])


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    """A random 2-layer GPT-2 over the shipped tokenizer, saved to a folder (no download)."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(REPO / "data" / "tokenizer")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    folder = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, model.eval(), tok


def test_perplexity_matches_the_causal_lm_loss(tiny_gpt2):
    folder, model, tok = tiny_gpt2
    texts = ["Government (Iraq)\tConsult\tMedia (Iraq)", "Police (Kenya)"]
    got = T.perplexities(texts, model, tok, batch_size=2)
    for text, ppl in zip(texts, got, strict=True):
        ids = torch.tensor([[tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"]]])
        with torch.no_grad():
            loss = model(input_ids=ids, labels=ids).loss  # mean next-token loss, one text alone
        assert ppl == pytest.approx(math.exp(loss.item()), rel=1e-5)


def test_sample_metrics_from_a_config_named_model(tiny_gpt2):
    folder, _, tok = tiny_gpt2
    metrics = T.SampleMetrics(tok, str(folder))
    ids = torch.tensor([tok("<s>Media (Iraq)\tConsult</s>", add_special_tokens=False)["input_ids"]])
    span = torch.zeros_like(ids, dtype=torch.bool)
    span[0, 1:5] = True
    out = metrics(ids, span, "eval")
    assert {"eval_dist-1", "eval_repetition", "eval_zipf_minus_a", "eval_perplexity"} <= set(out)
    assert math.isfinite(out["eval_perplexity"]) and out["eval_perplexity"] > 1
    assert "eval_perplexity" not in T.SampleMetrics(tok)(ids, span, "eval")


def test_an_unloadable_perplexity_model_is_one_clear_error(tmp_path):
    from syncd.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot load eval_perplexity_model"):
        T.SampleMetrics(None, str(tmp_path / "no-such-model"))
