"""What the up-front input check costs: every file of a folder decoded completely.

Writes ``--count`` random RGB PNGs of each ``--sizes`` side into a scratch folder, then times
:func:`lightning_redd.data.images.check_folder` on it (median of ``--repeats``, after one
warm-up that also fills the page cache).

    python benchmarks/check_cost.py --count 1000 --sizes 64 256 --out /tmp/check_cost
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lightning_redd.data.images import check_folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True, help="scratch folder for the generated images")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    for size in args.sizes:
        folder = args.out / f"{size}px"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(args.count):
            path = folder / f"img{i:05d}.png"
            if not path.exists():
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        check_folder(folder, image_size=64)  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            report = check_folder(folder, image_size=64)
            times.append(time.perf_counter() - start)
        assert len(report.files) == args.count and not report.problems
        print(f"{args.count} files of {size}x{size}: median {statistics.median(times):.2f} s "
              f"(min {min(times):.2f}, max {max(times):.2f}) over {args.repeats} runs")


if __name__ == "__main__":
    main()
