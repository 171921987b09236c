"""RED-diff on HDR, iterate by iterate: where the values that clip(2x) saturates to black go.

For each prior and each iterate count: one RED-diff solve of the held-out images (HDR, gain 2, sigma_y 0.01,
measured by the operator's own `measure`, one noise draw of y for all runs; the solver's generators seeded per
image), at RED-diff's tuned HDR settings unless --lr/--lam say otherwise. Prints the final PSNR (mean over
images, in [0, 1] units, clipped) and, every --every iterates, over the values whose truth is below 0.25: mean
error and RMSE of mu ([0, 1] units), the share above the 0.25 boundary and the share below -1 (outside every
training image), then the RMSE over all values.
docs/PRIOR_CORPUS.md reports what it gave.

    python docs/results/hdr_trajectory.py v1=lightning_redd/priors/weights/embedded64.safetensors \
        v3=outputs/embedded64_v3ft.safetensors --images outputs/heldout/test --steps 100 200 400
"""
from __future__ import annotations

import argparse

import torch

from lightning_redd.operators.hdr import HDR
from lightning_redd.solvers.red_diff import RedDiff
from prior_denoise import load_folder, named_priors  # next to this script


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("priors", nargs="+", metavar="NAME=FILE", help="embedded prior checkpoints (.safetensors)")
    ap.add_argument("--images", required=True, help="folder of held-out images, all of the priors' size")
    ap.add_argument("--steps", type=int, nargs="+", default=[100])
    ap.add_argument("--lr", type=float, default=0.5, help="default: the tuned HDR setting (configs/ablations/tuned/hdr)")
    ap.add_argument("--lam", type=float, default=0.25)
    ap.add_argument("--every", type=int, default=10, help="print the trajectory every N iterates (0: only the PSNR)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    files, x = load_folder(args.images)
    op = HDR(gain=2.0, sigma_y=0.01)
    y = op.measure(x, [torch.Generator().manual_seed(args.seed + 1000 + i) for i in range(len(files))])
    dark = x < -0.5
    for name, prior in named_priors(args.priors).items():
        for steps in args.steps:
            solver = RedDiff(num_steps=steps, lr=args.lr, lam=args.lam)
            rows: list[str] = []

            def record(k: int, state, stats) -> None:
                if args.every and (k + 1) % args.every == 0:
                    mu = state.mu.detach()
                    err = (mu - x) / 2
                    rows.append(f"  iterate {k + 1:4d} (t {int(stats['t'][0]):3d}): dark: mean error {float(err[dark].mean()):+.3f}, "
                                f"RMSE {float(err[dark].pow(2).mean().sqrt()):.3f}, above 0.25 {float((mu[dark] > -0.5).float().mean()):.2f}, "
                                f"below -1 {float((mu[dark] < -1).float().mean()):.2f}; all values RMSE {float(err.pow(2).mean().sqrt()):.4f}")

            gens = [torch.Generator().manual_seed(args.seed + i) for i in range(len(files))]
            out = solver.solve(y, op, prior, gens, record)
            mse = ((out.clamp(-1, 1) - x) / 2).pow(2).flatten(1).mean(dim=1)
            print(f"{name}, {steps} iterates (lr {args.lr:g}, lambda {args.lam:g}): PSNR {float((-10 * mse.log10()).mean()):.2f} dB")
            print("\n".join(rows), flush=True)


if __name__ == "__main__":
    main()
