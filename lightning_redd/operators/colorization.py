"""Colorization: ``y = sum_c w_c x_c``, RGB ``(B, C, H, W)`` -> gray ``(B, 1, H, W)`` in ``[-1, 1]``."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Optional

import torch

from lightning_redd.operators.base import SVDOperator
from lightning_redd.operators.common import (
    bound_copy,
    check_input,
    check_y,
    like,
    not_bound_error,
    orthonormal_with_first_row,
)

LUMA = (0.299, 0.587, 0.114)


class Colorization(SVDOperator):
    """Gray-scale conversion with ``weights``: ``"mean"`` (``1/C`` each, DDRM's colorization)
    or ``"luma"`` (ITU-R BT.601 ``0.299, 0.587, 0.114``; needs 3 channels).

    ``pinv(y) = w y / |w|^2`` (for ``"mean"``: the gray value copied to every channel).
    SVD per pixel: singular value ``|w|``, right singular vector ``w / |w|``; ``Vt`` lists the
    ``H*W`` leading coordinates first, then the ``(C-1) H W`` others; ``U = I``.
    """

    def __init__(self, *, weights: Literal["mean", "luma"] = "mean", sigma_y: float = 0.0, channels: int = 3) -> None:
        super().__init__(sigma_y=sigma_y, channels=channels)
        if weights == "mean":
            w = torch.full((channels,), 1.0 / channels, dtype=torch.float64)
        elif weights == "luma":
            if channels != 3:
                raise ValueError(f"weights='luma' needs channels=3, got {channels}; use weights='mean'")
            w = torch.tensor(LUMA, dtype=torch.float64)
        else:
            raise ValueError(f"unknown weights {weights!r}; allowed: 'mean', 'luma'")
        self.weights = weights
        self.image_shape: Optional[tuple[int, ...]] = None
        self.register_buffer("w", w, persistent=False)
        self.register_buffer("Q", orthonormal_with_first_row(w), persistent=False)

    def output_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        return (1, int(shape[1]), int(shape[2]))

    def bind(self, seeds, shape, names=None, device=None, params=None) -> Colorization:
        self.check_shape(shape)
        return bound_copy(self, shape, device)

    def _w(self, t: torch.Tensor) -> torch.Tensor:
        return self.w.to(device=t.device, dtype=t.dtype).view(1, -1, 1, 1)

    def _check_gray(self, y: torch.Tensor) -> None:
        if y.ndim != 4 or y.shape[1] != 1:
            raise ValueError(f"Colorization expects gray measurements (B, 1, H, W), got {tuple(y.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, 1, H, W)``."""
        check_input(self, x)
        return (x * self._w(x)).sum(dim=1, keepdim=True)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._check_gray(y)
        return y * self._w(y)

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        check_y(self, y)
        self._check_gray(y)
        w = self._w(y)
        return y * w / (w**2).sum()

    # ------------------------------------------------------------------ SVD
    def _dims(self) -> tuple[int, int]:
        if self.image_shape is None:
            raise not_bound_error(self)
        c, h, w = self.image_shape
        return c, h * w

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        c, p = self._dims()
        z = like(self.Q, x) @ x.reshape(-1, c, p)  # (B, C, HW); row 0 along w
        return z.flatten(1)

    def V(self, z: torch.Tensor) -> torch.Tensor:
        c, p = self._dims()
        return (like(self.Q, z).T @ z.reshape(-1, c, p)).flatten(1)

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        return y.reshape(y.shape[0], -1).clone()

    U = Ut

    def singulars(self) -> torch.Tensor:
        """``(H*W,)`` all equal to ``|w|``."""
        _, p = self._dims()
        return self.w.norm().expand(p).clone()
