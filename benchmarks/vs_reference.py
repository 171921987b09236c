"""Our RED-diff against the paper's reference code (NVlabs/RED-diff) on the same problem, in one
process: iterates per second, images per second, their ratio, and PSNR at equal iterates.

    python benchmarks/vs_reference.py --reference /tmp/RED-diff --json vs_ref.json --markdown vs_ref.md
    python benchmarks/vs_reference.py --reference /tmp/RED-diff --contestants ref ours ours-fewer predict \\
        --steps 100 --fewer 50 --rounds 2 --threads 1 0

The reference is a local checkout (``git clone https://github.com/NVlabs/RED-diff``), never a
dependency: its RED-diff loop (``REDDIFF.sample``) is imported from ``--reference`` at run time
with the shims of ``reference_shim`` (no hydra, no CUDA; our prior behind the network call it
makes, our bound operator behind its degradation), so both loops solve the identical ``y``.

Problem (``bench_problem``): centre-box inpainting of six held-out 64 px photographs (the four
demo images and two held-out test crops) with the shipped embedded prior, RED-diff at
``configs/task/inpainting_box.yaml``'s lr 0.25 and lambda 0.01, the reference's defaults
otherwise (linear weighting, sigma_x0 0, Adam betas (0.9, 0.99)).

Contestants (``--contestants``, run in this order every round, so that they interleave:
ref, ours, ref, ours, ...):

* ``ref``: the reference loop on the six images as one batch (its ``main.py`` batches images;
  its loss means run over the whole batch);
* ``ref-per-image``: the reference loop once per image (batch 1: its loss is then exactly ours);
* ``ours``: ``lightning_redd.solvers.red_diff.RedDiff`` (CPU defaults) on the batch of six;
* ``ours-fewer``: the same with ``--fewer`` iterates (images/s at the PSNR it reaches);
* ``predict``: the whole ``lightning-redd predict`` command over a folder of the six images,
  start-up, data checks, metrics and PNG writing included, in a child process (its thread count
  through ``OMP_NUM_THREADS``).

``--threads 1 0`` repeats everything with one torch thread and with torch's default (``0``).
Times: wall clock of a whole solve (init + iterates) and the process's CPU time (the child's
for ``predict``); it/s = iterates / wall s of the batch, img/s = images / wall s; the medians
over rounds. PSNR (dB, in [-1, 1], clipped) of each estimate against the ground truth: for the
reference, both what its ``main.py`` scores (``x0_pred``, taken before the last Adam step) and
its ``mu`` (after it, which is what our estimate is).

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

CONTESTANTS = ("ref", "ref-per-image", "ours", "ours-fewer", "predict")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", required=True, help="path of a checkout of github.com/NVlabs/RED-diff")
    p.add_argument("--contestants", nargs="+", choices=CONTESTANTS, default=["ref", "ours"])
    p.add_argument("--steps", type=int, default=100, help="iterates of every contestant but ours-fewer (a divisor of 1000)")
    p.add_argument("--fewer", type=int, default=50, help="iterates of ours-fewer")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 0], help="torch threads; 0: torch's default")
    p.add_argument("--warmup-steps", type=int, default=2, help="an untimed solve of this many iterates per contestant first")
    p.add_argument("--noise", choices=("shared", "independent"), default="shared")
    p.add_argument("--lr", type=float, default=bench_problem.SOLVER["lr"])
    p.add_argument("--lam", type=float, default=bench_problem.SOLVER["lam"])
    p.add_argument("--images", default=bench_problem.DEFAULT_IMAGES, help="folder for the six PNGs (written once)")
    p.add_argument("--json", help="write every figure to this file")
    p.add_argument("--markdown", help="write the summary table to this file")
    args = p.parse_args(argv)
    for n in (args.steps, args.warmup_steps) + ((args.fewer,) if "ours-fewer" in args.contestants else ()):
        if n < 1 or 1000 % n:
            p.error(f"iterate counts must divide 1000 (the reference's grid range(0, 1000, 1000 // S)), got {n}")
    if args.rounds < 1 or any(t < 0 for t in args.threads):
        p.error("need --rounds >= 1 and --threads >= 0")
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
        return run_reference(ctx["ref"], ctx["prior"], ctx["problem"], steps, args, per_image=name == "ref-per-image")
    if name in ("ours", "ours-fewer"):
        return run_ours(ctx["prior"], ctx["problem"], steps, args)
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


def measure(args) -> dict:
    from lightning_redd.priors.embedded import EmbeddedPrior
    from reference_shim import Reference

    folder = bench_problem.image_folder(args.images)
    x, names = bench_problem.load_images(folder)
    ctx = {"ref": Reference(args.reference), "prior": EmbeddedPrior(), "problem": bench_problem.box_problem(x, names),
           "folder": folder}
    default_threads = torch.get_num_threads()
    out = {"reference_path": str(ctx["ref"].path), "reference_commit": ctx["ref"].commit, "images": names, "by_threads": {}}
    for threads in args.threads:
        torch.set_num_threads(threads or default_threads)
        ctx["threads"] = threads
        runs: dict[str, list[dict]] = {c: [] for c in args.contestants}
        for name in args.contestants:
            if name != "predict":  # the child process warms itself up
                run_one(name, ctx, args.warmup_steps, args)
        for r in range(args.rounds):
            for name in args.contestants:
                res = scores(run_one(name, ctx, steps_of(name, args), args), ctx["problem"])
                runs[name].append(res)
                print(f"threads {torch.get_num_threads()} round {r + 1}/{args.rounds} {name}: {res['wall_s']:.2f} s wall, "
                      f"{res['cpu_s']:.2f} s CPU, PSNR {statistics.mean(res['psnr']):.3f} dB", file=sys.stderr, flush=True)
        out["by_threads"][str(torch.get_num_threads())] = summarise(runs, len(names))
    torch.set_num_threads(default_threads)
    return out


def summarise(runs: dict[str, list[dict]], images: int) -> dict:
    rows = {}
    for name, rs in runs.items():
        wall = statistics.median(r["wall_s"] for r in rs)
        row = {"iterates": rs[0]["iterates"], "wall_s": wall, "cpu_s": statistics.median(r["cpu_s"] for r in rs),
               "wall_s_rounds": [r["wall_s"] for r in rs], "iterates_per_s": rs[0]["iterates"] / wall,
               "images_per_s": images / wall, "psnr": rs[0]["psnr"], "psnr_mean": statistics.mean(rs[0]["psnr"]),
               "psnr_same_every_round": all(r["psnr"] == rs[0]["psnr"] for r in rs)}
        if "psnr_x0_pred" in rs[0]:
            row["psnr_x0_pred"], row["psnr_x0_pred_mean"] = rs[0]["psnr_x0_pred"], statistics.mean(rs[0]["psnr_x0_pred"])
        rows[name] = row
    base = rows.get("ref") or rows.get("ref-per-image")
    for row in rows.values():
        if base:
            row["iterates_per_s / ref"] = row["iterates_per_s"] / base["iterates_per_s"]
            row["images_per_s / ref"] = row["images_per_s"] / base["images_per_s"]
            row["cpu: images_per_s / ref"] = base["cpu_s"] / row["cpu_s"]
            row["cpu: iterates_per_s / ref"] = row["iterates"] / row["cpu_s"] / (base["iterates"] / base["cpu_s"])
            row["psnr_mean - ref"] = row["psnr_mean"] - base["psnr_mean"]
    return rows


def markdown(res: dict, args) -> str:
    lines = [f"RED-diff vs the reference (NVlabs/RED-diff{' ' + res['reference_commit'][:7] if res['reference_commit'] else ''}): "
             f"box inpainting, 6 held-out 64 px images, embedded prior, lr {args.lr}, lambda {args.lam}, "
             f"noise {args.noise}; {res['device']}; median of {args.rounds} round(s).", "",
             "| threads | contestant | iterates | wall s | CPU s | it/s | img/s | it/s vs ref (wall; CPU) | img/s vs ref (wall; CPU) "
             "| PSNR dB | PSNR - ref |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for threads, rows in res["by_threads"].items():
        for name, r in rows.items():
            psnr_txt = f"{r['psnr_mean']:.3f}" + (f" (x0_pred {r['psnr_x0_pred_mean']:.3f})" if "psnr_x0_pred_mean" in r else "")
            lines.append(f"| {threads} | {name} | {r['iterates']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | "
                         f"{r['iterates_per_s']:.3f} | {r['images_per_s']:.4f} | {_pair(r, 'iterates_per_s / ref')} | "
                         f"{_pair(r, 'images_per_s / ref')} | {psnr_txt} | {_fmt(r, 'psnr_mean - ref', '+.3f')} |")
    lines += ["", "it/s: iterates of the whole batch per wall second (a solve's init + iterates); img/s: 6 / wall s of a "
              "solve (predict: of the whole command, start-up included); vs ref: the ratio to the first reference row "
              "from the wall time, then from the CPU time (steadier on a shared machine); PSNR: mean over the 6 images of the final "
              "estimate (the reference: its mu after the last Adam step; in brackets its returned x0_pred)."]
    return "\n".join(lines) + "\n"


def _pair(row: dict, key: str) -> str:
    return f"{row[key]:.2f}; {row['cpu: ' + key]:.2f}" if key in row else ""


def _fmt(row: dict, key: str, spec: str = ".2f") -> str:
    return format(row[key], spec) if key in row else ""


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
