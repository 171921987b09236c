"""Solvers on a latent prior: the same algorithms, run on the latents ``z`` of a
:class:`~lightning_redd.priors.latent.LatentPrior`, seeing the operator through the decoder.

:class:`LatentSolver` wraps a solver whose :attr:`Requirements.latent` is set and hands it
the problem in latent space: the operator ``z -> A(D(z))``
(:class:`~lightning_redd.priors.latent.DecodedOperator`) with starting guess ``E(A^+(y))``, the
prior's latent denoiser as its prior. For RED-diff this is latent RED-diff as the paper's
method reads on latents:

    loss(mu_z) = obs_weight * mean((y - A(D(mu_z)))^2) / 2  +  w_t * mean(stopgrad(eps_hat - eps) * mu_z)

with ``eps_hat = eps_theta(sqrt(abar_t) mu_z + sqrt(1 - abar_t) eps, t)`` under ``no_grad``: the
denoiser is never differentiated, only the decoder (and ``A``) in the data term. DPS
differentiates ``||y - A(D(z0_hat(z_t)))||`` through the denoiser and the decoder; DDIM samples
latents. The restored image is ``D(estimate)``; ``x_init`` stays ``A^+(y)`` in pixels, as for
every solver. Solvers that need a linear operator in the prior's own space (DDRM's SVD, PiGDM's
pseudo-inverse guidance) are refused up front: through the decoder the problem is nonlinear.

With an identity autoencoder (latent = pixel) a latent solve is the pixel solve, operation for
operation (tested).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lightning_redd.operators.base import ForwardOperator
from lightning_redd.priors.base import DiffusionPrior
from lightning_redd.priors.latent import DecodedOperator, LatentPrior
from lightning_redd.solvers.base import SOLVERS, Solver, SolverState
from lightning_redd.solvers.ddim import DDIM


@dataclass
class LatentState(SolverState):
    """A latent solve's state: ``x_init`` is ``A^+(y)`` in pixels; ``inner`` the wrapped
    solver's state on latents; ``op`` the operator through the decoder."""

    inner: SolverState = None  # type: ignore[assignment]
    op: DecodedOperator = None  # type: ignore[assignment]


def latent_solver_names() -> list[str]:
    """Registered solvers that run on a latent prior (``requirements.latent``)."""
    import lightning_redd.solvers.all  # noqa: F401  (registers every built-in solver)

    return sorted(n for n, cls in SOLVERS.items() if cls.requirements.latent)


class LatentSolver(Solver):
    """``solver`` run on a :class:`LatentPrior`'s latents (see the module docstring).

    Args:
        solver: a solver whose ``requirements.latent`` is set (RED-diff, DPS, DDIM).

    Raises:
        ValueError: at construction, for a solver that is not defined on latents (naming those that are).
    """

    state_type = LatentState

    def __init__(self, solver: Solver) -> None:
        if isinstance(solver, LatentSolver):
            raise TypeError("the solver already runs on latents: do not wrap a LatentSolver again")
        if not solver.requirements.latent:
            need = solver.requirements.operator.__name__
            why = (f"it needs a {need} in the prior's space (e.g. an SVD)" if solver.requirements.operator is not ForwardOperator
                   else "its guidance assumes a linear operator in the prior's space")
            raise ValueError(f"{solver.label} is not defined on a latent prior: {why}, and A(D(z)) through the decoder is "
                             f"nonlinear; solvers that run on latent priors: {', '.join(latent_solver_names())}")
        if isinstance(solver, DDIM) and solver.clip_x0:
            raise ValueError(f"{solver.label} with clip_x0: true clips to [-1, 1], a pixel range; latents are not "
                             "bounded: set clip_x0: false with a latent prior")
        super().__init__(noise=solver.noise)
        self.solver = solver
        self.label = f"{solver.label} (latent)"
        self.requirements = solver.requirements

    @property
    def num_iterates(self) -> int:
        return self.solver.num_iterates

    @property
    def nfe_per_iterate(self) -> int:
        return self.solver.nfe_per_iterate

    def check(self, op: ForwardOperator, prior: DiffusionPrior) -> None:
        """A :class:`LatentPrior` (the wrapped solver checks the operator in its own ``init``)."""
        if not isinstance(prior, LatentPrior):
            raise TypeError(f"{self.label} needs a latent prior (e.g. lightning_redd.priors.latent_diffusers.DiffusersLatentPrior), "
                            f"got {type(prior).__name__}: run {self.solver.label} itself on a pixel prior")

    def prepare(self, state: LatentState, y: torch.Tensor, op: ForwardOperator, prior: LatentPrior) -> None:
        """The wrapped solver's ``init`` on the operator through the decoder (start ``E(A^+(y))``)."""
        state.op = DecodedOperator(op, prior)
        state.inner = self.solver.init(y, state.op, prior, state.gens)
        state.noise = state.inner.noise

    def iterate(self, state: LatentState, y: torch.Tensor, op: ForwardOperator, prior: LatentPrior) -> dict[str, torch.Tensor]:
        """One iterate of the wrapped solver on latents (its own freezing of non-finite images included)."""
        stats = self.solver.step(state.inner, y, state.op, prior)
        state.diverged = state.inner.diverged
        return stats

    def estimate(self, state: LatentState) -> torch.Tensor:
        """``D(estimate of the latent solve)``: images ``(B, C, H, W)``, detached, unclipped."""
        with torch.no_grad():
            return state.op.prior.decode(self.solver.estimate(state.inner)).detach()


def for_prior(solver: Solver, prior: DiffusionPrior | None) -> Solver:
    """The solver to run with ``prior``: ``solver`` itself for a pixel prior (and for solvers that
    use no prior), a :class:`LatentSolver` around it for a :class:`LatentPrior` (which refuses,
    with a one-line error, solvers not defined there)."""
    if not isinstance(prior, LatentPrior) or isinstance(solver, LatentSolver) or not solver.requirements.uses_prior:
        return solver
    return LatentSolver(solver)
