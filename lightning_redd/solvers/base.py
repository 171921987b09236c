"""The solver contract shared by RED-diff and the baselines, and the registry of solvers.

A solver is configuration only (hyper-parameters); the per-batch state lives in the
:class:`SolverState` that :meth:`Solver.init` returns. The Lightning module calls
:meth:`Solver.step` once per training step (``fit``) and :meth:`Solver.run` inside
``predict_step``; ``run`` is ``init`` followed by every ``step``, so both paths run the same
code, and it returns the final state, from which the module reads everything it writes:
:meth:`Solver.estimate` (the restored images), ``state.x_init`` (the starting estimate),
``state.diverged`` (images stopped because they became non-finite) and ``state.nfe``.

``init`` and ``step`` are template methods, written once here; a solver implements hooks that
read like its paper's algorithm:

* :meth:`Solver.check` (optional): refuse a problem it cannot solve, naming the fix;
* :meth:`Solver.prepare`: its initialisation, on a state that already holds ``x_init = pinv(y)``,
  the images' generators and their :class:`~lightning_redd.solvers.noise.NoiseSource`;
* :meth:`Solver.iterate`: one iterate, writing the new iterates into the state's
  :attr:`SolverState.iterates` fields and returning per-image statistics;
* :meth:`Solver.estimate`, :attr:`Solver.num_iterates`, :attr:`Solver.nfe_per_iterate`.

The base does the rest, once for every solver: ``y`` must be finite, one generator per image, the
noise source, no ``step`` after the last iterate, freezing of images that turned non-finite, and
the ``k`` / ``nfe`` counts.

Registry: a subclass that sets ``name`` in its own body appears in :data:`SOLVERS` under it (no
list to edit); classes without one (abstract intermediates) stay out. Its
:attr:`Solver.requirements` say which operators it takes and how the property suites
(``tests/solvers/test_solver_properties.py``) run it cheaply.

Solvers are pure: no printing, plotting or file I/O; observe them through ``callback``.
"""
from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from lightning_redd.operators.base import ForwardOperator, check_finite
from lightning_redd.priors.base import DiffusionPrior
from lightning_redd.priors.latent import DecodedOperator, LatentPrior
from lightning_redd.solvers.noise import NOISE_MODES, NoiseMode, NoiseSource, check_noise_mode, device_seed

__all__ = ["NOISE_MODES", "SOLVERS", "NoiseMode", "NoiseSource", "Requirements", "Solver", "SolverState", "device_seed"]

#: Every registered solver class by its short name (filled by :meth:`Solver.__init_subclass__`;
#: import :mod:`lightning_redd.solvers.all` to have every built-in one in it).
SOLVERS: dict[str, type[Solver]] = {}

Callback = Callable[[int, "SolverState", dict[str, torch.Tensor]], None]


@dataclass
class SolverState:
    """What every solver's per-batch state holds; solvers subclass it with their own fields.

    Attributes:
        x_init: ``(B, C, H, W)`` float32, the starting estimate (for reporting and the
            writer's ``init/`` images); ``op.pinv(y)`` unless the solver's ``start`` replaces it.
        gens: one CPU generator per image (stream ``"solver"``); all of the solve's
            randomness comes from them, so an image's result does not depend on its batch.
        k: iterates done so far (``0 .. num_iterates``).
        nfe: denoiser evaluations per image so far (``K`` per iterate for ``K`` noise levels
            in one batched call, 1 per DDIM step, ...).
        diverged: ``(B,)`` bool on the data's device: images whose iterates turned
            non-finite. They are frozen (held at zero) and their batch mates continue
            unchanged, since every image's update depends on that image alone.
        noise: the solve's noise draws, one stream per image (:class:`NoiseSource`).
        num_iterates: ``step`` calls of this solve.

    Class attribute ``iterates``: names of the ``(B, ...)`` tensor fields that an iterate
    updates; after every iterate an image non-finite in any of them is frozen in all of them.
    """

    iterates: ClassVar[tuple[str, ...]] = ()

    x_init: torch.Tensor
    gens: list[torch.Generator]
    k: int = 0
    nfe: int = 0
    diverged: torch.Tensor = field(default=None)  # type: ignore[assignment]
    noise: NoiseSource = None  # type: ignore[assignment]
    num_iterates: int = 0

    def __post_init__(self) -> None:
        if self.diverged is None:
            self.diverged = torch.zeros(self.x_init.shape[0], dtype=torch.bool, device=self.x_init.device)

    @property
    def done(self) -> bool:
        """Whether every iterate of the solve has run."""
        return self.k >= self.num_iterates


@dataclass(frozen=True)
class Requirements:
    """What a solver needs of a problem, and how the property suites run it cheaply.

    Attributes:
        operator: the operator class it needs (``ForwardOperator``: any; ``LinearOperator``;
            ``SVDOperator`` for DDRM); :meth:`Solver.check` refuses others.
        noise_models: measurement noise models (``op.noise``) it handles.
        uses_prior: whether it calls the denoiser (a prior-free solver accepts ``prior=None``).
        stochastic: whether its result depends on the images' seeds (with ``settings``).
        latent: whether it is defined on a latent prior, run by
            :class:`~lightning_redd.solvers.latent.LatentSolver` through the decoder.
        settings: constructor keywords of a cheap configuration (a few iterates on 8x8 images).
        batch_rtol: bound on ``max|batched - alone| / max|alone|`` with ``settings`` when the
            denoiser's batched kernels round differently from per-image calls (a convolutional
            network); with an elementwise prior every solver must be batch independent bit for bit.
    """

    operator: type[ForwardOperator] = ForwardOperator
    noise_models: tuple[str, ...] = ("gaussian", "poisson")
    uses_prior: bool = True
    stochastic: bool = True
    latent: bool = False
    settings: Mapping[str, Any] = field(default_factory=dict)
    batch_rtol: float = 2e-6

    def fits(self, op: ForwardOperator) -> bool:
        """Whether ``op`` is an operator this solver takes."""
        return isinstance(op, self.operator) and getattr(op, "noise", "gaussian") in self.noise_models


def nonfinite(x: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: images of ``x`` ``(B, ...)`` holding a NaN or an inf (no host sync)."""
    return ~torch.isfinite(x.detach()).flatten(1).all(dim=1)


class Solver(abc.ABC):
    """Base class of every solver (see the module docstring for the hooks a subclass implements).

    Class attributes: ``name`` (the registry key; ``None``: not registered), ``label`` (progress
    bars and logs), ``requirements`` (:class:`Requirements`), ``state_type`` (the
    :class:`SolverState` subclass ``init`` creates). ``noise`` (instance): where the solve's noise
    is drawn (:class:`NoiseSource`: ``auto``, ``host`` or ``device``).
    """

    name: ClassVar[str | None] = None
    label: ClassVar[str] = "solver"
    requirements: ClassVar[Requirements] = Requirements()
    state_type: ClassVar[type[SolverState]] = SolverState
    noise: NoiseMode = "auto"

    def __init__(self, *, noise: NoiseMode = "auto") -> None:
        self.noise = check_noise_mode(noise)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__ and cls.__dict__["name"] is not None:
            register(cls)

    # ------------------------------------------------------------------ hooks
    @property
    @abc.abstractmethod
    def num_iterates(self) -> int:
        """Number of ``step`` calls of one solve."""

    @property
    def nfe_per_iterate(self) -> int:
        """Denoiser evaluations per image and iterate (added to ``state.nfe`` by ``step``)."""
        return 1

    def check(self, op: ForwardOperator, prior: DiffusionPrior | None) -> None:
        """Refuse a problem this solver cannot solve (default: per :attr:`requirements`)."""
        req = self.requirements
        if not isinstance(op, req.operator):
            raise TypeError(f"{self.label} needs a {req.operator.__name__}; {type(op).__name__} is not one: use another solver")
        if getattr(op, "noise", "gaussian") not in req.noise_models:
            raise ValueError(f"{self.label} handles measurement noise {req.noise_models}, not {op.noise!r}: use another solver")
        if req.uses_prior and prior is None:
            raise ValueError(f"{self.label} needs a diffusion prior, got None: set model.prior")
        if req.uses_prior and isinstance(prior, LatentPrior) and not isinstance(op, DecodedOperator):
            raise TypeError(f"{self.label} got a latent prior ({type(prior).__name__}) and an image-space operator: run it as "
                            f"lightning_redd.solvers.latent.LatentSolver({type(self).__name__}(...)) (the Lightning module does)")

    @abc.abstractmethod
    def prepare(self, state: SolverState, y: torch.Tensor, op: ForwardOperator, prior: DiffusionPrior) -> None:
        """Fill ``state`` (which holds ``x_init = pinv(y)``, ``gens`` and ``noise``) for iterate 0."""

    @abc.abstractmethod
    def iterate(self, state: SolverState, y: torch.Tensor, op: ForwardOperator, prior: DiffusionPrior) -> dict[str, torch.Tensor]:
        """Iterate ``state.k``: update the ``state.iterates`` fields; return ``{name: (B,) tensor}``."""

    @abc.abstractmethod
    def estimate(self, state: SolverState) -> torch.Tensor:
        """The current image estimate ``(B, C, H, W)``, detached."""

    # ------------------------------------------------------------------ templates
    def init(self, y: torch.Tensor, op: ForwardOperator, prior: DiffusionPrior, gens: Sequence[torch.Generator]) -> SolverState:
        """Start a solve for measurements ``y`` and return its state.

        Args:
            y: measurements ``(B, ...)`` as ``op`` produces them (finite).
            op: the operator bound to this batch (the one that measured ``y``).
            prior: the diffusion prior (``None`` for a prior-free solver).
            gens: one CPU generator per image (stream ``"solver"``).
        """
        gens = list(gens)
        check_finite(y, "y")
        if len(gens) != y.shape[0]:
            raise ValueError(
                f"need one generator per image: got {len(gens)} for a batch of {y.shape[0]}; "
                "pass seeding.generators(seed, indices, 'solver')"
            )
        self.check(op, prior)
        with torch.no_grad():
            x_init = op.pinv(y).float().detach()
        noise = NoiseSource(gens, x_init.device, self.noise)
        state = self.state_type(x_init=x_init, gens=gens, noise=noise, num_iterates=self.num_iterates)
        self.prepare(state, y, op, prior)
        return state

    def step(self, state: SolverState, y: torch.Tensor, op: ForwardOperator, prior: DiffusionPrior) -> dict[str, torch.Tensor]:
        """One iterate; returns per-image statistics ``{name: (B,) tensor}`` (left on the
        device: no host synchronisation). Images that turned non-finite are frozen."""
        if state.done:
            raise RuntimeError(f"this solve already ran its {state.num_iterates} iterates; call init() for a new batch")
        stats = self.iterate(state, y, op, prior)
        self.freeze(state)
        state.k += 1
        state.nfe += self.nfe_per_iterate
        return stats

    def run(
        self, y: torch.Tensor, op: ForwardOperator, prior: DiffusionPrior, gens: Sequence[torch.Generator],
        callback: Callback | None = None,
    ) -> SolverState:
        """``init`` + ``num_iterates`` steps; returns the final state, from which
        :meth:`estimate` gives the restored batch and ``x_init``, ``diverged`` and ``nfe`` the rest.

        ``callback(k, state, stats)`` is called after iterate ``k`` (0-based).
        """
        state = self.init(y, op, prior, gens)
        for k in range(self.num_iterates):
            stats = self.step(state, y, op, prior)
            if callback is not None:
                callback(k, state, stats)
        return state

    def solve(
        self, y: torch.Tensor, op: ForwardOperator, prior: DiffusionPrior, gens: Sequence[torch.Generator],
        callback: Callback | None = None,
    ) -> torch.Tensor:
        """The restored batch ``(B, C, H, W)``: ``estimate(run(...))``."""
        return self.estimate(self.run(y, op, prior, gens, callback))

    # ------------------------------------------------------------------ divergence
    @staticmethod
    def freeze(state: SolverState) -> None:
        """Mark images non-finite in any of ``state.iterates`` as diverged (in ``state.diverged``,
        on the device, without a host sync) and set those images to zero in every iterate field,
        so that nothing non-finite enters the next iterate. A leaf tensor that requires grad (an
        optimizer's parameter) is overwritten in place, any other field replaced."""
        with torch.no_grad():
            values = [getattr(state, n) for n in state.iterates]
            for x in values:
                state.diverged = state.diverged | nonfinite(x)
            for n, x in zip(state.iterates, values):
                frozen = torch.where(state.diverged.view(-1, *([1] * (x.ndim - 1))), torch.zeros((), dtype=x.dtype, device=x.device), x)
                if x.requires_grad:
                    x.copy_(frozen)
                else:
                    setattr(state, n, frozen)

    @staticmethod
    def freeze_diverged(state: SolverState, x: torch.Tensor) -> torch.Tensor:
        """Mark images of ``x`` ``(B, ...)`` that hold NaN or inf as diverged and return ``x`` with
        those images set to zero (one tensor; :meth:`freeze` does this for a whole state)."""
        state.diverged = state.diverged | nonfinite(x)
        return torch.where(state.diverged.view(-1, *([1] * (x.ndim - 1))), torch.zeros((), dtype=x.dtype, device=x.device), x)


def register(cls: type[Solver]) -> None:
    """Enter ``cls`` in :data:`SOLVERS` under ``cls.name`` (from :meth:`Solver.__init_subclass__`).

    The same class defined again (a module imported twice) replaces its entry; another class
    under a taken name, a name that is not an identifier, or an abstract class is an error.
    """
    name = cls.__dict__["name"]
    if not isinstance(name, str) or not name.isidentifier():
        raise TypeError(f"{cls.__qualname__}.name must be an identifier such as 'red_diff' (or None: not registered), got {name!r}")
    missing = sorted(n for n in dir(cls) if getattr(getattr(cls, n, None), "__isabstractmethod__", False))
    if missing:
        raise TypeError(f"{cls.__qualname__} is named {name!r} but does not implement {missing}: implement them or drop its name")
    old = SOLVERS.get(name)
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"solver name {name!r} is taken by {old.__module__}.{old.__qualname__}; give {cls.__qualname__} another name")
    SOLVERS[name] = cls
