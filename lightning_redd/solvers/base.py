"""The solver contract shared by RED-diff and the baselines.

A solver is configuration only (hyper-parameters); the per-batch state lives in the
:class:`SolverState` that :meth:`Solver.init` returns. The Lightning module calls
:meth:`Solver.step` once per training step (``fit``) and :meth:`Solver.run` inside
``predict_step``; ``run`` is ``init`` followed by every ``step``, so both paths run the same
code, and it returns the final state, from which the module reads everything it writes:
:meth:`Solver.estimate` (the restored images), ``state.x_init`` (the starting estimate),
``state.diverged`` (images stopped because they became non-finite) and ``state.nfe``.

Solvers are pure: no printing, plotting or file I/O; observe them through ``callback``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from lightning_redd.operators.base import ForwardOperator
from lightning_redd.priors.base import DiffusionPrior


@dataclass
class SolverState:
    """What every solver's per-batch state holds; solvers subclass it with their own fields.

    Attributes:
        x_init: ``(B, C, H, W)`` float32, the starting estimate (for reporting and the
            writer's ``init/`` images).
        gens: one CPU generator per image (stream ``"solver"``); all of the solve's
            randomness comes from them, so an image's result does not depend on its batch.
        k: iterates done so far (``0 .. num_iterates``).
        nfe: denoiser evaluations per image so far (``K`` per iterate for ``K`` noise levels
            in one batched call, 1 per DDIM step, ...).
        diverged: ``(B,)`` bool on the data's device: images whose estimate turned
            non-finite. They are frozen (held at zero) and their batch mates continue
            unchanged, since every image's update depends on that image alone.
    """

    x_init: torch.Tensor
    gens: list[torch.Generator]
    k: int = 0
    nfe: int = 0
    diverged: torch.Tensor = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.diverged is None:
            self.diverged = torch.zeros(self.x_init.shape[0], dtype=torch.bool, device=self.x_init.device)


class Solver:
    """Base class. Subclasses implement ``init``, ``step``, ``estimate`` and ``num_iterates``.

    ``label`` names the algorithm in progress bars and logs.
    """

    label: ClassVar[str] = "solver"

    @property
    def num_iterates(self) -> int:  # pragma: no cover - abstract
        """Number of ``step`` calls of one solve."""
        raise NotImplementedError

    def init(
        self, y: torch.Tensor, op: ForwardOperator, prior: DiffusionPrior, gens: Sequence[torch.Generator]
    ) -> SolverState:  # pragma: no cover - abstract
        """Start a solve for measurements ``y`` (one CPU generator per image) and return its state."""
        raise NotImplementedError

    def step(self, state: SolverState, y: torch.Tensor, op: ForwardOperator, prior: DiffusionPrior) -> dict[str, torch.Tensor]:
        """One iterate; returns per-image statistics ``{name: (B,) tensor}`` (left on the
        device: no host synchronisation)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def estimate(self, state: SolverState) -> torch.Tensor:  # pragma: no cover - abstract
        """The current image estimate ``(B, C, H, W)``, detached."""
        raise NotImplementedError

    def run(
        self,
        y: torch.Tensor,
        op: ForwardOperator,
        prior: DiffusionPrior,
        gens: Sequence[torch.Generator],
        callback: Callable[[int, SolverState, dict[str, torch.Tensor]], None] | None = None,
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
        self,
        y: torch.Tensor,
        op: ForwardOperator,
        prior: DiffusionPrior,
        gens: Sequence[torch.Generator],
        callback: Callable[[int, SolverState, dict[str, torch.Tensor]], None] | None = None,
    ) -> torch.Tensor:
        """The restored batch ``(B, C, H, W)``: ``estimate(run(...))``."""
        return self.estimate(self.run(y, op, prior, gens, callback))

    @staticmethod
    def freeze_diverged(state: SolverState, x: torch.Tensor) -> torch.Tensor:
        """Mark images of ``x`` ``(B, ...)`` that hold NaN or inf as diverged (in
        ``state.diverged``, on the device, without a host sync) and return ``x`` with those
        images set to zero, so that nothing non-finite enters the next iterate."""
        bad = ~torch.isfinite(x.detach()).flatten(1).all(dim=1)
        state.diverged = state.diverged | bad
        return torch.where(state.diverged.view(-1, *([1] * (x.ndim - 1))), torch.zeros((), dtype=x.dtype, device=x.device), x)
