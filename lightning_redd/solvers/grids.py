"""The time grids solvers visit on a discrete schedule of ``T`` levels (``t = 0`` least noisy).

A grid of ``S`` points spans the whole range: ``round(linspace(0, T - T / S, S))``. When ``S``
divides ``T`` this is exactly the reference's ``range(0, T, T // S)`` (S = 100: 0, 10, ..., 990;
S = 1000: 0..999). When it does not, the reference's range has more than ``S`` points and
cutting it to its first ``S`` drops the noisiest times (S = 300 would stop at 897); this grid
keeps exactly ``S`` points and still reaches ``T - T / S`` (S = 300: 0, 3, 7, ..., 997).
"""
from __future__ import annotations

from typing import Literal

import torch

Order = Literal["descending", "ascending", "random"]
ORDERS = ("descending", "ascending", "random")


def timestep_grid(num_steps: int, num_timesteps: int = 1000) -> torch.Tensor:
    """``num_steps`` distinct integer times in ascending order spanning ``[0, T - T/S]``, ``(S,)`` long."""
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"num_steps must be in [1, {num_timesteps}], got {num_steps}")
    top = num_timesteps - num_timesteps / num_steps
    grid = torch.linspace(0.0, top, num_steps, dtype=torch.float64).round().long()
    return grid


def ordered_grid(num_steps: int, num_timesteps: int, order: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """:func:`timestep_grid` in visiting order ``(S,)``: ``descending`` (the paper's default),
    ``ascending``, or ``random`` (a permutation drawn from ``generator``)."""
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


def reverse_pairs(num_steps: int, num_timesteps: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(t, t_prev)`` pairs of a reverse (sampling) pass, ``(S,)`` long each.

    ``t`` runs down the descending grid; ``t_prev`` is the next time down, and ``-1`` after the
    last (``t = 0``), meaning "the clean image" (``abar_{-1} = 1``).
    """
    t = timestep_grid(num_steps, num_timesteps).flip(0)
    t_prev = torch.cat([t[1:], torch.tensor([-1], dtype=torch.long)])
    return t, t_prev
