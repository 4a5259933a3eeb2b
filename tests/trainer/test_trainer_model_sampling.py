"""The TESS denoiser and the reverse-diffusion sampler on a very small RoBERTa."""

from __future__ import annotations

import pytest
import torch
from transformers import RobertaConfig

from trainer.model import TessRobertaModel
from trainer.sampling import SamplingOptions, generate, generate_unconditional
from trainer.simplex import noisy_simplex

VOCAB = 50


def tiny_model(mode=None, zeros=False, seed=0) -> TessRobertaModel:
    torch.manual_seed(seed)
    cfg = RobertaConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=40, pad_token_id=1,
                        self_condition=mode, self_condition_zeros_after_softmax=zeros)
    return TessRobertaModel(cfg).eval()


def batch(B=3, L=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (B, L), generator=g)
    span = torch.rand((B, L), generator=g) < 0.5
    span[:, 0] = True  # at least one generated position per row
    return ids, span, torch.ones_like(ids)


def test_input_embedding_is_the_tied_word_embedding_matrix():
    m = tiny_model("logits_addition")
    E = m.roberta.embeddings.word_embeddings.weight
    assert m.lm_head.decoder.weight.data_ptr() == E.data_ptr()
    n_E = sum(p.numel() for p in m.parameters() if p.shape == E.shape)
    assert n_E == E.numel()  # one V x H matrix in the model, not two


@pytest.mark.parametrize("mode", [None, "logits_addition", "logits_mean", "logits_with_projection"])
def test_forward_shapes_and_loss(mode):
    m = tiny_model(mode).train()
    ids, span, attn = batch()
    labels = ids[span]
    x = noisy_simplex(labels, torch.full(labels.shape, 0.5), VOCAB, 5.0)
    out = m(input_ids=ids, simplex=x, timesteps=torch.rand(3), span_mask=span, attention_mask=attn)
    assert out.logits.shape == (int(span.sum()), VOCAB) and out.loss is None
    out = m(input_ids=ids, simplex=x, timesteps=torch.rand(3), span_mask=span, attention_mask=attn,
            previous_pred=out.logits.detach() if mode else None, labels=labels)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert m.roberta.embeddings.word_embeddings.weight.grad is not None
    assert m.timestep_embed.weight.grad is not None


@pytest.mark.parametrize("mode", ["logits_addition", "logits_mean", "logits_with_projection"])
def test_self_conditioning_changes_the_prediction(mode):
    m = tiny_model(mode)
    ids, span, attn = batch()
    n = int(span.sum())
    x = torch.randn(n, VOCAB)
    t = torch.rand(3)
    plain = m(input_ids=ids, simplex=x, timesteps=t, span_mask=span, attention_mask=attn).logits
    cond = m(input_ids=ids, simplex=x, timesteps=t, span_mask=span, attention_mask=attn,
             previous_pred=torch.randn(n, VOCAB) * 5).logits
    assert not torch.allclose(plain, cond)


def test_zeros_after_softmax_differs_from_uniform():
    ids, span, attn = batch()
    x = torch.randn(int(span.sum()), VOCAB)
    t = torch.rand(3)
    uniform = tiny_model("logits_addition", zeros=False)
    zeros = tiny_model("logits_addition", zeros=True)
    a = uniform(input_ids=ids, simplex=x, timesteps=t, span_mask=span, attention_mask=attn).logits
    b = zeros(input_ids=ids, simplex=x, timesteps=t, span_mask=span, attention_mask=attn).logits
    assert not torch.allclose(a, b)


def test_context_positions_see_clean_tokens_only():
    """Changing the noisy simplex must not change what the model sees at context positions."""
    m = tiny_model("logits_addition")
    ids, span, attn = batch()
    captured = []
    m.roberta.embeddings.register_forward_hook(lambda mod, inp, out: captured.append(out))
    x = torch.randn(int(span.sum()), VOCAB)
    t = torch.rand(3)
    m(input_ids=ids, simplex=x, timesteps=t, span_mask=span, attention_mask=attn)
    m(input_ids=ids, simplex=x * 3, timesteps=t * 0, span_mask=span, attention_mask=attn)
    a, b = captured
    assert torch.allclose(a[~span], b[~span])
    assert not torch.allclose(a[span], b[span])


@pytest.mark.parametrize("sample", [False, True])
def test_conditional_sampling_keeps_context_verbatim(sample):
    m = tiny_model("logits_addition")
    ids, span, attn = batch(B=4, L=12)
    opts = SamplingOptions(simplex_value=5.0, num_steps=5, temperature=1.0, top_p=0.9 if sample else None,
                           sample=sample)
    out = generate(m, ids, span, attn, opts, torch.Generator().manual_seed(0))
    assert out.shape == ids.shape and out.dtype == ids.dtype
    assert torch.equal(out[~span], ids[~span])
    assert ((out[span] >= 0) & (out[span] < VOCAB)).all()
    again = generate(m, ids, span, attn, opts, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # a seeded generator makes samples reproducible


def test_unconditional_sampling_returns_requested_count_and_length():
    m = tiny_model("logits_with_projection")
    out = generate_unconditional(m, num_samples=5, length=9, options=SamplingOptions(num_steps=3),
                                 generator=torch.Generator().manual_seed(1))
    assert out.shape == (5, 9)
    assert ((out >= 0) & (out < VOCAB)).all()
