"""Nonlinear blur: ``y = crf(k_i * x)``, a per-image random camera-shake kernel ``k_i`` (drawn
once in ``bind`` from the image's seed, the same for measuring and solving: the reference
drew a new kernel at every call) followed by a saturating camera response function

    ``crf(v) = 2 (1 - exp(-a u)) / (1 - exp(-a)) - 1``, ``u = clip((v + 1) / 2, 0, 1)``,

concave and smooth (``a > 0`` sets the curvature). ``forward`` is exact and differentiable.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from lightning_redd.operators.base import ForwardOperator
from lightning_redd.operators.blur import MotionBlur
from lightning_redd.operators.common import check_input, check_y


class NonlinearBlur(ForwardOperator):
    """``(B, C, H, W)`` in ``[-1, 1]`` -> ``(B, C, H, W)`` in ``[-1, 1]``; circular blur boundary."""

    def __init__(
        self,
        *,
        kernel_size: int = 31,
        intensity: float = 0.5,
        response: float = 3.0,
        sigma_y: float = 0.0,
        channels: int = 3,
    ) -> None:
        super().__init__(sigma_y=sigma_y, channels=channels)
        if not response > 0:
            raise ValueError(f"response must be > 0 (camera-response curvature), got {response}")
        self.response = float(response)
        self.blur = MotionBlur(kernel_size=kernel_size, intensity=intensity, channels=channels)

    def check_shape(self, shape: Sequence[int]) -> None:
        super().check_shape(shape)
        self.blur.check_shape(shape)

    def bind(self, seeds, shape, names=None, device=None, params=None) -> NonlinearBlur:
        self.check_shape(shape)
        out = NonlinearBlur(
            kernel_size=self.blur.kernel_size, intensity=self.blur.intensity, response=self.response,
            sigma_y=self.sigma_y, channels=self.channels,
        )
        out.blur = self.blur.bind(seeds, shape, names, device, params)
        return out

    @property
    def kernel(self) -> torch.Tensor | None:
        """The bound per-image kernels ``(B, 1, k, k)``."""
        return self.blur.kernel

    def crf(self, v: torch.Tensor) -> torch.Tensor:
        a = self.response
        u = ((v + 1) / 2).clamp(0, 1)
        return 2 * (1 - torch.exp(-a * u)) / (1 - math.exp(-a)) - 1

    def crf_inverse(self, y: torch.Tensor) -> torch.Tensor:
        a = self.response
        c = ((y + 1) / 2).clamp(0, 1) * (1 - math.exp(-a))
        return 2 * (-torch.log1p(-c) / a) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x)
        return self.crf(self.blur(x))

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """Inverse camera response only (the blurred image; deblurring is left to the solver)."""
        check_y(self, y)
        check_input(self, y)
        return self.crf_inverse(y)
