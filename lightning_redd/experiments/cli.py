"""Compare solvers on the same images, operator parameters and seeds: one table, one figure.

    python -m lightning_redd.experiments table --out outputs/cmp --config configs/demo.yaml \\
        --solver red_diff=configs/solver/red_diff.yaml --solver dps=configs/solver/dps.yaml \\
        --set red_diff:model.solver.init_args.num_steps=100 --set data.limit=2
    python -m lightning_redd.experiments table ... --grid red_diff:model.solver.init_args.lr=0.25,0.5 --emit-best DIR
    python -m lightning_redd.experiments table ... --solvers 'configs/ablations/solver/weighting_*.yaml'
    python -m lightning_redd.experiments iterates ... --steps 25 50 100 200

Every solver runs through the real ``lightning-redd predict`` (:func:`lightning_redd.lit.cli.cli`)
with the same base configs, so its measurements, masks and noise are exactly what ``predict``
draws from ``(data.seed, image index)``; each run gets its own folder ``OUT/<label>/`` (the
usual layout: ``restored/``, ``measured/``, ``init/``, ``records/``). By default each run is a
fresh subprocess, so that the peak memory is the solver's own.

Columns (``table.md`` / ``table.csv``): mean PSNR and SSIM (from the records the CLI writes),
LPIPS (AlexNet, on the 8-bit restored PNGs; only when its weight file is found),
the PSNR of the solver's starting estimate, seconds per image (median over batches of the
predict batch's wall time divided by its images: measuring ``y`` plus the whole solve; model
loading, data setup and writing are outside it and reported as ``load s``), denoiser
evaluations per image (``nfe`` of the records), and peak memory while solving: on CPU the
process's resident-set high-water mark (``VmHWM``, reset when predict starts, so model loading
does not count) and its rise above the resident size at that start per image; on CUDA
``torch.cuda.max_memory_allocated`` (reset likewise).

``--grid LABEL:KEY=V1,V2`` runs the product of the listed values as separate rows; with
``--emit-best DIR`` the best row (highest mean PSNR) of each solver is written as a config
fragment ``DIR/<label>.yaml``. ``--solvers GLOB`` adds every matching fragment, labelled by its file
stem less the pattern's prefix before ``*``. ``--resume`` reuses a run whose folder holds the same
arguments, the same config contents (less the keys the arguments set) and a record for every image
it solved; anything else runs again. ``iterates`` runs each solver at several ``num_steps`` and
writes ``iterates.csv`` and a PSNR-versus-iterates plot ``iterates.png`` (needs matplotlib:
``pip install "lightning_redd[plots]"``).

The jobs live in their own files: :mod:`~lightning_redd.experiments.spec` (the rows),
:mod:`~lightning_redd.experiments.runner` (running them), :mod:`~lightning_redd.experiments.clock`
(the Lightning callback), :mod:`~lightning_redd.experiments.scoring` (the rows' numbers) and
:mod:`~lightning_redd.experiments.report` (the files).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from lightning_redd import pictures
from lightning_redd.experiments import report, runner, scoring
from lightning_redd.experiments.spec import Spec, build_specs

COMMAND = "python -m lightning_redd.experiments"
STEPS_KEY = "model.solver.init_args.num_steps"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder (one sub-folder per solver run)")
    p.add_argument("--config", action="append", default=[], help="base config(s), merged left to right, before each solver")
    p.add_argument("--solver", action="append", default=[], help="LABEL=FRAGMENT.yaml (repeatable)")
    p.add_argument("--solvers", action="append", default=[], metavar="GLOB",
                   help="every matching fragment, labelled by its stem less the pattern's prefix before '*'")
    p.add_argument("--set", action="append", default=[], help="[LABEL:]KEY=VALUE override (all solvers without LABEL)")
    p.add_argument("--grid", action="append", default=[], help="[LABEL:]KEY=V1,V2,... one row per combination")
    p.add_argument("--lpips-weights", help=f"AlexNet weights ({scoring.LPIPS_FILE}); default $TORCH_HOME/hub/checkpoints/")
    p.add_argument("--isolate", choices=runner.ISOLATIONS, default="process",
                   help="process: a fresh subprocess per run (own peak memory); none: in this process")
    p.add_argument("--threads", type=int, help="torch.set_num_threads in each run")
    p.add_argument("--resume", action="store_true",
                   help="reuse runs whose folder holds the same arguments, config contents and a record per image")
    p.add_argument("--title", default="Solver comparison")


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The arguments of ``table`` or ``iterates`` (argparse exits with a usage message on an error)."""
    p = argparse.ArgumentParser(prog="lightning-redd compare", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("table", help="one row per solver (and grid value): table, CSV and figure")
    _common(t)
    t.add_argument("--emit-best", help="write each solver's best grid row as DIR/<solver>.yaml")
    t.add_argument("--figure-images", type=int, default=4, help="rows of the figure (first N images by name)")
    t.add_argument("--figure-names", nargs="+", help="these images in the figure instead")
    t.add_argument("--figure-scale", type=int, default=2, help="pixel zoom of the figure's tiles")
    it = sub.add_parser("iterates", help="PSNR versus number of iterates: CSV, table and plot")
    _common(it)
    it.add_argument("--steps", type=int, nargs="+", default=[25, 50, 100, 200, 500, 1000])
    return p.parse_args(argv)


def run_all(args: argparse.Namespace, specs: list[Spec]) -> tuple[list[dict], list[dict], str | None, dict]:
    """Run (or reuse) every row and score it: ``(runs, rows, lpips note or None, ground truth)``."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scorer, note = scoring.lpips_scorer(args.lpips_weights)  # before any run: a wrong --lpips-weights fails at once
    if note and args.lpips_weights:
        raise SystemExit(f"compare: --lpips-weights {args.lpips_weights}: {note}")
    if note:
        print(f"compare: LPIPS left out: {note}", file=sys.stderr)
    runs = [runner.run_spec(s, args.config, out, isolate=args.isolate, threads=args.threads, resume=args.resume)
            for s in specs]
    truth = scoring.ground_truth(runs[0]["root"])
    return runs, [scoring.summarise(r, scorer, truth) for r in runs], note, truth


def cmd_table(args: argparse.Namespace, command: str) -> int:
    """``table``: ``table.md``, ``table.csv``, ``figure.png`` (and tuned fragments with ``--emit-best``)."""
    out = Path(args.out)
    runs, rows, note, truth = run_all(args, build_specs(args))
    md = report.header(args, runs, command, note) + report.write_table(rows, out)
    names = args.figure_names or sorted(runs[0]["records"])[: args.figure_images]
    report.write_figure(runs, truth, out / "figure.png", names, scale=args.figure_scale)
    md += "\n![measured, solvers, ground truth](figure.png)\n"
    if args.emit_best:
        paths = report.emit_best(rows, runs, Path(args.emit_best), command)
        md += "\nTuned fragments: " + ", ".join(str(p) for p in paths) + "\n"
    (out / "table.md").write_text(md)
    print(md)
    return 0


def cmd_iterates(args: argparse.Namespace, command: str) -> int:
    """``iterates``: every solver at each ``--steps``; ``iterates.csv``, ``iterates.png``,
    ``iterates_table.csv`` and ``iterates.md``."""
    pictures.pyplot("the iterates plot")  # matplotlib missing: fail before any run
    out = Path(args.out)
    specs = [replace(s, label=f"{s.label}@{n}", sets=s.sets + ((STEPS_KEY, str(n)),))
             for s in build_specs(args) for n in args.steps]
    runs, rows, note, _ = run_all(args, specs)
    report.write_iterates(rows, runs, out, STEPS_KEY, lpips=note is None)
    md = report.header(args, runs, command, note) + report.write_table(rows, out, stem="iterates_table")
    md += "\n![PSNR versus iterates](iterates.png)\n"
    (out / "iterates.md").write_text(md)
    print(md)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``lightning-redd compare`` (and ``python -m lightning_redd.experiments``);
    ``argv`` without the program name (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["child"]:
        return runner.child_main(argv[1:])
    args = parse(argv)
    command = f"{COMMAND} " + shlex.join(argv)
    return cmd_table(args, command) if args.command == "table" else cmd_iterates(args, command)
