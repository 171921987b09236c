"""Writes each restored batch into the run's output folder, then merges ``metrics.csv``.

The folder's layout and write order are :class:`lightning_redd.data.outputs.RunFolder`'s: per
image, its PNGs, then its record (the "finished" marker, holding the status and the scores
of :class:`~lightning_redd.lit.metrics_callback.MetricsCallback`). An image whose estimate
diverged (NaN/inf) gets no PNG, only a record with ``status: diverged``; resume redoes it.

At the end of the run every rank waits for the others, and rank 0 writes ``metrics.csv``
from all records (one row per image, whatever the number of processes) and the run's
:attr:`summary` (also readable on every rank).
"""
from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from lightning_redd.data.outputs import RunFolder


def _mean(values: list[float]) -> float:
    """The mean of the finite values (an identical image's PSNR is inf)."""
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


class RestorationWriter(L.Callback):
    """Saves every restored batch the module emits (``fit``: after a batch's last iterate;
    ``predict``: after each ``predict_step``).

    Args:
        output_dir: output folder; default ``trainer.default_root_dir``.
        save_measured: also save ``measured/`` (measurements of the input's size) and ``init/`` images.
    """

    def __init__(self, *, output_dir: str | None = None, save_measured: bool = True) -> None:
        self.output_dir = output_dir
        self.save_measured = save_measured
        self.run: RunFolder | None = None
        self.written = 0
        #: set at the end of a run: counts, diverged names, mean scores, the folder
        self.summary: dict | None = None

    def root(self, trainer: L.Trainer) -> Path:
        return Path(self.output_dir if self.output_dir is not None else trainer.default_root_dir)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.run, self.written, self.summary = RunFolder(self.root(trainer)), 0, None
        data_out = getattr(trainer.datamodule, "run_folder", None) if trainer.datamodule is not None else None
        if data_out is not None and Path(data_out.root).resolve() != self.run.root.resolve():
            raise ValueError(
                f"the writer writes to {self.run.root} but the DataModule skips images finished in {data_out.root}; "
                "give both the same folder (the CLI links data.output_dir to trainer.default_root_dir)"
            )
        if trainer.is_global_zero:
            removed = self.run.remove_stale_temporaries()
            if removed:
                rank_zero_info(f"lightning-redd: removed {len(removed)} temporary file(s) left by an interrupted run")

    # ------------------------------------------------------------------ per batch
    def _scores(self, trainer: L.Trainer, emitted: dict) -> dict[str, torch.Tensor]:
        from lightning_redd.lit.metrics_callback import MetricsCallback

        for cb in trainer.callbacks:  # the record needs the scores: score now if the metrics ran after us
            if isinstance(cb, MetricsCallback):
                return cb.score(emitted)
        return emitted.get("scores", {})

    def write(self, trainer: L.Trainer, emitted: dict) -> None:
        """Write one emitted batch: per image its PNGs, then its record (last)."""
        assert self.run is not None
        scores = {k: v.detach().double().cpu() for k, v in self._scores(trainer, emitted).items()}
        x_hat, x_init, y = (emitted[k].detach().float().cpu() for k in ("x_hat", "x_init", "y"))
        diverged = emitted["diverged"].cpu().tolist()
        index = emitted["index"].tolist()
        for i, name in enumerate(emitted["names"]):
            if diverged[i]:
                self.run.write_record(name, {"status": "diverged", "index": index[i], "scores": {k: None for k in scores}})
                continue
            self.run.write_image("restored", name, x_hat[i])
            if self.save_measured:
                self.run.write_image("init", name, x_init[i])
                if y.ndim == 4 and tuple(y.shape[1:]) == tuple(x_hat.shape[1:]):
                    self.run.write_image("measured", name, y[i])
            self.run.write_record(name, {"status": "ok", "index": index[i], "scores": {k: float(v[i]) for k, v in scores.items()},
                                         "nfe": emitted.get("nfe")})
            self.written += 1

    def _on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        emitted = getattr(pl_module, "emitted", None)
        if emitted is not None:
            self.write(trainer, emitted)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._on_batch_end(trainer, pl_module)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._on_batch_end(trainer, pl_module)

    # ------------------------------------------------------------------ end of the run
    def finish(self, trainer: L.Trainer) -> None:
        """After every rank wrote its images: rank 0 merges ``metrics.csv``; all ranks read
        the same records and set :attr:`summary`."""
        assert self.run is not None
        written = trainer.strategy.reduce(torch.tensor(float(self.written)), reduce_op="sum") if trainer.world_size > 1 else self.written
        trainer.strategy.barrier("lightning_redd.writer.finish")
        if trainer.is_global_zero:
            self.run.write_metrics()
        trainer.strategy.barrier("lightning_redd.writer.metrics")
        records = self.run.records()
        diverged = sorted(n for n, r in records.items() if r["status"] == "diverged")
        ok = [r for r in records.values() if r["status"] == "ok"]
        columns = sorted({k for r in ok for k in r.get("scores", {})})
        means = {c: _mean([r["scores"][c] for r in ok if c in r["scores"]]) for c in columns}
        self.summary = {"folder": str(self.run.root), "images": len(records), "ok": len(ok), "written": int(written),
                        "diverged": diverged, "means": means}

    def on_train_end(self, trainer, pl_module) -> None:
        self.finish(trainer)

    def on_predict_end(self, trainer, pl_module) -> None:
        self.finish(trainer)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        """A run with nothing left to restore skips the loop's end hooks: finish here (not after
        an error, when another rank may never reach the barrier)."""
        if self.summary is None and self.run is not None and stage in ("fit", "predict") and not trainer.interrupted:
            self.finish(trainer)
