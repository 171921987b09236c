"""Forward models ``y = A(x) + noise``.

Conventions (shared by every operator):

* ``x`` is a batch of images ``(B, C, H, W)`` in ``[-1, 1]``.
* ``sigma_y`` is quoted in ``[0, 1]`` pixel units, as in the paper; the Gaussian noise
  added to ``y`` in ``[-1, 1]`` units therefore has standard deviation ``2 * sigma_y``.
* ``y`` keeps the shape the operator naturally produces: inpainting returns a full-size
  image with zeros at the missing pixels (the data term's mean counts them, as in the
  paper's runs); block-average super-resolution returns ``(B, C, H/r, W/r)``.
* Operators with per-image random parameters (masks, kernels) are *templates*:
  ``bind(seeds, shape)`` returns an operator whose parameters are fixed for one batch,
  image ``i`` drawn from ``seeds[i]`` alone. The same bound operator measures and solves.

Operators know nothing of priors, solvers or Lightning.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from torch import nn

from lightning_redd import seeding


class ForwardOperator(nn.Module):
    """A (possibly nonlinear) forward model. Subclasses implement ``forward`` and ``pinv``.

    Args:
        sigma_y: measurement noise level in ``[0, 1]`` units (std ``2 * sigma_y`` in
            ``[-1, 1]`` units). Must be >= 0.
        channels: number of image channels the operator accepts (3 for RGB).
    """

    linear: ClassVar[bool] = False
    #: Noise model of ``measure``: ``"gaussian"`` (std ``2 * sigma_y``) or ``"poisson"``
    #: (photon counts at ``poisson_rate`` per unit intensity, then Gaussian if ``sigma_y > 0``).
    noise: str = "gaussian"
    poisson_rate: float = 1.0

    def __init__(self, *, sigma_y: float = 0.0, channels: int = 3) -> None:
        super().__init__()
        if not math.isfinite(sigma_y) or sigma_y < 0:
            raise ValueError(f"sigma_y must be a finite number >= 0 (in [0, 1] pixel units), got {sigma_y}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.sigma_y = float(sigma_y)
        self.channels = int(channels)

    # ------------------------------------------------------------------ interface
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Noise-free ``A(x)``; ``x`` is ``(B, C, H, W)`` in ``[-1, 1]``."""
        raise NotImplementedError

    def pinv(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Initial guess ``x`` from ``y``: the pseudo-inverse of a linear operator, or a cheap
        inverse guess of a nonlinear one. Returns ``(B, C, H, W)``."""
        raise NotImplementedError

    def bind(
        self,
        seeds: Sequence[int],
        shape: Sequence[int],
        names: Sequence[str] | None = None,
        device: torch.device | str | None = None,
        params: Mapping[str, torch.Tensor] | None = None,
    ) -> ForwardOperator:
        """Fix the per-image parameters for one batch.

        Args:
            seeds: one integer seed per image (see :mod:`lightning_redd.seeding`, stream
                ``"operator"``); image ``i``'s parameters depend on ``seeds[i]`` only.
            shape: ``(C, H, W)`` of one image.
            names: image names (stems), for messages.
            device: where the parameters live.
            params: per-image parameters read from files by the data module instead of drawn
                from the seeds, stacked along the batch: ``mask`` ``(B, Cm, H, W)`` (1 =
                observed), ``kernel`` ``(B, k, k)``, ``jpeg_luma``/``jpeg_chroma`` ``(B, 8, 8)``.
                Operators take the keys they use and ignore the others.

        Operators without per-image parameters return ``self``.
        """
        self.check_shape(shape)
        return self

    def file_params(self) -> dict:
        """The per-image parameters this operator reads from files, ``{name: FileParam}`` (see
        :mod:`lightning_redd.operators.file_params`); the data module reads them and passes the
        tensors to :meth:`bind` as ``params``. None by default."""
        return {}

    def observed(self, y: torch.Tensor) -> torch.Tensor:
        """What the operator observes of a given measurement ``y`` (the entries it can explain);
        ``y`` itself unless overridden (inpainting: the unmasked pixels, the rest set to 0)."""
        return y

    def measure(self, x: torch.Tensor, gens: Sequence[torch.Generator]) -> torch.Tensor:
        """``y = A(x) + 2 * sigma_y * n``, ``n ~ N(0, I)`` drawn per image from ``gens[i]``.

        With ``noise == "poisson"``, ``A(x)`` is first mapped to intensities ``(A(x) + 1) / 2``
        (clipped at 0), replaced by ``Poisson(rate * intensity) / rate`` and mapped back.
        """
        self.check_x(x)
        if len(gens) != x.shape[0]:
            raise ValueError(f"measure needs one generator per image: got {len(gens)} for a batch of {x.shape[0]}")
        y = self.measure_clean(x)
        if self.noise == "poisson":
            y = poisson_noise(y, gens, self.poisson_rate)
        elif self.noise != "gaussian":
            raise ValueError(f"unknown noise model {self.noise!r}; allowed: 'gaussian', 'poisson'")
        if self.sigma_y > 0:
            n = seeding.randn(y.shape[1:], gens, device=y.device, dtype=y.dtype)
            y = y + 2.0 * self.sigma_y * n
        return y

    def measure_clean(self, x: torch.Tensor) -> torch.Tensor:
        """The exact noise-free measurement used by ``measure``. Defaults to ``forward``;
        operators whose ``forward`` is a differentiable surrogate override it."""
        return self(x)

    def output_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """``(C', H', W')`` of one image's measurement for an image of ``shape = (C, H, W)``."""
        return tuple(int(s) for s in shape)

    # ------------------------------------------------------------------ validation
    def check_shape(self, shape: Sequence[int]) -> None:
        """Raise a clear error if one image of ``shape = (C, H, W)`` does not fit."""
        if len(shape) != 3:
            raise ValueError(f"an image shape is (C, H, W); got {tuple(shape)}")
        if shape[0] != self.channels:
            raise ValueError(
                f"{type(self).__name__} expects {self.channels}-channel images, got {shape[0]} channels; "
                f"set channels={shape[0]} on the operator or convert the images"
            )

    def check_x(self, x: torch.Tensor) -> None:
        """Raise a clear error for a non-4D batch, a wrong channel count, or NaN/inf values."""
        if x.ndim != 4:
            raise ValueError(f"{type(self).__name__} expects a batch (B, C, H, W), got shape {tuple(x.shape)}")
        self.check_shape(x.shape[1:])
        check_finite(x, "x")


class LinearOperator(ForwardOperator):
    """A linear forward model: adds ``adjoint``; ``pinv`` is the Moore-Penrose pseudo-inverse
    (or an exact right inverse on the range, so that ``A(pinv(A x)) = A x``)."""

    linear: ClassVar[bool] = True

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """``A^T y``, shape of ``x``."""
        raise NotImplementedError


class SVDOperator(LinearOperator):
    """A linear operator with a factored SVD ``A = U diag(s) V^T`` (for DDRM-style solvers).

    Implementations act on flattened images ``(B, N)`` without building dense matrices:
    ``Vt(x)`` and ``V(z)`` map between pixel space (N = C*H*W) and spectral space,
    ``Ut``/``U`` between measurement space (M) and the first M spectral coordinates, and
    ``singulars()`` returns the (M,) singular values aligned with ``Vt``'s leading entries.
    """

    def V(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def Vt(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def U(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def Ut(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def singulars(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def check_finite(t: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``t`` holds NaN or inf."""
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf values; clean the input (e.g. torch.nan_to_num) before measuring")


def poisson_noise(y: torch.Tensor, gens: Sequence[torch.Generator], rate: float) -> torch.Tensor:
    """Poisson noise on ``y`` in ``[-1, 1]`` units: ``2 * Poisson(rate * (y + 1) / 2) / rate - 1``,
    image ``i`` drawn from ``gens[i]`` on the CPU. ``rate`` is the photon count of a white pixel."""
    if not rate > 0:
        raise ValueError(f"poisson_rate must be > 0 (photons per unit intensity), got {rate}")
    lam = (rate * (y.detach() + 1) / 2).clamp_min(0).to("cpu", torch.float64)
    counts = torch.stack([torch.poisson(lam[i], generator=g) for i, g in enumerate(gens)])
    return (2 * counts / rate - 1).to(device=y.device, dtype=y.dtype)
