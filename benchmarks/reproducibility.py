"""How far a restoration depends on batch layout and process count: the figures behind the
README's reproducibility statement.

Runs the demo config (``configs/demo.yaml``) as ``predict`` and ``fit`` with batch 4 and
batch 1 on one process, and with 2 gloo processes, in fresh processes, and compares every
run to the 1-process batch-4 ``predict``: the largest difference of the float estimate (read
back from the 16-bit-exact ``restored`` PNGs is not enough, so each run also dumps its float
results), the largest 8-bit pixel difference, the fraction of differing pixels, and the
largest PSNR difference; and each run's mean PSNR of the restored images and of the masked
inputs (the README's quickstart figures, 24.91 and 18.16 dB at the demo's 130 iterates, from the
first run). Also times each run (images per second, whole command).

    python benchmarks/reproducibility.py --out /tmp/repro [--steps N] [--time-grid linear|quadratic] [--cpu-bf16 off|auto|on] [--runs 0 1]

``--steps``/``--time-grid`` (default: the demo config's, 130 on the quadratic grid) change RED-diff's iterates;
``--steps 200 --time-grid linear`` are the demo's settings before 2026-12-07.

``--cpu-bf16`` (default ``off``: float32 on every CPU, the README's float32 figures) sets the
embedded prior's switch; ``on`` measures how far bf16 results move with the batch layout.
``--runs`` picks runs by number (default all; run 0 is the reference and always runs).
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["chelsea", "chelsea_face", "coffee", "motorcycle"]
RUNS = {
    "predict, 1 process, batch 4": ("predict", ["--data.batch_size", "4"]),
    "predict, 1 process, batch 1": ("predict", ["--data.batch_size", "1"]),
    "predict, 2 processes, batch 4": ("predict", ["--data.batch_size", "4", "--trainer.devices", "2", "--trainer.strategy", "ddp"]),
    "fit, 1 process, batch 4": ("fit", ["--data.batch_size", "4"]),
    "fit, 2 processes, batch 4": ("fit", ["--data.batch_size", "4", "--trainer.devices", "2", "--trainer.strategy", "ddp"]),
}
#: writes each image's float estimate next to its PNG, through the writer's own per-batch method
DUMP = (
    "import sys, torch; from lightning_redd.lit import writer as w; o = w.RestorationWriter.write\n"
    "def spy(self, trainer, restored):\n"
    "    o(self, trainer, restored)\n"
    "    r = restored.to_cpu()\n"
    "    for n, x in zip(r.names, r.x_hat): torch.save(x.clone(), self.run.root / f'{n}.x_hat.pt')\n"
    "w.RestorationWriter.write = spy\n"
    "from lightning_redd.lit.cli import main; main()\n"
)


def run(out: Path, subcommand: str, extra: list[str], steps: int | None, cpu_bf16: str = "off", time_grid: str | None = None) -> float:
    # a script file, not `python -c`: Lightning's DDP launcher starts rank 1 by re-running sys.argv
    script = out.parent / "dump_run.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(DUMP)
    argv = [sys.executable, str(script), subcommand, "--config", "configs/demo.yaml", "--trainer.default_root_dir", str(out),
            "--trainer.enable_progress_bar", "false", "--model.prior.init_args.cpu_bf16", cpu_bf16, *extra]
    if steps is not None:
        argv += ["--model.solver.init_args.num_steps", str(steps)]
    if time_grid is not None:
        argv += ["--model.solver.init_args.time_grid", time_grid]
    start = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def compare(ref: Path, other: Path) -> dict:
    import torch

    psnr = {r["name"]: float(r["psnr"]) for r in csv.DictReader(open(ref / "metrics.csv"))}
    rows = list(csv.DictReader(open(other / "metrics.csv")))
    psnr_o = {r["name"]: float(r["psnr"]) for r in rows}
    dx, dpx, frac = 0.0, 0, []
    for n in NAMES:
        a, b = torch.load(ref / f"{n}.x_hat.pt", weights_only=True), torch.load(other / f"{n}.x_hat.pt", weights_only=True)
        dx = max(dx, float((a - b).abs().max()))
        pa = np.asarray(Image.open(ref / "restored" / f"{n}.png")).astype(int)
        pb = np.asarray(Image.open(other / "restored" / f"{n}.png")).astype(int)
        dpx = max(dpx, int(np.abs(pa - pb).max()))
        frac.append(float((pa != pb).mean()))
    return {"max_abs_float": dx, "max_pixel_levels": dpx, "fraction_pixels_differing": float(np.mean(frac)),
            "max_psnr_db": max(abs(psnr[n] - psnr_o[n]) for n in NAMES),
            "mean_psnr_db": float(np.mean([float(r["psnr"]) for r in rows])),
            "mean_psnr_init_db": float(np.mean([float(r["psnr_init"]) for r in rows]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=None, help="RED-diff iterates (default: the demo config's)")
    ap.add_argument("--time-grid", choices=("linear", "quadratic"), default=None, help="default: the demo config's")
    ap.add_argument("--cpu-bf16", choices=("off", "auto", "on"), default="off")
    ap.add_argument("--runs", type=int, nargs="+", default=list(range(len(RUNS))), help="run numbers (0: the reference)")
    args = ap.parse_args()
    chosen = [(i, label, spec) for i, (label, spec) in enumerate(RUNS.items()) if i in {0, *args.runs}]
    results = {}
    for i, label, (sub, extra) in chosen:
        seconds = run(args.out / f"run{i}", sub, extra, args.steps, args.cpu_bf16, args.time_grid)
        results[label] = {"seconds": seconds, "images_per_second": len(NAMES) / seconds}
        print(f"{label}: {seconds:.1f} s", flush=True)
    ref = args.out / "run0"
    for i, label, _ in chosen:
        results[label].update(compare(ref, args.out / f"run{i}"))
    print(f"\n{'run':32s} {'s':>7s} {'img/s':>6s} {'max|dx|':>9s} {'px':>3s} {'%px':>7s} {'dPSNR':>7s} {'PSNR':>8s} {'input':>8s}")
    for label, r in results.items():
        print(f"{label:32s} {r['seconds']:7.1f} {r['images_per_second']:6.3f} {r['max_abs_float']:9.2e} "
              f"{r['max_pixel_levels']:3d} {100 * r['fraction_pixels_differing']:6.3f}% {r['max_psnr_db']:7.4f} {r['mean_psnr_db']:8.4f} {r['mean_psnr_init_db']:8.4f}")
    (args.out / "reproducibility.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
