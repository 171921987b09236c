"""Scoring the runs of a comparison: one table row per run, from its records, clock and PNGs.

PSNR, SSIM, the starting estimate's PSNR and the denoiser evaluations come from the records
the CLI wrote (``records/<name>.json``: ``scores``, ``nfe``); LPIPS (AlexNet) is computed here by
the project's one scorer (:class:`~lightning_redd.metrics.scorer.Scorer`) on the restored 8-bit
PNGs against the run's input images, when its weight file is found (a missing file leaves the
column out with a note). Images are read by the project's loaders
(:func:`~lightning_redd.data.images.load_image`, :func:`~lightning_redd.data.images.open_pixels`).
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np
import torch
import yaml

from lightning_redd.metrics.scorer import Scorer

LPIPS_FILE = "alexnet-owt-7be5be79.pth"


def run_data(root: Path) -> dict:
    """``data.root``, ``image_size``, ``channels``, ``resize`` of a run (from its run_config.yaml)."""
    sig = yaml.safe_load((root / "run_config.yaml").read_text())["signature"]
    return {k: sig[f"data.{k}"] for k in ("root", "image_size", "channels", "resize")}


def ground_truth(root: Path) -> dict[str, torch.Tensor]:
    """The run's input images as the CLI loads them, by name, ``(C, S, S)`` in ``[-1, 1]``."""
    from lightning_redd.data.images import list_images, load_image

    d = run_data(root)
    return {p.stem: load_image(p, d["image_size"], d["channels"], d["resize"]) for p in list_images(Path(d["root"]), True)}


def read_png(path: Path, channels: int = 3) -> torch.Tensor:
    """A PNG a run wrote (``restored/``, ``init/``, ``measured/``; any ``H x W``) as
    ``(channels, H, W)`` in ``[-1, 1]``: decoded by :func:`~lightning_redd.data.images.open_pixels`
    (16-bit gray scaled from ``[0, 65535]``), gray replicated to RGB for ``channels=3``."""
    from lightning_redd.data.images import open_pixels

    im, _ = open_pixels(Path(path))
    if im.mode == "F":
        v = torch.from_numpy(np.asarray(im, dtype=np.float32).copy())[None].clamp(0, 65535) / 65535.0
    else:
        im = im.convert("RGB" if channels == 3 else "L")
        v = torch.from_numpy(np.asarray(im, dtype=np.float32).reshape(im.height, im.width, -1).copy()).permute(2, 0, 1) / 255.0
    v = v.expand(channels, -1, -1) if v.shape[0] == 1 else v
    return (v * 2 - 1).contiguous()


def lpips_scorer(weights: str | None) -> tuple[Scorer | None, str | None]:
    """``(Scorer of lpips, None)`` when the AlexNet weights are found (``weights``, or
    ``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth``), else ``(None, reason)``."""
    try:
        scorer = Scorer(["lpips"], score_init=False, lpips_net="alex", lpips_weights=weights)
        scorer.build()  # a missing weight file is found before any run
    except (FileNotFoundError, ModuleNotFoundError) as err:
        return None, str(err)
    return scorer, None


def mean_lpips(scorer: Scorer, root: Path, names: list[str], truth: dict[str, torch.Tensor]) -> float:
    """Mean LPIPS of the restored PNGs ``root/restored/<name>.png`` against ``truth``, one image at a time."""
    vals = []
    for name in sorted(names):
        ref = truth[name]
        x_hat = read_png(root / "restored" / f"{name}.png", ref.shape[0])
        vals.append(float(scorer.score(x_hat[None], ref[None], [name]).per_image["lpips"][0]))
    return statistics.fmean(vals) if vals else math.nan


def summarise(run: dict, scorer: Scorer | None, truth: dict[str, torch.Tensor]) -> dict:
    """One table row from a run's records and clock (and LPIPS by ``scorer``, when given)."""
    recs = run["records"]
    ok = [r for r in recs.values() if r["status"] == "ok"]
    clock = run["clock"]
    per_image = [s / n for s, n in clock["batches"] if n]
    mean = lambda key: statistics.fmean(r["scores"][key] for r in ok) if ok else math.nan  # noqa: E731
    row = {"solver": run["spec"].label, "images": len(ok), "diverged": len(recs) - len(ok),
           "psnr": mean("psnr"), "ssim": mean("ssim"), "psnr_init": mean("psnr_init"),
           "s_per_image": statistics.median(per_image) if per_image else math.nan,
           "load_s": run["wall"] - sum(s for s, _ in clock["batches"]),
           "nfe": statistics.fmean(r.get("nfe") or 0 for r in ok) if ok else math.nan,
           "peak_mib": clock["peak_mib"],
           "mib_per_image": (clock["peak_mib"] - clock["start_mib"]) / max(1, clock["batch_size"])}
    if scorer is not None:
        row["lpips"] = mean_lpips(scorer, run["root"], [r["name"] for r in ok], truth)
    return row
