"""compare's figures in lightning_redd.pictures: the labelled grid and the line plot's error."""
from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from lightning_redd import pictures


def test_labelled_grid_places_every_tile_at_its_size():
    red = torch.tensor([1.0, -1.0, -1.0])[:, None, None].expand(3, 8, 8)
    small_gray = torch.zeros(1, 4, 4)  # a smaller mid-gray measurement, shown at the tile size
    png = pictures.labelled_grid(["y", "a"], [[(small_gray, ""), (red, "1.00 dB")]] * 3, tile=16)
    with Image.open(io.BytesIO(png)) as img:
        assert img.size == pictures.labelled_grid_size(3, 2, 16)
        left, top = pictures.TILE_PAD, pictures.HEADER + pictures.TILE_PAD
        assert img.getpixel((left, top)) == img.getpixel((left + 15, top + 15)) == (128, 128, 128)
        assert img.getpixel((left + 16 + pictures.TILE_PAD, top)) == (255, 0, 0)


def test_a_plot_without_matplotlib_says_what_to_install(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_matplotlib(name, *args, **kw):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib")
        return real(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match=r'the iterates plot needs matplotlib: pip install "lightning_redd\[plots\]"'):
        pictures.pyplot("the iterates plot")
