"""Reverse diffusion: from k * N(0, I) to tokens, TESS's sampler.

For t = M-1 .. 0 on the inference schedule (M = ``num_inference_diffusion_steps``):

    logits = model(x_t, t / M, previous)                 (previous = zeros at the first step)
    logits = guided(logits)                              (classifier-free guidance, when asked)
    previous = logits, or its simplex corner             (the self-conditioning input)
    s0     = project(logits) to a +-k simplex corner     (argmax, or sampled with T / top-p)
    s0     = clamp(s0, -1, 1)                            (only with clip_sample)
    x_t-1  = sqrt(a_{t-1}) * s0 + sqrt(1 - a_{t-1}) * k * eps,   a_{-1} = 1

and the tokens are the argmax of the last logits. Guidance (the original's
simplex_ddpm.py): with scale g > 1 in a conditional mode, a second pass sees only
empty tokens (``TessRobertaModel.unconditional_logits``) and the two combine as
softmax(u) + g (softmax(c) - softmax(u)), or u + g (c - u) without
``guidance_softmax_combination``; self-conditioning keeps the conditional logits.

Only the positions to generate carry a simplex (packed rows, see ``model.py``);
context positions are copied from the input verbatim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .model import PROJECTED_PREVIOUS_MODES
from .schedule import alpha_bars, previous_alpha_bars
from .simplex import ids_to_simplex, sample_ids


@dataclass(frozen=True)
class SamplingOptions:
    simplex_value: float = 5.0  # k, as in training
    num_steps: int = 100  # M
    temperature: float = 1.0
    top_p: float | None = None
    sample: bool = False  # shorthand for sampling_type "sample"
    sampling_type: str | None = None  # argmax, sample or top_p (see simplex.sample_ids); None: from ``sample``
    beta_schedule: str = "squaredcos_improved_ddpm"
    clip_sample: bool = False  # clamp the projected simplex to [-1, 1], as the original's scheduler
    guidance_scale: float = 1.0  # classifier-free guidance when > 1 and ``conditional``
    guidance_softmax_combination: bool = True
    conditional: bool = False  # the positions not generated are a condition (not unconditional mode)

    @property
    def kind(self) -> str:
        return self.sampling_type or ("sample" if self.sample else "argmax")

    @property
    def guided(self) -> bool:
        return self.guidance_scale > 1.0 and self.conditional


def previous_prediction(mode: str, logits: torch.Tensor, k: float, sampling_type: str, temperature: float,
                        top_p: float | None, generator: torch.Generator | None = None) -> torch.Tensor:
    """What self-conditioning feeds back (the original's ``self_condition_preds``).  (n, V) -> (n, V)

    The logits themselves, or for the ``*_with_projection*`` modes their +-k simplex corner
    chosen as the sampler chooses.
    """
    logits = logits.detach()
    if mode in PROJECTED_PREVIOUS_MODES:
        ids = sample_ids(logits, sampling_type, temperature, top_p, generator)
        return ids_to_simplex(ids, logits.shape[-1], k, logits.dtype)
    return logits


def guide(conditional: torch.Tensor, unconditional: torch.Tensor, scale: float, softmax_combination: bool):
    """Classifier-free guidance's combination.  (n, V), (n, V) -> (n, V)"""
    if softmax_combination:
        p_u = torch.softmax(unconditional, dim=-1)
        return p_u + scale * (torch.softmax(conditional, dim=-1) - p_u)
    return unconditional + scale * (conditional - unconditional)


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
    mode = getattr(model.config, "self_condition", None)
    alpha_prev = previous_alpha_bars(alpha_bars(options.beta_schedule, options.num_steps))  # (M,)
    x = torch.randn((n, vocab), generator=generator, device=device) * k  # (n, V)
    # The original's first step sees a zeros tensor (softmax: uniform), even with
    # self_condition_zeros_after_softmax, which only applies to training's "no previous".
    previous = torch.zeros((n, vocab), device=device) if mode is not None else None
    unconditional = None
    logits = None
    for t in range(options.num_steps - 1, -1, -1):
        timesteps = torch.full((input_ids.shape[0],), t / options.num_steps, device=device)  # (B,)
        cond = model(input_ids=input_ids, simplex=x, timesteps=timesteps, span_mask=span_mask,
                     attention_mask=attention_mask, previous_pred=previous).logits  # (n, V)
        logits = cond
        if options.guided:
            noisy_uncond = getattr(model.config, "classifier_free_uncond_input", None) == "noisy_simplex" and \
                getattr(model.config, "classifier_free_simplex_inputs", False)
            if unconditional is None or noisy_uncond:  # empty tokens do not change from step to step
                unconditional = model.unconditional_logits(input_ids, span_mask, attention_mask, generator)
            logits = guide(cond, unconditional, options.guidance_scale, options.guidance_softmax_combination)
        if mode is not None:
            previous = previous_prediction(mode, cond, k, options.kind, options.temperature, options.top_p,
                                           generator)
        if t == 0:
            break
        ids = sample_ids(logits, options.kind, options.temperature, options.top_p, generator)
        s0 = ids_to_simplex(ids, vocab, k, x.dtype)  # (n, V)
        if options.clip_sample:
            s0.clamp_(-1.0, 1.0)
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
