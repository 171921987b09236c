"""Denoising: ``A = I``; ``y = x + noise`` (Gaussian with std ``2 sigma_y``, or Poisson)."""
from __future__ import annotations

from typing import Literal, Optional

import torch

from lightning_redd.operators.base import SVDOperator
from lightning_redd.operators.common import bound_copy, check_input, check_y, not_bound_error


class Denoising(SVDOperator):
    """Identity forward model on ``(B, C, H, W)`` images in ``[-1, 1]``.

    Args:
        noise: ``"gaussian"`` (std ``2 * sigma_y`` in ``[-1, 1]`` units) or ``"poisson"``
            (``Poisson(poisson_rate * (x + 1) / 2) / poisson_rate`` mapped back to ``[-1, 1]``,
            plus Gaussian noise if ``sigma_y > 0``).
        poisson_rate: photon count of a white pixel (higher = less noise).

    SVD: ``U = V = I``, all singular values 1 (bind first so the SVD knows the image shape).
    """

    def __init__(
        self,
        *,
        noise: Literal["gaussian", "poisson"] = "gaussian",
        poisson_rate: float = 255.0,
        sigma_y: float = 0.0,
        channels: int = 3,
    ) -> None:
        super().__init__(sigma_y=sigma_y, channels=channels)
        if noise not in ("gaussian", "poisson"):
            raise ValueError(f"unknown noise {noise!r}; allowed: 'gaussian', 'poisson'")
        if not poisson_rate > 0:
            raise ValueError(f"poisson_rate must be > 0 (photons per white pixel), got {poisson_rate}")
        self.noise, self.poisson_rate = noise, float(poisson_rate)
        self.image_shape: Optional[tuple[int, ...]] = None

    def bind(self, seeds, shape, names=None, device=None, params=None) -> Denoising:
        self.check_shape(shape)
        return bound_copy(self, shape, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` itself, ``(B, C, H, W)``."""
        check_input(self, x)
        return x

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        check_input(self, y)
        return y

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        check_y(self, y)
        check_input(self, y)
        return y

    def _identity(self, z: torch.Tensor) -> torch.Tensor:
        if self.image_shape is None:
            raise not_bound_error(self)
        n = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
        if z.ndim != 2 or z.shape[1] != n:
            raise ValueError(f"Denoising SVD maps act on flattened (B, {n}) tensors, got {tuple(z.shape)}")
        return z.clone()

    V = Vt = U = Ut = _identity

    def singulars(self) -> torch.Tensor:
        """``(C*H*W,)`` ones."""
        if self.image_shape is None:
            raise not_bound_error(self)
        return torch.ones(self.image_shape[0] * self.image_shape[1] * self.image_shape[2])
