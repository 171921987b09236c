"""The ``lightning-redd`` command: a LightningCLI over :class:`RestorationModule` and
:class:`ImageFolderData`.

One file, over 300 lines: the CLI's hooks run as one sequence (parse, check, lock, record, run,
summary) and :func:`main` maps their errors to exit statuses; the other commands are in
:mod:`lightning_redd.lit.commands`.

    lightning-redd fit --config configs/demo.yaml       # one solver iterate per training step
    lightning-redd predict --config configs/demo.yaml   # the whole solve inside predict_step

Several ``--config`` files merge left to right (e.g. a full config, then a task fragment from
``configs/task/``); any value can be overridden on the command line.

What the CLI adds to Lightning's:

* the output folder is the run's: ``data.output_dir`` follows ``trainer.default_root_dir``,
  logs go to ``<default_root_dir>/logs`` unless a logger is configured, re-running the same
  command resumes (finished images are skipped), and a run with other deciding settings in
  the same folder is refused (:mod:`lightning_redd.runs.config`; ``--overwrite true``
  replaces it);
* several processes (``--trainer.devices N``, ``--trainer.num_nodes M``, ``srun``) use
  :class:`~lightning_redd.lit.strategy.ImageShardingStrategy` (Lightning's DDP names map to it);
* the run owns its folder: every check (inputs, output folder, settings) passes before anything
  is created there; then rank 0 takes the folder's lock for the whole run (a second run in the
  same folder is refused, naming the first one's PID and host), checks the folder again under it
  and only then cleans, deletes (``--overwrite``: the files of the manifest only) or writes;
* errors in the user's inputs print as one message, without a traceback (set
  ``LIGHTNING_REDD_TRACEBACK=1`` to see it); exit status 2 for such errors, 3 when an image
  diverged, 4 when writing into the output folder failed during the run (disk full, quota,
  read-only), 0 when a SLURM requeue stopped the run;
* a ``SIGUSR1`` that arrives while the command starts (importing torch, checking) is recorded
  from the module's first lines (:mod:`lightning_redd.lit.signals`) instead of ending the
  process, and stops the run at its first batch.
"""
from __future__ import annotations

import gc
import os
import sys
import time
import traceback
from pathlib import Path

from lightning_redd.lit import signals

signals.install()  # a SIGUSR1 while torch and Lightning load is recorded (a requeue), not fatal

import torch  # noqa: E402
from jsonargparse import Namespace  # noqa: E402
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

import lightning_redd.operators.registry  # noqa: F401  (every operator: short names and --help for them)
import lightning_redd.priors  # noqa: F401  (every prior)
import lightning_redd.solvers.all  # noqa: F401  (every solver)
from lightning_redd import resources
from lightning_redd.data.folder import FolderData, ImageFolderData
from lightning_redd.data.measured import MeasuredFolderData  # noqa: F401  (short name for --data)
from lightning_redd.runs.folder import LOGS, RunFolder
from lightning_redd.lit import quiet
from lightning_redd.runs import config as run_config
from lightning_redd.runs import lock
from lightning_redd.runs.errors import RunFolderError, StorageError, storage_error
from lightning_redd.lit.module import RestorationModule
from lightning_redd.lit.parser import ReddParser
from lightning_redd.lit.progress import RestorationProgressBar
from lightning_redd.lit.requeue import RequeueOnSignal
from lightning_redd.lit.writer import RestorationWriter
from lightning_redd.metrics.scorer import Scorer
from lightning_redd.lit.strategy import ImageShardingStrategy, sharding_name
from lightning_redd.lit.summary import format_summary

#: Trainer defaults suited to restoration: one pass over the (repeated) batches, no
#: checkpoints of the frozen prior, and autograd available inside predict.
TRAINER_DEFAULTS = {"max_epochs": 1, "enable_checkpointing": False, "inference_mode": False, "num_sanity_val_steps": 0}
LIGHTNING_DDP_CLASS = "lightning.pytorch.strategies.DDPStrategy"


class RunConfigCallback(SaveConfigCallback):
    """Saves Lightning's ``config.yaml`` in the log folder and, on rank 0, the run's record
    (``run_config.yaml``) in the output folder, after every check passed, under the folder's
    lock and before any compute. With ``--overwrite true`` it first deletes the files the
    previous run's manifest lists there (and nothing else)."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        root = Path(trainer.default_root_dir)
        if self.config.get("overwrite"):
            removed = RunFolder(root).remove_run()
            if removed:
                print(f"lightning-redd: --overwrite: removed {removed} file(s) the previous run wrote in {root} "
                      "(those its manifest lists)", file=sys.stderr)
        run_config.write(root, run_config.signature(self.config.as_dict()), self.parser.dump(self.config, skip_none=False))


class LaunchMismatch(ValueError):
    """srun started another number of tasks than the trainer settings ask for."""


def check_slurm_tasks(trainer: Namespace) -> None:
    """Under a SLURM job step, the tasks must equal devices x nodes: otherwise every task would
    run its own single-process run in the same folder, each restoring every image."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    tasks = os.environ.get("SLURM_NTASKS")
    if not tasks or not SLURMEnvironment.detect() or "SLURM_STEP_ID" not in os.environ:
        return
    wanted = _process_count(trainer)
    if wanted != int(tasks):
        raise LaunchMismatch(
            f"srun started {tasks} tasks but the trainer asks for {wanted} process(es) (trainer.devices x trainer.num_nodes); "
            "pass --trainer.devices <tasks per node> --trainer.num_nodes <nodes> after any --config (slurm/*.sbatch do)"
        )


def _process_count(trainer: Namespace) -> int:
    """Processes the trainer settings ask for (devices x nodes)."""
    nodes, devices = int(trainer.get("num_nodes") or 1), trainer.get("devices", "auto")
    if isinstance(devices, (list, tuple)):
        count = len(devices)
    elif str(devices).strip() in ("auto", "-1"):
        count = torch.cuda.device_count() if trainer.get("accelerator") in ("auto", "gpu", "cuda") else 1
    elif "," in str(devices):
        count = len([d for d in str(devices).split(",") if d.strip()])
    else:
        count = int(devices)
    return count * nodes


def _iterates(model: RestorationModule) -> int:
    return model.num_iterates


def _file_params(model: RestorationModule) -> dict:
    return model.operator.file_params()


def _output_shape(model: RestorationModule):
    return model.operator.output_shape


class ReddCLI(LightningCLI):
    """LightningCLI with the run-folder, sharding and logging rules of the module docstring,
    over :class:`RestorationModule` and any :class:`FolderData` (``ImageFolderData`` unless
    ``data.class_path`` names another, e.g. ``MeasuredFolderData``)."""

    def __init__(self, model_class=RestorationModule, datamodule_class=FolderData, **kwargs) -> None:
        kwargs.setdefault("trainer_defaults", TRAINER_DEFAULTS)
        kwargs.setdefault("save_config_callback", RunConfigCallback)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_class", ReddParser)
        super().__init__(model_class, datamodule_class, subclass_mode_data=True, **kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """``fit`` and ``predict`` only: a restoration has no validation or test loop (and each
        subcommand's parser costs ~0.1 s of every start-up to build)."""
        return {k: v for k, v in LightningCLI.subcommands().items() if k in ("fit", "predict")}

    def add_arguments_to_parser(self, parser) -> None:
        """The run's own groups, wired explicitly: ``--metrics.*`` (the :class:`Scorer`) goes to
        the writer, ``--writer.*`` and ``--requeue.*`` become the Trainer's callbacks, and the
        output folder and iterate count reach the data module by links."""
        parser.add_argument("--overwrite", type=bool, default=False,
                            help="delete a previous run's images, records and metrics.csv in the output folder first")
        parser.add_class_arguments(Scorer, "metrics", help="the metrics of metrics.csv and summary.json")
        parser.add_lightning_class_args(RestorationWriter, "writer")
        parser.add_lightning_class_args(RequeueOnSignal, "requeue")
        parser.link_arguments("metrics", "writer.scorer", apply_on="instantiate")
        parser.link_arguments("trainer.default_root_dir", "writer.output_dir")
        parser.link_arguments("trainer.default_root_dir", "data.init_args.output_dir")
        parser.link_arguments("model", "data.init_args.repeats", compute_fn=_iterates, apply_on="instantiate")
        parser.link_arguments("model", "data.init_args.file_params", compute_fn=_file_params, apply_on="instantiate")
        parser.link_arguments("model", "data.init_args.output_shape", compute_fn=_output_shape, apply_on="instantiate")
        parser.set_defaults({"data": {"class_path": f"{ImageFolderData.__module__}.{ImageFolderData.__name__}"}})

    @property
    def writer(self) -> RestorationWriter | None:
        """The run's writer (it holds the end-of-run summary)."""
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        return config.get("writer")

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        trainer = cfg.trainer
        strategy = trainer.get("strategy", "auto")
        if isinstance(strategy, str):
            mapped = sharding_name(strategy) or ("image_sharding" if strategy == "auto" and _process_count(trainer) > 1 else None)
            if mapped:
                trainer.strategy = mapped
        elif isinstance(strategy, Namespace) and strategy.get("class_path") == LIGHTNING_DDP_CLASS:
            strategy.class_path = f"{ImageShardingStrategy.__module__}.{ImageShardingStrategy.__name__}"
        check_slurm_tasks(trainer)
        if self.subcommand in ("fit", "predict"):
            sig = run_config.signature(cfg.as_dict())
            if not trainer.get("default_root_dir"):
                configs = [str(c) for c in (cfg.get("config") or [])]
                trainer.default_root_dir = str(Path("outputs") / run_config.folder_name(sig, configs))
                # the links ran at parse time: the derived folder reaches the data and the writer here
                cfg.data.init_args.output_dir = cfg.writer.output_dir = trainer.default_root_dir
            self._signature, self._overwrite = sig, bool(cfg.get("overwrite"))
            if not cfg.get("overwrite"):
                run_config.check(Path(trainer.default_root_dir), sig)

    def before_fit(self) -> None:
        self.check_inputs("fit")
        self.claim_folder()

    def before_predict(self) -> None:
        self.check_inputs("predict")
        self.claim_folder()

    def check_inputs(self, stage: str) -> None:
        """Every check before the run touches its folder, creating nothing: on rank 0 whether
        another run holds the folder (the clearest message first), then the data's files and
        the output folder, then the module's operator against the data (both run again, at no
        cost, in their ``setup``)."""
        if self.trainer.is_global_zero:
            lock.check_free(self.trainer.default_root_dir)
        self.datamodule.setup(stage)
        self.model.check_data(self.datamodule)

    def claim_folder(self) -> None:
        """Rank 0, after every check passed: take the folder's lock for the whole run, check the
        folder and the settings again under it (another run may have changed them since), then
        clean what an interrupted run left. The run record and ``--overwrite`` follow (the
        Trainer's :class:`RunConfigCallback`)."""
        if not self.trainer.is_global_zero:
            return
        root = Path(self.trainer.default_root_dir)
        left = lock.acquire(root)
        self._locked.append(root)
        if left:
            print(f"lightning-redd: the previous run in {root} ({lock.describe(left)}) ended without finishing; "
                  "resuming it", file=sys.stderr)
        self.datamodule.raise_problems(RunFolder(root).problems(self.datamodule.input_folders()))
        if not self._overwrite:
            run_config.check(root, self._signature)
        removed = RunFolder(root).start()
        if removed:
            print(f"lightning-redd: removed {len(removed)} temporary file(s) left by an interrupted run", file=sys.stderr)

    def _run_subcommand(self, subcommand: str) -> None:
        """The subcommand, then the lock given back whatever happened; a failed write into the
        output folder becomes a :class:`StorageError` saying what is finished."""
        self._locked: list[Path] = []
        try:
            super()._run_subcommand(subcommand)
        except Exception as err:
            storage = self._storage_error(err)
            if storage is None:
                raise
            raise storage from err
        finally:
            for root in self._locked:
                lock.release(root)

    def _storage_error(self, err: BaseException) -> StorageError | None:
        files = self.datamodule.dataset.files if self.datamodule.dataset is not None else []
        root = Path(self.trainer.default_root_dir)
        return storage_error(err, root, [f.stem for f in files], RunFolder(root).finished)

    def instantiate_trainer(self, **kwargs):
        """Default logger: a CSV logger under ``<default_root_dir>/logs``."""
        config = self._get(self.config_init, "trainer", default={})
        if config.get("logger") in (None, True) and "logger" not in kwargs:
            from lightning.pytorch.loggers import CSVLogger

            root = config.get("default_root_dir") or os.getcwd()
            kwargs["logger"] = CSVLogger(save_dir=root, name=LOGS)  # creates logs/ at its first write, after every check
        return super().instantiate_trainer(**kwargs)

    def _instantiate_trainer(self, config: dict, callbacks: list):
        """Our progress bar (images, with the iterates nested) unless one is configured."""
        from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar

        configured = list(config.get("callbacks") or []) + list(callbacks)
        if config.get("enable_progress_bar", True) is not False and not any(isinstance(c, ProgressBar) for c in configured):
            callbacks = [*callbacks, RestorationProgressBar()]
        return super()._instantiate_trainer(config, callbacks)

    def predict(self, model, datamodule=None, return_predictions=None, ckpt_path=None, **kwargs):
        """``predict`` keeping no predictions in memory (the writer saves them)."""
        return self.trainer.predict(
            model, datamodule=datamodule, return_predictions=bool(return_predictions), ckpt_path=ckpt_path, **kwargs
        )


def with_bundled_configs(argv: list[str]) -> list[str]:
    """``--config NAME`` (or ``-c``, ``--config=NAME``) of a file that does not exist here
    becomes the bundled config of that name (:func:`lightning_redd.resources.resolve_config`)."""
    out, take = [], False
    for arg in argv:
        if take:
            out.append(resources.resolve_config(arg))
            take = False
        elif arg in ("--config", "-c"):
            out.append(arg)
            take = True
        elif arg.startswith("--config="):
            out.append("--config=" + resources.resolve_config(arg[len("--config="):]))
        else:
            out.append(arg)
    return out


def cli(args=None, run: bool = True) -> ReddCLI:
    """Build (and by default run) the CLI; ``args`` as a list or dict, for tests. Errors propagate."""
    quiet.install()
    if isinstance(args, list):
        args = with_bundled_configs(args)
    elif args is None and any(a in ("--config", "-c") or a.startswith("--config=") for a in sys.argv[1:]):
        sys.argv[1:] = with_bundled_configs(sys.argv[1:])
    return ReddCLI(args=args, run=run)


def user_error(err: BaseException) -> BaseException | None:
    """The exception in ``err``'s cause chain that reports a problem with the user's inputs
    (raised by lightning_redd's own checks), or None for anything else (a bug: show it). The
    chain is the one a traceback shows: ``raise ... from None`` ends it (a message that
    re-raises a low-level error with the file named is the one shown)."""
    from lightning_redd.priors.loaders import CheckpointError

    chain, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        chain.append(err)
        err = err.__cause__ if err.__cause__ is not None else (None if err.__suppress_context__ else err.__context__)
    for e in reversed(chain):  # the root cause first
        if isinstance(e, CheckpointError | run_config.RunConfigMismatch | LaunchMismatch) or type(e).__name__ in ("InputProblems", "ImageFileError"):
            return e
        frames = traceback.extract_tb(e.__traceback__)
        ours = bool(frames) and "lightning_redd" in frames[-1].filename and not frames[-1].filename.endswith("cli.py")
        if ours and isinstance(e, ValueError | FileNotFoundError | TypeError):
            return e
    return None


OVERVIEW = """usage: lightning-redd COMMAND [options]

Restore images with RED-diff (or a baseline) and a diffusion prior.

  predict   restore a folder: the whole solve of each batch in one predict step
  fit       the same, one solver iterate per training step (watch it converge; iterate callbacks)
  evaluate  score any two folders (restored vs reference) matched by file stem
  compare   several solvers on the same images, masks and noise: one table and one figure
  list      tasks, solvers and priors with the config fragment of each; every bundled config
  batch-size  the largest batch of a run's config that fits its device (Lightning's batch-size search)

  lightning-redd predict --config demo                  # the bundled demo, from any folder
  lightning-redd predict --config demo --config task/sr_block --config solver/ddrm
  lightning-redd predict --help                         # every option; --model.solver.help RedDiff for one class
"""

#: subcommands that are not Lightning runs: name -> "module:function" taking argv, returning a status
COMMANDS = {
    "list": "lightning_redd.lit.commands:list_main",
    "evaluate": "lightning_redd.lit.commands:evaluate_main",
    "compare": "lightning_redd.experiments.cli:main",
    "batch-size": "lightning_redd.lit.batch_size:main",
}


def run_command(name: str, argv: list[str]) -> int:
    import importlib

    module, function = COMMANDS[name].split(":")
    return int(getattr(importlib.import_module(module), function)(argv) or 0)


def main(args=None) -> None:
    """Entry point of ``lightning-redd``: runs :func:`cli` and maps outcomes to exit statuses."""
    from lightning_redd.lit.requeue import Requeued

    argv = list(sys.argv[1:] if args is None else args)
    if args is None:
        # The console script, any command: what is imported by now (torch, Lightning) lives until the
        # exit, so no collection needs to scan it again, the one at the interpreter's exit included: a
        # 1-iterate demo run took 5.9 instead of 7.4 s (docs/PERFORMANCE.md). Not in-process callers
        # (tests), whose garbage awaiting collection would be kept for good.
        gc.freeze()
    if argv and argv[0] in COMMANDS:
        sys.exit(run_command(argv[0], argv[1:]))
    if not argv or argv[0] in ("-h", "--help"):
        print(OVERVIEW)
        sys.exit(0)
    started = time.perf_counter()
    try:
        app = cli(None if args is None else argv)
    except Requeued as err:
        print(f"lightning-redd: {err}; the finished images are on disk", file=sys.stderr)
        leave_after_requeue()
        sys.exit(0)
    except (RunFolderError, StorageError) as err:
        if os.environ.get("LIGHTNING_REDD_TRACEBACK"):
            raise
        print(f"lightning-redd: error: {err}", file=sys.stderr)
        sys.exit(4 if isinstance(err, StorageError) else 2)
    except Exception as err:
        cause = user_error(err)
        if cause is None or os.environ.get("LIGHTNING_REDD_TRACEBACK"):
            raise
        print(f"lightning-redd: error: {cause}", file=sys.stderr)
        sys.exit(2)
    summary = app.writer.summary if app.subcommand in ("fit", "predict") and app.writer is not None else None
    if summary is not None and app.trainer.is_global_zero:
        print(format_summary(summary, time.perf_counter() - started), file=sys.stderr)
    close_process_group()
    if summary and summary["diverged"]:
        sys.exit(3)


def leave_after_requeue() -> None:
    """Every rank stopped at the same batch: the job's requeue must not end a rank that is leaving,
    and the process group is torn down as after a finished run (an exit with gloo's threads still
    joinable aborts, and SLURM then records the job FAILED instead of requeueing it)."""
    from lightning_redd.lit.requeue import ignore_requeue_sigterm

    ignore_requeue_sigterm()
    try:
        close_process_group()
    except Exception as err:  # a rank already gone: nothing left to agree on
        print(f"lightning-redd: process group not closed cleanly ({type(err).__name__}); leaving anyway", file=sys.stderr)


def close_process_group() -> None:
    """Tear the process group down before the interpreter exits. Left to the interpreter's exit,
    gloo's worker threads can be destroyed while still joinable, and a process that finished all
    its work aborts ("terminate called without an active exception"), so SLURM reports the job
    FAILED. The barrier first: no rank tears its end down while another still talks to it."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
