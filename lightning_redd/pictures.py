"""What a user looks at: comparison grids, the evolution of an estimate, PSNR against the iterate,
and the figures of ``lightning-redd compare`` (a labelled grid of restorations, a line plot).

Pure functions from tensors or logged values to pictures; the writer and compare save them.
Images are ``(C, H, W)`` in ``[-1, 1]``. Image grids are tensor or PIL code; the plots need
matplotlib (``pip install "lightning_redd[plots]"``), imported only when a plot is drawn.
"""
from __future__ import annotations

import io
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

COLUMNS = ("measured", "init", "restored", "truth")
#: :func:`labelled_grid`'s layout in pixels: gap around tiles, header row, caption under a tile
TILE_PAD, HEADER, CAPTION = 4, 14, 12
#: line colours of :func:`line_plot`, in order, as 8-bit RGB
COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207), (140, 86, 75))


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


def comparison_grid(columns: dict, *, gap: int = 2) -> torch.Tensor:
    """One row per image of the batch: measurement | initial estimate | restored | ground truth
    (the last column only when ``x`` is known). Returns ``(C, rows*(H+gap), cols*(W+gap))`` in
    ``[-1, 1]``, white gaps."""
    x_hat = columns["x_hat"].detach().float().cpu()
    b, c, h, w = x_hat.shape
    cols = [columns["y"], columns["x_init"], x_hat] + ([columns["x"]] if columns.get("x") is not None else [])
    cols = [t.detach().float().cpu() for t in cols]
    grid = torch.ones(c, b * (h + gap), len(cols) * (w + gap))
    for i in range(b):
        for j, col in enumerate(cols):
            tile = _fit(col[i], (c, h, w)) if j == 0 else col[i]
            grid[:, i * (h + gap) : i * (h + gap) + h, j * (w + gap) : j * (w + gap) + w] = tile.clamp(-1, 1)
    return grid


def row_grid(tiles: Sequence[torch.Tensor], shape: Sequence[int], *, gap: int = 2) -> torch.Tensor:
    """One row of tiles ``(C', h, w)`` in ``[-1, 1]`` shown at ``shape = (C, H, W)``: a smaller
    measurement is upsampled (nearest), gray tiles replicated to ``C`` channels, a measurement
    that is not an image shown mid-gray; white gaps. The grid of one image's posterior samples:
    measured | init | samples | mean | std | truth."""
    c, h, w = shape
    row = torch.ones(c, h, len(tiles) * (w + gap) - gap)
    for j, tile in enumerate(tiles):
        row[:, :, j * (w + gap) : j * (w + gap) + w] = _fit(tile.detach().float().cpu(), (c, h, w)).clamp(-1, 1)
    return row


def evolution_strip(frames: Sequence[torch.Tensor], *, gap: int = 2) -> torch.Tensor:
    """Frames ``(C, H, W)`` of one image side by side (oldest left), white gaps."""
    c, h, w = frames[0].shape
    strip = torch.ones(c, h, len(frames) * (w + gap) - gap)
    for j, f in enumerate(frames):
        strip[:, :, j * (w + gap) : j * (w + gap) + w] = f.detach().float().cpu().clamp(-1, 1)
    return strip


def pyplot(what: str):
    """``matplotlib.pyplot`` on the Agg backend; an ImportError naming ``what`` and the extra to
    install where matplotlib is missing (call it before compute is spent on a plot's data)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(f'{what} needs matplotlib: pip install "lightning_redd[plots]"') from err
    return plt


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def psnr_plot(curves: dict[str, list[tuple[int, float]]], *, title: str) -> bytes:
    """PSNR against the iterate, one line per key (an image's name), as PNG bytes."""
    plt = pyplot("the PSNR plot")
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
    # fixed margins that fit the labels of this figure size (tight_layout measured them on every
    # call: a third of the plot's time, paid at the end of every run)
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.12, top=0.92)
    return _png(plt, fig)


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


def line_plot(series: dict[str, Sequence[tuple[float, float]]], *, xlabel: str, ylabel: str,
              size: tuple[int, int] = (640, 420)) -> bytes:
    """A log-x line plot, one line with markers per series (colours :data:`COLOURS`), a legend;
    ``series`` is ``{name: [(x > 0, y), ...]}`` (non-finite ``y`` left out). PNG bytes of ``size`` pixels."""
    plt = pyplot("the line plot")
    fig, ax = plt.subplots(figsize=(size[0] / 100, size[1] / 100), dpi=100)
    xs = sorted({x for points in series.values() for x, _ in points})
    for i, (name, points) in enumerate(series.items()):
        points = sorted((x, y) for x, y in points if math.isfinite(y))
        colour = tuple(c / 255 for c in COLOURS[i % len(COLOURS)])
        ax.plot([p[0] for p in points], [p[1] for p in points], color=colour, marker="o", markersize=5,
                linewidth=2, label=name)
    ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(plt, fig)


def labelled_grid_size(rows: int, cols: int, tile: int) -> tuple[int, int]:
    """``(width, height)`` in pixels of a :func:`labelled_grid` of ``rows x cols`` tiles of ``tile`` pixels."""
    return TILE_PAD + cols * (tile + TILE_PAD), HEADER + TILE_PAD + rows * (tile + CAPTION + TILE_PAD)


def labelled_grid(heads: Sequence[str], rows: Sequence[Sequence[tuple[torch.Tensor, str]]], *, tile: int) -> bytes:
    """A white canvas with a header over each column and, per row, its tiles with a caption
    under each: every tile ``(1 or 3, h, w)`` in ``[-1, 1]`` (any size; gray shown as RGB) is
    shown at ``tile x tile`` pixels (nearest). PNG bytes of :func:`labelled_grid_size`."""
    from PIL import Image, ImageDraw

    from lightning_redd.runs.folder import to_uint8

    canvas = Image.new("RGB", labelled_grid_size(len(rows), len(heads), tile), "white")
    draw, font = ImageDraw.Draw(canvas), _font()
    for c, head in enumerate(heads):
        draw.text((TILE_PAD + c * (tile + TILE_PAD), 1), _clipped(draw, head, tile, font), fill="black", font=font)
    for r, tiles in enumerate(rows):
        top = HEADER + TILE_PAD + r * (tile + CAPTION + TILE_PAD)
        for c, (x, caption) in enumerate(tiles):
            arr = to_uint8(x.expand(3, -1, -1) if x.shape[0] == 1 else x).numpy()
            left = TILE_PAD + c * (tile + TILE_PAD)
            canvas.paste(Image.fromarray(arr).resize((tile, tile), Image.Resampling.NEAREST), (left, top))
            draw.text((left, top + tile), _clipped(draw, caption, tile, font), fill="black", font=font)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def _font(size: int = 11):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _clipped(draw, text: str, width: int, font) -> str:
    """``text`` less its last characters until it fits ``width`` pixels."""
    while text and draw.textlength(text, font=font) > width:
        text = text[:-1]
    return text
