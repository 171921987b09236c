"""RED-diff iterates through Lightning's ``fit`` and ``predict`` with a real Trainer.

Method: a folder of ``batch`` generated PNGs, :class:`~lightning_redd.lit.module.RestorationModule`
with the benchmark's prior, a centre-box inpainting operator and a RED-diff of
``n = warmup + repeats + 1`` iterates whose ``step`` marks the clock at its entry
(:class:`bench_cases.TimedRedDiff`). One ``trainer.fit`` / ``trainer.predict`` restores the
batch; an iterate's cost is the time between two consecutive step entries, so it includes all
that Lightning and the module do per iterate (fit: the training loop, the batch fetch, the
module's statistics and ``log_dict``, the callbacks' hooks; predict: the module's per-iterate
callback) and none of the run's set-up (data checks, the operator bind and measurement, the
solver's init) nor its end (metrics, PNG writing), which are reported apart as ``overhead_s``
(the call's wall time minus ``n`` iterates). The Trainer gets the CLI's defaults
(``lightning_redd.lit.cli.TRAINER_DEFAULTS``), a CSV logger, and no progress bar.
"""
from __future__ import annotations

import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench_cases import TRAINER_PRECISIONS, Clock, TimedRedDiff, sync

LIGHTNING_MODES = ("fit", "predict")


def make_images(folder: Path, count: int, size: int) -> Path:
    """``count`` smooth random RGB images of ``size`` px (PNG) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        coarse = rng.random((8, 8, 3))
        img = np.kron(coarse, np.ones((size // 8 + 1, size // 8 + 1, 1)))[:size, :size]
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"img{i:03d}.png")
    return folder


def _trainer(device: torch.device, precision: str, root: Path):
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from lightning_redd.lit.cli import TRAINER_DEFAULTS
    from lightning_redd.lit.writer import RestorationWriter

    accel = "cuda" if device.type == "cuda" else "cpu"
    devices = [device.index or 0] if device.type == "cuda" else 1
    return L.Trainer(**TRAINER_DEFAULTS, accelerator=accel, devices=devices, precision=TRAINER_PRECISIONS[precision],
                     logger=CSVLogger(save_dir=str(root), name="logs"), enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=str(root), callbacks=[RestorationWriter()])


def lightning_run(mode: str, prior, batch: int, precision: str, device: torch.device, clock: Clock,
                  warmup: int, repeats: int, solver_kw: dict | None = None) -> dict:
    """One ``fit`` or ``predict`` over a batch; returns ``{"total_s", "iterates"}`` (times in ``clock``)."""
    from lightning_redd.data.folder import ImageFolderData
    from lightning_redd.lit.module import RestorationModule
    from lightning_redd.operators.inpainting import Inpainting

    if mode not in LIGHTNING_MODES:
        raise ValueError(f"unknown Lightning mode {mode!r}; allowed: {LIGHTNING_MODES}")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)  # no banners and tips between the figures
    warnings.filterwarnings("ignore", module="lightning")
    n = warmup + repeats + 1
    solver = TimedRedDiff(num_steps=n, lr=0.25, lam=0.25, **(solver_kw or {}))
    solver.clock = clock
    with tempfile.TemporaryDirectory(prefix="bench_lightning_") as tmp:
        root = Path(tmp)
        images = make_images(root / "in", batch, prior.image_size)
        module = RestorationModule(operator=Inpainting(mask="box"), prior=prior, solver=solver)
        data = ImageFolderData(root=str(images), image_size=prior.image_size, batch_size=batch, seed=0,
                               output_dir=str(root / "out"), repeats=n)
        trainer = _trainer(device, precision, root / "out")
        sync(device)
        t0 = time.perf_counter()
        if mode == "fit":
            trainer.fit(module, datamodule=data)
        else:
            trainer.predict(module, datamodule=data, return_predictions=False)
        sync(device)
        total = time.perf_counter() - t0
        written = len(list((root / "out" / "restored").glob("*.png")))
    if written != batch:
        raise RuntimeError(f"{mode} wrote {written} restored images for a batch of {batch}")
    return {"total_s": total, "iterates": n}
