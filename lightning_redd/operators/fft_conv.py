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


# ---------------------------------------------------------------------- real Fourier basis
# A real orthonormal basis of (h, w) images built on the unitary DFT. Each pair of conjugate
# frequencies {f, -f} contributes two coordinates, sqrt(2) Re X(f) and sqrt(2) Im X(f); the
# self-conjugate frequencies (rows 0 and h/2 of columns 0 and w/2, the halves where even)
# contribute one, X(f) itself (real). Layout of the (h, w) coordinate array, ``rfft2`` columns
# ``k = 0 .. w // 2``, ``wi = (w - 1) // 2`` interior columns:
#
# * columns ``1 .. wi``: ``sqrt(2) Re X[:, k]``; columns ``w - 1 .. w - wi``: ``sqrt(2) Im X[:, k]``
#   (column ``w - k`` holds the imaginary part of column ``k``);
# * column 0 (and column ``w/2`` for even ``w``), whose entries are conjugate-symmetric along
#   the rows: the same packing along the rows (row ``h - j`` holds ``sqrt(2) Im X[j]``, rows 0
#   and ``h/2`` the real values).
#
# A circular correlation with any real kernel acts on a pair as ``|G(f)|`` times a rotation by
# ``arg G(f)``, so ``V = this basis``, ``U = V R(arg G)`` and ``s = |G|`` is a real SVD.
_SQRT2 = 2.0**0.5


def _edge_columns(w: int) -> list[int]:
    return [0, w // 2] if w % 2 == 0 else [0]


def _layout(re: torch.Tensor, im: torch.Tensor, w: int, scale: float) -> torch.Tensor:
    """Place per-frequency values ``re``/``im`` (``(..., h, w // 2 + 1)``, real) in the
    coordinate layout above, multiplying the pair coordinates by ``scale``."""
    h = re.shape[-2]
    hi, wi = (h - 1) // 2, (w - 1) // 2
    out = re.new_empty(*re.shape[:-1], w)
    out[..., 1 : wi + 1] = scale * re[..., 1 : wi + 1]
    out[..., w - wi :] = scale * im[..., 1 : wi + 1].flip(-1)
    for e in _edge_columns(w):
        col = out[..., e]
        col[..., 0] = re[..., 0, e]
        col[..., 1 : hi + 1] = scale * re[..., 1 : hi + 1, e]
        col[..., h - hi :] = scale * im[..., 1 : hi + 1, e].flip(-1)
        if h % 2 == 0:
            col[..., h // 2] = re[..., h // 2, e]
    return out


def pack_spectrum(f: torch.Tensor, w: int) -> torch.Tensor:
    """Real-Fourier coordinates ``(..., h, w)`` of an ``rfft2`` spectrum ``f`` (ortho norm) of
    ``(h, w)`` images (only the non-redundant rows of the edge columns are read)."""
    return _layout(f.real, f.imag, w, _SQRT2)


def real_fourier(x: torch.Tensor) -> torch.Tensor:
    """Coordinates of ``x`` (``(..., h, w)``, real) in the real orthonormal Fourier basis."""
    return pack_spectrum(torch.fft.rfft2(x, norm="ortho"), x.shape[-1])


def real_fourier_spectrum(z: torch.Tensor) -> torch.Tensor:
    """The ``rfft2`` spectrum (``(..., h, w // 2 + 1)``, ortho norm, conjugate duplicates of
    the edge columns filled in) of the image with real-Fourier coordinates ``z``."""
    h, w = z.shape[-2:]
    hi, wi = (h - 1) // 2, (w - 1) // 2
    f = z.new_empty(*z.shape[:-1], w // 2 + 1, 2)  # (real, imag), times sqrt(2) until scaled
    f[..., 1 : wi + 1, 0] = z[..., 1 : wi + 1]
    f[..., 1 : wi + 1, 1] = z[..., w - wi :].flip(-1)
    real_rows = [0, h // 2] if h % 2 == 0 else [0]
    for e in _edge_columns(w):
        col, out = z[..., e], f[..., e, :]
        out[..., 1 : hi + 1, 0] = col[..., 1 : hi + 1]
        out[..., 1 : hi + 1, 1] = col[..., h - hi :].flip(-1)
        out[..., h - hi :, 0] = col[..., 1 : hi + 1].flip(-1)  # conjugate duplicates X[h - j] = conj X[j]
        out[..., h - hi :, 1] = -col[..., h - hi :]
        out[..., real_rows, 1] = 0
    f.mul_(1 / _SQRT2)
    for e in _edge_columns(w):
        f[..., real_rows, e, 0] = z[..., real_rows, e]  # self-conjugate: real, not scaled
    return torch.view_as_complex(f)


def inverse_real_fourier(z: torch.Tensor) -> torch.Tensor:
    """The image with real-Fourier coordinates ``z`` (inverse and transpose of :func:`real_fourier`)."""
    return torch.fft.irfft2(real_fourier_spectrum(z), s=z.shape[-2:], norm="ortho")


def real_fourier_values(a: torch.Tensor, w: int) -> torch.Tensor:
    """Per-frequency real values ``a`` (``(..., h, w // 2 + 1)``, e.g. ``|G|``) repeated on the
    coordinates of their frequency: ``(..., h, w)``, aligned with :func:`real_fourier`."""
    return _layout(a, a, w, 1.0)


def rtransfer(kernel: torch.Tensor, h: int, w: int, origin: tuple[int, int]) -> torch.Tensor:
    """The non-redundant half ``G[..., : w // 2 + 1]`` of :func:`transfer` (via ``rfft2``)."""
    return torch.fft.rfft2(kernel_image(kernel, h, w, origin)).conj()


def phase(G: torch.Tensor, w: int) -> torch.Tensor:
    """``G / |G|`` for the ``rfft2``-layout ``G`` of ``(h, w)`` images (per leading entry).

    Exactly ``+-1`` at the self-conjugate frequencies (where ``G`` of a real kernel is real up to
    rounding), so that ``U`` keeps those one-dimensional coordinates; and 1 where ``|G|`` is at
    rounding level (``<= 16 eps max|G|``), where the computed phase would be noise (and differ
    between devices): there ``A`` is reproduced within that level either way."""
    h = G.shape[-2]
    re, im = G.real, G.imag.clone()
    for e in _edge_columns(w):
        im[..., [0, h // 2] if h % 2 == 0 else [0], e] = 0
    mag = torch.sqrt(re**2 + im**2)
    tol = 16 * torch.finfo(mag.dtype).eps * mag.flatten(-2).amax(dim=-1)[..., None, None]
    keep = mag > tol
    safe = torch.where(keep, mag, torch.ones_like(mag))
    return torch.where(keep, torch.complex(re / safe, im / safe), torch.ones_like(G))
