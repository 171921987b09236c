"""Writes restored images and one metrics row per image, atomically.

Layout under the output folder (default: ``trainer.default_root_dir``)::

    restored/<name>.png      the restored image (clipped to [-1, 1], 8-bit)
    measured/<name>.png      the measurement, when it is an image of the input's size
    init/<name>.png          the solver's starting estimate
    metrics.csv              name, psnr, ssim, psnr_init, ssim_init (one row per image)

Every file is written to a temporary name in the same folder and renamed, so an
interrupted run never leaves a truncated PNG or CSV. ``metrics.csv`` merges the rows of
earlier runs by name, so a resumed run that skips finished images keeps their rows.
"""
from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path

import lightning as L
import torch
from PIL import Image

from lightning_redd.metrics import psnr, ssim

FIELDS = ("name", "psnr", "ssim", "psnr_init", "ssim_init")


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """``(C, H, W)`` in ``[-1, 1]`` -> ``(H, W, C)`` uint8 (clipped, rounded)."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu()


def save_png(x: torch.Tensor, path: Path) -> None:
    """Save ``(C, H, W)`` in ``[-1, 1]`` as an 8-bit PNG, atomically."""
    arr = to_uint8(x).numpy()
    im = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            im.save(fh, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_csv(rows: dict[str, dict], path: Path) -> None:
    """Write ``rows`` (name -> row) sorted by name, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".csv.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=FIELDS)
            writer.writeheader()
            for name in sorted(rows):
                writer.writerow(rows[name])
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_csv(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    with open(path, newline="") as fh:
        return {row["name"]: row for row in csv.DictReader(fh)}


class RestorationWriter(L.Callback):
    """Saves every restored batch the module emits (``fit``: after a batch's last iterate;
    ``predict``: after each ``predict_step``).

    Args:
        output_dir: folder for images and ``metrics.csv``; default ``trainer.default_root_dir``.
        save_measured: also save ``measured/`` and ``init/`` images.
        skip_existing: on a new run, leave out images whose ``restored/<name>.png`` exists
            (resume after an interruption).
    """

    def __init__(self, *, output_dir: str | None = None, save_measured: bool = True, skip_existing: bool = False) -> None:
        self.output_dir = output_dir
        self.save_measured = save_measured
        self.skip_existing = skip_existing
        self.rows: dict[str, dict] = {}

    def root(self, trainer: L.Trainer) -> Path:
        return Path(self.output_dir if self.output_dir is not None else trainer.default_root_dir)

    def metrics_path(self, trainer: L.Trainer) -> Path:
        name = "metrics.csv" if trainer.world_size == 1 else f"metrics.rank{trainer.global_rank}.csv"
        return self.root(trainer) / name

    def finished(self, trainer: L.Trainer, names: list[str]) -> set[str]:
        """Names whose restored image already exists (only with ``skip_existing``)."""
        if not self.skip_existing:
            return set()
        return {n for n in names if (self.root(trainer) / "restored" / f"{n}.png").is_file()}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.rows = read_csv(self.metrics_path(trainer))

    def write(self, trainer: L.Trainer, out: dict) -> None:
        """Write one emitted batch: ``out`` has names, x_hat, x_init, y and (optionally) x."""
        root = self.root(trainer)
        x_hat, x_init, x, y = out["x_hat"], out["x_init"], out.get("x"), out["y"]
        if x is not None:
            scores = {
                "psnr": psnr(x_hat, x), "ssim": ssim(x_hat, x),
                "psnr_init": psnr(x_init, x), "ssim_init": ssim(x_init, x),
            }
        for i, name in enumerate(out["names"]):
            save_png(x_hat[i], root / "restored" / f"{name}.png")
            if self.save_measured:
                save_png(x_init[i], root / "init" / f"{name}.png")
                if y.ndim == 4 and y.shape[1] in (1, 3):
                    save_png(y[i], root / "measured" / f"{name}.png")
            if x is not None:
                self.rows[name] = {"name": name, **{k: f"{float(v[i]):.4f}" for k, v in scores.items()}}
        if x is not None:
            write_csv(self.rows, self.metrics_path(trainer))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        emitted = getattr(pl_module, "emitted", None)
        if emitted is not None:
            self.write(trainer, emitted)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if outputs is not None:
            self.write(trainer, outputs)
