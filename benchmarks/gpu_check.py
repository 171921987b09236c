"""One command for one GPU: the CUDA tests, bench.py's timings of the ADM-256 and FFHQ-256
architectures over batch sizes, precisions and compile, DPS vs RED-diff, and a timed
``lightning-redd predict``; one JSON and one Markdown table of images per hour.

    python benchmarks/gpu_check.py --out "$OUT"              # on the GPU machine, < 8 minutes
    python benchmarks/gpu_check.py --dry-run --out /tmp/gc    # anywhere: every section on the CPU, tiny network, seconds

Sections, in order, each under its own time guard (``--guard SECTION=SECONDS``; what does not
fit is skipped and recorded as such, and ``--budget`` caps the sum), the JSON rewritten after
each so that a run stopped from outside still leaves what it measured:

1. ``env``: device, torch/CUDA versions, TF32 flags, the packages found and missing;
2. ``tests``: the tests that skip without CUDA (the test files that test ``cuda.is_available``,
   their tests named ``*cuda*``; ``-m cuda`` too once a ``cuda`` marker is registered), in a
   child pytest;
3. ``bench``: for each architecture (random weights, zero-initialised layers re-drawn:
   ``bench_cases.build_prior``, no checkpoint), eager then compiled (``torch.compile`` of the
   network in place, the first call's time reported as the compile), for each precision (fp32,
   bf16 autocast around the denoiser) and batch size: the median time of one denoiser forward
   and of one RED-diff iterate (``bench.py``'s ``forward`` and ``iterate`` modes, CUDA events),
   the peak memory of each (``max_memory_allocated`` above what was allocated at its start);
   a batch that runs out of memory ends that sweep;
4. ``dps``: one DPS step against one RED-diff iterate on ADM-256 at the best batch and precision
   of section 3 (eager), time and memory;
5. ``predict``: ``lightning-redd predict`` with ``configs/prior/adm_imagenet256.yaml`` +
   ``configs/imagenet256/sr4.yaml`` (random weights, ``allow_random_init``), 100 iterates,
   32 generated 256 px images, at the best batch and precision; wall time of the whole command
   (in this process: start-up imports not included).

Images per hour (the Markdown table states it): ``img/h = batch * 3600 / (1000 * t_iterate)``
with ``t_iterate`` the measured median seconds of one RED-diff iterate at that batch, i.e. a
1000-iterate solve extrapolated from its iterate; for ``predict``: ``images * 3600 / (wall *
1000 / iterates)`` (set-up and writing scaled with the iterates: a lower bound).

Needs, besides torch, torchvision, lightning, timm, safetensors, scikit-image and pytest (all
on the H200 image): jsonargparse with its ``signatures`` extra (jsonargparse, docstring-parser,
typeshed-client; PyYAML and typing-extensions are there) for the ``predict`` section only
(the CLI). Carry them as wheels (pure Python): here, in the repository's root,

    bash benchmarks/gpu_wheels.sh        # writes .whl/ (ignored by git) with the three wheels

then on the GPU machine (the device tool: ``carry: [".whl"]``)

    bash benchmarks/gpu_check.sh         # installs .whl/* into /tmp/site, runs this with --out $OUT

(``gpu_check.sh`` does ``python3 -m pip install --no-index --no-deps --target /tmp/site .whl/*.whl``,
``PYTHONPATH=/tmp/site:$PWD``: no ``pip install -e .`` needed, the checkout is imported from its root.)
diffusers and torch-fidelity are not needed (the tests that use them skip).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's lightning_redd, installed or not
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

SECTIONS = ("env", "tests", "bench", "dps", "predict")
#: seconds per section; they sum to 470 s (< 8 minutes) with start-up.
GUARDS = {"env": 15, "tests": 75, "bench": 240, "dps": 45, "predict": 95}
ITERATES = 1000  # the extrapolated solve
#: the predict section's tiny-network overrides (bench_cases.ARCHS["tiny"]) for --dry-run.
TINY_PRIOR_ARGS = {"image_size": "32", "num_channels": "32", "num_res_blocks": "1", "channel_mult": "1,2",
                   "attention_resolutions": "16", "num_head_channels": "16"}
NEEDED = ("lightning", "jsonargparse", "docstring_parser", "typeshed_client", "safetensors", "timm", "yaml", "PIL",
          "skimage", "pytest")


class SectionTimeout(BaseException):
    """A section ran past its guard (BaseException: library code catching Exception lets it through)."""


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"), help="folder for gpu_check.json / .md")
    p.add_argument("--dry-run", action="store_true", help="every section on the CPU with a tiny network, in seconds")
    p.add_argument("--device", default="cuda")
    p.add_argument("--archs", nargs="+", default=["adm256", "ffhq256"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 4, 8, 16, 32])
    p.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"),
                   help="default: fp32 bf16 (--dry-run: fp32, since bf16 convolutions crawl on CPUs without bf16 units)")
    p.add_argument("--compile", nargs="+", choices=("off", "on"), default=["off", "on"])
    p.add_argument("--repeats", type=int, default=3, help="timed units per mode")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--predict-images", type=int, default=32)
    p.add_argument("--predict-steps", type=int, default=100)
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--guard", nargs="*", default=[], metavar="SECTION=SECONDS", help=f"defaults: {GUARDS}")
    p.add_argument("--budget", type=float, default=470.0, help="seconds for all sections together")
    args = p.parse_args(argv)
    args.guards = dict(GUARDS)
    for item in args.guard:
        name, _, secs = item.partition("=")
        if name not in GUARDS or not secs:
            p.error(f"--guard takes SECTION=SECONDS with SECTION in {SECTIONS}, got {item!r}")
        args.guards[name] = float(secs)
    if args.dry_run:
        args.device, args.archs, args.batches, args.repeats, args.warmup = "cpu", ["tiny"], [1, 2], 1, 1
        args.predict_images, args.predict_steps = 2, 2
        args.precisions = args.precisions or ["fp32"]
    args.precisions = args.precisions or ["fp32", "bf16"]
    return args


# ---------------------------------------------------------------------- guards
@contextlib.contextmanager
def guard(seconds: float):
    """Raise :class:`SectionTimeout` in this thread after ``seconds`` (SIGALRM; main thread only)."""
    def _raise(signum, frame):
        raise SectionTimeout(f"ran past its {seconds:.0f} s guard")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Deadline:
    """Seconds left in a section, and whether a unit of a given cost still fits."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def fits(self, cost: float) -> bool:
        return cost < self.left()


# ---------------------------------------------------------------------- env
def section_env(args, dl: Deadline) -> dict:
    import importlib.util

    dev = torch.device(args.device)
    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "device": _device_name(dev), "dry_run": args.dry_run,
           "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
           "float32_matmul_precision": torch.get_float32_matmul_precision(),
           "missing": [m for m in NEEDED if importlib.util.find_spec(m) is None]}
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        out.update(capability=f"{props.major}.{props.minor}", memory_gib=props.total_memory / 2**30,
                   multiprocessors=props.multi_processor_count)
    return out


def _device_name(dev: torch.device) -> str:
    from bench import device_name

    return device_name(dev)


# ---------------------------------------------------------------------- tests
def cuda_test_files() -> list[str]:
    files = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        text = path.read_text(errors="replace")
        if "cuda.is_available" in text or "mark.cuda" in text:
            files.append(str(path.relative_to(ROOT)))
    return files


def cuda_marker_registered() -> bool:
    """Whether pyproject.toml or a conftest registers a ``cuda`` marker (then ``-m cuda`` selects)."""
    texts = [(ROOT / "pyproject.toml").read_text(errors="replace")]
    texts += [p.read_text(errors="replace") for p in (ROOT / "tests").rglob("conftest.py")]
    return any('"cuda:' in t or "'cuda:" in t or '"markers", "cuda' in t for t in texts)


def section_tests(args, dl: Deadline) -> dict:
    files = cuda_test_files()
    if not files:
        return {"status": "skipped", "why": "no test file tests cuda.is_available"}
    xml = Path(args.out) / "cuda_tests.xml"
    select = ["-m", "cuda"] if cuda_marker_registered() else ["-k", "cuda"]
    # `-o addopts=` drops the project's `-n 2` (pytest-xdist, which the GPU machine may lack)
    cmd = [sys.executable, "-m", "pytest", "-o", "addopts=", "-q", "-rs", "-p", "no:cacheprovider", f"--junitxml={xml}",
           *files, *select]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if args.dry_run:
        env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(dl.left(), 1), env=env)
    out = {"command": " ".join(cmd[1:]), "returncode": proc.returncode, "tail": proc.stdout[-1500:]}
    if xml.is_file():
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
        out["counts"] = counts
    out["status"] = "ok" if proc.returncode in (0, 5) else "failed"
    return out


# ---------------------------------------------------------------------- bench
def time_mode(mode: str, prior, problem: dict, device: torch.device, args) -> dict:
    """``warmup + repeats`` units of a ``bench.py`` mode; median seconds, first unit, peak MiB."""
    from bench_cases import Clock, bare_call, run_marked

    call = bare_call(mode, prior, problem, device, steps=args.warmup + args.repeats + 1)
    if isinstance(call, str):
        return {"skipped": call}
    clock = Clock(device)
    run_marked(call, clock, args.warmup, args.repeats)
    times = clock.intervals()
    out = {"s": statistics.median(times[args.warmup:]), "first_s": times[0], "units_s": times}
    if clock.peaks_mib:
        out["peak_mib"] = max(clock.peaks_mib[args.warmup:] or clock.peaks_mib)
    return out


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def bench_row(prior, arch: str, precision: str, compiled: bool, batch: int, device, args) -> dict:
    from bench_cases import make_problem

    problem = make_problem(prior, batch, device)
    row = {"arch": arch, "precision": precision, "compile": compiled, "batch": batch}
    for mode in ("forward", "iterate"):
        row[mode] = time_mode(mode, prior, problem, device, args)
    it = row["iterate"].get("s")
    if it:
        row["iterate/forward"] = it / row["forward"]["s"]
        row["img_per_h"] = batch * 3600 / (ITERATES * it)
    return row


def sweep_batches(prior, arch, precision, compiled, device, args, dl: Deadline, rows: list) -> None:
    """One (arch, precision, compile) over the batch sizes; stops at OOM or when the next won't fit."""
    from bench_cases import PRECISIONS

    prior.autocast_dtype = PRECISIONS[precision]
    last = None  # (batch, estimated seconds of a row per image) of the last row
    batches = args.batches[:1] if compiled and args.dry_run else args.batches  # a dry run traces one shape
    for batch in batches:
        if last is not None and not dl.fits(last * batch):
            rows.append({"arch": arch, "precision": precision, "compile": compiled, "batch": batch,
                         "skipped": f"time guard: {dl.left():.0f} s left, about {last * batch:.0f} s needed"})
            continue
        try:
            rows.append(bench_row(prior, arch, precision, compiled, batch, device, args))
        except (RuntimeError, torch.cuda.OutOfMemoryError) as err:
            if not is_oom(err):
                raise
            rows.append({"arch": arch, "precision": precision, "compile": compiled, "batch": batch, "skipped": "out of memory"})
            _free(device)
            break
        r = rows[-1]
        # next row: its units (2 modes, warm-up included) scaled by batch, plus a recompile when compiled
        units = 2 * (args.warmup + args.repeats + 1) * r["iterate"]["s"] + (r["forward"]["first_s"] if compiled else 0)
        last = 1.2 * units / batch
        print(f"bench {arch} {precision} compile={compiled} b{batch}: iterate {r['iterate']['s'] * 1e3:.1f} ms",
              file=sys.stderr, flush=True)


def _free(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def section_bench(args, dl: Deadline, res: dict) -> dict:
    from lightning_redd.priors import speed

    device = torch.device(args.device)
    rows: list[dict] = []
    res["rows"] = rows  # visible to the JSON even if the guard fires
    saved = dict(speed.COMPILE_OPTIONS)
    if args.dry_run:
        speed.COMPILE_OPTIONS["backend"] = "eager"  # dynamo's tracing alone: seconds, not inductor's minutes
    try:
        return _bench_plan(args, dl, rows, device)
    finally:
        speed.COMPILE_OPTIONS.clear()
        speed.COMPILE_OPTIONS.update(saved)


def _bench_plan(args, dl: Deadline, rows: list, device: torch.device) -> dict:
    from bench_cases import Switches, build_prior

    from lightning_redd.priors import speed

    plan = [(arch, c) for c in args.compile for arch in args.archs]  # eager for every arch first, then compiled
    for arch, comp in plan:
        if not dl.fits(5):
            rows.append({"arch": arch, "compile": comp == "on", "skipped": f"time guard: {dl.left():.0f} s left"})
            continue
        prior = build_prior(arch, Switches(), device, "fp32")
        if comp == "on":
            prior.net.compile(**speed.COMPILE_OPTIONS)
        for precision in (["bf16", "fp32"] if comp == "on" else args.precisions):
            if precision in args.precisions:
                sweep_batches(prior, arch, precision, comp == "on", device, args, dl, rows)
        del prior
        _free(device)
    return {"compile_options": dict(speed.COMPILE_OPTIONS) or "torch's default (inductor)"}


def best(rows: list[dict], arch: str, compiled: bool | None = False) -> dict | None:
    """The measured row of ``arch`` with the most images per hour (eager by default)."""
    ok = [r for r in rows if r.get("arch") == arch and "img_per_h" in r and (compiled is None or r["compile"] == compiled)]
    return max(ok, key=lambda r: r["img_per_h"]) if ok else None


# ---------------------------------------------------------------------- dps
def section_dps(args, dl: Deadline, res: dict, bench_rows: list[dict]) -> dict:
    from bench_cases import PRECISIONS, Switches, build_prior, make_problem

    arch = args.archs[0]
    top = best(bench_rows, arch)
    batch, precision = (top["batch"], top["precision"]) if top else (args.batches[0], args.precisions[0])
    device = torch.device(args.device)
    prior = build_prior(arch, Switches(), device, precision)
    prior.autocast_dtype = PRECISIONS[precision]
    while True:
        try:
            problem = make_problem(prior, batch, device)
            out = {"arch": arch, "batch": batch, "precision": precision, "from_bench": top is not None}
            for mode in ("iterate", "dps"):
                out[mode] = time_mode(mode, prior, problem, device, args)
            break
        except (RuntimeError, torch.cuda.OutOfMemoryError) as err:
            if not is_oom(err) or batch == 1:
                raise
            _free(device)
            batch //= 2  # DPS keeps the graph through the network: it may not fit where RED-diff did
    if "s" in out["dps"]:
        out["dps/iterate time"] = out["dps"]["s"] / out["iterate"]["s"]
        if out["dps"].get("peak_mib") and out["iterate"].get("peak_mib"):
            out["dps/iterate memory"] = out["dps"]["peak_mib"] / out["iterate"]["peak_mib"]
        out["dps img_per_h"] = batch * 3600 / (ITERATES * out["dps"]["s"])
    out["red-diff img_per_h"] = batch * 3600 / (ITERATES * out["iterate"]["s"])
    return out


# ---------------------------------------------------------------------- predict
def predict_argv(args, folder: Path, out: Path, batch: int, precision: str) -> list[str]:
    argv = ["predict", "--config", str(ROOT / "configs/prior/adm_imagenet256.yaml"),
            "--config", str(ROOT / "configs/imagenet256/sr4.yaml"),
            "--model.prior.init_args.allow_random_init", "true", "--data.root", str(folder),
            "--data.batch_size", str(batch), "--model.solver.init_args.num_steps", str(args.predict_steps),
            "--trainer.precision", {"fp32": "32-true", "bf16": "bf16-mixed"}[precision],
            "--trainer.accelerator", "cuda" if args.device.startswith("cuda") else "cpu",
            "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(out)]
    if args.dry_run:
        for k, v in TINY_PRIOR_ARGS.items():
            argv += [f"--model.prior.init_args.{k}", v]
        argv += ["--data.image_size", TINY_PRIOR_ARGS["image_size"]]
    return argv


def section_predict(args, dl: Deadline, res: dict, bench_rows: list[dict]) -> dict:
    import shutil
    import tempfile

    from bench_lightning import make_images

    from lightning_redd.lit.cli import main as cli_main

    top = best(bench_rows, args.archs[0])
    batch = min(top["batch"] if top else 4, args.predict_images)
    precision = top["precision"] if top else "bf16"
    size = int(TINY_PRIOR_ARGS["image_size"]) if args.dry_run else 256
    # a fresh folder of this run's own (a fixed name would delete whatever a user kept there)
    work = Path(tempfile.mkdtemp(prefix="predict_work_", dir=args.out))
    folder = make_images(work / "in", args.predict_images, size)
    argv = predict_argv(args, folder, work / "out", batch, precision)
    res.update(batch=batch, precision=precision, images=args.predict_images, iterates=args.predict_steps,
               argv=" ".join(argv))
    _free(torch.device(args.device))
    t0 = time.perf_counter()
    try:
        cli_main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    wall = time.perf_counter() - t0
    written = len(list((work / "out" / "restored").glob("*.png")))
    shutil.rmtree(work, ignore_errors=True)
    out = {"exit_code": code, "wall_s": wall, "restored": written,
           "img_per_h": args.predict_images * 3600 / (wall * ITERATES / args.predict_steps)}
    out["status"] = "ok" if code == 0 and written == args.predict_images else "failed"
    return out


# ---------------------------------------------------------------------- report
def markdown(report: dict) -> str:
    env = report["sections"].get("env", {})
    lines = [f"# GPU check: {env.get('device', '?')}, torch {env.get('torch', '?')}{' (DRY RUN, CPU)' if env.get('dry_run') else ''}",
             "", "img/h = batch * 3600 / (1000 * t_iterate): a 1000-iterate RED-diff solve extrapolated from the "
             "measured median time t_iterate of one iterate at that batch (CUDA events; random weights).", "",
             "| arch | precision | compile | batch | forward ms | iterate ms | iterate/forward | iterate peak MiB | "
             "first call s | img/h (1000 it) |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["sections"].get("bench", {}).get("rows", []):
        head = f"| {r['arch']} | {r.get('precision', '')} | {'on' if r.get('compile') else 'off'} | {r.get('batch', '')} |"
        if "skipped" in r:
            lines.append(f"{head} skipped: {r['skipped']} | | | | | |")
            continue
        f, it = r["forward"], r["iterate"]
        lines.append(f"{head} {f['s'] * 1e3:.1f} | {it['s'] * 1e3:.1f} | {r['iterate/forward']:.3f} | "
                     f"{_num(it.get('peak_mib'), '.0f')} | {f['first_s']:.1f} | {r['img_per_h']:.1f} |")
    lines += _sections_md(report)
    return "\n".join(lines) + "\n"


def _num(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _sections_md(report: dict) -> list[str]:
    s = report["sections"]
    lines = ["", "| section | status | seconds | result |", "|---|---|---:|---|"]
    for name in SECTIONS:
        if name not in s:
            continue
        sec = s[name]
        lines.append(f"| {name} | {sec.get('status', '?')} | {sec.get('seconds', 0):.1f} | {_summary(name, sec)} |")
    return lines


def _summary(name: str, sec: dict) -> str:
    if "why" in sec:
        return sec["why"]
    if name == "tests":
        return f"{sec.get('counts', {})} ({sec.get('command', '')})"
    if name == "dps" and "iterate" in sec:
        return (f"{sec['arch']} b{sec['batch']} {sec['precision']}: DPS step {sec['dps'].get('s', float('nan')) * 1e3:.1f} ms, "
                f"RED-diff iterate {sec['iterate']['s'] * 1e3:.1f} ms, time x{sec.get('dps/iterate time', float('nan')):.2f}, "
                f"memory x{sec.get('dps/iterate memory', float('nan')):.2f}; img/h (1000 it) DPS "
                f"{sec.get('dps img_per_h', float('nan')):.1f}, RED-diff {sec['red-diff img_per_h']:.1f}")
    if name == "predict" and "wall_s" in sec:
        return (f"{sec['images']} images, {sec['iterates']} iterates, batch {sec['batch']}, {sec['precision']}: "
                f"{sec['wall_s']:.1f} s, exit {sec['exit_code']}, {sec['restored']} restored; "
                f"img/h = {sec['images']} * 3600 / (wall * 1000 / {sec['iterates']}) = {sec['img_per_h']:.1f}")
    if name == "env":
        return f"missing: {sec.get('missing')}; tf32 {sec.get('tf32')}"
    if name == "bench":
        return f"{len([r for r in sec.get('rows', []) if 'img_per_h' in r])} rows measured"
    return ""


def write(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "gpu_check.md").write_text(markdown(report))


def run_section(name: str, args, report: dict, started: float) -> None:
    left = args.budget - (time.monotonic() - started)
    seconds = min(args.guards[name], left)
    sec: dict = {"guard_s": args.guards[name]}
    report["sections"][name] = sec
    if seconds < 1:
        sec.update(status="skipped", why=f"budget of {args.budget:.0f} s spent")
        return
    t0 = time.monotonic()
    dl = Deadline(seconds)
    rows = report["sections"].get("bench", {}).get("rows", [])
    try:
        with guard(seconds + 5):  # the loops stop themselves at the deadline; the alarm catches a stuck call
            calls = {"env": lambda: section_env(args, dl), "tests": lambda: section_tests(args, dl),
                     "bench": lambda: section_bench(args, dl, sec), "dps": lambda: section_dps(args, dl, sec, rows),
                     "predict": lambda: section_predict(args, dl, sec, rows)}
            sec.update(calls[name]())
        sec.setdefault("status", "ok")
    except (SectionTimeout, subprocess.TimeoutExpired) as err:
        sec.update(status="timeout", why=str(err))
    except Exception as err:  # record and go on: one broken section must not cost the others
        sec.update(status="failed", why=f"{type(err).__name__}: {err}"[:2000])
    sec["seconds"] = time.monotonic() - t0
    print(f"section {name}: {sec['status']} in {sec['seconds']:.1f} s", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report = {"args": {k: v for k, v in vars(args).items()}, "sections": {}}
    threads = torch.get_num_threads()
    if args.dry_run:
        torch.set_num_threads(1)  # a shared small CPU: several OpenMP threads wait on each other for tiny kernels
    try:
        for name in SECTIONS:
            if name in args.sections:
                run_section(name, args, report, started)
                report["total_s"] = time.monotonic() - started
                write(report, out)
    finally:
        torch.set_num_threads(threads)
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
