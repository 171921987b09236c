"""Blur kernels, ``(k, k)`` float64 summing to 1, tap ``(k // 2, k // 2)`` at offset 0."""
from __future__ import annotations

import math

import torch


def check_kernel_size(kernel_size: int) -> None:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd integer >= 1 (centred kernel), got {kernel_size}; e.g. 61")


def gaussian_kernel(kernel_size: int, sigma: tuple[float, float], angle: float = 0.0) -> torch.Tensor:
    """Anisotropic Gaussian ``exp(-u^T R diag(s0^2, s1^2)^-1 R^T u / 2)``, ``R`` a rotation by
    ``angle`` degrees; ``sigma = (s0, s1)`` in pixels along the rotated (row, column) axes."""
    check_kernel_size(kernel_size)
    c = kernel_size // 2
    u = torch.arange(kernel_size, dtype=torch.float64) - c
    yy, xx = torch.meshgrid(u, u, indexing="ij")
    a = math.radians(angle)
    p = math.cos(a) * yy + math.sin(a) * xx
    q = -math.sin(a) * yy + math.cos(a) * xx
    k = torch.exp(-0.5 * ((p / sigma[0]) ** 2 + (q / sigma[1]) ** 2))
    return k / k.sum()


def uniform_kernel(kernel_size: int) -> torch.Tensor:
    """A ``kernel_size x kernel_size`` box average."""
    check_kernel_size(kernel_size)
    return torch.full((kernel_size, kernel_size), 1.0 / kernel_size**2, dtype=torch.float64)


def cubic(t: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel (``a = -0.5``: the usual bicubic), support ``|t| < 2``."""
    t = t.abs()
    near = (a + 2) * t**3 - (a + 3) * t**2 + 1
    far = a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return torch.where(t <= 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def bicubic_antialias_kernel(factor: int) -> tuple[torch.Tensor, int]:
    """Separable ``(5r, 5r)`` bicubic anti-aliasing kernel of an ``r``-fold downscale (as
    MATLAB ``imresize``/PIL: output pixel ``i`` centred at input ``r i + (r - 1) / 2``, cubic
    stretched by ``r``). Returns the kernel and the index of offset 0 (``2r``)."""
    m = torch.arange(-2 * factor, 3 * factor, dtype=torch.float64)
    w = cubic((m - (factor - 1) / 2) / factor)
    w = w / w.sum()
    return torch.outer(w, w), 2 * factor


def motion_kernel(kernel_size: int, intensity: float, g: torch.Generator, n_points: int = 1024) -> torch.Tensor:
    """A random camera-shake trajectory rasterised with bilinear splatting (our generator).

    The path starts in a uniform direction; its heading changes by ``N(0, (0.25 intensity)^2)``
    rad per step plus rare jerks; the path is centred and scaled to span a uniform 50-100 % of
    the kernel. ``intensity`` in [0, 1]: 0 gives a straight line.
    """
    check_kernel_size(kernel_size)
    u = lambda *s: torch.rand(s, generator=g, dtype=torch.float64)  # noqa: E731
    turn = 0.25 * intensity * torch.randn(n_points, generator=g, dtype=torch.float64)
    jerk = (u(n_points) < 0.01 * intensity) * (u(n_points) - 0.5) * math.pi * intensity
    heading = 2 * math.pi * u(1) + torch.cumsum(turn + jerk, 0)
    step = 1.0 + intensity * u(n_points)
    pts = torch.cumsum(torch.stack([torch.sin(heading), torch.cos(heading)], 1) * step[:, None], 0)
    pts = pts - (pts.amax(0) + pts.amin(0)) / 2
    half = (kernel_size - 1) / 2
    pts = pts * ((half - 1e-6) * (0.5 + 0.5 * u(1)) / pts.abs().max().clamp_min(1e-12)) + half
    return _splat(pts, kernel_size)


def _splat(pts: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear accumulation of equal-weight points ``(n, 2)`` (row, col) into ``(size, size)``."""
    base = pts.floor().clamp(0, size - 1)
    frac = pts - base
    k = torch.zeros(size + 1, size + 1, dtype=torch.float64)
    i, j = base[:, 0].long(), base[:, 1].long()
    for di, dj in ((0, 0), (0, 1), (1, 0), (1, 1)):
        wgt = (frac[:, 0] if di else 1 - frac[:, 0]) * (frac[:, 1] if dj else 1 - frac[:, 1])
        k.index_put_((i + di, j + dj), wgt, accumulate=True)
    k = k[:size, :size]
    return k / k.sum()
