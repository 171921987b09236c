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

from dataclasses import dataclass
from functools import cache

import torch

from lightning_redd.operators.base import ForwardOperator, SVDOperator
from lightning_redd.priors.base import DiffusionPrior
from lightning_redd.solvers.base import NoiseMode, Requirements
from lightning_redd.solvers.ddim import DDIM, DDIMState


@cache
def svd_operators() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(class names, registry names)`` of the operators of
    :data:`lightning_redd.operators.registry.OPERATORS` that DDRM takes: instances that are
    :class:`~lightning_redd.operators.base.SVDOperator` s with Gaussian noise (for its error
    message), each in registry order without repeats."""
    from lightning_redd.operators.registry import OPERATORS  # at first use: the registry builds every operator

    built = {name: make() for name, make in OPERATORS.items()}
    names = tuple(name for name, op in built.items() if DDRM.requirements.fits(op))
    classes = tuple(dict.fromkeys(type(built[name]).__name__ for name in names))
    return classes, names


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


def ddrm_weights(sigma_s: float, eta: float) -> tuple[float, float]:
    """``(sqrt(1 - eta^2) sigma_s, eta sigma_s)``: in the unobserved and less-noisy-than-``y``
    cases, the weight of the carried direction (``ebar``, or the measurement's residual) and the
    std of the fresh noise ``z``; their squares sum to ``sigma_s^2``."""
    return (1 - eta**2) ** 0.5 * sigma_s, eta * sigma_s


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
        noise: where the start's and the steps' noise ``z`` is drawn (as :class:`DDIM`'s).
    """

    name = "ddrm"
    label = "DDRM"
    state_type = DDRMState
    requirements = Requirements(operator=SVDOperator, noise_models=("gaussian",), settings={"num_steps": 4})

    def __init__(
        self, *, num_steps: int = 20, eta: float = 0.85, eta_b: float = 1.0, svd_rtol: float | None = None,
        noise: NoiseMode = "auto",
    ) -> None:
        super().__init__(num_steps=num_steps, eta=eta, start="noise", clip_x0=False, noise=noise)
        if not 0.0 <= eta_b <= 1.0:
            raise ValueError(f"eta_b must be in [0, 1] (weight of the measurement), got {eta_b}")
        if svd_rtol is not None and not 0.0 <= svd_rtol < 1.0:
            raise ValueError(f"svd_rtol must be in [0, 1) or None (use the operator's pinv_rtol), got {svd_rtol}")
        self.eta_b, self.svd_rtol = float(eta_b), svd_rtol

    def check(self, op: ForwardOperator, prior: DiffusionPrior) -> None:
        """An operator with an SVD and Gaussian noise, named with the fix when not; then DDIM's checks."""
        if not isinstance(op, SVDOperator):
            classes, names = svd_operators()
            raise TypeError(
                f"DDRM needs an operator with an SVD (an SVDOperator: {', '.join(classes)}; "
                f"registry names: {', '.join(names)}); {type(op).__name__} has none. "
                "Use RedDiff, DPS, PiGDM or Classical for this operator"
            )
        if getattr(op, "noise", "gaussian") != "gaussian":
            raise ValueError(f"DDRM models Gaussian measurement noise; the operator's noise is {op.noise!r}: use another solver")
        super().check(op, prior)

    def prepare(self, state: DDRMState, y: torch.Tensor, op: ForwardOperator, prior: DiffusionPrior) -> None:
        """The spectral data of ``y`` and the start ``x_T ~ p(x_T | y)`` (module docstring), from
        DDIM's start ``x_T = z``."""
        super().prepare(state, y, op, prior)
        shape, n = state.x_init.shape, state.x_init[0].numel()
        rtol = self.svd_rtol if self.svd_rtol is not None else float(getattr(op, "pinv_rtol", 0.0))
        with torch.no_grad():
            s, state.uty, state.ybar = spectral_data(op, y, n, rtol)
        state.s, state.sigma_y = s, 2.0 * op.sigma_y
        a_top = state.alpha(int(state.t[0]))
        sig_top = ((1 - a_top) / a_top) ** 0.5
        z = state.x.flatten(1)  # the N(0, I) draw of DDIM's start, reused
        noisier = (s > 0) & (sig_top * s >= state.sigma_y)
        spread = (sig_top**2 - state.sigma_y**2 / torch.where(s > 0, s, torch.ones_like(s)) ** 2).clamp_min(0).sqrt()
        xbar = torch.where(noisier, state.ybar + spread * z, sig_top * z)
        state.x = a_top**0.5 * op.V(xbar).view(shape).float()

    def iterate(self, state: DDRMState, y: torch.Tensor, op: ForwardOperator, prior: DiffusionPrior) -> dict[str, torch.Tensor]:
        """One step ``t -> t_prev`` in spectral coordinates; returns per-image ``t`` (B,)."""
        t, t_prev, tb = state.times()
        with torch.no_grad():
            eps_hat, x0_hat = self.denoise(prior, state.x, tb, state.alpha(t))
            xbar = self.spectral_step(state, op.Vt(x0_hat.flatten(1)).float(), op.Vt(eps_hat.flatten(1)).float(), t_prev)
            state.x, state.x0_hat = state.alpha(t_prev) ** 0.5 * op.V(xbar).view_as(state.x).float(), x0_hat
        return {"t": tb}

    def spectral_step(self, state: DDRMState, xb0: torch.Tensor, eb: torch.Tensor, t_prev: int) -> torch.Tensor:
        """The three cases of the module docstring: ``xbar`` at ``t_prev``, ``(B, N)``."""
        a_s = state.alpha(t_prev)
        sig_s = ((1 - a_s) / a_s) ** 0.5
        s, sy, eta, eta_b = state.s, state.sigma_y, self.eta, self.eta_b
        z = state.noise.randn(xb0.shape[1:]) if sig_s > 0 else torch.zeros_like(xb0)
        keep, fresh = ddrm_weights(sig_s, eta)
        missing = xb0 + keep * eb + fresh * z
        less_noisy = xb0 + keep * (state.uty - s * xb0) / max(sy, 1e-30) + fresh * z
        s_safe = torch.where(s > 0, s, torch.ones_like(s))
        spread = (sig_s**2 - (eta_b * sy / s_safe) ** 2).clamp_min(0).sqrt()
        noisier = (1 - eta_b) * xb0 + eta_b * state.ybar + spread * z
        out = torch.where(s * sig_s >= sy, noisier, less_noisy)
        return torch.where(s > 0, out, missing)
