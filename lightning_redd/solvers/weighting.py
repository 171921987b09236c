"""RED-diff's regulariser weights ``w_t = lambda * g(snr_inv_t)``.

``snr_inv_t = sqrt(1 - abar_t) / sqrt(abar_t)`` is the inverse square-root SNR of level ``t``
(paper, Sec. 4.2). ``g`` shapes how much the noisy (large ``t``) levels count.
"""
from __future__ import annotations

from typing import Literal

import torch

Weighting = Literal["linear", "sqrt", "square", "log", "trunc_linear", "power2over3", "const"]
WEIGHTINGS = ("linear", "sqrt", "square", "log", "trunc_linear", "power2over3", "const")


def snr_inv(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``sqrt(1 - abar_t) / sqrt(abar_t)`` for integer times ``t`` (any shape), float64."""
    a = alphas_cumprod.to(torch.float64)[t]
    return torch.sqrt(1.0 - a) / torch.sqrt(a)


def weight_fn(s: torch.Tensor, weighting: str) -> torch.Tensor:
    """``g(s)`` for one of :data:`WEIGHTINGS` (``s = snr_inv_t >= 0``)."""
    if weighting == "linear":
        return s
    if weighting == "sqrt":
        return torch.sqrt(s)
    if weighting == "square":
        return s**2
    if weighting == "log":
        return torch.log1p(s)
    if weighting == "trunc_linear":
        return torch.clamp(s, max=1.0)
    if weighting == "power2over3":
        return s ** (2.0 / 3.0)
    if weighting == "const":
        return torch.ones_like(s)
    raise ValueError(f"unknown weighting {weighting!r}; allowed: {WEIGHTINGS}")


def red_diff_weight(alphas_cumprod: torch.Tensor, t: torch.Tensor, lam: float, weighting: str) -> torch.Tensor:
    """``w_t = lam * g(snr_inv_t)``, float64, shape of ``t``."""
    return lam * weight_fn(snr_inv(alphas_cumprod, t), weighting)
