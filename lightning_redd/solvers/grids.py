"""The time grids solvers visit on a discrete schedule of ``T`` levels (``t = 0`` least noisy).

A grid of ``S`` points spans the whole range: ``round(linspace(0, T - T / S, S))``. When ``S``
divides ``T`` this is exactly the reference's ``range(0, T, T // S)`` (S = 100: 0, 10, ..., 990;
S = 1000: 0..999). When it does not, the reference's range has more than ``S`` points and
cutting it to its first ``S`` drops the noisiest times (S = 300 would stop at 897); this grid
keeps exactly ``S`` points and still reaches ``T - T / S`` (S = 300: 0, 3, 7, ..., 997).

``spacing="quadratic"`` spaces the same span by squares, ``round((T - T / S) * (j / (S - 1)) ** 2)`` for
``j = 0 .. S - 1``: more of the points at small ``t`` (S = 130: 0, 0, 0, 1, 1, 1, 2, 3, ..., 977, 992; the
smallest times repeat), the way DDIM's "quad" skip spaces its steps.
"""
from __future__ import annotations

from typing import Literal

import torch

Order = Literal["descending", "ascending", "random"]
ORDERS = ("descending", "ascending", "random")
Spacing = Literal["linear", "quadratic"]
SPACINGS = ("linear", "quadratic")


def timestep_grid(num_steps: int, num_timesteps: int = 1000, spacing: Spacing = "linear") -> torch.Tensor:
    """``num_steps`` integer times in ascending order spanning ``[0, T - T/S]``, ``(S,)`` long: distinct
    for ``linear`` spacing, squares for ``quadratic`` (module docstring)."""
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"num_steps must be in [1, {num_timesteps}], got {num_steps}")
    if spacing not in SPACINGS:
        raise ValueError(f"unknown time grid spacing {spacing!r}; allowed: {SPACINGS}")
    top = num_timesteps - num_timesteps / num_steps
    if spacing == "quadratic":
        return (top * torch.linspace(0.0, 1.0, num_steps, dtype=torch.float64).square()).round().long()
    grid = torch.linspace(0.0, top, num_steps, dtype=torch.float64).round().long()
    return grid


def ordered_grid(num_steps: int, num_timesteps: int, order: str, generator: torch.Generator | None = None,
                 spacing: Spacing = "linear") -> torch.Tensor:
    """:func:`timestep_grid` in visiting order ``(S,)``: ``descending`` (the paper's default),
    ``ascending``, or ``random`` (a permutation drawn from ``generator``)."""
    grid = timestep_grid(num_steps, num_timesteps, spacing)
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
