"""Restoring images larger than the prior's training size with :class:`TiledPrior` (CPU).

``memory``: peak RSS of a few RED-diff iterates (random-pixel inpainting) on ``size x size``
images with the embedded 64 px prior, ``tile_batch`` tiles per network call, each size in a
fresh process (the parent re-runs this script with ``--child``): the RSS high-water mark is
reset after the prior, image and operator are built and one warm-up iterate on a single tile
has run (``lightning_redd.runs.memory``), so a figure is what the restoration itself adds on top,
network working memory included.

``quality``: for the choice of ``mode``/``overlap``/``shift``: on a smooth synthetic image and
an upscaled demo photograph, the prior's noise-prediction error and a seam metric (mean
absolute step of the denoised estimate across tile borders / inside tiles) at several ``t``,
with the time of one call; and a short RED-diff inpainting of the photograph (PSNR).

    python benchmarks/tiled_memory.py memory --sizes 256 512 1024 --iterates 3
    python benchmarks/tiled_memory.py quality --json quality.json

Timings are of whatever machine runs it (``--threads``, default 1); a benchmark, not a test.

Measured (2-core CPU, 3 iterates, RSS added on top of the built problem, MiB):

    tiles, tile_batch 16:   256 px +193   512 px +275   1024 px +426   (25 / 121 / 441 tiles; quiet)
    tiles at 256 px:        tile_batch 4 +68, 16 +235, 64 (all 25 tiles in one call) +295 (shared machine)
    whole image:            256 px +507   512 px +7190 (1 iterate; shared machine)

so with tiles the peak is about ``c(tile_batch) + 21 x`` the float32 image (``c(16)`` <= 190 MiB:
the network's working set for one chunk; the rest is per-pixel state: the estimate, Adam's
moments, gradients, the tiles and their predictions), while whole-image evaluation grows with
the network's activations over the whole image (its self-attention over all positions).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo" / "coffee.png"


def load_prior(name: str):
    """``embedded``: the shipped 64 px prior; ``tiny``: a random small UNet of the same kind (smoke tests)."""
    from lightning_redd.priors.embedded import EmbeddedPrior
    from lightning_redd.priors.networks.unet import UNet

    if name == "embedded":
        return EmbeddedPrior()
    if name == "tiny":
        torch.manual_seed(0)
        net = UNet(image_size=16, base_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,), num_groups=8)
        return EmbeddedPrior.from_network(net)
    raise ValueError(f"unknown prior {name!r}; allowed: 'embedded', 'tiny'")


def photo(h: int, w: int, path: Path = DEMO) -> torch.Tensor:
    """A demo photograph resized (bicubic) to ``(1, 3, h, w)`` in ``[-1, 1]``."""
    from PIL import Image

    im = Image.open(path).convert("RGB").resize((w, h), Image.BICUBIC)
    data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(h, w, 3)
    return data.permute(2, 0, 1).float().div(127.5).sub(1)[None]


def smooth(h: int, w: int) -> torch.Tensor:
    """A smooth colour image ``(1, 3, h, w)``: low-frequency sinusoids, in ``[-0.8, 0.8]``."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return 0.8 * torch.stack([torch.sin(3 * xx + 2 * yy), torch.cos(2 * xx - 3 * yy), torch.sin(4 * xx * yy + 1)])[None]


# ---------------------------------------------------------------------- memory
def child(args: argparse.Namespace) -> None:
    """One size in this process: build, reset the RSS peak, restore, print one JSON line."""
    from lightning_redd import seeding
    from lightning_redd.operators.inpainting import Inpainting
    from lightning_redd.priors.tiled import TiledPrior
    from lightning_redd.runs.memory import peak_resident_bytes, reset_peak_rss, resident_bytes
    from lightning_redd.solvers.red_diff import RedDiff

    torch.set_num_threads(args.threads)
    size = args.child
    prior = TiledPrior(load_prior(args.prior), tile_batch=args.tile_batch, mode=args.mode)
    x = photo(size, size)
    op = Inpainting(mask="random", drop_fraction=0.7, sigma_y=0.01).bind([0], x.shape[1:])
    y = op.measure(x, seeding.generators(0, [0], "noise"))
    rows, cols = prior.layout(size, size, 0)
    warm = photo(prior.tile, prior.tile)  # one-time costs (lazy imports, first-call kernels) out of the figure
    warm_op = Inpainting(mask="random", drop_fraction=0.7).bind([0], warm.shape[1:])
    RedDiff(num_steps=1).solve(warm_op(warm), warm_op, prior, seeding.generators(0, [0], "solver"))
    base = resident_bytes()
    resettable = reset_peak_rss()
    start = time.perf_counter()
    RedDiff(num_steps=args.iterates, lr=0.25).solve(y, op, prior, seeding.generators(0, [0], "solver"))
    seconds = time.perf_counter() - start
    mib = 2.0**20
    print(json.dumps({"size": size, "tiles_per_iterate": rows.count * cols.count, "rss_before_mib": base / mib,
                      "peak_mib": peak_resident_bytes() / mib, "peak_above_start_mib": (peak_resident_bytes() - base) / mib,
                      "image_mib": x.numel() * 4 / mib, "resettable": resettable, "seconds": seconds}))


def memory(args: argparse.Namespace) -> dict:
    out = {"prior": args.prior, "tile_batch": args.tile_batch, "mode": args.mode, "iterates": args.iterates, "sizes": []}
    for size in args.sizes:
        argv = [sys.executable, __file__, "memory", "--child", str(size), "--prior", args.prior, "--iterates", str(args.iterates),
                "--tile-batch", str(args.tile_batch), "--mode", args.mode, "--threads", str(args.threads)]
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=Path(__file__).parent)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        row = json.loads(lines[-1]) if proc.returncode == 0 and lines else {"size": size, "error": proc.stderr[-500:]}
        print(json.dumps(row), flush=True)
        out["sizes"].append(row)
    return out


# ---------------------------------------------------------------------- quality
def seam_ratio(img: torch.Tensor, borders: tuple[list[int], list[int]]) -> float:
    """Mean |step| between neighbouring pixels across tile borders / inside tiles, over both
    axes (``borders``: the first pixel index after each border, rows then columns)."""
    ratios = []
    for axis, cuts in ((-2, borders[0]), (-1, borders[1])):
        step = img.diff(dim=axis).abs().mean(dim=[d for d in range(img.ndim) if d != img.ndim + axis])
        at = torch.zeros_like(step, dtype=torch.bool)
        at[[c - 1 for c in cuts if 0 < c < step.numel() + 1]] = True
        if at.any() and (~at).any():
            ratios.append(float(step[at].mean() / step[~at].mean()))
    return sum(ratios) / len(ratios)


def tile_borders(prior, h: int, w: int, t: int) -> tuple[list[int], list[int]]:
    """Image coordinates where a tile starts or ends (both axes) in ``prior``'s layout at ``t``."""
    out = []
    for ax, n in zip(prior.layout(h, w, t), (h, w), strict=True):
        edges = {s - ax.front for s in ax.starts} | {s + prior.tile - ax.front for s in ax.starts}
        out.append(sorted(e for e in edges if 0 < e < n))
    return out[0], out[1]


def variants(base) -> dict:
    from lightning_redd.priors.tiled import TiledPrior

    s = base.image_size
    v = {f"tiles overlap {o}": TiledPrior(base, overlap=o, mode="tiles") for o in (0, s // 8, s // 4, s // 2)}
    v[f"tiles overlap {s // 4} shift"] = TiledPrior(base, overlap=s // 4, mode="tiles", shift="time")
    v["whole"] = TiledPrior(base, mode="whole")
    return v


def denoise_scores(args: argparse.Namespace, base) -> dict:
    """eps error, x0 PSNR, seam ratio (on x0_hat) and seconds per call, per variant and image."""
    h, w = args.size
    rows = {}
    for img_name, x0 in (("smooth", smooth(h, w)), ("photo", photo(h, w))):
        for name, prior in variants(base).items():
            cell = {"eps_mse": [], "x0_psnr": [], "seam": [], "seconds": 0.0}
            for t in args.times:
                a = float(prior.alphas_cumprod[t])
                eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(t))
                x_t = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps
                start = time.perf_counter()
                with torch.no_grad():
                    eps_hat = prior.eps(x_t, torch.tensor([t]))
                cell["seconds"] += (time.perf_counter() - start) / len(args.times)
                x0_hat = ((x_t - math.sqrt(1 - a) * eps_hat) / math.sqrt(a)).clamp(-1, 1)
                cell["eps_mse"].append(float((eps_hat - eps).pow(2).mean()))
                cell["x0_psnr"].append(float(10 * torch.log10(4 / (x0_hat - x0).pow(2).mean())))
                ref = prior if name != "whole" else variants(base)["tiles overlap 0"]
                cell["seam"].append(seam_ratio(x0_hat, tile_borders(ref, h, w, t)))
            rows[f"{img_name} / {name}"] = cell
            print(img_name, name, json.dumps({k: v if isinstance(v, float) else [round(e, 4) for e in v] for k, v in cell.items()}), flush=True)
    return rows


def restore_scores(args: argparse.Namespace, base) -> dict:
    """PSNR of a short RED-diff inpainting (70 % of the pixels missing) of the photograph."""
    from lightning_redd import seeding
    from lightning_redd.operators.inpainting import Inpainting
    from lightning_redd.solvers.red_diff import RedDiff

    h, w = args.restore_size
    x = photo(h, w)
    op = Inpainting(mask="random", drop_fraction=0.7, sigma_y=0.01).bind([0], x.shape[1:])
    y = op.measure(x, seeding.generators(0, [0], "noise"))
    psnr = lambda a: float(10 * torch.log10(4 / (a.clamp(-1, 1) - x).pow(2).mean()))  # noqa: E731
    out = {"start": psnr(op.pinv(y))}
    for name, prior in variants(base).items():
        if name in (f"tiles overlap {base.image_size // 8}", f"tiles overlap {base.image_size // 2}"):
            continue
        start = time.perf_counter()
        est = RedDiff(num_steps=args.restore_steps, lr=0.25).solve(y, op, prior, seeding.generators(0, [0], "solver"))
        out[name] = {"psnr": psnr(est), "seconds": time.perf_counter() - start}
        print("restore", name, json.dumps(out[name]), flush=True)
    return out


def quality(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    base = load_prior(args.prior)
    return {"size": args.size, "times": args.times, "denoise": denoise_scores(args, base),
            "restore": restore_scores(args, base) if args.restore_steps > 0 else None}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("memory", "quality"))
    p.add_argument("--prior", default="embedded", choices=("embedded", "tiny"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024], help="memory: image sides")
    p.add_argument("--iterates", type=int, default=3, help="memory: RED-diff iterates per size")
    p.add_argument("--tile-batch", type=int, default=16)
    p.add_argument("--mode", default="tiles", choices=("tiles", "whole", "auto"))
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, nargs=2, default=[192, 256], help="quality: H W of the denoised images")
    p.add_argument("--times", type=int, nargs="+", default=[50, 200, 400, 700])
    p.add_argument("--restore-size", type=int, nargs=2, default=[128, 192])
    p.add_argument("--restore-steps", type=int, default=30)
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    if args.child is not None:
        child(args)
        return {}
    result = memory(args) if args.what == "memory" else quality(args)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
