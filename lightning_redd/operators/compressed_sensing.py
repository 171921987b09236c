"""Compressed sensing with a structured random orthogonal transform (no dense matrix).

``T v = DHT(P (s * v))``: random signs ``s``, a random permutation ``P`` and the orthonormal
1-D Hartley transform over the flattened image (``N = C*H*W``); ``y`` keeps ``M = round(ratio N)``
randomly chosen coefficients, shape ``(B, 1, 1, M)``. ``T`` is orthogonal, so ``A A^T = I``,
``pinv = adjoint`` and all singular values are 1. The transform is drawn from ``seed`` (shared
by every image) in ``bind``, which fixes the image shape.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch

from lightning_redd.operators.base import SVDOperator
from lightning_redd.operators.common import (
    bound_copy,
    check_input,
    check_y,
    dht1,
    like,
    not_bound_error,
)


class CompressedSensing(SVDOperator):
    """``y = (T x)[keep]``; ``ratio`` in (0, 1] is ``M / N``; ``seed`` fixes ``s``, ``P``, ``keep``."""

    def __init__(self, *, ratio: float = 0.25, seed: int = 0, sigma_y: float = 0.0, channels: int = 3) -> None:
        super().__init__(sigma_y=sigma_y, channels=channels)
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1] (measurements per pixel), got {ratio}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.ratio, self.seed = float(ratio), int(seed)
        self.image_shape: Optional[tuple[int, ...]] = None
        for name in ("signs", "perm", "order"):
            self.register_buffer(name, None, persistent=False)

    def output_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        n = int(shape[0]) * int(shape[1]) * int(shape[2])
        return (1, 1, max(1, round(self.ratio * n)))

    def bind(self, seeds, shape, names=None, device=None, params=None) -> CompressedSensing:
        self.check_shape(shape)
        n = int(shape[0]) * int(shape[1]) * int(shape[2])
        g = torch.Generator().manual_seed(self.seed)
        out = bound_copy(self, shape, device)
        signs = torch.randint(0, 2, (n,), generator=g, dtype=torch.float64) * 2 - 1
        out.register_buffer("signs", signs.to(device), persistent=False)
        out.register_buffer("perm", torch.randperm(n, generator=g).to(device), persistent=False)
        out.register_buffer("order", torch.randperm(n, generator=g).to(device), persistent=False)  # kept first
        return out

    def _m(self) -> int:
        if self.image_shape is None or self.signs is None:
            raise not_bound_error(self)
        return self.output_shape(self.image_shape)[-1]

    def _T(self, v: torch.Tensor) -> torch.Tensor:
        return dht1((v * like(self.signs, v))[:, self.perm.to(v.device)])

    def _Tinv(self, u: torch.Tensor) -> torch.Tensor:
        w = torch.empty_like(u)
        w[:, self.perm.to(u.device)] = dht1(u)
        return w * like(self.signs, u)

    def check_shape(self, shape: Sequence[int]) -> None:
        super().check_shape(shape)
        if self.image_shape is not None and tuple(shape) != tuple(self.image_shape):
            raise ValueError(
                f"CompressedSensing was bound for images of shape {self.image_shape} but got {tuple(shape)}; "
                "call bind(seeds, shape) with this image shape"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, 1, 1, M)``."""
        check_input(self, x)
        m = self._m()
        return self._T(x.flatten(1))[:, self.order[:m].to(x.device)].view(-1, 1, 1, m)

    def _check_meas(self, y: torch.Tensor) -> torch.Tensor:
        m = self._m()
        if y.ndim != 4 or tuple(y.shape[1:]) != (1, 1, m):
            raise ValueError(f"CompressedSensing expects measurements (B, 1, 1, {m}), got {tuple(y.shape)}")
        return y.reshape(-1, m)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Zero-fill the unmeasured coefficients, then ``T^T``: ``(B, 1, 1, M)`` -> ``(B, C, H, W)``."""
        flat = self._check_meas(y)
        u = flat.new_zeros(flat.shape[0], self.signs.numel())
        u[:, self.order[: flat.shape[1]].to(y.device)] = flat
        return self._Tinv(u).view(-1, *self.image_shape)

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """``A^T y`` (rows of ``A`` are orthonormal)."""
        check_y(self, y)
        return self.adjoint(y)

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        self._m()
        return self._T(x)[:, self.order.to(x.device)]

    def V(self, z: torch.Tensor) -> torch.Tensor:
        self._m()
        u = torch.empty_like(z)
        u[:, self.order.to(z.device)] = z
        return self._Tinv(u)

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        return y.reshape(y.shape[0], -1).clone()

    U = Ut

    def singulars(self) -> torch.Tensor:
        """``(M,)`` ones."""
        return torch.ones(self._m())
