"""Composition of linear operators: ``A = A_n ... A_2 A_1`` (applied in list order),
e.g. ``[BlockAverageSR, Inpainting]`` = super-resolution then inpainting of the low-res image."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from lightning_redd.operators.base import LinearOperator
from lightning_redd.operators.common import check_seeds, check_y
from lightning_redd.operators.inpainting import Inpainting


class Composed(LinearOperator):
    """``A x = A_n(...A_1(x))``; ``A^T y = A_1^T(...A_n^T(y))``.

    Args:
        operators: linear operators in application order; their ``sigma_y`` must be 0
            (the noise belongs to the composition: set ``sigma_y`` here).
        pinv_mode: ``"chain"``: ``A_1^+ ... A_n^+`` — the exact pseudo-inverse on the range
            when every operator but the last has full row rank (``A_i A_i^+ = I``, e.g.
            SR then inpainting); ``"cg"``: minimum-norm least squares by CGLS from 0 (any order,
            per-image convergence, ``cg_iters`` at most).
    """

    def __init__(
        self,
        *,
        operators: list[LinearOperator],
        pinv_mode: Literal["chain", "cg"] = "chain",
        cg_iters: int = 200,
        cg_tol: float = 1e-7,
        sigma_y: float = 0.0,
        channels: int = 3,
    ) -> None:
        super().__init__(sigma_y=sigma_y, channels=channels)
        _validate(operators, pinv_mode, cg_iters, channels)
        self.operators = nn.ModuleList(operators)
        self.pinv_mode, self.cg_iters, self.cg_tol = pinv_mode, int(cg_iters), float(cg_tol)

    def shapes(self, shape: Sequence[int]) -> list[tuple[int, ...]]:
        """Input shape of each operator, then the output shape."""
        out = [tuple(int(s) for s in shape)]
        for op in self.operators:
            op.check_shape(out[-1])
            out.append(op.output_shape(out[-1]))
        return out

    def check_shape(self, shape: Sequence[int]) -> None:
        super().check_shape(shape)
        self.shapes(shape)

    def output_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        return self.shapes(shape)[-1]

    def file_params(self) -> dict:
        """Every part's file parameters."""
        from lightning_redd.operators.file_params import merge

        return merge([op.file_params() for op in self.operators])

    def bind(self, seeds, shape, names=None, device=None, params=None) -> Composed:
        check_seeds(seeds, names)
        shapes = self.shapes(shape)
        bound = [op.bind(seeds, s, names, device, params) for op, s in zip(self.operators, shapes)]
        return Composed(
            operators=bound, pinv_mode=self.pinv_mode, cg_iters=self.cg_iters, cg_tol=self.cg_tol,
            sigma_y=self.sigma_y, channels=self.channels,
        )

    def measure(self, x: torch.Tensor, gens) -> torch.Tensor:
        """Noise is added once, to the composed output; if the last operator is an inpainting,
        missing pixels of ``y`` stay exactly 0."""
        y = super().measure(x, gens)
        last = self.operators[-1]
        return last.adjoint(y) if isinstance(last, Inpainting) else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.operators:
            x = op(x)
        return x

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        for op in reversed(self.operators):
            y = op.adjoint(y)
        return y

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        check_y(self, y)
        if self.pinv_mode == "chain":
            for op in reversed(self.operators):
                y = op.pinv(y)
            return y
        if self.pinv_mode == "cg":
            return self._cgls(y)
        raise ValueError(f"unknown pinv_mode {self.pinv_mode!r}; allowed: 'chain', 'cg'")

    def _cgls(self, y: torch.Tensor) -> torch.Tensor:
        """CGLS on ``min |A x - y|`` from ``x = 0`` (converges to ``A^+ y``); per-image step sizes,
        an image stops moving once its normal-equation residual is below ``cg_tol`` relative."""
        dot = lambda a, b: (a * b).flatten(1).sum(1).view(-1, *([1] * (a.ndim - 1)))  # noqa: E731
        r = y.clone()
        s = self.adjoint(r)
        x, p = torch.zeros_like(s), s.clone()
        gamma = dot(s, s)
        stop = self.cg_tol**2 * gamma
        for _ in range(self.cg_iters):
            active = gamma > stop
            if not active.any():
                break
            q = self(p)
            alpha = torch.where(active, gamma / dot(q, q).clamp_min(1e-300), torch.zeros_like(gamma))
            x = x + alpha * p
            r = r - alpha.view(-1, *([1] * (q.ndim - 1))) * q
            s = self.adjoint(r)
            gamma_new = dot(s, s)
            beta = torch.where(active, gamma_new / gamma.clamp_min(1e-300), torch.zeros_like(gamma))
            p = torch.where(active, s + beta * p, p)
            gamma = torch.where(active, gamma_new, gamma)
        return x


def _validate(operators, pinv_mode, cg_iters, channels) -> None:
    if len(operators) == 0:
        raise ValueError("Composed needs at least one operator, e.g. [BlockAverageSR, Inpainting]")
    for i, op in enumerate(operators):
        if not isinstance(op, LinearOperator):
            raise ValueError(f"Composed operators must be LinearOperator instances; operator {i} is {type(op).__name__}")
        if op.sigma_y != 0:
            raise ValueError(f"operator {i} ({type(op).__name__}) has sigma_y={op.sigma_y}; set sigma_y on Composed only")
    if operators[0].channels != channels:
        raise ValueError(f"Composed channels={channels} but the first operator takes {operators[0].channels}; make them equal")
    if pinv_mode not in ("chain", "cg"):
        raise ValueError(f"unknown pinv_mode {pinv_mode!r}; allowed: 'chain', 'cg'")
    if cg_iters < 1:
        raise ValueError(f"cg_iters must be >= 1, got {cg_iters}")
