"""Token ids as points near the corners of a scaled simplex, and the forward noising.

A token id w becomes a vocabulary-sized vector of logits: +k at w, -k elsewhere
(k = ``simplex_value``). Noising draws Gaussian noise of the same shape:

    x_t = sqrt(alpha_bar_t) * s + sqrt(1 - alpha_bar_t) * k * eps,   eps ~ N(0, I)

The functions below build x_t in place on one (batch, length, vocab) buffer: the
clean simplex s is never materialised, which matters at 16 x 256 x 50,265 floats
(~0.8 GB each).
"""

from __future__ import annotations

import torch


def ids_to_simplex(ids: torch.Tensor, vocab_size: int, k: float, dtype=torch.float32) -> torch.Tensor:
    """+k at each id, -k elsewhere.  (B, L) -> (B, L, V)"""
    out = torch.full((*ids.shape, vocab_size), -k, dtype=dtype, device=ids.device)
    out.scatter_(-1, ids.unsqueeze(-1), k)
    return out


def noisy_simplex(
    ids: torch.Tensor,
    alpha_bar: torch.Tensor,
    vocab_size: int,
    k: float,
    generator: torch.Generator | None = None,
    dtype=torch.float32,
) -> torch.Tensor:
    """x_t for clean ids at alpha_bar_t, on a single buffer.

    ids (...) int, alpha_bar (...) same shape -> (..., V). The noise comes from
    ``generator`` (torch's global generator when None, so that a checkpoint's RNG
    state covers it).
    """
    x = torch.randn((*ids.shape, vocab_size), generator=generator, dtype=dtype, device=ids.device)
    a = alpha_bar.to(device=ids.device, dtype=torch.float64)
    signal = (a.sqrt() * k).to(dtype).unsqueeze(-1)  # (..., 1)
    noise_scale = ((1 - a).sqrt() * k).to(dtype).unsqueeze(-1)  # (..., 1)
    x.mul_(noise_scale).sub_(signal)  # noise - sqrt(a) k everywhere ...
    x.scatter_add_(-1, ids.unsqueeze(-1), 2 * signal)  # ... + 2 sqrt(a) k at the token
    return x


SAMPLING_TYPES = ("argmax", "sample", "top_p")


def sample_ids(
    logits: torch.Tensor,
    sampling_type: str = "argmax",
    temperature: float = 1.0,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token per row.  (..., V) -> (...) ids

    argmax: the most likely token (temperature and top-p never change it).
    sample: drawn from softmax(logits / temperature), within the top-p nucleus when top_p is set.
    top_p:  the original's ``sampling_type`` (sdlm/inference/inference_utils.py): with top_p
            set, the same draw as ``sample``; without, the argmax.
    """
    if sampling_type not in SAMPLING_TYPES:
        raise ValueError(f"sampling_type must be one of {', '.join(SAMPLING_TYPES)}, not {sampling_type!r}")
    if sampling_type == "argmax" or (sampling_type == "top_p" and top_p is None):
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # (..., V)
    if top_p is not None and top_p < 1.0:
        probs = top_p_filter(probs, top_p)
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])


def logits_to_simplex(
    logits: torch.Tensor,
    k: float,
    temperature: float = 1.0,
    top_p: float | None = None,
    sample: bool = False,
    generator: torch.Generator | None = None,
    sampling_type: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Project predicted logits back to a +-k simplex corner.

    logits (..., V) -> (simplex (..., V), ids (...)). The token is chosen by ``sample_ids``
    with ``sampling_type`` (default: "sample" when ``sample``, else "argmax").
    """
    kind = sampling_type or ("sample" if sample else "argmax")
    ids = sample_ids(logits, kind, temperature, top_p, generator)
    return ids_to_simplex(ids, logits.shape[-1], k, logits.dtype), ids


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero all but the smallest set of tokens whose mass reaches top_p, renormalised.  (..., V) -> (..., V)"""
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    cumulative = sorted_probs.cumsum(dim=-1)
    drop_sorted = cumulative - sorted_probs >= top_p  # keeps the first token always
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    kept = probs.masked_fill(drop, 0.0)
    return kept / kept.sum(dim=-1, keepdim=True)
