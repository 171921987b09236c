"""``lightning-redd batch-size``: the largest batch of a run's config that fits the device.

    lightning-redd batch-size [--max N] [--steps K] [--margin M] --config ... [run options]

Lightning's own batch-size search (:meth:`lightning.pytorch.tuner.Tuner.scale_batch_size`,
``method="fit"``, ``mode="binsearch"``) on the run the options describe: the same prior,
operator, solver, precision and device, so a trial batch costs what one solver iterate of that
run costs (one ``fit`` training step is one iterate; ``predict`` would solve every trial batch
whole). A trial that runs out of memory (CUDA, or the CPU allocator) counts as too large.

The trials restore ``--max`` generated images (smooth random colours at the run's
``data.image_size``) with ``--steps`` iterates each in a temporary folder, so the run's own
``data.root`` and output folder are neither read nor written. On a CPU, where memory rarely
runs out before the search cap, the answer is usually ``--max`` itself.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import warnings
from pathlib import Path

#: options of the run that this command sets itself
OWN = ("--data.root", "--data.batch_size", "--trainer.default_root_dir", "--model.solver.init_args.num_steps")


def write_images(folder: Path, count: int, size: int, seed: int = 0) -> None:
    """``count`` smooth random RGB PNGs of ``size`` px (an 8x8 colour grid, bilinearly enlarged)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        coarse = Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8))
        coarse.resize((size, size), Image.BILINEAR).save(folder / f"trial{i:05d}.png")


def record_trials(module, data) -> dict[int, bool]:
    """Wrap ``module.training_step`` (on the instance) to record each trial's batch size (the one
    the search set on ``data``; a folder's last batch may be smaller) and whether it ran (False:
    it ran out of memory); returns the record, filled as trials run."""
    from lightning.pytorch.utilities.memory import is_oom_error

    trials: dict[int, bool] = {}
    step = module.training_step

    def recorded(batch, *args, **kwargs):
        size = data.batch_size
        try:
            out = step(batch, *args, **kwargs)
        except RuntimeError as err:
            if is_oom_error(err):
                trials[size] = False
            raise
        trials.setdefault(size, True)
        return out

    module.training_step = recorded
    return trials


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="lightning-redd batch-size", description="The largest data.batch_size of a run that fits its device, found by Lightning's batch-size "
                                             "search on generated images in a temporary folder (one fit step per iterate).",
                                 epilog="Every other option is the run's (as for fit/predict), e.g. --config demo "
                                        "--trainer.accelerator cuda --trainer.precision bf16-mixed.")
    ap.add_argument("--max", type=int, default=64, help="largest batch tried (default 64)")
    ap.add_argument("--steps", type=int, default=2, help="solver iterates per trial batch (default 2)")
    ap.add_argument("--margin", type=float, default=0.05,
                    help="fraction taken off the largest batch that ran when a larger one ran out of memory, for headroom "
                         "(Lightning's default 0.05)")
    args, run_args = ap.parse_known_args(argv)
    problems = [f"--max must be >= 1, got {args.max}"] * (args.max < 1) + [f"--steps must be >= 1, got {args.steps}"] * (args.steps < 1)
    problems += [f"--margin must be in [0, 1), got {args.margin}"] * (not 0 <= args.margin < 1)
    problems += [f"{o} is set by this command (it restores generated images in a temporary folder); leave it out"
                 for o in OWN if any(a == o or a.startswith(o + "=") for a in run_args)]
    if problems:
        ap.error("; ".join(problems))

    from lightning.pytorch.tuner import Tuner

    from lightning_redd.lit.cli import cli

    with tempfile.TemporaryDirectory(prefix="lightning_redd_batch_size_") as tmp:
        images, out = Path(tmp) / "images", Path(tmp) / "out"
        images.mkdir()
        # Lightning's search never tries max_val itself, never steps down from a batch at least as large as the
        # dataset, and runs its first trial with the data's batch size before init_val takes effect: hence
        # max_val = --max + 1 with --max + 1 images, and a first size (the data's too) whose doublings reach --max
        # exactly (its odd factor); after a failure it bisects down to 1
        first = args.max // (args.max & -args.max)
        with warnings.catch_warnings():  # the run's options come as args, not from sys.argv: no warning for that
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            app = cli([*run_args, "--data.root", str(images), "--data.batch_size", str(first), "--trainer.default_root_dir", str(out),
                       "--model.solver.init_args.num_steps", str(args.steps)], run=False)
        write_images(images, args.max + 1, app.datamodule.image_size)
        trials = record_trials(app.model, app.datamodule)
        lightning_log = logging.getLogger("lightning.pytorch")
        level = lightning_log.level
        lightning_log.setLevel(logging.WARNING)  # one line per trial is Lightning's INFO
        try:
            with warnings.catch_warnings():  # the trials' fit is not the user's: no advice about its logging or optimizer
                warnings.filterwarnings("ignore", module="lightning")
                Tuner(app.trainer).scale_batch_size(
                    app.model, datamodule=app.datamodule, method="fit", mode="binsearch", steps_per_trial=args.steps,
                    init_val=first, max_val=args.max + 1, margin=0.0)
        finally:
            lightning_log.setLevel(level)
    device = f"{app.trainer.strategy.root_device}, precision {app.trainer.precision}"
    tried = ", ".join(f"{b} {'ran' if ok else 'out of memory'}" for b, ok in trials.items())
    ran = max((b for b, ok in trials.items() if ok), default=0)
    if ran < 1:
        print(f"lightning-redd: error: even a batch of 1 ran out of memory on {device} ({tried})", file=sys.stderr)
        return 2
    # headroom only where a trial ran out of memory; reaching --max says nothing about the limit
    use = ran if ran >= args.max else max(1, int(ran * (1 - args.margin)))
    limit = f"the search cap --max {args.max}, no trial ran out of memory" if ran >= args.max else \
        f"a batch of {ran} ran, larger ones ran out of memory"
    print(f"lightning-redd: on {device}: {limit} ({args.steps} iterates per trial; batches tried: {tried})")
    print(f"  use: --data.batch_size {use}" + (f"  ({args.margin:.0%} under {ran}, for headroom)" if use != ran else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
