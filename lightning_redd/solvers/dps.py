"""DPS: diffusion posterior sampling (Chung, Kim, Mccann, Klasky, Ye, ICLR 2023).

Each reverse step (the DDIM skeleton of :mod:`~lightning_redd.solvers.ddim`) is followed by a
step along the gradient of the measurement misfit of the denoised estimate, differentiated
through the denoiser (paper, Algorithm 1, "DPS - Gaussian"):

    x0_hat(x_t) = (x_t - sqrt(1 - abar_t) eps_theta(x_t, t)) / sqrt(abar_t)
    x_prev      = DDIM(x0_hat, eps_hat; eta)  -  zeta * grad_{x_t} ||y - f(x0_hat(x_t))||_2

Step-size convention (``zeta``): the gradient of the residual *norm* times ``zeta``, as in
DPS's public code (``scale`` of its ``ps`` conditioning). Written with the squared norm this
is the paper's ``zeta_i grad ||y - f(x0_hat)||^2`` with ``zeta_i = zeta' / ||y - f(x0_hat)||``
and ``zeta' = zeta / 2``; the RED-diff reference's DPS (``grad_term_weight / ||r|| * grad
||r||^2``) has ``zeta = 2 * grad_term_weight``. Norms are per image, so batch mates never
interact. An image whose residual is exactly 0 gets no guidance (instead of 0 / 0).

Published step sizes (DPS repo ``configs/*_config.yaml``, FFHQ/ImageNet 256, sigma_y = 0.05,
1000 DDPM steps): super-resolution 0.3, inpainting 0.5, Gaussian / motion / nonlinear
deblurring 0.3, phase retrieval 1.0. The RED-diff reference's DPS runs (``grad_term_weight``,
so ``zeta`` is twice these): inpainting 0.1, SR x4 1.0, Gaussian deblurring 2.0, HDR 0.1,
phase retrieval 0.4, nonlinear deblurring 0.05.

Cost: one forward *and one backward* pass of the denoiser per iterate; the graph lives only
inside :meth:`DPS.guide` and is freed by ``autograd.grad`` before the step ends.
"""
from __future__ import annotations

import torch

from lightning_redd.operators.base import ForwardOperator
from lightning_redd.priors.base import DiffusionPrior
from lightning_redd.solvers.base import NoiseMode, Requirements
from lightning_redd.solvers.ddim import DDIM, DDIMState, Start


def require_autograd(solver: str) -> None:
    """Raise a clear error when called under ``torch.inference_mode`` (no autograd possible)."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            f"{solver} differentiates through the denoiser and cannot run under torch.inference_mode; "
            "use Trainer(inference_mode=False) (the configs do) or wrap the call in torch.inference_mode(False)"
        )


class DPS(DDIM):
    """Diffusion posterior sampling on the DDIM skeleton.

    Args:
        num_steps: reverse steps ``S`` (DPS paper: 1000 DDPM steps).
        zeta: guidance step on ``grad_{x_t} ||y - f(x0_hat)||`` (DPS code's ``scale``; see the
            module docstring for the per-task published values and the other conventions).
        eta: DDIM stochasticity (1: DDPM-like ancestral steps, DPS's sampler).
        start: ``x_T``: ``noise`` (DPS) or ``pinv`` (the RED-diff reference's start).
        clip_x0: clip ``x0_hat`` to ``[-1, 1]`` for the DDIM move (the guidance always uses the
            unclipped, differentiable ``x0_hat``).
        noise: where ``x_T`` and the steps' noise are drawn (as :class:`DDIM`'s).
    """

    name = "dps"
    label = "DPS"
    requirements = Requirements(settings={"num_steps": 4, "zeta": 0.5, "eta": 0.5}, latent=True)

    def __init__(
        self, *, num_steps: int = 1000, zeta: float = 1.0, eta: float = 1.0, start: Start = "noise", clip_x0: bool = False,
        noise: NoiseMode = "auto",
    ) -> None:
        super().__init__(num_steps=num_steps, eta=eta, start=start, clip_x0=clip_x0, noise=noise)
        if not zeta >= 0:
            raise ValueError(f"zeta must be >= 0 (the guidance step size), got {zeta}")
        self.zeta = float(zeta)

    def guide(
        self, state: DDIMState, y: torch.Tensor, op: ForwardOperator, prior: DiffusionPrior, t: int, tb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Denoise with autograd on, then ``-zeta * grad ||y - f(x0_hat)||`` per image.

        Returns ``stats["residual"]``: ``||y - f(x0_hat)||_2`` per image ``(B,)``.
        """
        require_autograd(self.label)
        with torch.enable_grad():
            x_t = state.x.detach().requires_grad_(True)
            eps_hat, x0_hat = self.denoise(prior, x_t, tb, state.alpha(t))
            finite = torch.where(torch.isfinite(x0_hat), x0_hat, torch.zeros_like(x0_hat))  # a NaN image is frozen anyway
            sq = (y - op(finite)).float().flatten(1).pow(2).sum(dim=1)  # (B,)
            (grad,) = torch.autograd.grad(sq.sum(), x_t)  # image i's gradient depends on image i only
        norm = sq.detach().sqrt()
        scale = torch.where(norm > 0, self.zeta / (2 * norm.clamp_min(torch.finfo(norm.dtype).tiny)), torch.zeros_like(norm))
        correction = -scale.view(-1, *([1] * (grad.ndim - 1))) * grad  # = -zeta * grad ||r||
        return eps_hat.detach(), x0_hat.detach(), correction, {"residual": norm}
