"""Phase retrieval: ``y = |F(pad(x))|``, the magnitude of the unitary 2-D DFT of the image
zero-padded by ``round(pad_ratio * H)`` rows and ``round(pad_ratio * W)`` columns on each side
(``pad_ratio = 0.25`` is the reference's 64 px on 256 px images, i.e. 1.5x oversampling per axis).

The magnitude cannot tell ``x`` from ``-x``, from its translates inside the padded frame, or
from its point reflection (the conjugate-reflection ambiguity). ``forward`` is the exact
operator (``|z|`` is differentiable wherever ``z != 0``; torch's gradient is 0 at 0).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from lightning_redd.operators.base import ForwardOperator
from lightning_redd.operators.common import check_input, check_y


class PhaseRetrieval(ForwardOperator):
    """``(B, C, H, W)`` in ``[-1, 1]`` -> Fourier magnitudes ``(B, C, H + 2 pH, W + 2 pW)`` (>= 0)."""

    def __init__(self, *, pad_ratio: float = 0.25, sigma_y: float = 0.0, channels: int = 3) -> None:
        super().__init__(sigma_y=sigma_y, channels=channels)
        if not 0 <= pad_ratio <= 4:
            raise ValueError(f"pad_ratio must be in [0, 4] (padding per side / image size), got {pad_ratio}")
        self.pad_ratio = float(pad_ratio)

    def pads(self, h: int, w: int) -> tuple[int, int]:
        return round(self.pad_ratio * h), round(self.pad_ratio * w)

    def output_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        ph, pw = self.pads(int(shape[1]), int(shape[2]))
        return (int(shape[0]), int(shape[1]) + 2 * ph, int(shape[2]) + 2 * pw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x)
        ph, pw = self.pads(x.shape[-2], x.shape[-1])
        return torch.fft.fft2(F.pad(x, (pw, pw, ph, ph)), norm="ortho").abs()

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """No cheap inverse exists (the phase is lost): returns the mid-grey image ``0``, with
        the image size recovered from ``y``'s padded size."""
        check_y(self, y)
        h, w = self.image_side(y.shape[-2]), self.image_side(y.shape[-1])
        if h is None or w is None:
            raise ValueError(f"PhaseRetrieval: {tuple(y.shape)} is not a padded magnitude of pad_ratio {self.pad_ratio}")
        return y.new_zeros(y.shape[0], y.shape[1], h, w)

    def image_side(self, padded: int) -> int | None:
        """The image side ``n`` with ``n + 2 round(pad_ratio n) == padded`` (unique: the padded side
        grows with ``n``), or None. Searched near ``padded / (1 + 2 pad_ratio)``, since rounding
        the pads moves that estimate by up to ``1 / (1 + 2 pad_ratio)`` (not always below 1/2)."""
        guess = round(padded / (1 + 2 * self.pad_ratio))
        for n in (guess, guess - 1, guess + 1):
            if n >= 1 and n + 2 * round(self.pad_ratio * n) == padded:
                return n
        return None
