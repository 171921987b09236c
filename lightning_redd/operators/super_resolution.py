"""Super-resolution: ``r``-fold downscaling, ``(B, C, H, W)`` -> ``(B, C, H/r, W/r)``.

* :class:`BlockAverageSR`: mean of each ``r x r`` block (the paper's SR). Its pseudo-inverse
  is nearest-neighbour (box) upsampling; factored SVD per block (singular value ``1/r``).
* :class:`BicubicSR`: bicubic anti-aliasing filter then subsampling (as MATLAB ``imresize``),
  periodic boundary; exact Fourier pseudo-inverse (:mod:`lightning_redd.operators.fft_conv`).
  Separable (``A = A_h kron A_w`` per channel), so its factored SVD is the Kronecker product of
  the SVDs of the two small dense 1-D operators (``H/r x H`` and ``W/r x W``).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal, Optional

import torch

from lightning_redd.operators import fft_conv, kernels
from lightning_redd.operators.base import SVDOperator
from lightning_redd.operators.common import (
    bound_copy,
    check_input,
    check_y,
    like,
    not_bound_error,
    orthonormal_with_first_row,
    safe_reciprocal,
)

Factor = Literal[2, 4, 8]


class _Downscale:
    """Factor validation and size checks shared by the SR operators (a mixin)."""

    factor: int
    channels: int

    def _init_factor(self, factor: int) -> None:
        if factor not in (2, 4, 8):
            raise ValueError(f"factor must be one of 2, 4, 8, got {factor}")
        self.factor = int(factor)

    def _check_divisible(self, shape: Sequence[int]) -> None:
        """Any ``H x W`` whose sides are multiples of the factor (non-square included); other sizes
        get an error naming the nearest sizes that work (no implicit padding: ``y``'s pixels
        would otherwise average pixels that are not in the image)."""
        r, h, w = self.factor, int(shape[1]), int(shape[2])
        if h % r or w % r:
            up = f"{h + (-h) % r}x{w + (-w) % r} (pad)"
            near = f"{h - h % r}x{w - w % r} (crop) and {up}" if min(h, w) >= r else up
            raise ValueError(
                f"{type(self).__name__}: image size {h}x{w} is not a multiple of factor {r}; crop or pad the images "
                f"to a multiple of {r}, nearest: {near}"
            )

    def output_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        return (int(shape[0]), int(shape[1]) // self.factor, int(shape[2]) // self.factor)

    def _check_low(self, y: torch.Tensor) -> None:
        if y.ndim != 4 or y.shape[1] != self.channels:
            raise ValueError(
                f"{type(self).__name__} expects low-resolution measurements (B, {self.channels}, h, w), "
                f"got {tuple(y.shape)}"
            )


class BlockAverageSR(_Downscale, SVDOperator):
    """Block averaging by ``factor`` in {2, 4, 8}; ``pinv`` = nearest-neighbour upsampling."""

    def __init__(self, *, factor: Factor = 4, sigma_y: float = 0.0, channels: int = 3) -> None:
        SVDOperator.__init__(self, sigma_y=sigma_y, channels=channels)
        self._init_factor(factor)
        self.image_shape: Optional[tuple[int, ...]] = None
        q = orthonormal_with_first_row(torch.ones(self.factor**2))
        self.register_buffer("Q", q, persistent=False)  # float64: exact orthogonality in tests

    def check_shape(self, shape: Sequence[int]) -> None:
        SVDOperator.check_shape(self, shape)
        self._check_divisible(shape)

    def bind(self, seeds, shape, names=None, device=None, params=None) -> BlockAverageSR:
        self.check_shape(shape)
        return bound_copy(self, shape, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over ``r x r`` blocks: ``(B, C, H, W)`` -> ``(B, C, H/r, W/r)``."""
        check_input(self, x)
        return torch.nn.functional.avg_pool2d(x, self.factor)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Replicate each value over its block, divided by ``r^2``."""
        self._check_low(y)
        return self._upsample(y) / self.factor**2

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """Nearest-neighbour upsampling (= ``A^T (A A^T)^-1`` since ``A A^T = I / r^2``)."""
        check_y(self, y)
        self._check_low(y)
        return self._upsample(y)

    def _upsample(self, y: torch.Tensor) -> torch.Tensor:
        r = self.factor
        return y.repeat_interleave(r, dim=-2).repeat_interleave(r, dim=-1)

    # ------------------------------------------------------------------ SVD
    # Per block: an orthonormal basis Q whose first row is 1/r (the block mean direction).
    # Vt(x) = [first coordinates of all blocks (M = C*h*w), then the other r^2 - 1 of each].
    def _dims(self) -> tuple[int, int, int, int]:
        if self.image_shape is None:
            raise not_bound_error(self)
        c, h, w = self.image_shape
        return c, h // self.factor, w // self.factor, c * h * w

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        c, h, w, n = self._dims()
        r = self.factor
        blocks = x.reshape(-1, c, h, r, w, r).permute(0, 1, 2, 4, 3, 5).reshape(-1, c, h, w, r * r)
        z = blocks @ like(self.Q, x).T
        return torch.cat([z[..., 0].flatten(1), z[..., 1:].flatten(1)], dim=1)

    def V(self, z: torch.Tensor) -> torch.Tensor:
        c, h, w, n = self._dims()
        r, m = self.factor, c * h * w
        first = z[:, :m].reshape(-1, c, h, w, 1)
        rest = z[:, m:].reshape(-1, c, h, w, r * r - 1)
        blocks = torch.cat([first, rest], dim=-1) @ like(self.Q, z)
        return blocks.reshape(-1, c, h, w, r, r).permute(0, 1, 2, 4, 3, 5).reshape(-1, n)

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        return y.reshape(y.shape[0], -1).clone()

    U = Ut

    def singulars(self) -> torch.Tensor:
        """``(C*h*w,)`` all equal to ``1 / r``."""
        c, h, w, _ = self._dims()
        return torch.full((c * h * w,), 1.0 / self.factor)


def _circular_filter_matrix(n: int, r: int, taps: torch.Tensor, origin: int) -> torch.Tensor:
    """Dense ``(n / r, n)`` matrix of a 1-D circular correlation with ``taps`` (tap ``origin`` at
    offset 0) followed by keeping every ``r``-th sample: ``y[i] = sum_m taps[m] x[(r i + m - origin) mod n]``."""
    rows = torch.arange(n // r)[:, None].expand(-1, taps.numel())
    cols = (r * rows + torch.arange(taps.numel())[None] - origin) % n
    a = torch.zeros(n // r, n, dtype=taps.dtype)
    a.index_put_((rows.reshape(-1), cols.reshape(-1)), taps.expand(n // r, -1).reshape(-1), accumulate=True)
    return a


@functools.lru_cache(maxsize=16)
def _bicubic_1d_svd(n: int, factor: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float64 ``(U, s, Vh)`` (full ``n x n`` ``Vh``) of the 1-D bicubic ``(n / r, n)`` operator.

    Computed once per ``(n, factor)`` on one thread: these small LAPACK calls gain nothing from
    threads and a 2-thread MKL SVD on a busy CPU can take ~1 s instead of a few ms."""
    k, origin = kernels.bicubic_antialias_kernel(factor)
    taps = k.sum(dim=1)  # the 1-D filter: k = outer(taps, taps) and sum(taps) = 1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        u, s, vh = torch.linalg.svd(_circular_filter_matrix(n, factor, taps, origin))
    finally:
        torch.set_num_threads(threads)
    return u.contiguous(), s, vh.contiguous()


class BicubicSR(_Downscale, SVDOperator):
    """Bicubic downscaling by ``factor`` in {2, 4, 8} (``5r x 5r`` anti-aliasing taps, periodic
    boundary). ``pinv`` is the Fourier Moore-Penrose pseudo-inverse, cut-off ``pinv_rtol``.

    SVD (after ``bind``, which computes the float64 SVDs ``A_h = U_h diag(s_h) Vh_h`` and
    ``A_w = U_w diag(s_w) Vh_w`` of the 1-D operators, ``h = H/r``, ``w = W/r``): per channel
    ``Vt(x) = Vh_h X Vh_w^T`` (``H x W``, full orthogonal ``Vh``), flattened so that its leading
    ``M = C*h*w`` entries are the blocks ``[c, :h, :w]`` in ``(c, i, j)`` order, followed by the
    remaining entries of each channel (``[c, i, j]`` with ``i >= h`` or ``j >= w``, in ``(c, i, j)``
    order). ``singulars()[c, i, j] = s_h[i] s_w[j]`` on that leading block (each 1-D factor
    descending, the product not globally sorted); ``Ut(y) = U_h^T Y U_w`` flattened in ``(c, i, j)``.
    """

    def __init__(self, *, factor: Factor = 4, pinv_rtol: float = 1e-3, sigma_y: float = 0.0, channels: int = 3) -> None:
        SVDOperator.__init__(self, sigma_y=sigma_y, channels=channels)
        self._init_factor(factor)
        self.image_shape: Optional[tuple[int, ...]] = None
        if not 0 <= pinv_rtol < 1:
            raise ValueError(f"pinv_rtol must be in [0, 1) (relative singular-value cut-off), got {pinv_rtol}")
        self.pinv_rtol = float(pinv_rtol)
        k, self.origin = kernels.bicubic_antialias_kernel(self.factor)
        self.register_buffer("kernel", k.float()[None, None], persistent=False)

    def check_shape(self, shape: Sequence[int]) -> None:
        SVDOperator.check_shape(self, shape)
        self._check_divisible(shape)
        if min(shape[1], shape[2]) < self.kernel.shape[-1]:
            raise ValueError(
                f"BicubicSR: images of {shape[1]}x{shape[2]} are smaller than the {self.kernel.shape[-1]}-tap "
                "kernel; use larger images or a smaller factor"
            )

    def _G(self, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        k = self.kernel.to(device=like.device, dtype=like.dtype)
        return fft_conv.transfer(k, h, w, (self.origin, self.origin))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, C, H/r, W/r)``."""
        check_input(self, x)
        return fft_conv.apply(x, self._G(x.shape[-2], x.shape[-1], x), self.factor)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._check_low(y)
        r = self.factor
        return fft_conv.adjoint(y, self._G(y.shape[-2] * r, y.shape[-1] * r, y), r)

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        check_y(self, y)
        self._check_low(y)
        r = self.factor
        return fft_conv.pinv(y, self._G(y.shape[-2] * r, y.shape[-1] * r, y), r, self.pinv_rtol)

    # ------------------------------------------------------------------ SVD
    def bind(self, seeds, shape, names=None, device=None, params=None) -> BicubicSR:
        """Remember the image shape and compute the 1-D SVD factors (buffers, float64)."""
        self.check_shape(shape)
        out = bound_copy(self, shape, device)
        for axis, n in (("h", int(shape[1])), ("w", int(shape[2]))):
            for name, t in zip(("u", "s", "vh"), _bicubic_1d_svd(n, self.factor), strict=True):
                out.register_buffer(f"svd_{name}_{axis}", t.to(device).clone(), persistent=False)
        return out

    def _svd_shapes(self, z: torch.Tensor, low: bool) -> tuple[int, int, int, int, int]:
        """``(C, H, W, h, w)``, after checking that the operator is bound and that ``z`` is a
        flattened ``(B, C*h*w)`` (``low``) or ``(B, C*H*W)`` tensor."""
        if self.image_shape is None or getattr(self, "svd_s_h", None) is None:
            raise not_bound_error(self)
        c, hh, ww = self.image_shape
        h, w = hh // self.factor, ww // self.factor
        n = c * h * w if low else c * hh * ww
        if z.ndim != 2 or z.shape[1] != n:
            raise ValueError(f"BicubicSR SVD maps act on flattened (B, {n}) tensors, got {tuple(z.shape)}")
        return c, hh, ww, h, w

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        c, hh, ww, h, w = self._svd_shapes(x, low=False)
        z = like(self.svd_vh_h, x) @ x.reshape(-1, c, hh, ww) @ like(self.svd_vh_w, x).T
        rest = torch.cat([z[..., :h, w:].flatten(2), z[..., h:, :].flatten(2)], dim=2)
        return torch.cat([z[..., :h, :w].flatten(1), rest.flatten(1)], dim=1)

    def V(self, z: torch.Tensor) -> torch.Tensor:
        c, hh, ww, h, w = self._svd_shapes(z, low=False)
        m = c * h * w
        rest = z[:, m:].reshape(-1, c, hh * ww - h * w)
        full = z.new_empty(z.shape[0], c, hh, ww)
        full[..., :h, :w] = z[:, :m].reshape(-1, c, h, w)
        full[..., :h, w:] = rest[..., : h * (ww - w)].reshape(-1, c, h, ww - w)
        full[..., h:, :] = rest[..., h * (ww - w) :].reshape(-1, c, hh - h, ww)
        return (like(self.svd_vh_h, z).T @ full @ like(self.svd_vh_w, z)).flatten(1)

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        c, _, _, h, w = self._svd_shapes(y, low=True)
        return (like(self.svd_u_h, y).T @ y.reshape(-1, c, h, w) @ like(self.svd_u_w, y)).flatten(1)

    def U(self, z: torch.Tensor) -> torch.Tensor:
        c, _, _, h, w = self._svd_shapes(z, low=True)
        return (like(self.svd_u_h, z) @ z.reshape(-1, c, h, w) @ like(self.svd_u_w, z).T).flatten(1)

    def singulars(self) -> torch.Tensor:
        """``(C*h*w,)`` singular values ``s_h[i] s_w[j]``, ``(c, i, j)`` order (not sorted)."""
        if self.image_shape is None or getattr(self, "svd_s_h", None) is None:
            raise not_bound_error(self)
        s = torch.outer(self.svd_s_h, self.svd_s_w).to(self.kernel.dtype)  # the operator's dtype
        return s.expand(self.image_shape[0], -1, -1).flatten()

    def svd_pinv_scale(self) -> torch.Tensor:
        """``1 / s`` with the same cut-off as :meth:`pinv` (for DDRM-style solvers)."""
        return safe_reciprocal(self.singulars(), self.pinv_rtol)
