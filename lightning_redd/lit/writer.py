"""Writes each restored batch into the run's output folder, then merges ``metrics.csv``.

The folder's layout and write order are :class:`lightning_redd.runs.folder.RunFolder`'s: per
image, its PNGs and feature arrays, then its record (the "finished" marker, holding the
status and the scores of :class:`~lightning_redd.lit.metrics_callback.MetricsCallback`). An
image whose estimate diverged (NaN/inf) gets no PNG, only a record with ``status: diverged``;
resume redoes it. Per batch it also saves a comparison grid (``grids/``) and, when the module
records it, each image's evolution (``evolution/``).

At the end of the run every rank waits for the others; rank 0 then writes ``metrics.csv``
from all records (one row per image, whatever the number of processes), the dataset-level
metrics and counts to ``summary.json`` (and the logger), and the PSNR-per-iterate plot; every
rank reads the same :attr:`summary`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lightning_redd.runs import fsio
from lightning_redd.runs.folder import SUMMARY, RunFolder
from lightning_redd import pictures


def _mean(values: list[float]) -> float:
    """The mean of the finite values (an identical image's PSNR is inf)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


class RestorationWriter(L.Callback):
    """Saves every restored batch the module emits (``fit``: after a batch's last iterate;
    ``predict``: after each ``predict_step``).

    Args:
        output_dir: output folder; default ``trainer.default_root_dir``.
        save_measured: also save ``measured/`` (measurements of the input's size) and ``init/`` images.
        save_grids: save one comparison grid per batch under ``grids/`` (and to a TensorBoard logger).
        plot: draw ``plots/psnr.png`` from the CSV logger at the end (needs matplotlib; skipped with a
            note without it).
    """

    def __init__(self, *, output_dir: str | None = None, save_measured: bool = True, save_grids: bool = True,
                 plot: bool = True) -> None:
        self.output_dir = output_dir
        self.save_measured, self.save_grids, self.plot = save_measured, save_grids, plot
        self.run: RunFolder | None = None
        self.written = 0
        #: set at the end of a run: counts, diverged names, mean scores, dataset metrics, the folder
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
    def _metrics(self, trainer: L.Trainer):
        from lightning_redd.lit.metrics_callback import MetricsCallback

        return next((cb for cb in trainer.callbacks if isinstance(cb, MetricsCallback)), None)

    def write(self, trainer: L.Trainer, emitted: dict) -> None:
        """Write one emitted batch: every image's PNGs and arrays, the batch's grid, then the
        records (last: an image is finished only once everything else of its batch is on disk)."""
        assert self.run is not None
        metrics = self._metrics(trainer)
        if metrics is not None:  # the record needs the scores: score now if the metrics run after us
            metrics.score(emitted)
        scores = {k: v.detach().double().cpu() for k, v in emitted.get("scores", {}).items()}
        arrays = {k: v.detach().cpu() for k, v in emitted.get("arrays", {}).items()}
        x_hat, x_init, y = (emitted[k].detach().float().cpu() for k in ("x_hat", "x_init", "y"))
        diverged, index, names = emitted["diverged"].cpu().tolist(), emitted["index"].tolist(), emitted["names"]
        for i, name in enumerate(names):
            if diverged[i]:
                continue
            self.run.write_image("restored", name, x_hat[i])
            if self.save_measured:
                self.run.write_image("init", name, x_init[i])
                if y.ndim == 4 and tuple(y.shape[1:]) == tuple(x_hat.shape[1:]):
                    self.run.write_image("measured", name, y[i])
            self._write_evolution(name, i, emitted.get("evolution"))
            if arrays:
                self.run.write_arrays(name, {k: v[i] for k, v in arrays.items()})
        if self.save_grids:
            self._write_grid(trainer, emitted)
        for i, name in enumerate(names):
            if diverged[i]:
                self.run.write_record(name, {"status": "diverged", "index": index[i], "scores": {k: None for k in scores}})
            else:
                self.run.write_record(name, {"status": "ok", "index": index[i], "nfe": emitted.get("nfe"),
                                             "scores": {k: float(v[i]) for k, v in scores.items()}})
                self.written += 1

    def _write_evolution(self, name: str, i: int, frames: list[torch.Tensor] | None) -> None:
        if frames:
            own = [f[i] for f in frames]
            self.run.write_picture(f"evolution/{name}.png", pictures.evolution_strip(own))
            self.run.write_picture(f"evolution/{name}.gif", pictures.gif_bytes(own))

    def _write_grid(self, trainer: L.Trainer, emitted: dict) -> None:
        grid = pictures.comparison_grid(emitted)
        first = emitted["names"][0]
        self.run.write_picture(f"grids/{first}.png", grid)
        experiment = getattr(trainer.logger, "experiment", None) if trainer.logger is not None else None
        if hasattr(experiment, "add_image"):  # TensorBoard
            experiment.add_image(f"restoration/{first}", (grid + 1) / 2, global_step=trainer.global_step)

    def _on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        emitted = getattr(pl_module, "emitted", None)
        if emitted is not None:
            self.write(trainer, emitted)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._on_batch_end(trainer, pl_module)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._on_batch_end(trainer, pl_module)

    # ------------------------------------------------------------------ end of the run
    def finish(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """After every rank wrote its images: rank 0 merges ``metrics.csv``, computes the
        dataset-level metrics and writes ``summary.json``; all ranks read the same summary."""
        assert self.run is not None
        written = self.written
        if trainer.world_size > 1:
            written = int(trainer.strategy.reduce(torch.tensor(float(self.written)), reduce_op="sum"))
        trainer.strategy.barrier("lightning_redd.writer.finish")
        if trainer.is_global_zero:
            self.run.write_metrics()
            self._write_summary(trainer, pl_module, written)
        trainer.strategy.barrier("lightning_redd.writer.summary")
        with open(self.run.root / SUMMARY) as fh:
            self.summary = json.load(fh)

    def _write_summary(self, trainer: L.Trainer, pl_module: L.LightningModule, written: int) -> None:
        records = self.run.records()
        ok = [r for r in records.values() if r["status"] == "ok"]
        columns = list(dict.fromkeys(k for r in ok for k in r.get("scores", {})))
        metrics = self._metrics(trainer)
        dataset = metrics.dataset_results(self.run) if metrics is not None else {}
        summary = {
            "folder": str(self.run.root), "images": len(records), "ok": len(ok), "written": written,
            "diverged": sorted(n for n, r in records.items() if r["status"] == "diverged"),
            "means": {c: _mean([r["scores"].get(c) for r in ok]) for c in columns}, "dataset": dataset,
        }
        fsio.atomic_write_text(self.run.root / SUMMARY, json.dumps(summary, indent=1) + "\n")
        if trainer.logger is not None and dataset:
            trainer.logger.log_metrics({f"dataset/{k}": v for k, v in dataset.items()}, step=trainer.global_step)
        if self.plot:
            self._write_plot(trainer, pl_module)

    def _write_plot(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lightning.pytorch.loggers import CSVLogger

        logger = trainer.logger
        if not isinstance(logger, CSVLogger):
            return
        logger.save()
        path = Path(logger.log_dir) / "metrics.csv"
        key = "train/psnr" if trainer.state.fn == "fit" else "predict/psnr"
        curves = pictures.logged_psnr(path, key, int(pl_module.num_iterates)) if path.is_file() else {}
        if not curves:
            return
        try:
            png = pictures.psnr_plot(curves, title=f"{getattr(pl_module.solver, 'label', 'solver')}: PSNR per iterate")
        except ImportError as err:
            rank_zero_warn(f"lightning-redd: no plots/psnr.png: {err}")
            return
        self.run.write_picture("plots/psnr.png", png)

    def on_train_end(self, trainer, pl_module) -> None:
        self.finish(trainer, pl_module)

    def on_predict_end(self, trainer, pl_module) -> None:
        self.finish(trainer, pl_module)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        """A run with nothing left to restore skips the loop's end hooks: finish here (not after
        an error, when another rank may never reach the barrier)."""
        if self.summary is None and self.run is not None and stage in ("fit", "predict") and not trainer.interrupted:
            self.finish(trainer, pl_module)
