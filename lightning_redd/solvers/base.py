"""The solver contract shared by RED-diff and the baselines.

A solver is configuration only (hyper-parameters); the per-batch state lives in the object
that :meth:`Solver.init` returns. The Lightning module calls :meth:`Solver.step` once per
training step (``fit``) and :meth:`Solver.solve` inside ``predict_step``; ``solve`` is
``init`` followed by every ``step``, so both paths run the same code.

Solvers are pure: no printing, plotting or file I/O; observe them through ``callback``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from lightning_redd.operators.base import ForwardOperator
from lightning_redd.priors.base import DiffusionPrior


class Solver:
    """Base class. Subclasses implement ``init``, ``step``, ``estimate`` and ``num_iterates``."""

    @property
    def num_iterates(self) -> int:  # pragma: no cover - abstract
        """Number of ``step`` calls of one solve."""
        raise NotImplementedError

    def init(
        self, y: torch.Tensor, op: ForwardOperator, prior: DiffusionPrior, gens: Sequence[torch.Generator]
    ) -> Any:  # pragma: no cover - abstract
        """Start a solve for measurements ``y`` (one CPU generator per image) and return its state."""
        raise NotImplementedError

    def step(self, state: Any, y: torch.Tensor, op: ForwardOperator, prior: DiffusionPrior) -> dict[str, torch.Tensor]:
        """One iterate; returns per-image statistics ``{name: (B,) tensor}``."""
        raise NotImplementedError  # pragma: no cover - abstract

    def estimate(self, state: Any) -> torch.Tensor:  # pragma: no cover - abstract
        """The current image estimate ``(B, C, H, W)``, detached."""
        raise NotImplementedError

    def solve(
        self,
        y: torch.Tensor,
        op: ForwardOperator,
        prior: DiffusionPrior,
        gens: Sequence[torch.Generator],
        callback: Callable[[int, Any, dict[str, torch.Tensor]], None] | None = None,
    ) -> torch.Tensor:
        """``init`` + ``num_iterates`` steps; returns the final estimate ``(B, C, H, W)``.

        ``callback(k, state, stats)`` is called after iterate ``k`` (0-based).
        """
        state = self.init(y, op, prior, gens)
        for k in range(self.num_iterates):
            stats = self.step(state, y, op, prior)
            if callback is not None:
                callback(k, state, stats)
        return self.estimate(state)
