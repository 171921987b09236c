"""Fidelity metrics with explicit data ranges.

Inputs are batches ``(B, C, H, W)``; ``data_range`` is the span of valid values (2 for
``[-1, 1]`` tensors, 1 for ``[0, 1]``). Both images are clipped to that range first.
"""
from __future__ import annotations

import math

import torch


def _clip(x: torch.Tensor, lo: float, data_range: float) -> torch.Tensor:
    return x.double().clamp(lo, lo + data_range)


def psnr(x: torch.Tensor, ref: torch.Tensor, *, data_range: float = 2.0, low: float = -1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, ``(B,)`` float64: ``10 log10(range^2 / MSE)``.

    ``x``, ``ref``: ``(B, C, H, W)`` in ``[low, low + data_range]`` (default ``[-1, 1]``).

    Values are clipped to ``[low, low + data_range]`` (default ``[-1, 1]``). Identical images
    give ``inf``.
    """
    if x.shape != ref.shape:
        raise ValueError(f"psnr needs equal shapes, got {tuple(x.shape)} and {tuple(ref.shape)}")
    mse = (_clip(x, low, data_range) - _clip(ref, low, data_range)).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)


def _gaussian_1d(size: int, sigma: float) -> list[float]:
    w = [math.exp(-((i - (size - 1) / 2) ** 2) / (2 * sigma**2)) for i in range(size)]
    return [v / sum(w) for v in w]


def _gaussian_filter_valid(z: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """Per-channel Gaussian filter of ``(B, K, H, W)`` over the valid region: two 1-D passes
    as weighted sums of shifted views (several times faster than float64 conv2d on a CPU)."""
    g = _gaussian_1d(size, sigma)
    for dim in (-2, -1):
        n = z.shape[dim] - size + 1
        out = z.narrow(dim, 0, n) * g[0]
        for i in range(1, size):
            out.add_(z.narrow(dim, i, n), alpha=g[i])
        z = out
    return z


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
    """Structural similarity (Wang et al. 2004) per image, ``(B,)`` float64, averaged over channels.

    ``x``, ``ref``: ``(B, C, H, W)`` in ``[low, low + data_range]`` (default ``[-1, 1]``), clipped to it.

    Gaussian window (size 11, sigma 1.5) over the valid region (no padding), constants
    ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2`` with ``L = data_range``, population (1/N) covariances: the
    settings of ``skimage.metrics.structural_similarity(gaussian_weights=True,
    use_sample_covariance=False)``. Images smaller than the window use a window of their size.
    """
    if x.shape != ref.shape:
        raise ValueError(f"ssim needs equal shapes, got {tuple(x.shape)} and {tuple(ref.shape)}")
    a, b = _clip(x, low, data_range), _clip(ref, low, data_range)
    c = a.shape[1]
    size = min(window, a.shape[-1], a.shape[-2])
    # local means of a, b, a^2, b^2, ab in one separable filtering pass
    stats = _gaussian_filter_valid(torch.cat([a, b, a * a, b * b, a * b], dim=1), size, sigma)
    mu_a, mu_b, e_aa, e_bb, e_ab = stats.split(c, dim=1)
    var_a = e_aa - mu_a**2
    var_b = e_bb - mu_b**2
    cov = e_ab - mu_a * mu_b
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(dim=1)
