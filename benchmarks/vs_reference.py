"""Our RED-diff against the paper's reference code (NVlabs/RED-diff) on the same problem, in one
process: seconds per iterate, images per second, their ratio, and PSNR at equal iterates.

    python benchmarks/vs_reference.py --reference /tmp/RED-diff --json vs_ref.json --markdown vs_ref.md
    python benchmarks/vs_reference.py --reference /tmp/RED-diff --contestants ref ours ours-fewer predict \\
        --steps 100 --fewer 50 --threads 1 0 --timing-rounds 5 --timing-steps 10

The reference is a local checkout of NVlabs/RED-diff (given by ``--reference``), never a
dependency: its RED-diff loop (``REDDIFF.sample``) is imported from ``--reference`` at run time
with the shims of ``reference_shim`` (no hydra, no CUDA; our prior behind the network call it
makes, our bound operator behind its degradation), so both loops solve the identical ``y``.

Problem (``bench_problem``): centre-box inpainting of six held-out 64 px photographs (the four
demo images and two held-out test crops) with the shipped embedded prior, RED-diff at
``configs/task/inpainting_box.yaml``'s lr 0.25 and lambda 0.01, the reference's defaults
otherwise (linear weighting, sigma_x0 0, Adam betas (0.9, 0.99)).

Contestants (``--contestants``):

* ``ref``: the reference loop on the six images as one batch (its ``main.py`` batches images;
  its loss means run over the whole batch);
* ``ref-per-image``: the reference loop once per image (batch 1: its loss is then exactly ours);
* ``ours``: ``lightning_redd.solvers.red_diff.RedDiff`` (CPU defaults) on the batch of six;
* ``ours-fewer``: the same with ``--fewer`` iterates (images/s at the PSNR it reaches);
* ``ours-bf16``: ``ours`` with ``EmbeddedPrior(cpu_bf16="on")`` (bfloat16 autocast around the
  network; what ``cpu_bf16: auto``, the demo config's setting, picks on a CPU with AMX or AVX512-BF16);
* ``predict``: the whole ``lightning-redd predict`` command (the demo config as shipped, so ``cpu_bf16: auto``) over a folder of the six images,
  start-up, data checks, metrics and PNG writing included, in a child process (its thread count
  through ``OMP_NUM_THREADS``).

For each ``--threads`` value (``0``: torch's default): (1) speed: ``--timing-rounds`` rounds of
``--timing-steps``-iterate solves, the contestants in turn within a round (ref, ours, ref, ours,
...), seconds per iterate (wall and CPU) and the ratio to ``ref`` per round, then the median: on
a shared machine the load drifts over minutes, so short interleaved units are what makes the
ratio mean something; (2) one whole ``--steps``-iterate solve of each contestant for the PSNR
(at the first ``--threads`` value only, unless ``--psnr-every-thread-count``; ``predict`` at
each). PSNR (dB, in [-1, 1], clipped) against the ground truth; for the reference both its
``mu`` after the last Adam step (what our estimate is) and the ``x0_pred`` it returns (taken
before that step; what its ``main.py`` scores).

``--noise shared`` (default): the reference's ``torch.randn_like`` draws from our per-image
solver generators, so that any difference of the results is the loops' arithmetic, not the
noise; ``independent``: its own global-RNG draws.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's lightning_redd, installed or not
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import bench_problem  # noqa: E402
from lightning_redd.metrics.image import psnr  # noqa: E402

CONTESTANTS = ("ref", "ref-per-image", "ours", "ours-bf16", "ours-fewer", "predict")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", required=True, help="path of a checkout of github.com/NVlabs/RED-diff")
    p.add_argument("--contestants", nargs="+", choices=CONTESTANTS, default=["ref", "ours"])
    p.add_argument("--steps", type=int, default=100, help="iterates of every contestant but ours-fewer (a divisor of 1000)")
    p.add_argument("--fewer", type=int, default=50, help="iterates of ours-fewer")
    p.add_argument("--timing-rounds", type=int, default=5, help="rounds of short interleaved solves for the speed")
    p.add_argument("--timing-steps", type=int, default=10, help="iterates of each timed solve (a divisor of 1000)")
    p.add_argument("--psnr-every-thread-count", action="store_true",
                   help="whole solves (PSNR) at every --threads value, not only the first (predict runs at each anyway)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 0], help="torch threads; 0: torch's default")
    p.add_argument("--warmup-steps", type=int, default=2, help="an untimed solve of this many iterates per contestant first")
    p.add_argument("--noise", choices=("shared", "independent"), default="shared")
    p.add_argument("--reference-network", choices=("trainable", "frozen"), default="trainable",
                   help="the reference's network parameters require grad (as in its main.py) or are frozen")
    p.add_argument("--lr", type=float, default=bench_problem.SOLVER["lr"])
    p.add_argument("--lam", type=float, default=bench_problem.SOLVER["lam"])
    p.add_argument("--images", default=bench_problem.DEFAULT_IMAGES, help="folder for the six PNGs (written once)")
    p.add_argument("--json", help="write every figure to this file")
    p.add_argument("--markdown", help="write the summary table to this file")
    args = p.parse_args(argv)
    for n in (args.steps, args.warmup_steps, args.timing_steps) + ((args.fewer,) if "ours-fewer" in args.contestants else ()):
        if n < 1 or 1000 % n:
            p.error(f"iterate counts must divide 1000 (the reference's grid range(0, 1000, 1000 // S)), got {n}")
    if args.timing_rounds < 0 or any(t < 0 for t in args.threads):
        p.error("need --timing-rounds >= 0 and --threads >= 0")
    return args


def run_ours(prior, problem: dict, steps: int, args) -> dict:
    from lightning_redd.solvers.red_diff import RedDiff

    solver = RedDiff(num_steps=steps, lr=args.lr, lam=args.lam)
    with bench_problem.Timer() as t:
        state = solver.run(problem["y"], problem["op"], prior, bench_problem.solver_generators(problem))
    return {"wall_s": t.wall, "cpu_s": t.cpu, "iterates": steps, "estimate": solver.estimate(state)}


def run_reference(ref, prior, problem: dict, steps: int, args, per_image: bool) -> dict:
    parts = [problem] if not per_image else [sub_problem(problem, i) for i in problem["idx"]]
    x0s, mus = [], []
    with bench_problem.Timer() as t:
        for part in parts:
            x0_pred, mu = ref.solve(prior, part, steps=steps, lr=args.lr, lam=args.lam, noise=args.noise,
                                    gens=bench_problem.solver_generators(part))
            x0s.append(x0_pred)
            mus.append(mu)
    return {"wall_s": t.wall, "cpu_s": t.cpu, "iterates": steps, "estimate": torch.cat(mus), "x0_pred": torch.cat(x0s)}


def sub_problem(problem: dict, i: int) -> dict:
    """Image ``i`` alone, with its own operator, ``y`` and generators (seeded by its index)."""
    from lightning_redd import seeding
    from lightning_redd.operators.inpainting import Inpainting

    op = Inpainting(**bench_problem.BOX).bind([seeding.image_seed(problem["seed"], i, "operator")],
                                                           tuple(problem["x"].shape[1:]), device=problem["x"].device)
    return {**problem, "x": problem["x"][i:i + 1], "y": problem["y"][i:i + 1], "op": op, "idx": [i]}


def run_predict(folder: Path, steps: int, threads: int, args) -> dict:
    """The whole ``lightning-redd predict`` in a child process; PSNR read from its ``metrics.csv``."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory(prefix="vs_reference_predict_") as out:
        cmd = [sys.executable, "-c", "from lightning_redd.lit.cli import main; main()", "predict",
               "--config", str(root / "configs/demo.yaml"), "--config", str(root / "configs/task/inpainting_box.yaml"),
               "--data.root", str(folder), "--data.batch_size", "6", "--model.solver.init_args.num_steps", str(steps),
               "--model.solver.init_args.lr", str(args.lr), "--model.solver.init_args.lam", str(args.lam),
               "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", out]
        with bench_problem.Timer(children=True) as t:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"lightning-redd predict failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        with open(Path(out) / "metrics.csv") as f:
            rows = {r["name"]: float(r["psnr"]) for r in csv.DictReader(f)}
    return {"wall_s": t.wall, "cpu_s": t.cpu, "iterates": steps, "psnr_by_name": rows}


def run_one(name: str, ctx: dict, steps: int, args) -> dict:
    if name in ("ref", "ref-per-image"):
        return run_reference(ctx["ref"], ctx["ref_prior"], ctx["problem"], steps, args, per_image=name == "ref-per-image")
    if name in ("ours", "ours-fewer"):
        return run_ours(ctx["prior"], ctx["problem"], steps, args)
    if name == "ours-bf16":
        return run_ours(ctx["prior_bf16"], ctx["problem"], steps, args)
    if name == "predict":
        return run_predict(ctx["folder"], steps, ctx["threads"], args)
    raise ValueError(f"unknown contestant {name!r}; allowed: {CONTESTANTS}")


def scores(res: dict, problem: dict) -> dict:
    """PSNR per image (dB) of the estimate (and the reference's ``x0_pred``); drops the tensors."""
    out = {k: v for k, v in res.items() if not isinstance(v, torch.Tensor)}
    x = problem["x"]
    if "psnr_by_name" in out:
        by_name = out.pop("psnr_by_name")
        out["psnr"] = [by_name[n] for n in problem["names"]]
    else:
        out["psnr"] = psnr(res["estimate"], x).tolist()
    if "x0_pred" in res:
        out["psnr_x0_pred"] = psnr(res["x0_pred"], x).tolist()
    return out


def steps_of(name: str, args) -> int:
    return args.fewer if name == "ours-fewer" else args.steps


#: contestants timed by short interleaved solves (ours-fewer costs what ours costs per iterate;
#: predict is a whole command, timed by its full run only).
TIMED = ("ref", "ref-per-image", "ours", "ours-bf16")


def timing(ctx: dict, args) -> dict:
    """``--timing-rounds`` rounds of ``--timing-steps``-iterate solves, the contestants in turn
    (ref, ours, ref, ours, ...): seconds per iterate (wall, CPU), and each contestant's ratio to
    ``ref`` taken within each round, then the median (so that the machine's load, which drifts
    over minutes, cancels)."""
    names = [n for n in args.contestants if n in TIMED]
    per: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n in names}
    for r in range(args.timing_rounds):
        for name in names:
            res = run_one(name, ctx, args.timing_steps, args)
            per[name]["wall"].append(res["wall_s"] / args.timing_steps)
            per[name]["cpu"].append(res["cpu_s"] / args.timing_steps)
        print(f"threads {torch.get_num_threads()} timing round {r + 1}/{args.timing_rounds}: "
              + ", ".join(f"{n} {per[n]['wall'][-1]:.3f} s/it" for n in names), file=sys.stderr, flush=True)
    out = {}
    base = "ref" if "ref" in names else ("ref-per-image" if "ref-per-image" in names else None)
    for name, d in per.items():
        row = {"wall_s_per_iterate": statistics.median(d["wall"]), "cpu_s_per_iterate": statistics.median(d["cpu"]),
               "wall_s_per_iterate_rounds": d["wall"]}
        if base:
            row["speed vs ref (wall)"] = statistics.median(b / a for a, b in zip(d["wall"], per[base]["wall"]))
            row["speed vs ref (cpu)"] = statistics.median(b / a for a, b in zip(d["cpu"], per[base]["cpu"]))
        out[name] = row
    return out


def full_runs(ctx: dict, args, threads: int, with_solves: bool) -> dict:
    """One whole solve of each contestant (PSNR; the whole-solve time as a second figure);
    ``with_solves`` False: only ``predict`` (its time depends on the threads)."""
    out = {}
    for name in args.contestants:
        if not with_solves and name != "predict":
            continue
        res = scores(run_one(name, ctx, steps_of(name, args), args), ctx["problem"])
        res["psnr_mean"] = statistics.mean(res["psnr"])
        if "psnr_x0_pred" in res:
            res["psnr_x0_pred_mean"] = statistics.mean(res["psnr_x0_pred"])
        out[name] = res
        print(f"threads {torch.get_num_threads()} full {name}: {res['wall_s']:.1f} s wall, {res['cpu_s']:.1f} s CPU, "
              f"PSNR {res['psnr_mean']:.3f} dB", file=sys.stderr, flush=True)
    return out


def reference_prior(network: str):
    """The network as the reference runs it: the same weights in the default memory format with
    the math attention, and (``trainable``, its ``main.py``: ``build_model`` then ``model.eval()``,
    nothing frozen) parameters that require grad, so its forward records the network's graph;
    ``frozen``: our frozen prior, which flatters the reference."""
    from lightning_redd.priors.embedded import EmbeddedPrior

    prior = EmbeddedPrior(channels_last=False, attention="math").eval()
    if network == "trainable":
        prior.network.requires_grad_(True)
    elif network != "frozen":
        raise ValueError(f"unknown reference network {network!r}; allowed: trainable, frozen")
    return prior


def measure(args) -> dict:
    from lightning_redd.priors.embedded import EmbeddedPrior
    from reference_shim import Reference

    folder = bench_problem.image_folder(args.images)
    x, names = bench_problem.load_images(folder)
    ctx = {"ref": Reference(args.reference), "prior": EmbeddedPrior(), "prior_bf16": EmbeddedPrior(cpu_bf16="on"),
           "ref_prior": reference_prior(args.reference_network),
           "problem": bench_problem.box_problem(x, names), "folder": folder}
    default_threads = torch.get_num_threads()
    out = {"reference_path": str(ctx["ref"].path), "reference_commit": ctx["ref"].commit, "images": names, "by_threads": {}}
    for i, threads in enumerate(args.threads):
        torch.set_num_threads(threads or default_threads)
        ctx["threads"] = threads
        for name in args.contestants:
            if name in TIMED:  # untimed warm-up: first-call costs
                run_one(name, ctx, args.warmup_steps, args)
        row = {"timing": timing(ctx, args) if args.timing_rounds else {},
               "full": full_runs(ctx, args, threads, with_solves=i == 0 or args.psnr_every_thread_count)}
        out["by_threads"][str(torch.get_num_threads())] = derive(row, args, len(names))
    torch.set_num_threads(default_threads)
    return out


def derive(row: dict, args, images: int) -> dict:
    """Images per second at each contestant's own iterate count, from the timed seconds per
    iterate (ours-fewer: ours's per-iterate time), and their ratio to ref's."""
    timing, full = row["timing"], row["full"]
    rates = {}
    for name in args.contestants:
        source = "ours" if name == "ours-fewer" else name
        if source in timing:
            rates[name] = images / (steps_of(name, args) * timing[source]["wall_s_per_iterate"])
    base = rates.get("ref") or rates.get("ref-per-image")
    row["images_per_s"] = rates
    if base:
        row["images_per_s vs ref"] = {n: r / base for n, r in rates.items()}
    ref_psnr = (full.get("ref") or full.get("ref-per-image") or {}).get("psnr_mean")
    if ref_psnr is not None:
        row["psnr vs ref"] = {n: f["psnr_mean"] - ref_psnr for n, f in full.items()}
    return row


def markdown(res: dict, args) -> str:
    commit = f" {res['reference_commit'][:7]}" if res.get("reference_commit") else ""
    lines = [f"RED-diff vs the reference (NVlabs/RED-diff{commit}): box inpainting, 6 held-out 64 px images (batch 6), "
             f"embedded prior, lr {args.lr}, lambda {args.lam}, {args.steps} iterates (ours-fewer {args.fewer}), noise "
             f"{args.noise}; {res['device']}.", "",
             "| threads | contestant | iterates | s/iterate wall (CPU) | speed vs ref, wall (CPU) | img/s | img/s vs ref "
             "| PSNR dB | PSNR - ref | whole solve wall s (CPU s) |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for threads, row in res["by_threads"].items():
        for name in args.contestants:
            t = row["timing"].get("ours" if name == "ours-fewer" else name, {})
            f = row["full"].get(name, {})
            per_it = f"{t['wall_s_per_iterate']:.3f} ({t['cpu_s_per_iterate']:.3f})" if t else ""
            speed = f"{t['speed vs ref (wall)']:.2f} ({t['speed vs ref (cpu)']:.2f})" if "speed vs ref (wall)" in t else ""
            psnr_txt = (f"{f['psnr_mean']:.3f}" + (f" (x0_pred {f['psnr_x0_pred_mean']:.3f})" if "psnr_x0_pred_mean" in f
                                                   else "")) if f else ""
            dpsnr = row.get("psnr vs ref", {}).get(name)
            whole = f"{f['wall_s']:.1f} ({f['cpu_s']:.1f})" if f else ""
            ips, ratio = row["images_per_s"].get(name), row.get("images_per_s vs ref", {}).get(name)
            lines.append(f"| {threads} | {name} | {steps_of(name, args)} | {per_it} | {speed} | "
                         f"{'' if ips is None else f'{ips:.4f}'} | {'' if ratio is None else f'{ratio:.2f}'} | {psnr_txt} | "
                         f"{'' if dpsnr is None else f'{dpsnr:+.3f}'} | {whole} |")
    lines += ["", f"s/iterate: median over {args.timing_rounds} rounds of {args.timing_steps}-iterate solves of the batch of 6, "
              "the contestants in turn within each round (init included); speed vs ref: ref's time / this one's, per round, "
              "then the median; img/s = 6 / (iterates * s/iterate) (ours-fewer: with ours's s/iterate); PSNR: mean over "
              "the 6 images of one whole solve (the reference: its mu after the last Adam step; in brackets the x0_pred "
              "it returns); predict: the whole command (start-up, data checks, metrics, PNGs), its own PSNR from "
              "metrics.csv (of the saved 8-bit PNG)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    from bench import device_name

    res = measure(args)
    res.update(device=device_name(torch.device("cpu")), args=vars(args), torch=torch.__version__)
    text = markdown(res, args)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(text)
    return res


if __name__ == "__main__":
    main()
