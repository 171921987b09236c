"""RED-diff (Mardani, Song, Kautz, Vahdat, ICLR 2024): variational posterior sampling as
regularisation by denoising with a diffusion prior.

Fit ``q(x0 | y) = N(mu, sigma_x0^2 I)`` by minimising, over ``mu``,

    loss(mu) = obs_weight * mean((y - f(x0))^2) / 2  +  w_t * mean(stopgrad(eps_hat - eps) * x0)

with ``x0 = mu + sigma_x0 * n0``, ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``,
``eps_hat = eps_theta(x_t, t)`` evaluated without autograd, and ``w_t = lambda * g(snr_inv_t)``
(paper, Eq. 11 and Sec. 4.2). One iterate visits one time ``t`` (``K`` times in the
parallel-timestep variant, whose regulariser gradients are averaged) and takes one Adam step.

Means are per image (over that image's pixels for the regulariser and over its
measurement entries for the data term) and the per-image losses are summed, so Adam, being
elementwise, updates each image exactly as if it were alone: results do not depend on
batch size or batch mates. For a single image this is the reference's loss.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from lightning_redd import seeding
from lightning_redd.operators.base import ForwardOperator, check_finite
from lightning_redd.priors.base import DiffusionPrior
from lightning_redd.solvers.base import NOISE_MODES, NoiseMode, NoiseSource, Solver, SolverState
from lightning_redd.solvers.grids import ORDERS, ordered_grid
from lightning_redd.solvers.weighting import WEIGHTINGS, Weighting, red_diff_weight

INITS = ("pinv", "zeros", "random")
#: Adam implementations (``adam``): torch's per-tensor loop, its multi-tensor (foreach) and fused kernels.
ADAM_IMPLS = ("auto", "for-loop", "foreach", "fused")
AdamImpl = Literal["auto", "for-loop", "foreach", "fused"]


@dataclass
class RedDiffState(SolverState):
    """Per-batch state of a RED-diff solve (adds to :class:`SolverState`).

    Attributes:
        mu: ``(B, C, H, W)`` float32 leaf tensor, the variational mean (the restored image).
        optimizer: Adam over ``[mu]``.
        times: ``(B, S, K)`` long on the data's device (moved there once, at ``init``), the
            time(s) each iterate visits, per image.
        sqrt_abar, sqrt_one_minus_abar, weight: ``(B, S, K)`` float32 on the data's device:
            ``sqrt(abar_t)``, ``sqrt(1 - abar_t)`` and ``w_t`` of every visited time, computed
            once at ``init`` (so an iterate only indexes them: no copy, no host sync).
        noise: the per-iterate noise draws (:class:`~lightning_redd.solvers.base.NoiseSource`).
    """

    mu: torch.Tensor = None  # type: ignore[assignment]
    optimizer: torch.optim.Optimizer = None  # type: ignore[assignment]
    times: torch.Tensor = None  # type: ignore[assignment]
    sqrt_abar: torch.Tensor = None  # type: ignore[assignment]
    sqrt_one_minus_abar: torch.Tensor = None  # type: ignore[assignment]
    weight: torch.Tensor = None  # type: ignore[assignment]
    noise: NoiseSource = None  # type: ignore[assignment]

    @property
    def done(self) -> bool:
        return self.k >= self.times.shape[1]


class RedDiff(Solver):
    """RED-diff with the paper's options.

    Args:
        num_steps: Adam iterates ``S``; the time grid has ``S * parallel`` points spanning
            ``[0, T)`` (:func:`~lightning_redd.solvers.grids.timestep_grid`: the reference's
            ``range(0, T, T // n)`` whenever ``n`` divides ``T``; spec: S = 1000 for the
            paper's tables).
        lr: Adam learning rate (reference scripts: 0.25 inpainting, 0.5 other tasks).
        lam: regulariser weight ``lambda`` (reference: 0.25).
        obs_weight: data-term weight (reference: 1).
        weighting: ``g`` in ``w_t = lambda * g(snr_inv_t)``: one of linear (default), sqrt,
            square, log, trunc_linear, power2over3, const.
        order: time order: descending (paper's default and best), ascending, random
            (a permutation per image, drawn from that image's generator).
        init: initial ``mu``: pinv (the operator's pseudo-inverse of ``y``), zeros, random
            (standard normal per image).
        sigma_x0: std of ``q``; ``x0 = mu + sigma_x0 * n0`` (default 0: ``x0 = mu``).
        adam_betas: Adam's betas (reference: (0.9, 0.99)); no weight decay.
        parallel: ``K >= 1`` times per iterate evaluated in one batched denoiser call; their
            regulariser gradients are averaged (each with its own weight ``w_t``).
        noise: where the per-iterate noise (``eps``, and ``n0`` when ``sigma_x0 > 0``) is drawn
            (:class:`~lightning_redd.solvers.base.NoiseSource`): ``host`` (each image's CPU
            generator, copied to the device), ``device`` (one generator per image on the data's
            device), ``auto`` (default: ``host`` on the CPU, ``device`` on accelerators).
        adam: Adam's implementation: ``for-loop``, ``foreach`` or ``fused`` (torch's kernels);
            ``auto`` (default): ``foreach`` on the CPU (bit-identical to ``for-loop`` there),
            ``fused`` on CUDA (one kernel per step; differs from the others by float rounding).
    """

    label = "RED-diff"

    def __init__(
        self,
        *,
        num_steps: int = 100,
        lr: float = 0.25,
        lam: float = 0.25,
        obs_weight: float = 1.0,
        weighting: Weighting = "linear",
        order: Literal["descending", "ascending", "random"] = "descending",
        init: Literal["pinv", "zeros", "random"] = "pinv",
        sigma_x0: float = 0.0,
        adam_betas: tuple[float, float] = (0.9, 0.99),
        parallel: int = 1,
        noise: NoiseMode = "auto",
        adam: AdamImpl = "auto",
    ) -> None:
        if num_steps < 1 or parallel < 1:
            raise ValueError(f"num_steps and parallel must be >= 1, got {num_steps}, {parallel}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; allowed: {WEIGHTINGS}")
        if order not in ORDERS:
            raise ValueError(f"unknown order {order!r}; allowed: {ORDERS}")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; allowed: {INITS}")
        if lr <= 0 or lam < 0 or obs_weight < 0 or sigma_x0 < 0:
            raise ValueError(f"need lr > 0 and lam, obs_weight, sigma_x0 >= 0; got {lr}, {lam}, {obs_weight}, {sigma_x0}")
        if noise not in NOISE_MODES:
            raise ValueError(f"unknown noise {noise!r}; allowed: {NOISE_MODES}")
        if adam not in ADAM_IMPLS:
            raise ValueError(f"unknown adam {adam!r}; allowed: {ADAM_IMPLS}")
        if not all(0 <= b < 1 for b in adam_betas) or len(adam_betas) != 2:
            raise ValueError(f"adam_betas must be two numbers in [0, 1), got {adam_betas}")
        self.num_steps, self.parallel = int(num_steps), int(parallel)
        self.lr, self.lam, self.obs_weight, self.sigma_x0 = float(lr), float(lam), float(obs_weight), float(sigma_x0)
        self.weighting, self.order, self.init_mode = weighting, order, init
        self.adam_betas = (float(adam_betas[0]), float(adam_betas[1]))
        self.noise, self.adam = noise, adam

    @property
    def num_iterates(self) -> int:
        return self.num_steps

    # ------------------------------------------------------------------ init
    def schedule(self, prior: DiffusionPrior, gens: Sequence[torch.Generator]) -> torch.Tensor:
        """Per-image times ``(B, S, K)``: iterate ``k`` of image ``i`` visits ``times[i, k]``."""
        n = self.num_steps * self.parallel
        if n > prior.num_timesteps:
            raise ValueError(
                f"num_steps * parallel = {n} exceeds the prior's {prior.num_timesteps} timesteps; lower num_steps or parallel"
            )
        grids = [ordered_grid(n, prior.num_timesteps, self.order, g) for g in gens]
        return torch.stack(grids).view(len(gens), self.num_steps, self.parallel)

    def initial_estimate(self, y: torch.Tensor, op: ForwardOperator, gens: Sequence[torch.Generator]) -> torch.Tensor:
        """``mu_0`` per :attr:`init_mode`, float32 ``(B, C, H, W)``."""
        with torch.no_grad():
            x = op.pinv(y).float()
        if self.init_mode == "pinv":
            return x
        if self.init_mode == "zeros":
            return torch.zeros_like(x)
        if self.init_mode == "random":
            return seeding.randn(x.shape[1:], gens, device=x.device)
        raise ValueError(f"unknown init {self.init_mode!r}; allowed: {INITS}")

    def init(
        self, y: torch.Tensor, op: ForwardOperator, prior: DiffusionPrior, gens: Sequence[torch.Generator]
    ) -> RedDiffState:
        """Start a solve: ``mu = init(y)``, a fresh Adam, and each image's time schedule.

        Args:
            y: measurements (B, ...) as ``op`` produces them.
            op: the operator bound to this batch (same one that measured ``y``).
            prior: the diffusion prior.
            gens: one CPU generator per image (stream ``"solver"``).
        """
        check_finite(y, "y")
        if len(gens) != y.shape[0]:
            raise ValueError(f"need one generator per image: got {len(gens)} for a batch of {y.shape[0]}")
        times = self.schedule(prior, gens)  # before the initial estimate: both may draw from gens
        x_init = self.initial_estimate(y, op, gens).detach()
        device = x_init.device
        times = times.to(device)
        abar = prior.alphas_cumprod.to(device)[times].float()
        weight = red_diff_weight(prior.alphas_cumprod.to(device), times, self.lam, self.weighting).float()
        mu = x_init.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([mu], lr=self.lr, betas=self.adam_betas, weight_decay=0.0, **self.adam_options(device))
        return RedDiffState(x_init=x_init, gens=list(gens), mu=mu, optimizer=optimizer, times=times, sqrt_abar=abar.sqrt(),
                            sqrt_one_minus_abar=(1 - abar).sqrt(), weight=weight,
                            noise=NoiseSource(gens, device, self.noise))

    def adam_options(self, device: torch.device) -> dict[str, bool]:
        """``torch.optim.Adam`` keyword for :attr:`adam` on ``device`` (``auto`` resolved)."""
        impl = self.adam
        if impl == "auto":
            impl = "fused" if device.type == "cuda" else "foreach"
        if impl == "for-loop":
            return {"foreach": False}
        if impl == "foreach":
            return {"foreach": True}
        if impl == "fused":
            return {"fused": True}
        raise ValueError(f"unknown adam {self.adam!r}; allowed: {ADAM_IMPLS}")

    # ------------------------------------------------------------------ iterate
    def regulariser_grad(self, state: RedDiffState, x0: torch.Tensor, prior: DiffusionPrior) -> torch.Tensor:
        """``mean_k w_{t_k} (eps_hat_k - eps_k)``, ``(B, C, H, W)``, detached.

        The ``K`` noisy copies of every image go through the denoiser in one batched call,
        under ``torch.no_grad`` so that no activation of the network is kept.
        """
        b, k, i = x0.shape[0], self.parallel, state.k
        t = state.times[:, i]  # (B, K), already on the device
        eps = state.noise.randn((k, *x0.shape[1:]))  # (B, K, C, H, W)
        with torch.no_grad():
            a, s = state.sqrt_abar[:, i].view(b, k, 1, 1, 1), state.sqrt_one_minus_abar[:, i].view(b, k, 1, 1, 1)
            x_t = a * x0.detach().float().unsqueeze(1) + s * eps
            eps_hat = prior.eps(x_t.flatten(0, 1), t.flatten()).view_as(eps)
            w = state.weight[:, i].view(b, k, 1, 1, 1)
            return (w * (eps_hat - eps)).mean(dim=1)

    def step(self, state: RedDiffState, y: torch.Tensor, op: ForwardOperator, prior: DiffusionPrior) -> dict[str, torch.Tensor]:
        """One iterate (spec, "One iterate at time t") and one Adam step on ``mu``.

        Returns per-image ``loss_obs`` (B,), ``loss_reg`` (B,), ``loss`` (B,) and ``t`` (B,)
        (the first of the iterate's K times).
        """
        if state.done:
            raise RuntimeError(f"this solve already ran its {self.num_steps} iterates; call init() for a new batch")
        mu = state.mu
        x0 = mu
        if self.sigma_x0 > 0:
            x0 = mu + self.sigma_x0 * state.noise.randn(mu.shape[1:])
        g_reg = self.regulariser_grad(state, x0, prior)
        with torch.enable_grad():
            resid = (y - op(x0)).float().flatten(1)
            loss_obs = resid.pow(2).mean(dim=1) / 2  # (B,)
            loss_reg = (g_reg * x0).flatten(1).mean(dim=1)  # (B,): its gradient is g_reg / numel
            loss = loss_reg + self.obs_weight * loss_obs
            state.optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
        state.optimizer.step()
        with torch.no_grad():
            mu.copy_(self.freeze_diverged(state, mu))
        t_first = state.times[:, state.k, 0]
        state.k += 1
        state.nfe += self.parallel
        return {"loss": loss.detach(), "loss_obs": loss_obs.detach(), "loss_reg": loss_reg.detach(), "t": t_first}

    def estimate(self, state: RedDiffState) -> torch.Tensor:
        """The variational mean ``mu`` ``(B, C, H, W)`` (unclipped; clip only when saving)."""
        return state.mu.detach().clone()
