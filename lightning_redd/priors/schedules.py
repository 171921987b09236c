"""Discrete VP diffusion schedules and the timestep grids RED-diff visits.

``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` for integer ``t in [0, T-1]``; ``t = 0`` is
the least noisy level. Schedules are computed in float64 and cast where used.
"""
from __future__ import annotations

from typing import Literal

import torch

Order = Literal["descending", "ascending", "random"]
ORDERS = ("descending", "ascending", "random")


def linear_betas(num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Linear betas from ``beta_start`` to ``beta_end`` over ``num_timesteps`` steps, float64 ``(T,)``."""
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """``abar_t = prod_{s <= t} (1 - beta_s)``, float64 ``(T,)``."""
    return torch.cumprod(1.0 - betas.to(torch.float64), dim=0)


def timestep_grid(num_steps: int, num_timesteps: int = 1000) -> torch.Tensor:
    """The ``num_steps`` times RED-diff visits, in ascending order: ``range(0, T, T // S)``.

    For S = 1000: 0..999; for S = 100: 0, 10, ..., 990. ``(S,)`` long.
    """
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"num_steps must be in [1, {num_timesteps}], got {num_steps}")
    skip = num_timesteps // num_steps
    return torch.arange(0, num_timesteps, skip, dtype=torch.long)[:num_steps]


def ordered_grid(
    num_steps: int,
    num_timesteps: int,
    order: str,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The grid of :func:`timestep_grid` in visiting order ``(S,)``.

    ``descending`` (the paper's default: 990, 980, ..., 0 for S = 100), ``ascending``, or
    ``random`` (a permutation drawn from ``generator``).
    """
    grid = timestep_grid(num_steps, num_timesteps)
    if order == "descending":
        return grid.flip(0)
    if order == "ascending":
        return grid
    if order == "random":
        if generator is None:
            raise ValueError("order='random' needs a generator (one per image) for reproducibility")
        return grid[torch.randperm(grid.numel(), generator=generator)]
    raise ValueError(f"unknown timestep order {order!r}; allowed: {ORDERS}")
