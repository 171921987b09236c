"""Fidelity metrics with explicit data ranges.

Inputs are batches ``(B, C, H, W)``; ``data_range`` is the span of valid values (2 for
``[-1, 1]`` tensors, 1 for ``[0, 1]``). Both images are clipped to that range first.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _clip(x: torch.Tensor, lo: float, data_range: float) -> torch.Tensor:
    return x.double().clamp(lo, lo + data_range)


def psnr(x: torch.Tensor, ref: torch.Tensor, *, data_range: float = 2.0, low: float = -1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, ``(B,)``: ``10 log10(range^2 / MSE)``.

    Values are clipped to ``[low, low + data_range]`` (default ``[-1, 1]``). Identical images
    give ``inf``.
    """
    if x.shape != ref.shape:
        raise ValueError(f"psnr needs equal shapes, got {tuple(x.shape)} and {tuple(ref.shape)}")
    mse = (_clip(x, low, data_range) - _clip(ref, low, data_range)).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    r = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(
    x: torch.Tensor,
    ref: torch.Tensor,
    *,
    data_range: float = 2.0,
    low: float = -1.0,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image, ``(B,)``, averaged over channels.

    Gaussian window (size 11, sigma 1.5) over the valid region (no padding), constants
    ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2`` with ``L = data_range``, sample covariances — the
    settings of ``skimage.metrics.structural_similarity(gaussian_weights=True,
    use_sample_covariance=False)``. Images smaller than the window use a window of their size.
    """
    if x.shape != ref.shape:
        raise ValueError(f"ssim needs equal shapes, got {tuple(x.shape)} and {tuple(ref.shape)}")
    a, b = _clip(x, low, data_range), _clip(ref, low, data_range)
    c = a.shape[1]
    size = min(window, a.shape[-1], a.shape[-2])
    w = _gaussian_window(size, sigma, c, a.device, a.dtype)

    def filt(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, w, groups=c)

    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a**2
    var_b = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(dim=1)
