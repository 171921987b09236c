"""Super-resolution: ``r``-fold downscaling, ``(B, C, H, W)`` -> ``(B, C, H/r, W/r)``.

* :class:`BlockAverageSR`: mean of each ``r x r`` block (the paper's SR). Its pseudo-inverse
  is nearest-neighbour (box) upsampling; factored SVD per block (singular value ``1/r``).
* :class:`BicubicSR`: bicubic anti-aliasing filter then subsampling (as MATLAB ``imresize``),
  periodic boundary; exact Fourier pseudo-inverse (:mod:`lightning_redd.operators.fft_conv`).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Optional

import torch

from lightning_redd.operators import fft_conv, kernels
from lightning_redd.operators.base import LinearOperator, SVDOperator
from lightning_redd.operators.common import (
    bound_copy,
    check_input,
    check_y,
    like,
    not_bound_error,
    orthonormal_with_first_row,
)

Factor = Literal[2, 4, 8]


class _Downscale:
    """Factor validation and size checks shared by the SR operators (a mixin)."""

    factor: int
    channels: int

    def _init_factor(self, factor: int) -> None:
        if factor not in (2, 4, 8):
            raise ValueError(f"factor must be one of 2, 4, 8, got {factor}")
        self.factor = int(factor)

    def _check_divisible(self, shape: Sequence[int]) -> None:
        r = self.factor
        if shape[1] % r or shape[2] % r:
            raise ValueError(
                f"{type(self).__name__}: image size {shape[1]}x{shape[2]} is not a multiple of factor {r}; "
                f"crop or pad the images to a multiple of {r} (e.g. 256x256)"
            )

    def output_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        return (int(shape[0]), int(shape[1]) // self.factor, int(shape[2]) // self.factor)

    def _check_low(self, y: torch.Tensor) -> None:
        if y.ndim != 4 or y.shape[1] != self.channels:
            raise ValueError(
                f"{type(self).__name__} expects low-resolution measurements (B, {self.channels}, h, w), "
                f"got {tuple(y.shape)}"
            )


class BlockAverageSR(_Downscale, SVDOperator):
    """Block averaging by ``factor`` in {2, 4, 8}; ``pinv`` = nearest-neighbour upsampling."""

    def __init__(self, *, factor: Factor = 4, sigma_y: float = 0.0, channels: int = 3) -> None:
        SVDOperator.__init__(self, sigma_y=sigma_y, channels=channels)
        self._init_factor(factor)
        self.image_shape: Optional[tuple[int, ...]] = None
        q = orthonormal_with_first_row(torch.ones(self.factor**2))
        self.register_buffer("Q", q, persistent=False)  # float64: exact orthogonality in tests

    def check_shape(self, shape: Sequence[int]) -> None:
        SVDOperator.check_shape(self, shape)
        self._check_divisible(shape)

    def bind(self, seeds, shape, names=None, device=None) -> BlockAverageSR:
        self.check_shape(shape)
        return bound_copy(self, shape, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over ``r x r`` blocks: ``(B, C, H, W)`` -> ``(B, C, H/r, W/r)``."""
        check_input(self, x)
        return torch.nn.functional.avg_pool2d(x, self.factor)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Replicate each value over its block, divided by ``r^2``."""
        self._check_low(y)
        return self._upsample(y) / self.factor**2

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """Nearest-neighbour upsampling (= ``A^T (A A^T)^-1`` since ``A A^T = I / r^2``)."""
        check_y(self, y)
        self._check_low(y)
        return self._upsample(y)

    def _upsample(self, y: torch.Tensor) -> torch.Tensor:
        r = self.factor
        return y.repeat_interleave(r, dim=-2).repeat_interleave(r, dim=-1)

    # ------------------------------------------------------------------ SVD
    # Per block: an orthonormal basis Q whose first row is 1/r (the block mean direction).
    # Vt(x) = [first coordinates of all blocks (M = C*h*w), then the other r^2 - 1 of each].
    def _dims(self) -> tuple[int, int, int, int]:
        if self.image_shape is None:
            raise not_bound_error(self)
        c, h, w = self.image_shape
        return c, h // self.factor, w // self.factor, c * h * w

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        c, h, w, n = self._dims()
        r = self.factor
        blocks = x.reshape(-1, c, h, r, w, r).permute(0, 1, 2, 4, 3, 5).reshape(-1, c, h, w, r * r)
        z = blocks @ like(self.Q, x).T
        return torch.cat([z[..., 0].flatten(1), z[..., 1:].flatten(1)], dim=1)

    def V(self, z: torch.Tensor) -> torch.Tensor:
        c, h, w, n = self._dims()
        r, m = self.factor, c * h * w
        first = z[:, :m].reshape(-1, c, h, w, 1)
        rest = z[:, m:].reshape(-1, c, h, w, r * r - 1)
        blocks = torch.cat([first, rest], dim=-1) @ like(self.Q, z)
        return blocks.reshape(-1, c, h, w, r, r).permute(0, 1, 2, 4, 3, 5).reshape(-1, n)

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        return y.reshape(y.shape[0], -1).clone()

    U = Ut

    def singulars(self) -> torch.Tensor:
        """``(C*h*w,)`` all equal to ``1 / r``."""
        c, h, w, _ = self._dims()
        return torch.full((c * h * w,), 1.0 / self.factor)


class BicubicSR(_Downscale, LinearOperator):
    """Bicubic downscaling by ``factor`` in {2, 4, 8} (``5r x 5r`` anti-aliasing taps, periodic
    boundary). ``pinv`` is the Fourier Moore-Penrose pseudo-inverse, cut-off ``pinv_rtol``."""

    def __init__(self, *, factor: Factor = 4, pinv_rtol: float = 1e-3, sigma_y: float = 0.0, channels: int = 3) -> None:
        LinearOperator.__init__(self, sigma_y=sigma_y, channels=channels)
        self._init_factor(factor)
        if not 0 <= pinv_rtol < 1:
            raise ValueError(f"pinv_rtol must be in [0, 1) (relative singular-value cut-off), got {pinv_rtol}")
        self.pinv_rtol = float(pinv_rtol)
        k, self.origin = kernels.bicubic_antialias_kernel(self.factor)
        self.register_buffer("kernel", k.float()[None, None], persistent=False)

    def check_shape(self, shape: Sequence[int]) -> None:
        LinearOperator.check_shape(self, shape)
        self._check_divisible(shape)
        if min(shape[1], shape[2]) < self.kernel.shape[-1]:
            raise ValueError(
                f"BicubicSR: images of {shape[1]}x{shape[2]} are smaller than the {self.kernel.shape[-1]}-tap "
                "kernel; use larger images or a smaller factor"
            )

    def _G(self, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        k = self.kernel.to(device=like.device, dtype=like.dtype)
        return fft_conv.transfer(k, h, w, (self.origin, self.origin))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, C, H/r, W/r)``."""
        check_input(self, x)
        return fft_conv.apply(x, self._G(x.shape[-2], x.shape[-1], x), self.factor)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._check_low(y)
        r = self.factor
        return fft_conv.adjoint(y, self._G(y.shape[-2] * r, y.shape[-1] * r, y), r)

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        check_y(self, y)
        self._check_low(y)
        r = self.factor
        return fft_conv.pinv(y, self._G(y.shape[-2] * r, y.shape[-1] * r, y), r, self.pinv_rtol)
