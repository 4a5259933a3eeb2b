"""Reverse diffusion: from k * N(0, I) to tokens, TESS's sampler.

For t = M-1 .. 0 on the inference schedule (M = ``num_inference_diffusion_steps``):

    logits = model(x_t, t / M, previous logits)          (self-conditioning)
    s0     = project(logits) to a +-k simplex corner     (argmax, or sampled with T / top-p)
    x_t-1  = sqrt(a_{t-1}) * s0 + sqrt(1 - a_{t-1}) * k * eps,   a_{-1} = 1

Only the positions to generate carry a simplex (packed rows, see ``model.py``);
context positions are copied from the input verbatim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .schedule import cosine_alpha_bars, previous_alpha_bars
from .simplex import logits_to_simplex


@dataclass(frozen=True)
class SamplingOptions:
    simplex_value: float = 5.0  # k, as in training
    num_steps: int = 100  # M
    temperature: float = 1.0
    top_p: float | None = None
    sample: bool = False  # argmax projection unless asked to sample


@torch.no_grad()
def generate(
    model,
    input_ids: torch.Tensor,
    span_mask: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    options: SamplingOptions = SamplingOptions(),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Fill the ``span_mask`` positions of ``input_ids``.  (B, L), (B, L) bool -> (B, L) ids"""
    k = options.simplex_value
    span_mask = span_mask.bool()
    vocab = model.config.vocab_size
    device = input_ids.device
    n = int(span_mask.sum())
    out = input_ids.clone()
    if n == 0:
        return out
    alpha_prev = previous_alpha_bars(cosine_alpha_bars(options.num_steps))  # (M,)
    x = torch.randn((n, vocab), generator=generator, device=device) * k  # (n, V)
    previous = None
    logits = None
    for t in range(options.num_steps - 1, -1, -1):
        timesteps = torch.full((input_ids.shape[0],), t / options.num_steps, device=device)  # (B,)
        logits = model(input_ids=input_ids, simplex=x, timesteps=timesteps, span_mask=span_mask,
                       attention_mask=attention_mask, previous_pred=previous).logits  # (n, V)
        previous = logits
        if t == 0:
            break
        s0, _ = logits_to_simplex(logits, k, options.temperature, options.top_p, options.sample, generator)
        a = float(alpha_prev[t])
        noise = torch.randn(s0.shape, generator=generator, device=device, dtype=s0.dtype)  # (n, V)
        x = s0.mul_(math.sqrt(a)).add_(noise, alpha=math.sqrt(1 - a) * k)
    out[span_mask] = logits.argmax(dim=-1)
    return out


def generate_unconditional(model, num_samples: int, length: int, options: SamplingOptions = SamplingOptions(),
                           generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """``num_samples`` sequences of ``length`` tokens, every position generated.  -> (num_samples, length)"""
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    ids = torch.full((num_samples, length), pad, dtype=torch.long, device=device)
    mask = torch.ones((num_samples, length), dtype=torch.bool, device=device)
    return generate(model, ids, mask, torch.ones_like(ids), options, generator)


def entity_spans(span_mask: torch.Tensor) -> list[list[tuple[int, int]]]:
    """Runs of consecutive generated positions in each row: one entity each in kg_quad.  (B, L) -> spans"""
    out = []
    for row in span_mask.bool().tolist():
        spans, start = [], None
        for i, m in enumerate([*row, False]):
            if m and start is None:
                start = i
            elif not m and start is not None:
                spans.append((start, i))
                start = None
        out.append(spans)
    return out


def entity_exact_match(predicted: torch.Tensor, reference: torch.Tensor, span_mask: torch.Tensor) -> tuple[int, int]:
    """(entities generated exactly right, entities) over every run of generated positions."""
    right = total = 0
    for b, spans in enumerate(entity_spans(span_mask)):
        for s, e in spans:
            total += 1
            right += bool(torch.equal(predicted[b, s:e], reference[b, s:e]))
    return right, total
