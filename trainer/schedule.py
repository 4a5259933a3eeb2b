"""The noise schedules of TESS: alpha_bar(t) for t = 0 .. N-1.

The default, ``squaredcos_improved_ddpm``, is Nichol & Dhariwal's cosine schedule:

    alpha_bar(t) = f(t) / f(0),  f(t) = cos^2(((t / N + s) / (1 + s)) * pi / 2),  s = 1e-4

The others are the beta schedules the original ships (sdlm/schedulers/
scheduling_simplex_ddpm.py, allenai/tess-diffusion 63f039b), alpha_bar being the
cumulative product of 1 - beta:

    linear              beta = linspace(1e-4, 0.02, N)
    scaled_linear       beta = linspace(sqrt(1e-4), sqrt(0.02), N) ** 2
    squaredcos_cap_v2   beta_i = min(1 - g((i + 1) / N) / g(i / N), 0.999),  g(x) = cos^2((x + s) / (1 + s) * pi / 2)
    sigmoid             beta = sigmoid(linspace(-6, 6, N)) * (0.02 - 1e-4) + 1e-4

Those four are computed in float32, as the original does, then widened to float64.
Training uses N = ``num_diffusion_steps``; sampling builds its own schedule with
N = ``num_inference_diffusion_steps``.
"""

from __future__ import annotations

import math

import torch

COSINE_OFFSET = 1e-4  # the "s" above: keeps alpha_bar(0) just under 1 (a hint of noise at t=0)
BETA_START = 1e-4  # the original scheduler's defaults; its configs never change them
BETA_END = 0.02
MAX_BETA = 0.999  # squaredcos_cap_v2's cap, which keeps alpha_bar above zero
BETA_SCHEDULES = ("squaredcos_improved_ddpm", "linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")


def cosine_alpha_bars(num_steps: int, offset: float = COSINE_OFFSET) -> torch.Tensor:
    """alpha_bar(t) for t = 0 .. num_steps-1, float64 for exact square roots.  -> (N,)"""
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, not {num_steps}")
    t = torch.arange(num_steps, dtype=torch.float64)

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.cos(((x / num_steps + offset) / (1 + offset)) * math.pi / 2) ** 2

    return f(t) / f(torch.zeros((), dtype=torch.float64))


def _betas(schedule: str, num_steps: int) -> torch.Tensor:
    """beta_t for t = 0 .. num_steps-1 in float32, as the original computes them.  -> (N,)"""
    if schedule == "linear":
        return torch.linspace(BETA_START, BETA_END, num_steps, dtype=torch.float32)
    if schedule == "scaled_linear":
        return torch.linspace(BETA_START ** 0.5, BETA_END ** 0.5, num_steps, dtype=torch.float32) ** 2
    if schedule == "sigmoid":
        return torch.sigmoid(torch.linspace(-6, 6, num_steps)) * (BETA_END - BETA_START) + BETA_START
    if schedule == "squaredcos_cap_v2":
        def g(x: float) -> float:
            return math.cos((x + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2

        return torch.tensor([min(1 - g((i + 1) / num_steps) / g(i / num_steps), MAX_BETA)
                             for i in range(num_steps)], dtype=torch.float32)
    raise ValueError(f"beta_schedule must be one of {', '.join(BETA_SCHEDULES)}, not {schedule!r}")


def alpha_bars(schedule: str, num_steps: int) -> torch.Tensor:
    """alpha_bar(t) of the named schedule for t = 0 .. num_steps-1, float64.  -> (N,)"""
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, not {num_steps}")
    if schedule == "squaredcos_improved_ddpm":
        return cosine_alpha_bars(num_steps)
    return torch.cumprod(1.0 - _betas(schedule, num_steps), dim=0).to(torch.float64)


def previous_alpha_bars(alpha_bars: torch.Tensor) -> torch.Tensor:
    """alpha_bar(t - 1) for every t, with alpha_bar(-1) = 1 (no noise after the last step).  (N,) -> (N,)"""
    return torch.cat([alpha_bars.new_ones(1), alpha_bars[:-1]])


def scaled_timesteps(t: torch.Tensor, num_steps: int) -> torch.Tensor:
    """t / N in [0, 1), the input of the timestep embedding.  (B,) int -> (B,) float32"""
    return t.float() / num_steps
