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
from typing import ClassVar, Literal

import torch

from lightning_redd.operators.base import ForwardOperator
from lightning_redd.priors.base import DiffusionPrior
from lightning_redd.solvers.base import NoiseMode, Requirements, Solver, SolverState
from lightning_redd.solvers.grids import ORDERS, SPACINGS, Spacing, ordered_grid
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
    """

    iterates: ClassVar[tuple[str, ...]] = ("mu",)

    mu: torch.Tensor = None  # type: ignore[assignment]
    optimizer: torch.optim.Optimizer = None  # type: ignore[assignment]
    times: torch.Tensor = None  # type: ignore[assignment]
    sqrt_abar: torch.Tensor = None  # type: ignore[assignment]
    sqrt_one_minus_abar: torch.Tensor = None  # type: ignore[assignment]
    weight: torch.Tensor = None  # type: ignore[assignment]


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
        time_grid: how the grid's points are spaced: ``linear`` (the paper's) or ``quadratic``
            (:func:`~lightning_redd.solvers.grids.timestep_grid`: more iterates at small ``t``; on the
            demo's task it gives more at fewer iterates, docs/PERFORMANCE.md).
        init: initial ``mu``: pinv (the operator's pseudo-inverse of ``y``), zeros, random
            (standard normal per image).
        sigma_x0: std of ``q``; ``x0 = mu + sigma_x0 * n0`` (default 0: ``x0 = mu``).
        adam_betas: Adam's betas (reference: (0.9, 0.99)); no weight decay.
        parallel: ``K >= 1`` times per iterate evaluated in one batched denoiser call; their
            regulariser gradients are averaged (each with its own weight ``w_t``).
        noise: where the noise (``eps``, ``n0`` when ``sigma_x0 > 0``, the ``random`` init) is drawn
            (:class:`~lightning_redd.solvers.noise.NoiseSource`): ``host`` (each image's CPU
            generator, copied to the device), ``device`` (one generator per image on the data's
            device), ``auto`` (default: ``host`` on the CPU, ``device`` on accelerators).
        adam: Adam's implementation: ``for-loop``, ``foreach`` or ``fused`` (torch's kernels);
            ``auto`` (default): ``foreach`` on the CPU (bit-identical to ``for-loop`` there),
            ``fused`` on CUDA (one kernel per step; differs from the others by float rounding).
    """

    name = "red_diff"
    label = "RED-diff"
    state_type = RedDiffState
    requirements = Requirements(settings={"num_steps": 4, "lr": 0.2}, batch_rtol=1e-5, latent=True)

    def __init__(
        self,
        *,
        num_steps: int = 100,
        lr: float = 0.25,
        lam: float = 0.25,
        obs_weight: float = 1.0,
        weighting: Weighting = "linear",
        order: Literal["descending", "ascending", "random"] = "descending",
        time_grid: Spacing = "linear",
        init: Literal["pinv", "zeros", "random"] = "pinv",
        sigma_x0: float = 0.0,
        adam_betas: tuple[float, float] = (0.9, 0.99),
        parallel: int = 1,
        noise: NoiseMode = "auto",
        adam: AdamImpl = "auto",
    ) -> None:
        super().__init__(noise=noise)
        if num_steps < 1 or parallel < 1:
            raise ValueError(f"num_steps and parallel must be >= 1, got {num_steps}, {parallel}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; allowed: {WEIGHTINGS}")
        if order not in ORDERS:
            raise ValueError(f"unknown order {order!r}; allowed: {ORDERS}")
        if time_grid not in SPACINGS:
            raise ValueError(f"unknown time_grid {time_grid!r}; allowed: {SPACINGS}")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; allowed: {INITS}")
        if lr <= 0 or lam < 0 or obs_weight < 0 or sigma_x0 < 0:
            raise ValueError(f"need lr > 0 and lam, obs_weight, sigma_x0 >= 0; got {lr}, {lam}, {obs_weight}, {sigma_x0}")
        if adam not in ADAM_IMPLS:
            raise ValueError(f"unknown adam {adam!r}; allowed: {ADAM_IMPLS}")
        if not all(0 <= b < 1 for b in adam_betas) or len(adam_betas) != 2:
            raise ValueError(f"adam_betas must be two numbers in [0, 1), got {adam_betas}")
        self.num_steps, self.parallel = int(num_steps), int(parallel)
        self.lr, self.lam, self.obs_weight, self.sigma_x0 = float(lr), float(lam), float(obs_weight), float(sigma_x0)
        self.weighting, self.order, self.init_mode, self.time_grid = weighting, order, init, time_grid
        self.adam_betas = (float(adam_betas[0]), float(adam_betas[1]))
        self.adam = adam

    @property
    def num_iterates(self) -> int:
        return self.num_steps

    # ------------------------------------------------------------------ init
    @property
    def nfe_per_iterate(self) -> int:
        """``K``: the iterate's times go through the denoiser in one batched call."""
        return self.parallel

    def schedule(self, prior: DiffusionPrior, gens: Sequence[torch.Generator]) -> torch.Tensor:
        """Per-image times ``(B, S, K)``: iterate ``k`` of image ``i`` visits ``times[i, k]``."""
        n = self.num_steps * self.parallel
        if n > prior.num_timesteps:
            raise ValueError(
                f"num_steps * parallel = {n} exceeds the prior's {prior.num_timesteps} timesteps; lower num_steps or parallel"
            )
        grids = [ordered_grid(n, prior.num_timesteps, self.order, g, self.time_grid) for g in gens]
        return torch.stack(grids).view(len(gens), self.num_steps, self.parallel)

    def initial_estimate(self, state: RedDiffState) -> torch.Tensor:
        """``mu_0`` per :attr:`init_mode`, float32 ``(B, C, H, W)``, from ``state.x_init = pinv(y)``
        (``random``: a standard normal draw of the state's noise source)."""
        x = state.x_init
        if self.init_mode == "pinv":
            return x
        if self.init_mode == "zeros":
            return torch.zeros_like(x)
        if self.init_mode == "random":
            return state.noise.randn(x.shape[1:])
        raise ValueError(f"unknown init {self.init_mode!r}; allowed: {INITS}")

    def prepare(self, state: RedDiffState, y: torch.Tensor, op: ForwardOperator, prior: DiffusionPrior) -> None:
        """``mu = init(y)`` (also ``x_init``), a fresh Adam, and each image's time schedule with
        ``sqrt(abar_t)``, ``sqrt(1 - abar_t)`` and ``w_t`` of its times."""
        times = self.schedule(prior, state.gens)  # before the initial estimate: both may draw from gens
        state.x_init = self.initial_estimate(state).detach()
        device = state.x_init.device
        state.times = times.to(device)
        abar = prior.alphas_cumprod.to(device)[state.times].float()
        state.sqrt_abar, state.sqrt_one_minus_abar = abar.sqrt(), (1 - abar).sqrt()
        state.weight = red_diff_weight(prior.alphas_cumprod.to(device), state.times, self.lam, self.weighting).float()
        state.mu = state.x_init.clone().requires_grad_(True)
        state.optimizer = torch.optim.Adam([state.mu], lr=self.lr, betas=self.adam_betas, weight_decay=0.0,
                                           **self.adam_options(device))

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

    def iterate(self, state: RedDiffState, y: torch.Tensor, op: ForwardOperator, prior: DiffusionPrior) -> dict[str, torch.Tensor]:
        """One iterate (spec, "One iterate at time t"): ``x0 = mu + sigma_x0 n0``, the
        regulariser's gradient at the iterate's time(s), the data term, one Adam step on ``mu``.

        Returns per-image ``loss_obs`` (B,), ``loss_reg`` (B,), ``loss`` (B,) and ``t`` (B,)
        (the first of the iterate's K times).
        """
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
        return {"loss": loss.detach(), "loss_obs": loss_obs.detach(), "loss_reg": loss_reg.detach(), "t": state.times[:, state.k, 0]}

    def estimate(self, state: RedDiffState) -> torch.Tensor:
        """The variational mean ``mu`` ``(B, C, H, W)`` (unclipped; clip only when saving)."""
        return state.mu.detach().clone()
