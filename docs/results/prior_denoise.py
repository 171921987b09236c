"""How well embedded priors denoise held-out photographs, noise level by noise level.

For each time t: x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps with one fixed noise draw per image (the same for
every prior), x0_hat from the prior's eps_hat, clamped to [-1, 1]; reported in [0, 1] intensity units: the RMSE of
x0_hat over all values, and the mean error (bias) and RMSE over the values whose truth is below 0.25 (the ones HDR's
clip(2x) saturates to black). Float32 (no bf16), one torch thread. docs/PRIOR_CORPUS.md reports what it gave.

    python -m lightning_redd.data.photos export-split outputs/heldout/test --split test
    python docs/results/prior_denoise.py --images outputs/heldout/test \
        v1=lightning_redd/priors/weights/embedded64.safetensors v3=outputs/embedded64_v3ft.safetensors
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lightning_redd.data.images import list_images, load_image
from lightning_redd.priors.embedded import EmbeddedPrior


def load_folder(folder: str) -> tuple[list[Path], torch.Tensor]:
    """The images of ``folder`` (sorted) and their batch ``(N, 3, H, W)`` in ``[-1, 1]``, at their own size."""
    files = list_images(Path(folder))
    if not files:
        raise SystemExit(f"--images {folder}: no images")
    return files, torch.stack([load_image(p, 0, mode="none") for p in files])


def named_priors(specs: list[str]) -> dict[str, EmbeddedPrior]:
    """``NAME=FILE`` arguments -> float32 embedded priors by name."""
    priors = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not Path(path).is_file():
            raise SystemExit(f"{spec!r}: expected NAME=FILE with an existing .safetensors file")
        priors[name] = EmbeddedPrior(checkpoint=path, cpu_bf16="off")
    return priors


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("priors", nargs="+", metavar="NAME=FILE", help="embedded prior checkpoints (.safetensors)")
    ap.add_argument("--images", required=True, help="folder of held-out images, all of the priors' size")
    ap.add_argument("--times", type=int, nargs="+", default=[20, 50, 100, 200, 400, 600, 800, 900, 980])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    files, x = load_folder(args.images)
    dark = x < -0.5
    priors = named_priors(args.priors)
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(args.seed))
    abar = next(iter(priors.values())).alphas_cumprod.float()
    print(f"{len(files)} images from {args.images}, {float(dark.float().mean()):.1%} of values below 0.25; "
          "cells: RMSE all values / dark values: mean error, RMSE ([0, 1] units)\n")
    print("| t | " + " | ".join(priors) + " |")
    print("|---|" + "---|" * len(priors))
    with torch.no_grad():
        for t in args.times:
            a = abar[t]
            x_t = a.sqrt() * x + (1 - a).sqrt() * eps
            cells = []
            for prior in priors.values():
                e = prior.eps(x_t, torch.full((x.shape[0],), t))
                err = (((x_t - (1 - a).sqrt() * e) / a.sqrt()).clamp(-1, 1) - x) / 2
                cells.append(f"{float(err.pow(2).mean().sqrt()):.4f} / {float(err[dark].mean()):+.4f}, "
                             f"{float(err[dark].pow(2).mean().sqrt()):.4f}")
            print(f"| {t} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
