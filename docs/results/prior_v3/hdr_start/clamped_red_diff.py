"""RED-diff with ``mu`` clamped to the image range [-1, 1] after every Adam step (projected
Adam): an experiment of docs/PRIOR_CORPUS.md on HDR, not a solver of the package.

Used through ``clamped.yaml`` with this folder on ``PYTHONPATH``.
"""
from __future__ import annotations

import torch

from lightning_redd.solvers.red_diff import RedDiff


class ClampedRedDiff(RedDiff):
    """:class:`RedDiff` whose estimate never leaves [-1, 1]."""

    def iterate(self, state, y, op, prior):
        out = super().iterate(state, y, op, prior)
        with torch.no_grad():
            state.mu.clamp_(-1.0, 1.0)
        return out
