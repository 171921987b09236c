"""The benchmark of lightning_redd: cost of one denoiser call, one RED-diff iterate (bare and
through Lightning's fit and predict) and one DPS step, on one device.

    python benchmarks/bench.py --arch embedded64 --batch 4 --device cpu --json emb_b4.json
    python benchmarks/bench.py --arch adm256 --batch 4 --precision bf16 --device cuda --repeats 10
    python benchmarks/bench.py --arch ffhq256 --batch 1 --ab attention     # one speed switch, off vs on

Modes (``--modes``, default all but ``graph``):

* ``forward``: one ``prior.eps`` under ``torch.no_grad`` (the yardstick);
* ``iterate``: one ``RedDiff.step`` on a bound centre-box inpainting operator (the bare solver);
* ``fit`` / ``predict``: one iterate through a real ``Trainer.fit`` / ``Trainer.predict`` of
  :class:`~lightning_redd.lit.module.RestorationModule` over a folder of generated images
  (method: ``bench_lightning``);
* ``dps``: one ``DPS.step`` (forward and backward through the denoiser), skipped with a
  message when ``lightning_redd.solvers.dps.DPS`` is missing or its API differs;
* ``graph``: a forward that keeps autograd's graph (the reference implementation's defect).

Each mode runs ``warmup + repeats`` units back to back, ``--rounds`` times in turn (forward,
iterate, fit, ... then again), so that the ratios are taken round by round on the same
machine state; the figures are medians (of the units in a round, then of the rounds).
Timing and peak memory: ``bench_cases`` (CUDA events and ``max_memory_allocated``; CPU
``perf_counter`` and the RSS high-water mark in a fresh process per mode, ``bench_memory``).
Reported: time per unit, peak memory per unit above what was resident at its start, the
ratios iterate/forward, fit/iterate, predict/iterate, dps/iterate, and images per hour of a
1000-iterate solve at this batch size. ``--json`` writes all of it with the device's name.
``--ab SWITCH`` instead times the forward with one prior switch off and on (``precision``: fp32,
then bf16), interleaved, and reports the largest difference of ``eps`` between the two. ``--pieces`` instead times the
per-iterate work around the denoiser piece by piece (``bench_pieces``).

Random weights for the ADM architectures (zero-initialised layers re-drawn so every layer
works); ``embedded64`` is the shipped, trained prior. ``tiny`` is for smoke tests.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import replace

from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout's lightning_redd, installed or not

import torch  # noqa: E402

from bench_cases import ARCHS, PRECISIONS, Clock, Switches, bare_call, build_prior, make_problem, run_marked
from bench_lightning import LIGHTNING_MODES, lightning_run
from bench_memory import child_peaks, cpu_peak
from bench_pieces import pieces, report_pieces

MODES = ("forward", "iterate", "fit", "predict", "dps", "graph")
DEFAULT_MODES = ("forward", "iterate", "fit", "predict", "dps")
#: ``--ab`` switches: (reference, candidate) values.
AB = {"attention": ("math", "sdpa"), "channels_last": (False, True), "compile": (False, True), "sync_checks": (True, False),
      "precision": ("fp32", "bf16")}
SOLVE_ITERATES = 1000


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=sorted(ARCHS), default="embedded64")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32", help="bf16: autocast around the denoiser")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:<i>")
    p.add_argument("--repeats", type=int, default=5, help="timed units per mode and round")
    p.add_argument("--warmup", type=int, default=1, help="untimed units before them")
    p.add_argument("--rounds", type=int, default=1, help="times the sequence of modes is repeated")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(DEFAULT_MODES))
    p.add_argument("--memory", choices=("auto", "off"), default="auto", help="off: no peak-memory runs")
    p.add_argument("--mem-repeats", type=int, default=2, help="CPU: measured units per fresh process")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, one per core)")
    p.add_argument("--json", help="write the results to this file")
    p.add_argument("--ab", choices=sorted(AB), help="time the forward with this prior switch (or precision) off, then on")
    p.add_argument("--pieces", action="store_true", help="time the per-iterate work around the denoiser")
    p.add_argument("--attention", choices=("auto", "sdpa", "math"), default="auto")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--sync-checks", action="store_true")
    p.add_argument("--noise", choices=("auto", "host", "device"), default="auto", help="RedDiff(noise=...) of the iterates")
    p.add_argument("--adam", choices=("auto", "for-loop", "foreach", "fused"), default="auto", help="RedDiff(adam=...)")
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.batch < 1 or args.repeats < 1 or args.warmup < 0 or args.rounds < 1 or args.mem_repeats < 1:
        p.error("need --batch, --repeats, --rounds, --mem-repeats >= 1 and --warmup >= 0")
    if args.warmup + args.repeats + 1 > SOLVE_ITERATES:
        p.error(f"--warmup + --repeats must stay below {SOLVE_ITERATES} (the solvers' time grid)")
    return args


def switches_of(args: argparse.Namespace) -> Switches:
    return Switches(attention=args.attention, channels_last=args.channels_last, compile=args.compile,
                    sync_checks=args.sync_checks)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU {model}, {torch.get_num_threads()} threads of {os.cpu_count()} cores"


def run_units(mode: str, prior, problem: dict, args, device: torch.device, clock: Clock, repeats: int) -> dict:
    """Run one mode's units on ``clock``; returns extra figures, or ``{"skipped": why}``."""
    if mode in LIGHTNING_MODES:
        return lightning_run(mode, prior, args.batch, args.precision, device, clock, args.warmup, repeats,
                             solver_kw=solver_kw(args))
    call = bare_call(mode, prior, problem, device, steps=args.warmup + repeats + 1, solver_kw=solver_kw(args))
    if isinstance(call, str):
        return {"skipped": call}
    run_marked(call, clock, args.warmup, repeats)
    return {}


def solver_kw(args: argparse.Namespace) -> dict:
    return {"noise": args.noise, "adam": args.adam}


def child_argv(args: argparse.Namespace, mode: str, switches: Switches) -> list[str]:
    argv = ["--child", mode, "--arch", args.arch, "--batch", str(args.batch), "--precision", args.precision,
            "--device", "cpu", "--warmup", str(args.warmup), "--repeats", str(args.repeats),
            "--mem-repeats", str(args.mem_repeats), "--attention", switches.attention,
            "--threads", str(torch.get_num_threads()), "--noise", args.noise, "--adam", args.adam]
    flags = {"--channels-last": switches.channels_last, "--compile": switches.compile, "--sync-checks": switches.sync_checks}
    return argv + [f for f, on in flags.items() if on]


def child_main(args: argparse.Namespace) -> None:
    device = torch.device("cpu")
    prior = build_prior(args.arch, switches_of(args), device, args.precision)
    problem = make_problem(prior, args.batch, device)

    def units(clock: Clock) -> int:
        extra = run_units(args.child, prior, problem, args, device, clock, args.mem_repeats)
        if "skipped" in extra:
            raise SystemExit(extra["skipped"])
        return args.warmup

    child_peaks(units)


def cpu_memory(args: argparse.Namespace, mode: str, switches: Switches) -> float | None:
    res = cpu_peak(os.path.abspath(__file__), child_argv(args, mode, switches))
    if "error" in res:
        print(f"  memory of {mode}: {res['error']}", file=sys.stderr)
        return None
    return statistics.median(res["peaks_mib"])


def measure(args: argparse.Namespace, device: torch.device) -> dict:
    """Every mode, ``rounds`` times in turn; per mode the per-round medians and the extras."""
    prior = build_prior(args.arch, switches_of(args), device, args.precision)
    problem = make_problem(prior, args.batch, device)
    rounds: list[dict] = []
    modes: dict[str, dict] = {m: {} for m in args.modes}
    for r in range(args.rounds):
        row = {}
        for mode in args.modes:
            if "skipped" in modes[mode]:
                continue
            clock = Clock(device)
            extra = run_units(mode, prior, problem, args, device, clock, args.repeats)
            if "skipped" in extra:
                modes[mode] = extra
                print(f"  {mode}: skipped: {extra['skipped']}", file=sys.stderr)
                continue
            window = slice(args.warmup, args.warmup + args.repeats)
            times = clock.intervals()[window]
            row[mode] = statistics.median(times)
            modes[mode].setdefault("units_s", []).append(times)
            if device.type == "cpu":
                row[f"{mode} cpu"] = statistics.median(clock.cpu_intervals()[window])
            if "total_s" in extra:
                modes[mode].setdefault("overhead_s", []).append(extra["total_s"] - extra["iterates"] * row[mode])
            if device.type == "cuda" and args.memory != "off":
                modes[mode].setdefault("peaks_mib", []).extend(clock.peaks_mib[args.warmup: args.warmup + args.repeats])
            print(f"  round {r + 1}/{args.rounds} {mode}: {row[mode]:.4f} s", file=sys.stderr, flush=True)
        rounds.append(row)
    del prior, problem
    for mode, info in modes.items():
        if "skipped" in info:
            continue
        info["time_s"] = statistics.median(r[mode] for r in rounds)
        if device.type == "cpu":
            info["cpu_s"] = statistics.median(r[f"{mode} cpu"] for r in rounds)
        if args.memory == "off":
            info["peak_mib"] = None
        elif device.type == "cuda":
            info["peak_mib"] = statistics.median(info.pop("peaks_mib"))
        else:
            info["peak_mib"] = cpu_memory(args, mode, switches_of(args))
    return {"modes": modes, "per_round_s": rounds}


def ratios(result: dict, batch: int) -> tuple[dict, dict]:
    """Time ratios (median over rounds of the per-round ratios), memory ratios, images per hour."""
    rounds, modes = result["per_round_s"], result["modes"]
    pairs = {"iterate/forward": ("iterate", "forward"), "fit/iterate": ("fit", "iterate"),
             "predict/iterate": ("predict", "iterate"), "dps/iterate": ("dps", "iterate"), "graph/forward": ("graph", "forward")}
    out = {}
    for name, (a, b) in pairs.items():
        per_round = [r[a] / r[b] for r in rounds if a in r and b in r]
        if not per_round:
            continue
        out[f"time {name}"] = statistics.median(per_round)
        cpu = [r[f"{a} cpu"] / r[f"{b} cpu"] for r in rounds if f"{a} cpu" in r and f"{b} cpu" in r]
        if cpu:
            out[f"cpu time {name}"] = statistics.median(cpu)
        pa, pb = modes[a].get("peak_mib"), modes[b].get("peak_mib")
        if a in ("iterate", "dps", "graph") and pa is not None and pb:
            out[f"memory {name}"] = pa / pb
    per_hour = {m: batch * 3600 / (SOLVE_ITERATES * modes[m]["time_s"])
                for m in ("iterate", "fit", "predict", "dps") if "time_s" in modes.get(m, {})}
    per_hour.update({f"{m} (cpu time)": batch * 3600 / (SOLVE_ITERATES * modes[m]["cpu_s"])
                     for m in ("iterate", "fit", "predict", "dps") if "cpu_s" in modes.get(m, {})})
    return out, per_hour


def report(res: dict) -> None:
    print(f"{res['arch']}, batch {res['batch']}, {res['precision']}, {res['device']}; torch {res['torch']}")
    print(f"median of {res['repeats']} units after {res['warmup']} warm-up, {res['rounds']} round(s); "
          f"switches {res['switches']}, solver {res['solver']}")
    print(f"{'mode':8} {'s/unit':>9} {'min..max s':>17} {'cpu s/unit':>10} {'peak MiB':>9} {'img/h@1000':>11} "
          f"{'overhead s':>11}")
    for mode, info in res["modes"].items():
        if "skipped" in info:
            print(f"{mode:8} skipped: {info['skipped']}")
            continue
        peak = "-" if info["peak_mib"] is None else f"{info['peak_mib']:.1f}"
        iph = res["images_per_hour"].get(mode)
        over = info.get("overhead_s")
        units = [u for r in info["units_s"] for u in r]
        spread = f"{min(units):.4f}..{max(units):.4f}"
        cpu = f"{info['cpu_s']:.4f}" if "cpu_s" in info else ""
        print(f"{mode:8} {info['time_s']:9.4f} {spread:>17} {cpu:>10} {peak:>9} {'' if iph is None else f'{iph:.3g}':>11} "
              f"{'' if over is None else f'{statistics.median(over):.2f}':>11}")
    for name, value in res["ratios"].items():
        print(f"  {name:24} {value:6.3f}")
    print("s/unit: wall time; cpu s/unit: the process's CPU time (steadier on a shared machine); peak: above "
          "what was resident at the unit's start; overhead: a fit/predict call's wall time minus its iterates")


def run_ab(args: argparse.Namespace, device: torch.device) -> dict:
    """Forward with ``args.ab`` at its reference value, then its candidate, interleaved (ABBA)."""
    ref_val, cand_val = AB[args.ab]
    if args.ab == "precision":
        variants = {"ref": switches_of(args), "cand": switches_of(args)}
        precisions = {"ref": ref_val, "cand": cand_val}
    else:
        variants = {"ref": replace(switches_of(args), **{args.ab: ref_val}),
                    "cand": replace(switches_of(args), **{args.ab: cand_val})}
        precisions = {"ref": args.precision, "cand": args.precision}
    priors = {k: build_prior(args.arch, s, device, precisions[k]) for k, s in variants.items()}
    problem = make_problem(priors["ref"], args.batch, device)
    calls = {k: bare_call("forward", p, problem, device, steps=2) for k, p in priors.items()}
    times: dict[str, list[float]] = {"ref": [], "cand": []}
    cpu_times: dict[str, list[float]] = {"ref": [], "cand": []}
    outputs: dict[str, torch.Tensor] = {}
    for i in range(args.warmup + args.repeats):
        for k in (("ref", "cand") if i % 2 == 0 else ("cand", "ref")):
            clock, cpu0 = Clock(device), time.process_time()
            clock.mark()
            outputs[k] = calls[k]()
            clock.mark()
            times[k].append(clock.intervals()[0])
            cpu_times[k].append(time.process_time() - cpu0)
    diff = float((outputs["ref"] - outputs["cand"]).abs().max())
    res = {"switch": args.ab, "ref": ref_val, "cand": cand_val, "max_abs_diff": diff,
           "first_call_s": {k: v[0] for k, v in times.items()}}
    for k in ("ref", "cand"):
        res[f"{k}_s"] = statistics.median(times[k][args.warmup:])
        res[f"{k}_cpu_s"] = statistics.median(cpu_times[k][args.warmup:])
    res["time cand/ref"] = res["cand_s"] / res["ref_s"]
    res["pairs cand/ref"] = statistics.median(c / r for c, r in zip(times["cand"][args.warmup:], times["ref"][args.warmup:]))
    res["cpu time cand/ref"] = res["cand_cpu_s"] / res["ref_cpu_s"]
    if args.memory != "off" and device.type == "cpu":
        for k in ("ref", "cand"):
            res[f"{k}_peak_mib"] = cpu_memory(argparse.Namespace(**{**vars(args), "precision": precisions[k]}), "forward",
                                              variants[k])
    print(f"{args.arch}, batch {args.batch}, {args.precision}, {device_name(device)}: forward with {args.ab} "
          f"{ref_val} -> {cand_val}")
    print(json.dumps({k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in res.items()}))
    return res


def run_pieces(args: argparse.Namespace, device: torch.device) -> dict:
    prior = build_prior(args.arch, switches_of(args), device, args.precision)
    problem = make_problem(prior, args.batch, device)
    clock = Clock(device)
    run_marked(bare_call("forward", prior, problem, device, steps=2), clock, args.warmup, args.repeats)
    forward_s = statistics.median(clock.intervals()[args.warmup:])
    res = pieces(prior, problem, device, max(args.repeats, 20))
    print(f"{args.arch}, batch {args.batch}, {args.precision}, {device_name(device)}; forward {forward_s:.4f} s")
    report_pieces(res, forward_s)
    return {"forward_s": forward_s, "pieces_s": res}


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        child_main(args)
        return
    device = torch.device(args.device)
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"--device must be cpu, cuda or cuda:<i>, got {args.device!r}")
    common = {"arch": args.arch, "batch": args.batch, "precision": args.precision, "device": device_name(device),
              "torch": torch.__version__, "repeats": args.repeats, "warmup": args.warmup, "rounds": args.rounds,
              "switches": switches_of(args).kwargs(), "solver": solver_kw(args)}
    if args.ab:
        res = {**common, "ab": run_ab(args, device)}
    elif args.pieces:
        res = {**common, **run_pieces(args, device)}
    else:
        res = {**common, **measure(args, device)}
        res["ratios"], res["images_per_hour"] = ratios(res, args.batch)
        report(res)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
