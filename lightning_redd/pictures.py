"""What a user looks at: comparison grids, the evolution of an estimate, PSNR against the iterate.

Pure functions from tensors or logged values to pictures; the writer saves them. Images are
``(C, H, W)`` in ``[-1, 1]``. The plot needs matplotlib (``pip install "lightning_redd[plots]"``),
imported only when a plot is drawn.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

COLUMNS = ("measured", "init", "restored", "truth")


def _fit(img: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``img`` shown at ``shape = (C, H, W)``: nearest upsampling of a smaller measurement,
    gray replicated to RGB; a measurement that is not an image (phase retrieval, compressed
    sensing) is shown as mid-gray."""
    c, h, w = shape
    if img.ndim != 3 or img.shape[0] not in (1, c):
        return torch.zeros(shape)
    img = img.float()
    if tuple(img.shape[1:]) != (h, w):
        if h % img.shape[1] or w % img.shape[2]:
            return torch.zeros(shape)
        img = F.interpolate(img[None], size=(h, w), mode="nearest")[0]
    return img.expand(c, -1, -1)


def comparison_grid(emitted: dict, *, gap: int = 2) -> torch.Tensor:
    """One row per image of the batch: measurement | initial estimate | restored | ground truth
    (the last column only when ``x`` is known). Returns ``(C, rows*(H+gap), cols*(W+gap))`` in
    ``[-1, 1]``, white gaps."""
    x_hat = emitted["x_hat"].detach().float().cpu()
    b, c, h, w = x_hat.shape
    cols = [emitted["y"], emitted["x_init"], x_hat] + ([emitted["x"]] if emitted.get("x") is not None else [])
    cols = [t.detach().float().cpu() for t in cols]
    grid = torch.ones(c, b * (h + gap), len(cols) * (w + gap))
    for i in range(b):
        for j, col in enumerate(cols):
            tile = _fit(col[i], (c, h, w)) if j == 0 else col[i]
            grid[:, i * (h + gap) : i * (h + gap) + h, j * (w + gap) : j * (w + gap) + w] = tile.clamp(-1, 1)
    return grid


def evolution_strip(frames: Sequence[torch.Tensor], *, gap: int = 2) -> torch.Tensor:
    """Frames ``(C, H, W)`` of one image side by side (oldest left), white gaps."""
    c, h, w = frames[0].shape
    strip = torch.ones(c, h, len(frames) * (w + gap) - gap)
    for j, f in enumerate(frames):
        strip[:, :, j * (w + gap) : j * (w + gap) + w] = f.detach().float().cpu().clamp(-1, 1)
    return strip


def logged_psnr(csv_path: Path, key: str, iterates: int) -> dict[int, list[tuple[int, float]]]:
    """``{batch: [(iterate, psnr), ...]}`` from a CSV logger's ``metrics.csv``: column ``key``
    (``train/psnr`` or ``predict/psnr``) against its ``step`` (``batch * iterates + iterate``)."""
    curves: dict[int, list[tuple[int, float]]] = {}
    with open(csv_path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get(key) not in (None, "") and row.get("step") not in (None, ""):
                step = int(float(row["step"]))
                curves.setdefault(step // iterates, []).append((step % iterates + 1, float(row[key])))
    return curves


def psnr_plot(curves: dict[str, list[tuple[int, float]]], *, title: str) -> bytes:
    """PSNR against the iterate, one line per key (an image's name), as PNG bytes."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError('the PSNR plot needs matplotlib: pip install "lightning_redd[plots]"') from err
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for key, points in sorted(curves.items()):
        points = sorted(points)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) <= 50 else None, label=str(key))
    ax.set_xlabel("iterate")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(curves) <= 10:
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def gif_bytes(frames: Sequence[torch.Tensor], *, duration_ms: int = 120) -> bytes:
    """Frames ``(C, H, W)`` in ``[-1, 1]`` as an animated GIF (the last frame held longer)."""
    from PIL import Image

    from lightning_redd.runs.folder import to_uint8

    ims = []
    for f in frames:
        arr = to_uint8(f).numpy()
        ims.append(Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr))
    buf = io.BytesIO()
    durations = [duration_ms] * (len(ims) - 1) + [duration_ms * 8]
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], duration=durations, loop=0)
    return buf.getvalue()
