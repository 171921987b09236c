"""Circular (periodic-boundary) cross-correlation with an optional ``r``-fold subsampling,
computed with FFTs: ``A x = S_r (k * x)``, ``(k * x)[p] = sum_m k[m] x[(p + m) mod (H, W)]``.

With the periodic boundary the adjoint is exact (``A^T y = k (conv) S_r^T y``) and the
Moore-Penrose pseudo-inverse is diagonal in Fourier space:
``A^+ y = A^T (A A^T)^+ y`` where ``A A^T`` is circulant on the low-resolution grid with
eigenvalues ``lam(g) = mean_a |K(g + a h)|^2`` (the ``r^2`` aliases of frequency ``g``).
Eigenvalues below ``rtol^2 * max lam`` (singular values below ``rtol * max``) are treated as 0.
"""
from __future__ import annotations

import torch


def kernel_image(kernel: torch.Tensor, h: int, w: int, origin: tuple[int, int]) -> torch.Tensor:
    """Place taps ``kernel[..., i, j]`` at offsets ``(i - origin[0], j - origin[1])`` of an
    ``(h, w)`` periodic grid. ``kernel`` is ``(K, 1, kh, kw)``; returns ``(K, 1, h, w)``."""
    kh, kw = kernel.shape[-2:]
    if kh > h or kw > w:
        raise ValueError(f"a {kh}x{kw} kernel does not fit a {h}x{w} image; use a smaller kernel_size or larger images")
    img = kernel.new_zeros(*kernel.shape[:-2], h, w)
    img[..., :kh, :kw] = kernel
    return torch.roll(img, shifts=(-origin[0], -origin[1]), dims=(-2, -1))


def transfer(kernel: torch.Tensor, h: int, w: int, origin: tuple[int, int]) -> torch.Tensor:
    """Complex transfer function ``G`` with ``fft2(k * x) = G fft2(x)``: ``(K, 1, h, w)``."""
    return torch.fft.fft2(kernel_image(kernel, h, w, origin)).conj()


def apply(x: torch.Tensor, G: torch.Tensor, r: int) -> torch.Tensor:
    """``S_r ifft2(G fft2(x))``: ``(B, C, H, W)`` -> ``(B, C, H/r, W/r)``."""
    out = torch.fft.ifft2(torch.fft.fft2(x) * G).real
    return out[..., ::r, ::r].contiguous() if r > 1 else out


def adjoint(y: torch.Tensor, G: torch.Tensor, r: int) -> torch.Tensor:
    """``ifft2(conj(G) fft2(S_r^T y))``: ``(B, C, h, w)`` -> ``(B, C, h r, w r)``."""
    if r > 1:
        up = y.new_zeros(*y.shape[:-2], y.shape[-2] * r, y.shape[-1] * r)
        up[..., ::r, ::r] = y
        y = up
    return torch.fft.ifft2(torch.fft.fft2(y) * G.conj()).real


def alias_power(G: torch.Tensor, r: int) -> torch.Tensor:
    """Eigenvalues of ``A A^T`` on the ``(h, w)`` grid: ``mean over aliases of |G|^2``."""
    p = G.real**2 + G.imag**2
    if r == 1:
        return p
    *lead, H, W = p.shape
    return p.reshape(*lead, r, H // r, r, W // r).mean(dim=(-4, -2))


def pinv(y: torch.Tensor, G: torch.Tensor, r: int, rtol: float) -> torch.Tensor:
    """Moore-Penrose pseudo-inverse ``A^T (A A^T)^+ y`` (eigenvalues below ``rtol^2 max`` dropped)."""
    lam = alias_power(G, r)
    cut = (rtol**2) * lam.flatten(-2).amax(dim=-1)[..., None, None]
    keep = lam > cut
    inv = torch.where(keep, 1.0 / torch.where(keep, lam, torch.ones_like(lam)), torch.zeros_like(lam))
    z = torch.fft.ifft2(torch.fft.fft2(y) * inv).real
    return adjoint(z, G, r)
