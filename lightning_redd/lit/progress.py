"""One progress bar over images, with the current batch's iterates nested under it.

Lightning's own bar counts batches in ``predict`` and training steps in ``fit`` (where a step
is one iterate); a person restoring a folder wants to see images done and how far the
current batch's solve is. Shown on rank 0 only (under several processes it counts rank 0's
share, and says so).
"""
from __future__ import annotations

import sys

import lightning as L
from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar


def _tqdm():
    from tqdm.auto import tqdm

    return tqdm


class RestorationProgressBar(ProgressBar):
    """Images restored (outer bar) and the current batch's iterates (inner bar)."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self.images = self.iterates = None

    # ------------------------------------------------------------------ ProgressBar interface
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self.trainer.is_global_zero

    # ------------------------------------------------------------------ bars
    def _share(self, trainer: L.Trainer, loader) -> int:
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "batches"):
            return sum(len(b) for b in sampler.batches(trainer.global_rank))
        return 0

    def _open(self, trainer: L.Trainer, pl_module: L.LightningModule, loader) -> None:
        if not self.is_enabled:
            return
        total = self._share(trainer, loader)
        rank = f" (rank 0 of {trainer.world_size})" if trainer.world_size > 1 else ""
        label = pl_module.solver.label
        several = getattr(getattr(loader, "sampler", None), "samples", 1) > 1  # data.samples_per_image: counts samples
        self.images = _tqdm()(total=total, desc=f"Restoring{rank}", unit="sample" if several else "img",
                              dynamic_ncols=True, file=sys.stderr)
        self._label = label

    def iterate_bar(self, total: int, batch_idx: int):
        """The inner bar of one batch's solve (``None`` where bars are off)."""
        if not self.is_enabled:
            return None
        self.iterates = _tqdm()(total=total, desc=f"  {self._label} iterates", unit="it", leave=False, position=1,
                                dynamic_ncols=True, file=sys.stderr)
        return self.iterates

    def _batch_done(self, n: int) -> None:
        if self.iterates is not None:
            self.iterates.close()
            self.iterates = None
        if self.images is not None:
            self.images.update(n)

    def _close(self) -> None:
        self._batch_done(0)
        if self.images is not None:
            self.images.close()
            self.images = None

    # ------------------------------------------------------------------ predict
    def on_predict_start(self, trainer, pl_module) -> None:
        self._open(trainer, pl_module, trainer.predict_dataloaders)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._batch_done(0 if bool(batch["pad"][0]) else len(batch["name"]))

    def on_predict_end(self, trainer, pl_module) -> None:
        self._close()

    # ------------------------------------------------------------------ fit: one iterate per step
    def on_train_start(self, trainer, pl_module) -> None:
        self._open(trainer, pl_module, trainer.train_dataloader)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.is_enabled and int(batch["iterate"][0]) == 0 and not bool(batch["pad"][0]):
            self.iterate_bar(int(pl_module.num_iterates), batch_idx)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.iterates is not None:
            self.iterates.update(1)
        if isinstance(outputs, dict) and outputs.get("restored") is not None:  # the batch's last iterate
            self._batch_done(len(batch["name"]))

    def on_train_end(self, trainer, pl_module) -> None:
        self._close()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._close()
