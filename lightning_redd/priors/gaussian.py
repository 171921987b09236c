"""An analytic prior: data ``x0 ~ N(mean, std^2 I)`` per pixel, for which the optimal noise
prediction is known exactly. Used to test solvers against closed forms.

For ``x_t = sqrt(a) x0 + sqrt(1 - a) eps`` (``a = abar_t``), ``x_t ~ N(sqrt(a) m, a s^2 + 1 - a)``
and ``E[eps | x_t] = sqrt(1 - a) (x_t - sqrt(a) m) / (a s^2 + 1 - a)``.
"""
from __future__ import annotations

import torch

from lightning_redd.priors.base import DiffusionPrior


class GaussianPrior(DiffusionPrior):
    """Exact ``eps`` for i.i.d. Gaussian pixels with mean ``mean`` and standard deviation ``std``."""

    def __init__(self, *, mean: float = 0.0, std: float = 0.5, channels: int = 3, betas: torch.Tensor | None = None) -> None:
        super().__init__(channels=channels, image_size=None, betas=betas)
        if std <= 0:
            raise ValueError(f"std must be > 0, got {std}")
        self.mean = float(mean)
        self.std = float(std)

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        num = torch.sqrt(1 - a) * (x_t.double() - torch.sqrt(a) * self.mean)
        return (num / (a * self.std**2 + 1 - a)).to(x_t.dtype)
