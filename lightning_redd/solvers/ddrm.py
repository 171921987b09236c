"""DDRM: denoising diffusion restoration models (Kawar, Elad, Ermon, Song, NeurIPS 2022).

A linear operator with SVD ``A = U diag(s) V^T`` turns the problem into independent scalar
ones in the spectral coordinates ``xbar = V^T x``: ``ybar_i = (U^T y)_i / s_i`` observes
``xbar_i`` with noise std ``sigma_y / s_i``. DDRM works in the variance-exploding view
``x^VE = x_t / sqrt(abar_t)``, noise level ``sigma_t = sqrt(1 - abar_t) / sqrt(abar_t)``; with
``xbar_theta = V^T x0_hat(x_t)`` and ``ebar = V^T eps_hat`` one step ``t -> s`` (the paper's
factorised variational distribution, Sec. 3; ``eta``, ``eta_b`` its knobs, ``z ~ N(0, 1)``
fresh per coordinate) draws

* ``s_i = 0`` (unobserved):       ``xbar_theta + sqrt(1 - eta^2) sigma_s ebar + eta sigma_s z``
* ``sigma_s < sigma_y / s_i``:    ``xbar_theta + sqrt(1 - eta^2) sigma_s (U^T y - s xbar_theta)_i / sigma_y + eta sigma_s z``
* ``sigma_s >= sigma_y / s_i``:   ``(1 - eta_b) xbar_theta + eta_b ybar + sqrt(sigma_s^2 - eta_b^2 sigma_y^2 / s_i^2) z``

(``ebar = (xbar_t - xbar_theta) / sigma_t`` of the paper's first case). The start is the
paper's ``p(x_T | y)``: ``ybar_i + sqrt(sigma_T^2 - sigma_y^2 / s_i^2) z`` where
``sigma_T >= sigma_y / s_i``, else ``sigma_T z``. The last step (``s = -1``, ``sigma = 0``)
returns the estimate. ``sigma_y`` is the operator's: ``2 * op.sigma_y`` in ``[-1, 1]`` units.

Singular values may be per image (``(B, M)``, e.g. inpainting masks) and zero; values
below ``svd_rtol`` times the image's largest are treated as zero (unobserved), as DDRM's
own deblurring code does (it zeroes singular values below 3e-2). Defaults as published
(DDRM paper and the RED-diff repo ``_configs/algo/ddrm.yaml``): ``eta = 0.85``,
``eta_b = 1``; the paper uses 20 steps.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lightning_redd import seeding
from lightning_redd.operators.base import ForwardOperator, SVDOperator
from lightning_redd.priors.base import DiffusionPrior
from lightning_redd.solvers.ddim import DDIM, DDIMState

#: Operator families of ``lightning_redd.operators`` that expose an SVD (for the error message).
SVD_OPERATORS = (
    "Denoising", "Inpainting", "BlockAverageSR", "BicubicSR", "GaussianBlur", "UniformBlur", "MotionBlur",
    "Colorization", "CompressedSensing",
)


@dataclass
class DDRMState(DDIMState):
    """Adds the batch's spectral data to :class:`DDIMState` (all ``(B, N)``, N = C*H*W, float32).

    Attributes:
        s: singular values aligned with ``Vt``, zero-padded to ``N`` (zero = unobserved).
        uty: ``U^T y`` zero-padded to ``N``.
        ybar: ``U^T y / s`` where ``s > 0``, else 0.
        sigma_y: measurement noise std in ``[-1, 1]`` units.
    """

    s: torch.Tensor = None  # type: ignore[assignment]
    uty: torch.Tensor = None  # type: ignore[assignment]
    ybar: torch.Tensor = None  # type: ignore[assignment]
    sigma_y: float = 0.0


def spectral_data(op: SVDOperator, y: torch.Tensor, n: int, rtol: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(s, U^T y, ybar)`` of a batch, each ``(B, N)`` float32 (see :class:`DDRMState`)."""
    uty = op.Ut(y.flatten(1)).float()
    b, m = uty.shape
    s = op.singulars().to(device=y.device, dtype=torch.float32).expand(b, m)
    s = torch.where(s > rtol * s.amax(dim=1, keepdim=True), s, torch.zeros_like(s))
    pad = uty.new_zeros(b, n - m)
    ybar = torch.where(s > 0, uty / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(s))
    return torch.cat([s, pad], 1), torch.cat([uty, pad], 1), torch.cat([ybar, pad], 1)


class DDRM(DDIM):
    """DDRM for operators with an SVD (:class:`~lightning_redd.operators.base.SVDOperator`).

    Args:
        num_steps: reverse steps ``S`` (paper: 20).
        eta: stochasticity of the unobserved / less-noisy-than-``y`` coordinates (published 0.85).
        eta_b: weight of the measurement in the noisier-than-``y`` coordinates (published 1.0).
        svd_rtol: singular values ``<= svd_rtol * max`` (per image) count as zero. ``None``:
            the operator's ``pinv_rtol`` when it has one (blurs), else 0 (exact zeros only).
    """

    label = "DDRM"

    def __init__(self, *, num_steps: int = 20, eta: float = 0.85, eta_b: float = 1.0, svd_rtol: float | None = None) -> None:
        super().__init__(num_steps=num_steps, eta=eta, start="noise", clip_x0=False)
        if not 0.0 <= eta_b <= 1.0:
            raise ValueError(f"eta_b must be in [0, 1] (weight of the measurement), got {eta_b}")
        if svd_rtol is not None and not 0.0 <= svd_rtol < 1.0:
            raise ValueError(f"svd_rtol must be in [0, 1) or None (use the operator's pinv_rtol), got {svd_rtol}")
        self.eta_b, self.svd_rtol = float(eta_b), svd_rtol

    @staticmethod
    def check_operator(op: ForwardOperator) -> None:
        if not isinstance(op, SVDOperator):
            raise TypeError(
                f"DDRM needs an operator with an SVD (an SVDOperator: {', '.join(SVD_OPERATORS)}); "
                f"{type(op).__name__} has none. Use RedDiff, DPS, PiGDM or Classical for this operator"
            )
        if getattr(op, "noise", "gaussian") != "gaussian":
            raise ValueError(f"DDRM models Gaussian measurement noise; the operator's noise is {op.noise!r}: use another solver")

    def init(self, y: torch.Tensor, op: ForwardOperator, prior: DiffusionPrior, gens: Sequence[torch.Generator]) -> DDRMState:
        """The spectral data of ``y`` and the start ``x_T ~ p(x_T | y)`` (module docstring)."""
        self.check_operator(op)
        base = super().init(y, op, prior, gens)
        shape, n = base.x_init.shape, base.x_init[0].numel()
        rtol = self.svd_rtol if self.svd_rtol is not None else float(getattr(op, "pinv_rtol", 0.0))
        with torch.no_grad():
            s, uty, ybar = spectral_data(op, y, n, rtol)
        sigma_y = 2.0 * op.sigma_y
        a_top = base.alpha(int(base.t[0]))
        sig_top = ((1 - a_top) / a_top) ** 0.5
        z = base.x.flatten(1)  # the N(0, I) draw of DDIM's start, reused
        noisier = (s > 0) & (sig_top * s >= sigma_y)
        spread = (sig_top**2 - sigma_y**2 / torch.where(s > 0, s, torch.ones_like(s)) ** 2).clamp_min(0).sqrt()
        xbar = torch.where(noisier, ybar + spread * z, sig_top * z)
        x = a_top**0.5 * op.V(xbar).view(shape).float()
        fields = {k: getattr(base, k) for k in ("x_init", "gens", "x0_hat", "t", "t_prev", "abar")}
        return DDRMState(**fields, x=x, s=s, uty=uty, ybar=ybar, sigma_y=sigma_y)

    def step(self, state: DDRMState, y: torch.Tensor, op: ForwardOperator, prior: DiffusionPrior) -> dict[str, torch.Tensor]:
        """One step ``t -> t_prev`` in spectral coordinates; returns per-image ``t`` (B,)."""
        if state.done:
            raise RuntimeError(f"this solve already ran its {self.num_steps} iterates; call init() for a new batch")
        t, t_prev = int(state.t[state.k]), int(state.t_prev[state.k])
        tb = torch.full((state.x.shape[0],), t, dtype=torch.long, device=state.x.device)
        with torch.no_grad():
            eps_hat, x0_hat = self.denoise(prior, state.x, tb, state.alpha(t))
            xbar = self.spectral_step(state, op.Vt(x0_hat.flatten(1)).float(), op.Vt(eps_hat.flatten(1)).float(), t_prev)
            x_prev = state.alpha(t_prev) ** 0.5 * op.V(xbar).view_as(state.x).float()
            state.x = self.freeze_diverged(state, x_prev)
            state.x0_hat = self.freeze_diverged(state, x0_hat)
        state.k += 1
        state.nfe += 1
        return {"t": tb}

    def spectral_step(self, state: DDRMState, xb0: torch.Tensor, eb: torch.Tensor, t_prev: int) -> torch.Tensor:
        """The three cases of the module docstring: ``xbar`` at ``t_prev``, ``(B, N)``."""
        a_s = state.alpha(t_prev)
        sig_s = ((1 - a_s) / a_s) ** 0.5
        s, sy, eta, eta_b = state.s, state.sigma_y, self.eta, self.eta_b
        z = seeding.randn(xb0.shape[1:], state.gens, device=xb0.device) if sig_s > 0 else torch.zeros_like(xb0)
        keep = (1 - eta**2) ** 0.5 * sig_s
        missing = xb0 + keep * eb + eta * sig_s * z
        less_noisy = xb0 + keep * (state.uty - s * xb0) / max(sy, 1e-30) + eta * sig_s * z
        s_safe = torch.where(s > 0, s, torch.ones_like(s))
        spread = (sig_s**2 - (eta_b * sy / s_safe) ** 2).clamp_min(0).sqrt()
        noisier = (1 - eta_b) * xb0 + eta_b * state.ybar + spread * z
        out = torch.where(s * sig_s >= sy, noisier, less_noisy)
        return torch.where(s > 0, out, missing)
