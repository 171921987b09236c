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
from typing import ClassVar, Literal

import numpy as np
import torch

from lightning_redd import seeding
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


#: where the per-iterate noise of a solve is drawn (:class:`NoiseSource`).
NoiseMode = Literal["auto", "host", "device"]
NOISE_MODES = ("auto", "host", "device")


def device_seed(generator: torch.Generator) -> int:
    """A 63-bit seed for an image's device generator, mixed from the seed its host generator
    was created with (``generator.initial_seed()``; nothing is drawn from it)."""
    state = np.random.SeedSequence([generator.initial_seed() & 0xFFFFFFFF, generator.initial_seed() >> 32, 0xDE71CE])
    words = state.generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


class NoiseSource:
    """Standard normal draws ``(B, *shape)`` for a solve's iterates, image ``i`` from its own stream.

    ``mode``:

    * ``"host"``: from the images' CPU generators (``gens``), one image at a time, then copied
      to ``device``: the reference path, identical on every device (a host loop and a
      host-to-device copy per draw on accelerators);
    * ``"device"``: from one ``torch.Generator`` per image *on* ``device``, seeded once from that
      image's host generator (:func:`device_seed`): no host work but one kernel launch per image
      and draw; a different stream from ``"host"``, so results differ from the CPU path;
    * ``"auto"``: ``"host"`` on the CPU (today's results, bit for bit), ``"device"`` elsewhere.

    Either way an image's draws depend only on its own seed: not on batch size, batch mates,
    or the number of devices.
    """

    def __init__(self, gens: Sequence[torch.Generator], device: torch.device, mode: str = "auto") -> None:
        if mode not in NOISE_MODES:
            raise ValueError(f"unknown noise mode {mode!r}; allowed: {NOISE_MODES}")
        self.device = torch.device(device)
        self.mode = ("host" if self.device.type == "cpu" else "device") if mode == "auto" else mode
        self.host_gens = list(gens)
        if self.mode == "device":
            self.gens = [torch.Generator(device=self.device).manual_seed(device_seed(g)) for g in self.host_gens]
        else:
            self.gens = self.host_gens

    def randn(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``(B, *shape)`` standard normal draws on :attr:`device`."""
        shape = tuple(shape)
        if self.mode == "host":
            return seeding.randn(shape, self.gens, device=self.device, dtype=dtype)
        return torch.stack([torch.randn(shape, generator=g, dtype=dtype, device=self.device) for g in self.gens])
