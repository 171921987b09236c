"""Bit-depth quantisation ``y = round(u) / L * 2 - 1``, ``u = (x + 1) / 2 * L``, ``L = 2^bits - 1``,
and the differentiable rounding surrogates shared with JPEG.

``measure`` uses exact rounding. ``forward`` (used in the data term of a solve) uses:

* ``"straight_through"``: the exact value, with the gradient of the identity;
* ``"smooth"``: ``r(u) = u - sin(2 pi u) / (2 pi)``, a smooth monotone staircase equal to
  ``u`` at integers and half-integers, with derivative ``1 - cos(2 pi u)`` in ``[0, 2]``.
"""
from __future__ import annotations

import math
from typing import Literal

import torch

from lightning_redd.operators.base import ForwardOperator
from lightning_redd.operators.common import check_input, check_y

Surrogate = Literal["straight_through", "smooth"]


def check_surrogate(surrogate: str) -> None:
    if surrogate not in ("straight_through", "smooth"):
        raise ValueError(f"unknown surrogate {surrogate!r}; allowed: 'straight_through', 'smooth'")


def round_surrogate(u: torch.Tensor, surrogate: str | None) -> torch.Tensor:
    """Rounding: exact (``None``) or a differentiable surrogate (see the module docstring)."""
    if surrogate is None:
        return torch.round(u)
    if surrogate == "straight_through":
        return u + (torch.round(u) - u).detach()
    if surrogate == "smooth":
        return u - torch.sin(2 * math.pi * u) / (2 * math.pi)
    raise ValueError(f"unknown surrogate {surrogate!r}; allowed: 'straight_through', 'smooth'")


class RoundingOperator(ForwardOperator):
    """An operator built on rounding: ``forward`` (the solve) uses the differentiable
    ``self.surrogate``, ``measure`` the exact rounding, and ``pinv`` is ``y`` itself.
    Subclasses implement ``transform(x, surrogate)`` (``surrogate=None``: exact)."""

    surrogate: str

    def transform(self, x: torch.Tensor, surrogate: str | None) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Surrogate rounding (for the solve)."""
        check_input(self, x)
        return self.transform(x, self.surrogate)

    def measure_clean(self, x: torch.Tensor) -> torch.Tensor:
        """Exact rounding (for measuring)."""
        check_input(self, x)
        return self.transform(x, None)

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """The rounded image itself."""
        check_y(self, y)
        check_input(self, y)
        return y.clone()


class Quantization(RoundingOperator):
    """``bits``-bit quantisation of ``(B, C, H, W)`` images in ``[-1, 1]`` (``y`` same shape)."""

    def __init__(self, *, bits: int = 3, surrogate: Surrogate = "straight_through", sigma_y: float = 0.0, channels: int = 3) -> None:
        super().__init__(sigma_y=sigma_y, channels=channels)
        if not 1 <= bits <= 16:
            raise ValueError(f"bits must be in [1, 16], got {bits}")
        check_surrogate(surrogate)
        self.bits, self.surrogate = int(bits), surrogate

    def transform(self, x: torch.Tensor, surrogate: str | None) -> torch.Tensor:
        levels = 2**self.bits - 1
        u = ((x + 1) / 2).clamp(0, 1) * levels
        return round_surrogate(u, surrogate) / levels * 2 - 1

