"""Cost of one RED-diff iterate vs one bare no-grad forward of the same ADM network.

The spec's claim to check: an iterate is one denoiser forward without autograd, so its time
and activation memory should be close to a bare forward's (the reference implementation,
which keeps the denoiser's graph, measured 1.43x the time and 7.3x the activation memory).

    python benchmarks/adm_iterate.py --device cuda --repeats 10
    python benchmarks/adm_iterate.py --device cpu --repeats 1 --arch ffhq256   # quick CPU check

Per precision (fp32, bf16 autocast around the denoiser) it prints the median time of each
and the peak memory above what was resident before the call (weights, inputs, Adam state):
CUDA via ``torch.cuda.max_memory_allocated``; CPU via the RSS high-water mark in a fresh subprocess
per measurement (``VmHWM`` reset through ``/proc/self/clear_refs`` after ``malloc_trim``; ``ru_maxrss``
elsewhere), so the model build cannot mask the call's peak.

Random weights (no checkpoint). The iterate uses :class:`lightning_redd.solvers.red_diff.RedDiff`
on a centre-box inpainting problem. Imports only torch, numpy, PIL and lightning_redd's
priors/operators/solvers (no jsonargparse, lightning or diffusers).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

from lightning_redd import seeding
from lightning_redd.operators.inpainting import Inpainting
from lightning_redd.priors.adm import ADMPrior
from lightning_redd.solvers.red_diff import RedDiff

ARCHS = {
    "imagenet256": dict(image_size=256, num_channels=256, num_res_blocks=2, attention_resolutions="32,16,8"),
    "ffhq256": dict(image_size=256, num_channels=128, num_res_blocks=1, attention_resolutions="16"),
    "small64": dict(image_size=64, num_channels=64, num_res_blocks=1, attention_resolutions="16"),
}
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
MODES = ("forward", "iterate", "graph")


def build(arch: str, dtype: str, device: torch.device, batch: int) -> dict:
    """Random-weight prior on ``device`` plus a bound inpainting problem and a solver state."""
    torch.manual_seed(0)
    prior = ADMPrior(**ARCHS[arch], allow_random_init=True)
    with torch.no_grad():  # undo the zero init of residual outputs so every layer does real work
        for m in prior.net.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                m.reset_parameters()
    prior.to(device)
    prior.autocast_dtype = DTYPES[dtype]
    size = ARCHS[arch]["image_size"]
    x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    idx = list(range(batch))
    op = Inpainting(mask="box").bind([seeding.image_seed(0, i, "operator") for i in idx], (3, size, size), device=device)
    y = op.measure(x, seeding.generators(0, idx, "noise"))
    solver = RedDiff(num_steps=1000, lr=0.25, lam=0.25)
    state = solver.init(y, op, prior, seeding.generators(0, idx, "solver"))
    t = torch.full((batch,), 500, dtype=torch.long, device=device)
    return dict(prior=prior, op=op, y=y, solver=solver, state=state, x_t=x.clone(), t=t)


def run_once(env: dict, mode: str) -> None:
    """One bare no-grad forward, one full RED-diff iterate (forward, losses, Adam step), or
    (``graph``, for comparison) one forward that builds autograd's graph as the reference does."""
    if mode == "forward":
        with torch.no_grad():
            env["prior"].eps(env["x_t"], env["t"])
    elif mode == "graph":  # the reference's defect: the forward keeps autograd's graph
        with torch.enable_grad():
            x_t = env["x_t"].detach().requires_grad_(True)
            out = env["prior"].eps(x_t, env["t"])
            del out
    elif mode == "iterate":
        if env["state"].done:
            raise RuntimeError("ran out of iterates; lower --repeats")
        env["solver"].step(env["state"], env["y"], env["op"], env["prior"])
    else:
        raise ValueError(f"unknown mode {mode!r}; allowed: {MODES}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_mode(env: dict, mode: str, device: torch.device, repeats: int, warmup: int) -> float:
    """Median wall time (s) of ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        run_once(env, mode)
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        run_once(env, mode)
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cuda_peak(env: dict, mode: str, device: torch.device) -> float:
    """Peak CUDA memory (MiB) allocated during one call, above what was allocated before it."""
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    run_once(env, mode)
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> bool:
    """Reset the kernel's RSS high-water mark (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_bytes() -> int:
    """RSS high-water mark: ``VmHWM`` (resettable) on Linux, else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            line = next(ln for ln in f if ln.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration):
        scale = 1 if sys.platform == "darwin" else 1024  # Linux reports KiB
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def cpu_peak_child(args: argparse.Namespace) -> None:
    """Subprocess body: build, settle, then report the RSS high-water mark of one call."""
    env = build(args.arch, args.dtype, torch.device("cpu"), args.batch)
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    reset = _reset_peak()
    before, high_before = _rss_bytes(), _peak_bytes()
    run_once(env, args.mode)
    high_after = _peak_bytes()
    masked = not reset and high_after <= high_before
    print(json.dumps({"peak_mib": (high_after - before) / 2**20, "masked": masked}))


def cpu_peak(args: argparse.Namespace, dtype: str, mode: str) -> float:
    """Run :func:`cpu_peak_child` in a fresh interpreter; returns MiB (NaN if masked by the build)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--device", "cpu", "--arch", args.arch, "--batch",
           str(args.batch), "--child-mode", mode, "--child-dtype", dtype]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    res = json.loads(out)
    return float("nan") if res["masked"] else res["peak_mib"]


def measure(args: argparse.Namespace, dtype: str, device: torch.device) -> dict:
    """Times and peaks of both modes for one precision."""
    env = build(args.arch, dtype, device, args.batch)
    row = {"dtype": dtype}
    for mode in MODES:
        row[f"{mode}_s"] = time_mode(env, mode, device, args.repeats, args.warmup)
        if device.type == "cuda":
            row[f"{mode}_mib"] = statistics.median(cuda_peak(env, mode, device) for _ in range(max(1, min(3, args.repeats))))
    del env
    if device.type == "cpu":
        for mode in MODES:
            row[f"{mode}_mib"] = cpu_peak(args, dtype, mode)
    return row


def report(rows: list[dict], args: argparse.Namespace, device: torch.device) -> None:
    print(f"ADM {args.arch}, batch {args.batch}, device {device}, median of {args.repeats} (after {args.warmup} warm-up)")
    print(f"{'dtype':6} {'forward s':>10} {'iterate s':>10} {'time x':>7} {'fwd MiB':>9} {'iter MiB':>9} {'mem x':>6}"
          f" {'graph s':>8} {'graph MiB':>10}")
    for r in rows:
        tr = r["iterate_s"] / r["forward_s"]
        mr = r["iterate_mib"] / r["forward_mib"] if r["forward_mib"] > 0 else float("nan")
        print(f"{r['dtype']:6} {r['forward_s']:10.3f} {r['iterate_s']:10.3f} {tr:7.2f} "
              f"{r['forward_mib']:9.1f} {r['iterate_mib']:9.1f} {mr:6.2f} {r['graph_s']:8.3f} {r['graph_mib']:10.1f}")
    print("MiB: peak memory during the call above what was resident before it (activations + temporaries).")
    print("time x, mem x: iterate / forward. graph: a forward that keeps autograd's graph (the reference's defect).")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1")
    p.add_argument("--arch", choices=sorted(ARCHS), default="imagenet256")
    p.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp32", "bf16"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--child-mode", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--child-dtype", choices=sorted(DTYPES), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.child_mode:
        args.mode, args.dtype = args.child_mode, args.child_dtype
        cpu_peak_child(args)
        return
    device = torch.device(args.device)
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"--device must be cpu or cuda[:i], got {args.device!r}")
    rows = [measure(args, dtype, device) for dtype in args.dtypes]
    report(rows, args, device)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"arch": args.arch, "batch": args.batch, "device": str(device), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
