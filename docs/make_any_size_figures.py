"""The figures of README "Images of any size" and docs/ANY_SIZE.md (CPU; minutes to an hour).

    python docs/make_any_size_figures.py quality OUT --images DIR [--tasks ...] [--limit N]
    python docs/make_any_size_figures.py speed OUT
    python docs/make_any_size_figures.py picture RUN TRUTH docs/any_size.png

``quality``: on the square held-out photographs of ``DIR`` (e.g. ``python -m
lightning_redd.data.photos export-split DIR --split test --size 128``), for each task, the real
``lightning-redd predict`` (in this process) of: RED-diff at the images' own size (the 64 px
prior in tiles, the tuned 64 px preset ``configs/ablations/tuned/<task>/solver/red_diff.yaml``),
the same with whole-image evaluation (``--model.tiling.mode whole``; inpainting only), the
classical solver (its tuned preset), and "thumbnail": the images resized to 64 px (bicubic,
antialiased), restored by RED-diff at 64 px, upscaled back (bicubic) and scored against the
full-size images. PSNR/SSIM from the project's metrics, seconds per image from the records'
wall time per image of the whole command (start-up included). Writes ``OUT/quality.json``.

``speed``: seconds per RED-diff iterate of one image against its tile count (64 .. 256 px, one
process, sizes interleaved, median of repeats), tiles and whole. Writes ``OUT/speed.json``.

``picture``: rows of (measured, restored, ground truth) of a run at the images' own sizes.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("inpainting_strokes", "sr_block4", "deblur_gaussian")


def predict(out: Path, images: Path, task: str, solver: str, *extra: str) -> Path:
    from lightning_redd.lit.cli import cli

    if not (out / "metrics.csv").is_file():
        cli(["predict", "--config", "demo", "--config", str(ROOT / f"configs/ablations/task/{task}.yaml"),
             "--config", str(ROOT / f"configs/ablations/tuned/{task}/solver/{solver}.yaml"),
             "--data.root", str(images), "--trainer.default_root_dir", str(out), "--trainer.enable_progress_bar", "false",
             "--trainer.logger", "false", "--model.log_every", "0", *extra])
    return out


def scores(restored: dict[str, torch.Tensor], truth: dict[str, torch.Tensor]) -> dict[str, float]:
    from lightning_redd.metrics import psnr, ssim

    p = [float(psnr(restored[n][None], truth[n][None])) for n in truth]
    s = [float(ssim(restored[n][None], truth[n][None])) for n in truth]
    return {"psnr": statistics.mean(p), "ssim": statistics.mean(s)}


def folder_images(folder: Path) -> dict[str, torch.Tensor]:
    from lightning_redd.data.images import list_images, load_image

    return {p.stem: load_image(p, 0, 3, "none") for p in list_images(folder)}


def quality(args: argparse.Namespace) -> dict:
    from lightning_redd.data.images import list_images

    out = Path(args.out)
    files = list_images(Path(args.images))[: args.limit]
    full = out / "images_full"
    thumbs = out / "images_64"
    for folder in (full, thumbs):
        folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        im = Image.open(f).convert("RGB")
        im.save(full / f"{f.stem}.png")
        im.resize((64, 64), Image.Resampling.BICUBIC).save(thumbs / f"{f.stem}.png")
    truth = folder_images(full)
    size = next(iter(truth.values())).shape[-1]
    results: dict = {"images": sorted(truth), "size": size, "tasks": {}}
    for task in args.tasks:
        row = {}
        runs = {"red_diff tiles": (full, "red_diff", ("--data.resize", "none")),
                "classical": (full, "classical", ("--data.resize", "none")),
                "thumbnail (64 px, upscaled)": (thumbs, "red_diff", ())}
        if task.startswith("inpainting"):
            runs["red_diff whole"] = (full, "red_diff", ("--data.resize", "none", "--model.tiling.mode", "whole"))
        for label, (images, solver, extra) in runs.items():
            name = label.split(" ")[0] + ("_whole" if "whole" in label else "")
            t0 = time.perf_counter()
            run = predict(out / task / name, images, task, solver, *extra)
            wall = time.perf_counter() - t0
            restored = folder_images(run / "restored")
            if images == thumbs:
                restored = {n: torch.nn.functional.interpolate(v[None], size=(size, size), mode="bicubic", antialias=False,
                                                               align_corners=False)[0].clamp(-1, 1) for n, v in restored.items()}
            row[label] = {**scores(restored, truth), "wall_seconds_per_image": wall / len(truth)}
            print(task, label, row[label], flush=True)
        results["tasks"][task] = row
        (out / "quality.json").write_text(json.dumps(results, indent=1))
    return results


def speed(args: argparse.Namespace) -> dict:
    """Seconds per RED-diff iterate (one image, random inpainting) against the tile count."""
    from lightning_redd import seeding
    from lightning_redd.operators.inpainting import Inpainting
    from lightning_redd.priors.embedded import EmbeddedPrior
    from lightning_redd.priors.tiled import at_size
    from lightning_redd.solvers.red_diff import RedDiff

    torch.set_num_threads(args.threads)
    prior = EmbeddedPrior()
    cases = {}
    for side in args.sides:
        for mode in ("tiles", "whole"):
            shape = (3, side, side)
            op = Inpainting(mask="random", drop_fraction=0.5).bind([0], shape)
            y = op.measure(torch.zeros(1, *shape), seeding.generators(0, [0], "noise"))
            p = at_size(prior, (side, side), mode=mode)
            tiles = p.layout(side, side, 0)[0].count ** 2 if hasattr(p, "layout") and mode == "tiles" else 1
            cases[(side, mode)] = (tiles, op, y, p)
    timings: dict = {k: [] for k in cases}
    solver = RedDiff(num_steps=args.iterates)
    for _, op, y, p in cases.values():  # warm-up: first calls pay one-time costs (allocations, kernels)
        RedDiff(num_steps=1).solve(y, op, p, seeding.generators(0, [0], "solver"))
    for _ in range(args.repeats):
        for key, (_, op, y, p) in cases.items():  # interleaved: machine load hits every size alike
            t0 = time.perf_counter()
            solver.solve(y, op, p, seeding.generators(0, [0], "solver"))
            timings[key].append((time.perf_counter() - t0) / args.iterates)
    base = statistics.median(timings[(args.sides[0], "tiles")])
    rows = [{"side": s, "mode": m, "tiles": cases[(s, m)][0], "seconds_per_iterate": statistics.median(v),
             "relative": statistics.median(v) / base} for (s, m), v in timings.items()]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "speed.json").write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=1))
    for r in rows:
        print(r, flush=True)
    return {"rows": rows}


def picture(run: str, truth: str, out: str) -> None:
    """Rows of (measured, restored, ground truth) at each image's own size, 2x nearest."""
    from lightning_redd.data.images import list_images, load_image
    from lightning_redd.resources import resolve_data

    rows = []
    for path in list_images(resolve_data(truth)):
        tiles = [load_image(Path(run) / folder / f"{path.stem}.png", 0, 3, "none") for folder in ("measured", "restored")]
        tiles.append(load_image(path, 0, 3, "none"))
        h = tiles[0].shape[-2]
        pad = torch.ones(3, h, 4)
        rows.append(torch.cat([t for tile in tiles for t in (tile * 0.5 + 0.5, pad)][:-1], dim=-1))
    width = max(r.shape[-1] for r in rows)
    rows = [torch.cat([r, torch.ones(3, r.shape[-2], width - r.shape[-1])], -1) for r in rows]
    grid = torch.cat([t for r in rows for t in (r, torch.ones(3, 4, width))][:-1], dim=-2)
    Image.fromarray((grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()).save(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python docs/make_any_size_figures.py")
    sub = p.add_subparsers(dest="what", required=True)
    q = sub.add_parser("quality")
    q.add_argument("out")
    q.add_argument("--images", required=True)
    q.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    q.add_argument("--limit", type=int, default=None)
    s = sub.add_parser("speed")
    s.add_argument("out")
    s.add_argument("--sides", type=int, nargs="+", default=[64, 128, 192, 256])
    s.add_argument("--iterates", type=int, default=3)
    s.add_argument("--repeats", type=int, default=3)
    s.add_argument("--threads", type=int, default=1)
    f = sub.add_parser("picture")
    f.add_argument("run")
    f.add_argument("truth")
    f.add_argument("out")
    args = p.parse_args(argv)
    if args.what == "quality":
        quality(args)
    elif args.what == "speed":
        speed(args)
    else:
        picture(args.run, args.truth, args.out)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
