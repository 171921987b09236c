"""Writes each restored batch into the run's output folder, then merges ``metrics.csv``.

The writer receives every finished batch as a :class:`~lightning_redd.lit.restored.Restored`
through Lightning's ``outputs`` (``fit``: the last iterate's ``{"restored": ...}``; ``predict``:
the step's return value) and scores it with the :class:`~lightning_redd.metrics.scorer.Scorer`
it was constructed with. The folder's layout and write order are
:class:`lightning_redd.runs.folder.RunFolder`'s: per image, its PNGs and feature arrays, then
its record (the "finished" marker, holding the status, the scores and the PSNR per iterate).
An image whose estimate diverged (NaN/inf) gets no PNG, only a record with ``status:
diverged``; resume redoes it. Per batch it also saves a comparison grid (``grids/``) and, when
the module keeps it, each image's evolution (``evolution/``). A batch's files are listed in the
run's manifest by one durable append before the first of them is written. With several
posterior samples per image (``data.samples_per_image``) each sample's files are written with its
batch, and an image's mean, standard deviation, grid and record once all its samples are in
(:mod:`lightning_redd.lit.samples`).

On rank 0 the run holds the folder's lock from its start to its end (the CLI takes it before
its checks end; in plain Lightning code the writer takes it when the loop starts) and, having
taken it, cleans what an interrupted run left (:meth:`RunFolder.start`). Under several processes
every rank then reads the lock file and all compare it with rank 0's random token: an output
folder that is not the same folder for every process (a node-local disk) is refused on every
rank before any compute (:mod:`lightning_redd.runs.shared`).

At the end of the run every rank waits for the others; rank 0 then writes ``metrics.csv``
from all records (one row per image, whatever the number of processes), the dataset-level
metrics and counts to ``summary.json`` (and the logger), and the PSNR-per-iterate plot from
the records; the summary is broadcast to every rank (:attr:`RestorationWriter.summary`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lightning_redd import pictures
from lightning_redd.lit.restored import Restored
from lightning_redd.lit.samples import SampleGatherer
from lightning_redd.metrics.scorer import Scorer
from lightning_redd.runs import lock, shared
from lightning_redd.runs.folder import (
    METRICS, SUMMARY, RunFolder, arrays_bytes, arrays_file, image_file, png_bytes, record_bytes, record_file,
)


def _mean(values: list[float]) -> float:
    """The mean of the finite values (an identical image's PSNR is inf)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


class RestorationWriter(L.Callback):
    """Saves and scores every restored batch.

    Args:
        scorer: the metrics of ``metrics.csv`` and ``summary.json`` (default: PSNR and SSIM,
            and their ``_init`` values).
        output_dir: output folder; default ``trainer.default_root_dir``.
        save_measured: also save ``measured/`` (measurements of the input's size) and ``init/`` images.
        save_grids: save one comparison grid per batch under ``grids/`` (and to a TensorBoard logger).
        plot: draw ``plots/psnr.png`` (each image's PSNR per iterate) at the end (needs
            matplotlib; skipped with a note without it).
    """

    def __init__(self, *, scorer: Scorer | None = None, output_dir: str | None = None, save_measured: bool = True,
                 save_grids: bool = True, plot: bool = True) -> None:
        self.scorer = scorer if scorer is not None else Scorer()
        self.output_dir = output_dir
        self.save_measured, self.save_grids, self.plot = save_measured, save_grids, plot
        self.run: RunFolder | None = None
        self._holds_lock = False
        self._checked = False  # the start's checks ran (once per run)
        self.written = 0
        self.label = "solver"  # the solver's, from the batches (plot title)
        self.gatherer = SampleGatherer(self.scorer, save_measured=save_measured, save_grids=save_grids)
        #: set at the end of a run (on every rank): counts, diverged names, mean scores, dataset metrics, the folder
        self.summary: dict | None = None

    def root(self, trainer: L.Trainer) -> Path:
        return Path(self.output_dir if self.output_dir is not None else trainer.default_root_dir)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Build the scorer's networks (a missing weight file stops the run before any compute)."""
        self.scorer.build()
        self.run, self.written, self.summary = RunFolder(self.root(trainer), rank=trainer.global_rank), 0, None
        self.gatherer = SampleGatherer(self.scorer, save_measured=self.save_measured, save_grids=self.save_grids)
        self._checked = False

    def _start(self, trainer: L.Trainer) -> None:
        """As the loop starts (every rank): rank 0 holds the folder's lock for the run (a fresh
        hold, not the CLI's, also cleans what an interrupted run left); then, under several
        processes, every rank proves it sees the lock file rank 0 wrote (else all refuse)."""
        if self._checked:
            return
        self._take_lock(trainer)
        if trainer.world_size > 1:
            token = trainer.strategy.broadcast(lock.token(self.run.root) if trainer.is_global_zero else None, src=0)
            views = [None] * trainer.world_size
            torch.distributed.all_gather_object(views, shared.my_view(self.run.root, token))
            shared.check(self.run.root, [tuple(v) for v in views])
        self._checked = True

    def _take_lock(self, trainer: L.Trainer) -> None:
        if not trainer.is_global_zero or self._holds_lock:
            return
        fresh = not lock.held(self.run.root)
        left = lock.acquire(self.run.root)
        self._holds_lock = True
        if left:
            rank_zero_info(f"lightning-redd: the previous run in {self.run.root} ({lock.describe(left)}) ended without finishing")
        removed = self.run.start() if fresh else []
        if removed:
            rank_zero_info(f"lightning-redd: removed {len(removed)} temporary file(s) left by an interrupted run")

    def _release(self) -> None:
        if self._holds_lock:
            self._holds_lock = False
            lock.release(self.run.root)

    # ------------------------------------------------------------------ per batch
    def write(self, trainer: L.Trainer, restored: Restored) -> None:
        """Write one batch: every image's PNGs and arrays, the batch's grid, then the records
        (last: an image is finished only once everything else of its batch is on disk); all
        listed in the manifest first. Members not kept (finished by an earlier run) get no files."""
        assert self.run is not None
        r = restored.to_cpu()
        self.label = r.solver
        if r.samples > 1:  # several posterior samples per image: an image's files once all its samples are in
            files, records = self.gatherer.add(r)
            self.run.write_all(files + [(record_file(name), record_bytes(name, rec)) for name, rec in records])
            self.written += sum(rec["status"] == "ok" for _, rec in records)
            return
        scores = self.scorer.score(r.x_hat, r.x, r.names, r.x_init) if r.x is not None else None
        columns = {**(r.consistency or {}), **(scores.per_image if scores is not None else {})}
        arrays = scores.arrays if scores is not None else {}
        diverged = r.diverged.tolist()
        keep = [True] * len(r) if r.keep is None else [bool(v) for v in r.keep.tolist()]
        files = [f for i, name in enumerate(r.names) if keep[i] and not diverged[i] for f in self._image_files(r, i, name, arrays)]
        if self.save_grids:
            files.append(self._grid(trainer, r))  # the whole batch's, named by its first member
        records = [rec for i, rec in enumerate(self._records(r, columns)) if keep[i]]
        self.run.write_all(files + [(record_file(name), record_bytes(name, rec)) for name, rec in records])
        self.written += sum(rec["status"] == "ok" for _, rec in records)

    def _image_files(self, r: Restored, i: int, name: str, arrays: dict) -> list[tuple[str, bytes]]:
        """Image ``i``'s files but its record, in write order: ``(relative path, bytes)``."""
        out = [(image_file("restored", name), png_bytes(r.x_hat[i]))]
        if self.save_measured:
            out.append((image_file("init", name), png_bytes(r.x_init[i])))
            if r.y.ndim == 4 and tuple(r.y.shape[1:]) == tuple(r.x_hat.shape[1:]):
                out.append((image_file("measured", name), png_bytes(r.y[i])))
        if r.frames:
            own = [f[i] for f in r.frames]
            out += [(f"evolution/{name}.png", png_bytes(pictures.evolution_strip(own))),
                    (f"evolution/{name}.gif", pictures.gif_bytes(own))]
        if arrays:
            out.append((arrays_file(name), arrays_bytes({k: v[i] for k, v in arrays.items()})))
        return out

    @staticmethod
    def _records(r: Restored, columns: dict) -> list[tuple[str, dict]]:
        out = []
        for i, (name, index, diverged) in enumerate(zip(r.names, r.index.tolist(), r.diverged.tolist())):
            if diverged:
                out.append((name, {"status": "diverged", "index": index, "scores": {k: None for k in columns}}))
                continue
            record = {"status": "ok", "index": index, "nfe": r.nfe, "scores": {k: float(v[i]) for k, v in columns.items()}}
            if r.psnr_curve is not None:
                record["psnr_per_iterate"] = [round(float(v), 6) for v in r.psnr_curve[i]]
            out.append((name, record))
        return out

    def _grid(self, trainer: L.Trainer, r: Restored) -> tuple[str, bytes]:
        """The batch's comparison grid (also sent to a TensorBoard logger)."""
        grid = pictures.comparison_grid({"y": r.y, "x_init": r.x_init, "x_hat": r.x_hat, "x": r.x})
        first = r.names[0]
        experiment = getattr(trainer.logger, "experiment", None) if trainer.logger is not None else None
        if hasattr(experiment, "add_image"):  # TensorBoard
            experiment.add_image(f"restoration/{first}", (grid + 1) / 2, global_step=trainer.global_step)
        return f"grids/{first}.png", png_bytes(grid)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        restored = outputs.get("restored") if isinstance(outputs, dict) else None
        if restored is not None:
            self.write(trainer, restored)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if isinstance(outputs, Restored):
            self.write(trainer, outputs)

    # ------------------------------------------------------------------ end of the run
    def finish(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """After every rank wrote its images: rank 0 merges ``metrics.csv``, computes the
        dataset-level metrics, writes ``summary.json`` and the plot; every rank receives the
        same summary (a broadcast)."""
        assert self.run is not None
        written = self.written
        if trainer.world_size > 1:
            written = int(trainer.strategy.reduce(torch.tensor(float(self.written)), reduce_op="sum"))
        trainer.strategy.barrier("lightning_redd.writer.finish")
        summary = None
        if trainer.is_global_zero:
            summary = self._summarise(trainer, written)
        self.summary = trainer.strategy.broadcast(summary, src=0) if trainer.world_size > 1 else summary

    def _summarise(self, trainer: L.Trainer, written: int) -> dict:
        """Rank 0: ``metrics.csv``, ``summary.json`` and ``plots/psnr.png`` from every record."""
        self.run.manifest.claim([METRICS, SUMMARY])
        self.run.write_metrics()
        records = self.run.records()
        ok = {n: r for n, r in records.items() if r["status"] == "ok"}
        columns = list(dict.fromkeys(k for r in ok.values() for k in r.get("scores", {})))
        rows = [r.get("scores", {}) for r in ok.values()]
        dataset = self.scorer.dataset(rows, [self.run.read_arrays(n) for n in ok]) if ok else {}
        summary = {
            "folder": str(self.run.root), "images": len(records), "ok": len(ok), "written": written,
            "diverged": sorted(n for n, r in records.items() if r["status"] == "diverged"),
            "means": {c: _mean([r.get(c) for r in rows]) for c in columns}, "dataset": dataset,
        }
        self.run.write_text(SUMMARY, json.dumps(summary, indent=1) + "\n")
        if trainer.logger is not None and dataset:
            trainer.logger.log_metrics({f"dataset/{k}": v for k, v in dataset.items()}, step=trainer.global_step)
        if self.plot:
            self._write_plot(ok)
        return summary

    def _write_plot(self, ok: dict[str, dict]) -> None:
        curves = {n: list(enumerate(r["psnr_per_iterate"], start=1)) for n, r in sorted(ok.items()) if r.get("psnr_per_iterate")}
        if not curves:
            return
        try:
            png = pictures.psnr_plot(curves, title=f"{self.label}: PSNR per iterate")
        except ImportError as err:
            rank_zero_warn(f"lightning-redd: no plots/psnr.png: {err}")
            return
        self.run.write_picture("plots/psnr.png", png)

    def on_fit_start(self, trainer, pl_module) -> None:
        self._start(trainer)

    def on_predict_start(self, trainer, pl_module) -> None:
        self._start(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.finish(trainer, pl_module)

    def on_predict_end(self, trainer, pl_module) -> None:
        self.finish(trainer, pl_module)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._release()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        """A run with nothing left to restore skips the loop's end hooks: finish here (not after
        an error, when another rank may never reach the barrier). Then give the lock back."""
        try:
            if self.summary is None and self.run is not None and stage in ("fit", "predict") and not trainer.interrupted:
                self._start(trainer)
                self.finish(trainer, pl_module)
        finally:
            self._release()
