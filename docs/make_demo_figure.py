"""Rows of (measured, restored, ground truth) from a demo run's outputs.

    python docs/make_demo_figure.py outputs/demo data/demo docs/demo.png
"""
import sys
from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import make_grid

from lightning_redd.data.folder import list_images, load_image


def main(run: str, truth: str, out: str, size: int = 64) -> None:
    tiles = []
    for path in list_images(Path(truth)):
        for folder in ("measured", "restored"):
            tiles.append(load_image(Path(run) / folder / f"{path.stem}.png", size))
        tiles.append(load_image(path, size))
    grid = make_grid(torch.stack(tiles) * 0.5 + 0.5, nrow=3, padding=2, pad_value=1.0)
    grid = torch.nn.functional.interpolate(grid[None], scale_factor=2, mode="nearest")[0]
    Image.fromarray((grid * 255).round().byte().permute(1, 2, 0).numpy()).save(out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
