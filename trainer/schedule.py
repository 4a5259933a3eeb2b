"""The cosine noise schedule of TESS (Nichol & Dhariwal's, on the simplex).

    alpha_bar(t) = f(t) / f(0),  f(t) = cos^2(((t / N + s) / (1 + s)) * pi / 2),  s = 1e-4

Training uses N = ``num_diffusion_steps``; sampling builds its own schedule with
N = ``num_inference_diffusion_steps``.
"""

from __future__ import annotations

import math

import torch

COSINE_OFFSET = 1e-4  # the "s" above: keeps alpha_bar(0) just under 1 (a hint of noise at t=0)


def cosine_alpha_bars(num_steps: int, offset: float = COSINE_OFFSET) -> torch.Tensor:
    """alpha_bar(t) for t = 0 .. num_steps-1, float64 for exact square roots.  -> (N,)"""
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, not {num_steps}")
    t = torch.arange(num_steps, dtype=torch.float64)

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.cos(((x / num_steps + offset) / (1 + offset)) * math.pi / 2) ** 2

    return f(t) / f(torch.zeros((), dtype=torch.float64))


def previous_alpha_bars(alpha_bars: torch.Tensor) -> torch.Tensor:
    """alpha_bar(t - 1) for every t, with alpha_bar(-1) = 1 (no noise after the last step).  (N,) -> (N,)"""
    return torch.cat([alpha_bars.new_ones(1), alpha_bars[:-1]])


def scaled_timesteps(t: torch.Tensor, num_steps: int) -> torch.Tensor:
    """t / N in [0, 1), the input of the timestep embedding.  (B,) int -> (B,) float32"""
    return t.float() / num_steps
