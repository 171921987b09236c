"""What our RED-diff gains on a CPU from the switches that exist already, and what each does to
the result, on ``vs_reference.py``'s problem (box inpainting of six held-out 64 px photographs,
the embedded prior, ``bench_problem``); plus PSNR against the number of iterates.

    python benchmarks/cpu_switches.py --json switches.json --markdown switches.md
    python benchmarks/cpu_switches.py --variants base channels_last compile --steps 100 --rounds 3
    python benchmarks/cpu_switches.py --variants base --sweep 50 100 200      # PSNR vs iterates only

Variants (``--variants``; every one runs with one torch thread unless it says otherwise):

* ``base``: the CPU defaults (fp32, ``EmbeddedPrior()``: attention ``auto`` = SDPA for this network
  on the CPU, channels-first, not compiled; ``RedDiff`` noise ``host``, Adam ``foreach``);
* ``channels_last``: ``EmbeddedPrior(channels_last=True)``;
* ``attention_math``: ``EmbeddedPrior(attention="math")`` (the explicit product);
* ``threads``: ``base`` with torch's default thread count;
* ``channels_last_threads``: both;
* ``compile``: ``EmbeddedPrior(compile=True)`` (inductor); the first call compiles, and its time is
  reported as ``compile_s`` and added to one solve in ``solve_with_compile_s``;
* ``bf16``: ``prior.autocast_dtype = torch.bfloat16`` (what ``trainer.precision: bf16-mixed`` sets).

Three measurements: (1) one denoiser forward at batch 6, the variants in turn,
``--forward-repeats`` times (the median, and the median of the per-repeat ratios to ``base``),
with the largest ``|eps|`` difference from ``base``; (2) the solve's speed: ``--rounds`` rounds of
``--timing-steps``-iterate solves, the variants in turn, seconds per iterate (wall, CPU) and the
ratio to ``base`` per round, then the median (on a shared machine the load drifts over minutes:
short interleaved units cancel it); and its result: one whole ``--steps``-iterate solve per
variant, mean PSNR, the largest difference of the restored images from ``base``'s and whether
they are bit-identical; a variant whose forward is more than ``--slow-factor`` times ``base``'s
is not solved (recorded as skipped; ``--solve-slow`` solves it anyway); (3) ``base`` at each
``--sweep`` iterate count: PSNR and time, for "fewer iterates at equal PSNR".
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's lightning_redd, installed or not
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import bench_problem  # noqa: E402
from lightning_redd.metrics.image import psnr  # noqa: E402

#: variant -> (EmbeddedPrior keyword arguments, autocast dtype, default threads?)
VARIANTS: dict[str, tuple[dict, torch.dtype | None, bool]] = {
    "base": ({}, None, False),
    "channels_last": ({"channels_last": True}, None, False),
    "attention_math": ({"attention": "math"}, None, False),
    "threads": ({}, None, True),
    "channels_last_threads": ({"channels_last": True}, None, True),
    "compile": ({"compile": True}, None, False),
    "bf16": ({}, torch.bfloat16, False),
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--steps", type=int, default=100, help="iterates of each variant's solve")
    p.add_argument("--rounds", type=int, default=5, help="rounds of short interleaved solves for the speed")
    p.add_argument("--timing-steps", type=int, default=10, help="iterates of each timed solve")
    p.add_argument("--forward-repeats", type=int, default=5)
    p.add_argument("--sweep", type=int, nargs="*", default=[50, 100, 200], help="iterate counts of base's PSNR sweep")
    p.add_argument("--slow-factor", type=float, default=4.0, help="skip solving variants whose forward is this much slower")
    p.add_argument("--solve-slow", action="store_true", help="solve slow variants anyway")
    p.add_argument("--no-solve", action="store_true", help="forwards only (and the sweep)")
    p.add_argument("--images", default=bench_problem.DEFAULT_IMAGES, help="folder for the six PNGs (written once)")
    p.add_argument("--json")
    p.add_argument("--markdown")
    args = p.parse_args(argv)
    if "base" not in args.variants:
        args.variants.insert(0, "base")  # every comparison is to base
    if args.steps < 1 or args.rounds < 1 or args.timing_steps < 1 or args.forward_repeats < 1 or any(s < 1 for s in args.sweep):
        p.error("need --steps, --rounds, --forward-repeats and --sweep counts >= 1")
    return args


class Variant:
    """A prior built with one switch, and the thread count it runs with."""

    def __init__(self, name: str, default_threads: int) -> None:
        from lightning_redd.priors.embedded import EmbeddedPrior

        kwargs, dtype, threads = VARIANTS[name]
        self.name, self.threads = name, default_threads if threads else 1
        self.prior = EmbeddedPrior(**kwargs)
        self.prior.autocast_dtype = dtype
        self.first_call_s: float | None = None

    def __enter__(self) -> "Variant":
        self._saved = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        return self

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self._saved)


def forwards(variants: list[Variant], problem: dict, args) -> dict:
    """Median forward time per variant at batch 6, interleaved; eps difference from base."""
    x_t = torch.randn(problem["x"].shape, generator=torch.Generator().manual_seed(3))
    t = torch.full((x_t.shape[0],), 500, dtype=torch.long)
    out = {v.name: {"wall_s": [], "cpu_s": []} for v in variants}
    eps = {}
    for v in variants:  # first calls: compile, oneDNN primitives
        with v, torch.no_grad(), bench_problem.Timer() as tm:
            eps[v.name] = v.prior.eps(x_t, t)
        v.first_call_s = tm.wall
        out[v.name]["first_call_s"] = tm.wall
    for i in range(args.forward_repeats):
        for v in variants:
            if i and out[v.name]["cpu_s"][0] > 10 * out["base"]["cpu_s"][0]:
                continue  # a variant 10x slower than base: one timed call is enough
            with v, torch.no_grad(), bench_problem.Timer() as tm:
                v.prior.eps(x_t, t)
            out[v.name]["wall_s"].append(tm.wall)
            out[v.name]["cpu_s"].append(tm.cpu)
    for v in variants:
        o = out[v.name]
        o.update(wall_median_s=statistics.median(o["wall_s"]), cpu_median_s=statistics.median(o["cpu_s"]),
                 max_abs_eps_diff=float((eps[v.name] - eps["base"]).abs().max()))
    base = out["base"]
    for o in out.values():
        o["wall / base"] = statistics.median(a / b for a, b in zip(o["wall_s"], base["wall_s"]))
        o["cpu / base"] = statistics.median(a / b for a, b in zip(o["cpu_s"], base["cpu_s"]))
    return out


def solve(v: Variant, problem: dict, steps: int) -> tuple[dict, torch.Tensor]:
    from lightning_redd.solvers.red_diff import RedDiff

    solver = RedDiff(num_steps=steps, **bench_problem.SOLVER)
    with v, bench_problem.Timer() as tm:
        est = solver.estimate(solver.run(problem["y"], problem["op"], v.prior, bench_problem.solver_generators(problem)))
    scores = psnr(est, problem["x"])
    return {"wall_s": tm.wall, "cpu_s": tm.cpu, "psnr": scores.tolist(), "psnr_mean": float(scores.mean())}, est


def solves(variants: list[Variant], problem: dict, fwd: dict, args) -> dict:
    """Speed: ``--rounds`` rounds of ``--timing-steps``-iterate solves, the variants in turn, each
    one's time over base's taken within the round, then the median (the load of a shared machine
    drifts over minutes; short interleaved units cancel it). Result: one whole ``--steps`` solve
    per variant (PSNR, difference from base's restored images)."""
    out: dict[str, dict] = {}
    run = []
    for v in variants:
        if fwd[v.name]["cpu / base"] > args.slow_factor and not args.solve_slow:
            out[v.name] = {"skipped": f"forward {fwd[v.name]['cpu / base']:.1f}x base's CPU time (> --slow-factor "
                                      f"{args.slow_factor}); --solve-slow solves it"}
        else:
            run.append(v)
            out[v.name] = {"wall_rounds": [], "cpu_rounds": []}
    for v in run:  # untimed: Adam's and the solver's first-call costs
        solve(v, problem, 1)
    for r in range(args.rounds):
        for v in run:
            res, _ = solve(v, problem, args.timing_steps)
            out[v.name]["wall_rounds"].append(res["wall_s"] / args.timing_steps)
            out[v.name]["cpu_rounds"].append(res["cpu_s"] / args.timing_steps)
        print(f"timing round {r + 1}/{args.rounds}: " + ", ".join(f"{v.name} {out[v.name]['wall_rounds'][-1]:.3f} s/it"
                                                                for v in run), file=sys.stderr, flush=True)
    estimates = {}
    for v in run:
        res, estimates[v.name] = solve(v, problem, args.steps)
        out[v.name].update(whole_solve=res, psnr_mean=res["psnr_mean"], psnr=res["psnr"])
        print(f"solve {v.name}: {res['wall_s']:.1f} s wall, PSNR {res['psnr_mean']:.4f}", file=sys.stderr, flush=True)
    base = out["base"]
    for v in run:
        o = out[v.name]
        o.update(wall_s_per_iterate=statistics.median(o["wall_rounds"]), cpu_s_per_iterate=statistics.median(o["cpu_rounds"]),
                 **{"wall / base": statistics.median(a / b for a, b in zip(o["wall_rounds"], base["wall_rounds"])),
                    "cpu / base": statistics.median(a / b for a, b in zip(o["cpu_rounds"], base["cpu_rounds"]))},
                 max_abs_diff_vs_base=float((estimates[v.name] - estimates["base"]).abs().max()),
                 bit_identical_to_base=bool(torch.equal(estimates[v.name], estimates["base"])),
                 psnr_mean_minus_base=o["psnr_mean"] - base["psnr_mean"])
        if v.name == "compile":
            o["compile_s"] = v.first_call_s
            o["solve_with_compile_s"] = v.first_call_s + args.steps * o["wall_s_per_iterate"]
    return out


def sweep(base: Variant, problem: dict, counts: list[int]) -> dict:
    out = {}
    for steps in counts:
        res, _ = solve(base, problem, steps)
        out[str(steps)] = res
        print(f"sweep base {steps} iterates: {res['wall_s']:.2f} s, PSNR {res['psnr_mean']:.4f}", file=sys.stderr, flush=True)
    return out


def markdown(res: dict, args) -> str:
    lines = [f"CPU switches of our RED-diff: box inpainting, 6 held-out 64 px images, embedded prior, batch 6; "
             f"{res['device']}; speed: median of {args.rounds} rounds of {args.timing_steps}-iterate solves, the variants "
             f"in turn, ratio to base per round; result: one {args.steps}-iterate solve.", "",
             "| variant | threads | forward CPU s (x base) | max abs eps diff | s/iterate wall (x base) | s/iterate CPU (x base) "
             "| PSNR dB | PSNR - base | max abs diff vs base | bit-identical |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, f in res["forward"].items():
        s = res["solve"].get(name, {})
        solve_txt = (f"{s['wall_s_per_iterate']:.3f} ({s['wall / base']:.2f}) | {s['cpu_s_per_iterate']:.3f} "
                     f"({s['cpu / base']:.2f}) | "
                     f"{s['psnr_mean']:.3f} | {s['psnr_mean_minus_base']:+.4f} | {s['max_abs_diff_vs_base']:.2e} | "
                     f"{'yes' if s['bit_identical_to_base'] else 'no'}") if "wall_s_per_iterate" in s else \
            f"{s.get('skipped', 'not solved')} | | | | | "
        lines.append(f"| {name} | {res['threads'][name]} | {f['cpu_median_s']:.3f} ({f['cpu / base']:.2f}) | "
                     f"{f['max_abs_eps_diff']:.2e} | {solve_txt} |")
    comp = res["solve"].get("compile", {})
    if "compile_s" in comp:
        lines += ["", f"compile: first call {comp['compile_s']:.1f} s; one solve with it {comp['solve_with_compile_s']:.1f} s "
                      f"against base's {args.steps * res['solve']['base']['wall_s_per_iterate']:.1f} s."]
    if res["sweep"]:
        lines += ["", "| base iterates | wall s | CPU s | PSNR dB |", "|---:|---:|---:|---:|"]
        lines += [f"| {k} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['psnr_mean']:.3f} |" for k, r in res["sweep"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    from bench import device_name

    default_threads = torch.get_num_threads()
    folder = bench_problem.image_folder(args.images)
    x, names = bench_problem.load_images(folder)
    problem = bench_problem.box_problem(x, names)
    t0 = time.perf_counter()
    variants = [Variant(n, default_threads) for n in args.variants]
    res = {"device": device_name(torch.device("cpu")), "torch": torch.__version__, "args": vars(args), "images": names,
           "threads": {v.name: v.threads for v in variants}, "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    res["forward"] = forwards(variants, problem, args)
    res["solve"] = {} if args.no_solve else solves(variants, problem, res["forward"], args)
    res["sweep"] = sweep(variants[0], problem, args.sweep) if args.sweep else {}
    res["total_s"] = time.perf_counter() - t0
    text = markdown(res, args)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(text)
    return res


if __name__ == "__main__":
    main()
