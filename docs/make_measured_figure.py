"""Draw docs/measured.png: the bundled measured samples restored from their files.

One row per task (inpainting with mask files, block SR x4, deblurring with kernel files, JPEG
files), and for each shown image: the measurement as read from its file (SR's 16x16 shown
enlarged by nearest neighbour) | the restoration | the held-out ground truth. Each row's label
gives the task and the run's mean PSNR (from its metrics.csv).

    for t in inpainting sr4 deblur jpeg; do
      lightning-redd predict --config configs/measured/$t.yaml --trainer.default_root_dir outputs/measured-$t
    done
    python docs/make_measured_figure.py outputs/measured- docs/measured.png
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
TASKS = {"inpainting": "inpainting (mask files)", "sr4": "block SR x4 (16x16 files)",
         "deblur": "deblur (kernel files)", "jpeg": "JPEG q10 files"}
SHOWN = ("chelsea", "coffee", "motorcycle")
SCALE, GAP, LABEL = 2, 4, 150


def _open(folder: Path, stem: str) -> Image.Image:
    path = next(p for p in folder.iterdir() if p.stem == stem)
    return Image.open(path).convert("RGB").resize((64 * SCALE, 64 * SCALE), Image.Resampling.NEAREST)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefix", help="run folders are <prefix><task> (e.g. outputs/measured-)")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    samples = ROOT / "data" / "measured"
    tile = 64 * SCALE
    width = LABEL + len(SHOWN) * (3 * (tile + GAP) + GAP * 2)
    fig = Image.new("RGB", (width, len(TASKS) * (tile + GAP) + 20), "white")
    draw = ImageDraw.Draw(fig)
    for j, name in enumerate(SHOWN):
        x0 = LABEL + j * (3 * (tile + GAP) + GAP * 2)
        draw.text((x0, 4), f"{name}: measured | restored | truth", fill="black")
    for i, (task, title) in enumerate(TASKS.items()):
        run = Path(f"{args.prefix}{task}")
        rows = list(csv.DictReader(open(run / "metrics.csv", newline="")))
        mean = sum(float(r["psnr"]) for r in rows) / len(rows)
        init = sum(float(r["psnr_init"]) for r in rows) / len(rows)
        y0 = 20 + i * (tile + GAP)
        draw.text((4, y0 + tile // 2 - 14), f"{title}\nPSNR {init:.1f} -> {mean:.1f} dB", fill="black")
        for j, name in enumerate(SHOWN):
            x0 = LABEL + j * (3 * (tile + GAP) + GAP * 2)
            for k, img in enumerate((_open(samples / task, name), _open(run / "restored", name),
                                     _open(samples / "ground_truth", name))):
                fig.paste(img, (x0 + k * (tile + GAP), y0))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
