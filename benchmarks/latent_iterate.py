"""Seconds and peak memory of one RED-diff iterate on a latent prior next to one on a pixel prior.

    python benchmarks/latent_iterate.py --arch tiny --size 256                 # both spaces, CPU
    python benchmarks/latent_iterate.py --arch sd15 --size 256 --iterates 2    # SD-1.5-shaped vs ADM-256
    python benchmarks/latent_iterate.py --arch sd15 --device cuda --precision bf16 --iterates 10

Random weights, no folder needed (the networks are built from their configs):

* ``tiny``: latent = a small ``AutoencoderKL`` (factor 8, 4 channels) + a small
  ``UNet2DConditionModel``; pixel = the same UNet architecture with 3 channels on the pixels.
* ``sd15``: latent = Stable Diffusion 1.5's shapes (``AutoencoderKL`` 128-256-512-512, UNet
  320-640-1280-1280 with cross-attention 768, ~860 M parameters), empty-prompt (zero)
  context; pixel = the paper's ADM ImageNet-256 architecture (552.8 M; an SD-shaped UNet on
  256 x 256 pixels would need a 65536-token self-attention).

Each space runs in its own fresh process (so that its peak resident memory is its own):
build, ``--warmup`` iterates, then ``--iterates`` timed ones (median seconds; peak memory above
what was resident before the first timed iterate: RSS high-water mark on the CPU,
``max_memory_allocated`` on CUDA). Inpainting (centre box), batch ``--batch``. The latent
iterate differentiates the decoder (and the box mask) only; the denoiser runs under no_grad in both.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's lightning_redd

import torch  # noqa: E402

SD15_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, norm_num_groups=32,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
SD15_UNET = dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
                 attention_head_dim=8, norm_num_groups=32,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
TINY_VAE = dict(block_out_channels=(16, 32, 32, 32), layers_per_block=1, latent_channels=4, norm_num_groups=8,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
TINY_UNET = dict(block_out_channels=(32, 64, 64), layers_per_block=1, cross_attention_dim=32, attention_head_dim=8,
                 norm_num_groups=8, down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"))  # attention at 1/4 of the input size only


def build(arch: str, space: str):
    """The prior of ``space`` (``latent`` or ``pixel``) for ``arch``, random weights, frozen."""
    import diffusers

    from lightning_redd.priors import schedules
    from lightning_redd.priors.latent import LatentPrior
    from lightning_redd.priors.latent_diffusers import DiffusersAutoencoder, LatentUNet

    torch.manual_seed(0)
    unet_cfg = SD15_UNET if arch == "sd15" else TINY_UNET
    context = torch.zeros(1, 77, unet_cfg["cross_attention_dim"])
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    if space == "latent":
        vae = diffusers.AutoencoderKL(**(SD15_VAE if arch == "sd15" else TINY_VAE))
        unet = diffusers.UNet2DConditionModel(in_channels=4, out_channels=4, **unet_cfg)
        return LatentPrior(denoiser=LatentUNet(unet, betas, "epsilon", context), autoencoder=DiffusersAutoencoder(vae))
    if arch == "sd15":
        from lightning_redd.priors.adm import ADMPrior

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_cases import ARCHS

        return ADMPrior(**ARCHS["adm256"], allow_random_init=True)
    unet = diffusers.UNet2DConditionModel(in_channels=3, out_channels=3, **unet_cfg)
    return LatentUNet(unet, schedules.linear_betas(), "epsilon", context)


def child(args: argparse.Namespace) -> dict:
    """One space in this process: build, warm up, time; returns the figures."""
    from lightning_redd.operators.inpainting import Inpainting
    from lightning_redd.runs.memory import peak_resident_bytes, reset_peak_rss, resident_bytes
    from lightning_redd.solvers.latent import for_prior
    from lightning_redd.solvers.red_diff import RedDiff

    device = torch.device(args.device)
    prior = build(args.arch, args.space).to(device)
    prior.autocast_dtype = torch.bfloat16 if args.precision == "bf16" else None
    params = sum(p.numel() for p in prior.parameters())
    x = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(1)).to(device) * 2 - 1
    op = Inpainting(mask="box").bind(list(range(args.batch)), (3, args.size, args.size), device=device)
    gens = [torch.Generator().manual_seed(i) for i in range(args.batch)]
    y = op.measure(x, gens)
    solver = for_prior(RedDiff(num_steps=args.warmup + args.iterates), prior)
    state = solver.init(y, op, prior, gens)
    for _ in range(args.warmup):
        solver.step(state, y, op, prior)
    seconds = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        reset_peak_rss()
        base = resident_bytes()
    for _ in range(args.iterates):
        start = time.perf_counter()
        solver.step(state, y, op, prior)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_resident_bytes()
    return {"space": args.space, "arch": args.arch, "params_M": params / 1e6, "seconds": statistics.median(seconds),
            "all_seconds": seconds, "peak_above_start_MiB": (peak - base) / 2**20, "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=("tiny", "sd15"), default="tiny")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--iterates", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--space", choices=("latent", "pixel", "both"), default="both")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    if args.space != "both":
        print(json.dumps(child(args)))
        return
    rows = []
    for space in ("latent", "pixel"):
        cmd = [sys.executable, __file__, *[a for a in (argv or sys.argv[1:])], "--space", space]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
    for r in rows:
        print(f"{r['space']:6} {r['arch']:5} {r['params_M']:8.1f} M params  {r['seconds']:8.3f} s/iterate  "
              f"peak +{r['peak_above_start_MiB']:8.1f} MiB  ({args.device}, {args.precision}, {r['threads']} threads, "
              f"{args.size} px, batch {args.batch})")
    lat, pix = rows
    print(f"latent / pixel: time {lat['seconds'] / pix['seconds']:.2f}x, peak memory "
          f"{lat['peak_above_start_MiB'] / max(pix['peak_above_start_MiB'], 1e-9):.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
