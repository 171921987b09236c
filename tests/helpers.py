"""Small test doubles: a dense linear operator and a tiny convolutional prior."""
from __future__ import annotations

import torch
from torch import nn

from lightning_redd.operators.base import LinearOperator
from lightning_redd.priors.base import DiffusionPrior


class MatrixOperator(LinearOperator):
    """``y = A vec(x)`` for a dense ``(M, N)`` matrix ``A`` (tiny images only)."""

    def __init__(self, A: torch.Tensor, shape: tuple[int, int, int], sigma_y: float = 0.0) -> None:
        super().__init__(sigma_y=sigma_y, channels=shape[0])
        self.shape = shape
        self.register_buffer("A", A.double())
        self.register_buffer("A_pinv", torch.linalg.pinv(A.double()))

    def forward(self, x):
        return (x.flatten(1).double() @ self.A.T).to(x.dtype)

    def adjoint(self, y):
        return (y.double() @ self.A).to(y.dtype).view(-1, *self.shape)

    def pinv(self, y):
        return (y.double() @ self.A_pinv.T).to(y.dtype).view(-1, *self.shape)


class MaskOperator(LinearOperator):
    """Full-size masking with one fixed mask (inpainting without per-image masks)."""

    def __init__(self, mask: torch.Tensor, sigma_y: float = 0.0) -> None:
        super().__init__(sigma_y=sigma_y, channels=mask.shape[0])
        self.register_buffer("mask", mask.float())

    def forward(self, x):
        return x * self.mask

    def adjoint(self, y):
        return y * self.mask

    def pinv(self, y):
        return y * self.mask


class ConvPrior(DiffusionPrior):
    """A small random convolutional eps-network: ``depth`` 3x3 convs of ``width`` channels
    with a per-time bias. Deterministic from ``seed``; any image size."""

    def __init__(self, channels: int = 3, width: int = 16, depth: int = 3, seed: int = 0) -> None:
        super().__init__(channels=channels)
        g = torch.Generator().manual_seed(seed)
        layers, c = [], channels
        for i in range(depth):
            out = channels if i == depth - 1 else width
            conv = nn.Conv2d(c, out, 3, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (0.5 / (9 * c) ** 0.5))
                conv.bias.zero_()
            layers += [conv] + ([nn.SiLU()] if i < depth - 1 else [])
            c = out
        self.net = nn.Sequential(*layers)
        self.time_bias = nn.Parameter(torch.randn(self.num_timesteps, generator=g) * 0.01)

    def predict_eps(self, x_t, t):
        return self.net(x_t) + self.time_bias[t].view(-1, 1, 1, 1)
