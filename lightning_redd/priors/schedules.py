"""Discrete VP diffusion schedules (the time grids solvers visit live in :mod:`lightning_redd.solvers.grids`).

``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` for integer ``t in [0, T-1]``; ``t = 0`` is
the least noisy level. Schedules are computed in float64 and cast where used.
"""
from __future__ import annotations

import torch


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
