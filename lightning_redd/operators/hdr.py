"""High dynamic range: ``y = clip(gain * x, -1, 1)`` (an over-exposed, saturated capture).

``forward`` is exact: the clip is piecewise linear, its gradient is ``gain`` on unsaturated
pixels and 0 on saturated ones (the true derivative; no surrogate is needed).
"""
from __future__ import annotations

import torch

from lightning_redd.operators.base import ForwardOperator
from lightning_redd.operators.common import check_input, check_y


class HDR(ForwardOperator):
    """``(B, C, H, W)`` in ``[-1, 1]`` -> ``clip(gain x, -1, 1)``, same shape. Reference gain: 2."""

    def __init__(self, *, gain: float = 2.0, sigma_y: float = 0.0, channels: int = 3) -> None:
        super().__init__(sigma_y=sigma_y, channels=channels)
        if not gain > 0:
            raise ValueError(f"gain must be > 0, got {gain}")
        self.gain = float(gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x)
        return (self.gain * x).clamp(-1, 1)

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """``y / gain``: exact on unsaturated pixels, saturated ones map to ``+-1 / gain``."""
        check_y(self, y)
        check_input(self, y)
        return y / self.gain
