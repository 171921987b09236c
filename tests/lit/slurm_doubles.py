"""A test prior whose every denoiser call takes ``delay_s`` seconds: the SLURM tests need a solve
long enough to send a signal or kill a rank in the middle of it (the tiny ConvPrior alone
restores a 16 px image in milliseconds). Importable by the jobs through PYTHONPATH."""
from __future__ import annotations

import time

from helpers import ConvPrior


class SlowConvPrior(ConvPrior):
    """:class:`helpers.ConvPrior` sleeping ``delay_s`` seconds per call (results unchanged)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__()
        self.delay_s = float(delay_s)

    def predict_eps(self, x_t, t):
        time.sleep(self.delay_s)
        return super().predict_eps(x_t, t)
