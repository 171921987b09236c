"""DDIM (Song, Meng, Ermon, "Denoising Diffusion Implicit Models", ICLR 2021): the reverse
diffusion loop, and the skeleton that the guided samplers (DPS, PiGDM) build on.

One iterate goes from time ``t`` down to ``t_prev`` on the descending grid
(:func:`~lightning_redd.solvers.grids.reverse_pairs`; ``t_prev = -1`` is the clean image,
``abar_{-1} = 1``):

    eps_hat = eps_theta(x_t, t)
    x0_hat  = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)                          (Eq. 9)
    x_prev  = sqrt(abar_prev) x0_hat + c2 eps_hat + c1 z,   z ~ N(0, I)                   (Eq. 12)
    c1 = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)           (Eq. 16)
    c2 = sqrt(1 - abar_prev - c1^2)

``eta = 0`` is deterministic given ``x_T``; ``eta = 1`` has DDPM's ancestral variance. After
the last iterate (``t = 0 -> -1``) ``x_prev = x0_hat``: the sample. The unconditional sampler
ignores ``y`` (it is the prior's own sampler); ``x_init`` still holds ``op.pinv(y)`` so that
the writer's ``init/`` images mean the same for every solver.

Guided samplers override :meth:`DDIM.guide`, which returns the denoiser's outputs and an
additive correction of ``x_prev``. All arithmetic is per image, so an image's result does not
depend on its batch mates; the noise of image ``i`` (``x_T`` and every ``z``) comes from its own
stream of the state's :class:`~lightning_redd.solvers.noise.NoiseSource`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from lightning_redd.operators.base import ForwardOperator
from lightning_redd.priors.base import DiffusionPrior
from lightning_redd.solvers.base import NoiseMode, Requirements, Solver, SolverState
from lightning_redd.solvers.grids import reverse_pairs

STARTS = ("noise", "pinv")
Start = Literal["noise", "pinv"]


@dataclass
class DDIMState(SolverState):
    """Per-batch state of a reverse-diffusion solve (adds to :class:`SolverState`).

    Attributes:
        x: ``(B, C, H, W)`` float32, the current iterate ``x_t`` (after the last iterate: the
            clean estimate).
        x0_hat: ``(B, C, H, W)`` float32, the latest denoised prediction (``x_init`` before
            the first iterate).
        t, t_prev: ``(S,)`` long (CPU), iterate ``k`` goes from ``t[k]`` to ``t_prev[k]``.
        abar: ``(T,)`` float64 (CPU) copy of the prior's ``alphas_cumprod`` (coefficients
            are computed on the host from it: no device round trip per iterate).
    """

    iterates: ClassVar[tuple[str, ...]] = ("x", "x0_hat")

    x: torch.Tensor = None  # type: ignore[assignment]
    x0_hat: torch.Tensor = None  # type: ignore[assignment]
    t: torch.Tensor = None  # type: ignore[assignment]
    t_prev: torch.Tensor = None  # type: ignore[assignment]
    abar: torch.Tensor = None  # type: ignore[assignment]

    def times(self) -> tuple[int, int, torch.Tensor]:
        """``(t, t_prev, tb)`` of iterate ``k``: ``tb`` is ``t`` as a ``(B,)`` long tensor on the
        data's device."""
        t, t_prev = int(self.t[self.k]), int(self.t_prev[self.k])
        return t, t_prev, torch.full((self.x.shape[0],), t, dtype=torch.long, device=self.x.device)

    def alpha(self, t: int) -> float:
        """``abar_t`` as a Python float, ``abar_{-1} = 1``."""
        return 1.0 if t < 0 else float(self.abar[t])


def ddim_coefficients(abar_t: float, abar_prev: float, eta: float) -> tuple[float, float]:
    """``(c1, c2)`` of Eq. 12/16: the std of the fresh noise and the weight of ``eps_hat``."""
    c1 = eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)) ** 0.5
    c2 = max(1 - abar_prev - c1**2, 0.0) ** 0.5
    return c1, c2


class DDIM(Solver):
    """DDIM sampling from the prior (unconditional; ``y`` only sets ``x_init``).

    Args:
        num_steps: iterates ``S`` (denoiser evaluations); the grid spans ``[0, T)``
            (:func:`~lightning_redd.solvers.grids.timestep_grid`, top time ``T - T/S``).
        eta: stochasticity in ``[0, 1]``: 0 deterministic DDIM (the paper's sampler), 1 DDPM-like
            (the RED-diff reference's DDIM config uses 0.5).
        start: ``x_T``: ``noise`` (``N(0, I)``, the paper's start) or ``pinv``
            (``sqrt(abar_T) pinv(y) + sqrt(1 - abar_T) z``, the RED-diff reference's start of its
            guided baselines; SDEdit-like for plain DDIM).
        clip_x0: clip ``x0_hat`` to ``[-1, 1]`` before the DDIM move, re-deriving ``eps_hat`` from
            it (guided-diffusion's ``clip_denoised``). Off by default, as in the reference.
        noise: where ``x_T`` and the fresh noise ``z`` are drawn
            (:class:`~lightning_redd.solvers.noise.NoiseSource`): ``host`` (each image's CPU
            generator, copied to the device), ``device`` (one generator per image on the data's
            device), ``auto`` (default: ``host`` on the CPU, ``device`` on accelerators).
    """

    name = "ddim"
    label = "DDIM"
    state_type = DDIMState
    requirements = Requirements(settings={"num_steps": 4, "eta": 0.5}, latent=True)

    def __init__(
        self, *, num_steps: int = 100, eta: float = 0.0, start: Start = "noise", clip_x0: bool = False, noise: NoiseMode = "auto"
    ) -> None:
        super().__init__(noise=noise)
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1] (0: deterministic DDIM, 1: DDPM-like), got {eta}")
        if start not in STARTS:
            raise ValueError(f"unknown start {start!r}; allowed: {STARTS}")
        self.num_steps, self.eta, self.start, self.clip_x0 = int(num_steps), float(eta), start, bool(clip_x0)

    @property
    def num_iterates(self) -> int:
        return self.num_steps

    # ------------------------------------------------------------------ init
    def check(self, op: ForwardOperator, prior: DiffusionPrior) -> None:
        """The base's checks, and at most one iterate per timestep of the prior."""
        super().check(op, prior)
        if self.num_steps > prior.num_timesteps:
            raise ValueError(f"num_steps = {self.num_steps} exceeds the prior's {prior.num_timesteps} timesteps; lower num_steps")

    def prepare(self, state: DDIMState, y: torch.Tensor, op: ForwardOperator, prior: DiffusionPrior) -> None:
        """The descending grid and ``x_T`` per :attr:`start`; ``x0_hat`` starts at ``x_init``."""
        state.t, state.t_prev = reverse_pairs(self.num_steps, prior.num_timesteps)
        state.abar = prior.alphas_cumprod.detach().to("cpu", torch.float64)
        z = state.noise.randn(state.x_init.shape[1:])
        if self.start == "noise":
            state.x = z
        elif self.start == "pinv":
            a = state.alpha(int(state.t[0]))
            state.x = a**0.5 * state.x_init + (1 - a) ** 0.5 * z
        else:
            raise ValueError(f"unknown start {self.start!r}; allowed: {STARTS}")
        state.x0_hat = state.x_init.clone()

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def denoise(prior: DiffusionPrior, x_t: torch.Tensor, t: torch.Tensor, abar_t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(eps_hat, x0_hat)`` for ``x_t`` ``(B, C, H, W)`` at times ``t`` ``(B,)`` (Eq. 9).

        Runs in the caller's grad mode: guided samplers differentiate through it."""
        eps_hat = prior.eps(x_t, t)
        x0_hat = (x_t - (1 - abar_t) ** 0.5 * eps_hat) / abar_t**0.5
        return eps_hat, x0_hat

    def guide(
        self, state: DDIMState, y: torch.Tensor, op: ForwardOperator, prior: DiffusionPrior, t: int, tb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        """``(eps_hat, x0_hat, correction, stats)`` at ``state.x`` and time ``t`` (``tb``: the
        same as a ``(B,)`` tensor on the data's device): the denoiser's outputs (detached), an
        additive correction of ``x_prev`` (``None`` for plain DDIM) and per-image statistics.
        Plain DDIM runs the denoiser under ``no_grad``."""
        with torch.no_grad():
            eps_hat, x0_hat = self.denoise(prior, state.x, tb, state.alpha(t))
        return eps_hat, x0_hat, None, {}

    def move(self, state: DDIMState, x0_hat: torch.Tensor, eps_hat: torch.Tensor, t: int, t_prev: int) -> torch.Tensor:
        """``x_prev`` of Eq. 12 from ``x0_hat`` and ``eps_hat`` (clipping ``x0_hat`` if asked)."""
        a_t, a_prev = state.alpha(t), state.alpha(t_prev)
        if self.clip_x0:
            x0_hat = x0_hat.clamp(-1, 1)
            eps_hat = (state.x - a_t**0.5 * x0_hat) / (1 - a_t) ** 0.5
        c1, c2 = ddim_coefficients(a_t, a_prev, self.eta)
        x_prev = a_prev**0.5 * x0_hat + c2 * eps_hat
        if self.eta > 0:
            x_prev = x_prev + c1 * state.noise.randn(x0_hat.shape[1:])
        return x_prev

    # ------------------------------------------------------------------ iterate
    def iterate(self, state: DDIMState, y: torch.Tensor, op: ForwardOperator, prior: DiffusionPrior) -> dict[str, torch.Tensor]:
        """One iterate ``t -> t_prev``: the guide, then the DDIM move plus its correction.
        Returns per-image ``t`` (B,) and the guide's statistics."""
        t, t_prev, tb = state.times()
        eps_hat, x0_hat, correction, stats = self.guide(state, y, op, prior, t, tb)
        with torch.no_grad():
            x_prev = self.move(state, x0_hat, eps_hat, t, t_prev)
            if correction is not None:
                x_prev = x_prev + correction
            state.x, state.x0_hat = x_prev.float(), x0_hat.float()
        return {"t": tb, **stats}

    def estimate(self, state: DDIMState) -> torch.Tensor:
        """The clean estimate ``(B, C, H, W)``: the final iterate once done, else the latest
        ``x0_hat`` (``x_init`` before the first iterate). Unclipped."""
        return (state.x if state.done else state.x0_hat).detach().clone()
