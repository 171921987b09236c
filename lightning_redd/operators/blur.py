"""Deblurring operators: circular (periodic-boundary) cross-correlation with a kernel,
the same kernel on every channel. ``y`` is ``(B, C, H, W)``.

Boundary convention: periodic, so that the adjoint is exact and the pseudo-inverse is a
Fourier-domain division (:mod:`lightning_redd.operators.fft_conv`). ``pinv`` drops the
frequencies whose transfer magnitude is below ``pinv_rtol * max``: it is the exact
Moore-Penrose pseudo-inverse of the operator with those (near-)zero singular values, and
``A(pinv(A x)) = A x`` up to ``pinv_rtol * max|G|`` times the energy of the dropped frequencies.
Raise ``pinv_rtol`` (e.g. 3e-2) for a less noise-amplifying initial guess from noisy ``y``.

Every circular blur is an :class:`SVDOperator` without dense matrices: in the real orthonormal
Fourier basis (:func:`fft_conv.real_fourier`) the correlation acts on each (cos, sin) pair of a
frequency ``f`` as ``|G(f)|`` times a rotation by ``arg G(f)`` (a sign at the real-only DC and
Nyquist frequencies), so ``V`` = that basis, ``U = V R(arg G)`` and ``s = |G|`` (per image for
per-image kernels). Even kernels (Gaussian, uniform) are the special case ``arg G in {0, pi}``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Optional, Union

import torch

from lightning_redd.operators import fft_conv, kernels
from lightning_redd.operators.base import SVDOperator
from lightning_redd.operators.common import (
    bound_copy,
    check_bound_batch,
    check_input,
    check_seeds,
    check_y,
    like,
    not_bound_error,
    safe_reciprocal,
)


def _check_rtol(pinv_rtol: float) -> None:
    if not 0 <= pinv_rtol < 1:
        raise ValueError(f"pinv_rtol must be in [0, 1) (relative singular-value cut-off), got {pinv_rtol}")


class CircularBlur(SVDOperator):
    """Shared FFT machinery and the real Fourier SVD. Subclasses set the ``kernel`` buffer
    ``(K, 1, k, k)``, ``K`` 1 (shared) or B (one per image, drawn in ``bind``, with
    ``per_image_kernel = True``).

    SVD (after ``bind``; flattened ``(B, C*H*W)`` tensors, M = N): ``Vt`` gives each channel's
    real-Fourier coordinates (:func:`fft_conv.real_fourier`, flattened in ``(C, H, W)`` order),
    ``singulars()`` the matching ``|G|`` (not sorted): ``(N,)`` for a shared kernel, ``(B, N)``
    for per-image kernels.
    """

    #: ``True`` when ``kernel`` holds one kernel per image (``singulars()`` is then ``(B, N)``).
    per_image_kernel: ClassVar[bool] = False

    def __init__(self, *, pinv_rtol: float = 1e-3, sigma_y: float = 0.0, channels: int = 3) -> None:
        super().__init__(sigma_y=sigma_y, channels=channels)
        _check_rtol(pinv_rtol)
        self.pinv_rtol = float(pinv_rtol)
        self.image_shape: Optional[tuple[int, ...]] = None
        self.register_buffer("kernel", None, persistent=False)

    def check_shape(self, shape: Sequence[int]) -> None:
        super().check_shape(shape)
        k = self.kernel
        if k is not None and (k.shape[-2] > shape[1] or k.shape[-1] > shape[2]):
            raise ValueError(
                f"{type(self).__name__}: a {k.shape[-2]}x{k.shape[-1]} kernel does not fit {shape[1]}x{shape[2]} "
                "images; use a smaller kernel_size or larger images"
            )
        if self.image_shape is not None and tuple(shape) != tuple(self.image_shape):
            raise ValueError(
                f"{type(self).__name__} was bound for images of shape {self.image_shape} but got {tuple(shape)}; "
                "call bind(seeds, shape) with this image shape"
            )

    def transfer(self, t: torch.Tensor) -> torch.Tensor:
        """``G`` of shape ``(K, 1, H, W)`` (complex) for a tensor ``t`` of image size."""
        if self.kernel is None:
            raise not_bound_error(self)
        check_bound_batch(self, self.kernel.shape[0], t)
        k = self.kernel.to(device=t.device, dtype=t.dtype)
        c = (k.shape[-2] // 2, k.shape[-1] // 2)
        return fft_conv.transfer(k, t.shape[-2], t.shape[-1], c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Circular correlation ``k * x``: ``(B, C, H, W)`` -> ``(B, C, H, W)``."""
        check_input(self, x)
        return fft_conv.apply(x, self.transfer(x), 1)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Exact adjoint (circular convolution with the flipped kernel)."""
        check_input(self, y)
        return fft_conv.adjoint(y, self.transfer(y), 1)

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """Fourier pseudo-inverse ``conj(G) / |G|^2`` on frequencies with ``|G| > pinv_rtol max|G|``."""
        check_y(self, y)
        check_input(self, y)
        return fft_conv.pinv(y, self.transfer(y), 1, self.pinv_rtol)

    def bind(self, seeds, shape, names=None, device=None, params=None):
        self.check_shape(shape)
        return bound_copy(self, shape, device)._with_svd()

    def _with_svd(self) -> CircularBlur:
        """Register the SVD buffers of a bound copy: ``svd_abs`` ``|G|`` and ``svd_cos``/``svd_sin``
        the phase of ``G`` (``(K, 1, H, W // 2 + 1)``, float64, computed in float64 on the CPU so
        that ``U`` is the same in any dtype and on any device, see :func:`fft_conv.phase`)."""
        h, w = self.image_shape[1:]
        k = self.kernel.detach().to("cpu", torch.float64)
        g = fft_conv.rtransfer(k, h, w, (k.shape[-2] // 2, k.shape[-1] // 2))
        ph = fft_conv.phase(g, w)
        dev = self.kernel.device
        for name, t in (("svd_abs", g.abs()), ("svd_cos", ph.real), ("svd_sin", ph.imag)):
            self.register_buffer(name, t.contiguous().to(dev), persistent=False)
        return self

    # ------------------------------------------------------------------ SVD
    def _spec(self, z: torch.Tensor) -> torch.Tensor:
        if self.image_shape is None or self.kernel is None or getattr(self, "svd_abs", None) is None:
            raise not_bound_error(self)
        n = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
        if z.ndim != 2 or z.shape[1] != n:
            raise ValueError(f"{type(self).__name__} SVD maps act on flattened (B, {n}) tensors, got {tuple(z.shape)}")
        check_bound_batch(self, self.kernel.shape[0], z)
        return z.reshape(z.shape[0], *self.image_shape)

    def _phase(self, t: torch.Tensor) -> torch.Tensor:
        """``G / |G|`` (``(K, 1, H, W // 2 + 1)``, complex) for data ``t``'s dtype and device."""
        return torch.complex(like(self.svd_cos, t), like(self.svd_sin, t))

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        return fft_conv.real_fourier(self._spec(x)).flatten(1)

    def V(self, z: torch.Tensor) -> torch.Tensor:
        return fft_conv.inverse_real_fourier(self._spec(z)).flatten(1)

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        y = self._spec(y)
        f = torch.fft.rfft2(y, norm="ortho") * self._phase(y).conj()
        return fft_conv.pack_spectrum(f, y.shape[-1]).flatten(1)

    def U(self, z: torch.Tensor) -> torch.Tensor:
        z = self._spec(z)
        f = fft_conv.real_fourier_spectrum(z) * self._phase(z)
        return torch.fft.irfft2(f, s=z.shape[-2:], norm="ortho").flatten(1)

    def singulars(self) -> torch.Tensor:
        """Singular values ``|G|`` aligned with ``Vt`` (not sorted), in the kernel's dtype:
        ``(C*H*W,)`` for a shared kernel, ``(B, C*H*W)`` for per-image kernels."""
        if self.image_shape is None or getattr(self, "svd_abs", None) is None:
            raise not_bound_error(self)
        g = self.svd_abs.to(self.kernel.dtype)
        s = fft_conv.real_fourier_values(g, self.image_shape[2]).expand(-1, self.image_shape[0], -1, -1).flatten(1)
        return s if self.per_image_kernel else s[0]

    def svd_pinv_scale(self) -> torch.Tensor:
        """``1 / s`` with the same cut-off as :meth:`pinv` (for DDRM-style solvers)."""
        return safe_reciprocal(self.singulars(), self.pinv_rtol)


class GaussianBlur(CircularBlur):
    """Gaussian deblurring, isotropic (``sigma`` a float) or anisotropic (``sigma = (s0, s1)``
    pixels along axes rotated by ``angle`` degrees). Paper setting: 61x61, sigma 3.0."""

    def __init__(
        self,
        *,
        kernel_size: int = 61,
        sigma: Union[float, tuple[float, float]] = 3.0,
        angle: float = 0.0,
        pinv_rtol: float = 1e-3,
        sigma_y: float = 0.0,
        channels: int = 3,
    ) -> None:
        super().__init__(pinv_rtol=pinv_rtol, sigma_y=sigma_y, channels=channels)
        s = (float(sigma), float(sigma)) if isinstance(sigma, (int, float)) else tuple(float(v) for v in sigma)
        if len(s) != 2 or min(s) <= 0:
            raise ValueError(f"sigma must be a float > 0 or a pair (s0, s1) of floats > 0, got {sigma}")
        self.sigma, self.angle = s, float(angle)
        self.kernel = kernels.gaussian_kernel(kernel_size, s, angle).float()[None, None]


class UniformBlur(CircularBlur):
    """Uniform (box) deblurring with a ``kernel_size x kernel_size`` average (DDRM: 9x9)."""

    def __init__(self, *, kernel_size: int = 9, pinv_rtol: float = 1e-3, sigma_y: float = 0.0, channels: int = 3) -> None:
        super().__init__(pinv_rtol=pinv_rtol, sigma_y=sigma_y, channels=channels)
        self.kernel = kernels.uniform_kernel(kernel_size).float()[None, None]


class MotionBlur(CircularBlur):
    """Motion deblurring with a random camera-shake kernel per image, drawn in ``bind`` from
    the image's seed (:func:`kernels.motion_kernel`). Paper setting: 61x61, intensity 0.5.
    The kernels are not symmetric: ``U`` rotates each frequency pair by the phase of ``G``;
    ``singulars()`` is ``(B, C*H*W)``, one row per image."""

    per_image_kernel: ClassVar[bool] = True

    def __init__(
        self,
        *,
        kernel_size: int = 61,
        intensity: float = 0.5,
        pinv_rtol: float = 1e-3,
        sigma_y: float = 0.0,
        channels: int = 3,
    ) -> None:
        super().__init__(pinv_rtol=pinv_rtol, sigma_y=sigma_y, channels=channels)
        kernels.check_kernel_size(kernel_size)
        if not 0 <= intensity <= 1:
            raise ValueError(f"intensity must be in [0, 1] (0 = straight line), got {intensity}")
        self.kernel_size, self.intensity = int(kernel_size), float(intensity)

    def check_shape(self, shape: Sequence[int]) -> None:
        super().check_shape(shape)
        if self.kernel_size > min(shape[1], shape[2]):
            raise ValueError(
                f"MotionBlur: a {self.kernel_size}x{self.kernel_size} kernel does not fit {shape[1]}x{shape[2]} "
                "images; use a smaller kernel_size or larger images"
            )

    def bind(self, seeds, shape, names=None, device=None, params=None) -> MotionBlur:
        self.check_shape(shape)
        check_seeds(seeds, names)
        ks = [kernels.motion_kernel(self.kernel_size, self.intensity, torch.Generator().manual_seed(int(s))) for s in seeds]
        out = bound_copy(self, shape, device)
        out.register_buffer("kernel", torch.stack(ks)[:, None].float().to(device), persistent=False)
        return out._with_svd()


class KernelBlur(CircularBlur):
    """Deblurring with each image's own, known kernel (e.g. measured or estimated): the
    kernels come with the batch, read from files by the data module (``data.param_folders.kernel``:
    ``<image stem>.npy`` or a grayscale PNG, normalised to sum 1), as ``params["kernel"]``
    ``(B, k, k)``; odd ``k`` up to the image size, centred at ``k // 2``. ``singulars()`` is
    ``(B, C*H*W)``, one row per image."""

    per_image_kernel: ClassVar[bool] = True

    def file_params(self) -> dict:
        """One kernel file per image (``data.param_folders.kernel``)."""
        from lightning_redd.operators.file_params import KERNEL

        return {"kernel": KERNEL}

    def bind(self, seeds, shape, names=None, device=None, params=None) -> KernelBlur:
        self.check_shape(shape)
        check_seeds(seeds, names)
        k = None if params is None else params.get("kernel")
        if k is None:
            raise ValueError("KernelBlur needs each image's kernel: set data.param_folders.kernel to the folder of "
                             "<image stem>.npy (or grayscale .png) kernels")
        if k.ndim != 3 or k.shape[0] != len(seeds) or k.shape[1] % 2 == 0 or k.shape[1] != k.shape[2]:
            raise ValueError(f"given kernels must be (B={len(seeds)}, k, k) with k odd, got {tuple(k.shape)}")
        if k.shape[1] > min(shape[1], shape[2]):
            raise ValueError(f"KernelBlur: {k.shape[1]}x{k.shape[2]} kernels do not fit {shape[1]}x{shape[2]} images; "
                             f"use odd kernels no larger than the image's smaller side ({min(shape[1], shape[2])} px)")
        out = bound_copy(self, shape, device)
        out.register_buffer("kernel", k[:, None].float().to(device), persistent=False)
        return out._with_svd()
