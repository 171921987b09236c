"""Per-image scores of each restored batch, computed on the device, separate from the writer.

For every batch the module emits (``pl_module.emitted``), :class:`MetricsCallback` adds
``emitted["scores"]``: ``{column: (B,) tensor}`` of the restored image (and of the starting
estimate, as ``<metric>_init``) against the ground truth ``x`` when the batch has one. The
image writer stores them in each image's record, from which ``metrics.csv`` is merged at the
end of the run: one table whatever the number of processes.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning as L
import torch

from lightning_redd.metrics import psnr, ssim

#: per-image metrics ``fn(x, ref) -> (B,)`` on ``[-1, 1]`` images
PER_IMAGE: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"psnr": psnr, "ssim": ssim}


class MetricsCallback(L.Callback):
    """Scores restored batches against their ground truth.

    Args:
        metrics: per-image metrics, in column order (allowed: psnr, ssim).
        score_init: also score the solver's starting estimate (columns ``<metric>_init``).
    """

    def __init__(self, *, metrics: Sequence[str] = ("psnr", "ssim"), score_init: bool = True) -> None:
        unknown = [m for m in metrics if m not in PER_IMAGE]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; allowed: {sorted(PER_IMAGE)}")
        self.metrics, self.score_init = tuple(metrics), bool(score_init)

    def score(self, emitted: dict) -> dict[str, torch.Tensor]:
        """Add (once) and return ``emitted["scores"]``; ``{}`` without ground truth."""
        if "scores" in emitted:
            return emitted["scores"]
        x = emitted.get("x")
        scores: dict[str, torch.Tensor] = {}
        if x is not None:
            with torch.no_grad():
                for m in self.metrics:
                    scores[m] = PER_IMAGE[m](emitted["x_hat"], x)
                if self.score_init:
                    for m in self.metrics:
                        scores[f"{m}_init"] = PER_IMAGE[m](emitted["x_init"], x)
        emitted["scores"] = scores
        return scores

    def _on_batch_end(self, pl_module: L.LightningModule) -> None:
        emitted = getattr(pl_module, "emitted", None)
        if emitted is not None:
            self.score(emitted)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._on_batch_end(pl_module)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._on_batch_end(pl_module)
