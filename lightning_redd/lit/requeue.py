"""Stop at a batch boundary on SIGUSR1 and requeue the SLURM job.

SLURM sends ``SIGUSR1`` ahead of a job's time limit when the job asks for it
(``#SBATCH --signal=USR1@90``), and ``scancel --signal=USR1 <job>`` sends it by hand.
Lightning's own handler (``SLURMEnvironment(auto_requeue=True)``) saves a checkpoint and
requeues at once, mid-batch; a restoration has nothing worth checkpointing (the prior is
frozen, ``mu`` is per batch), and what is finished is already on disk, image by image. So
:class:`RequeueOnSignal` replaces that handler while the Trainer runs (and takes over a signal
that arrived during start-up, see :mod:`lightning_redd.lit.signals`): on the signal it only sets
a flag. At the start of every batch the ranks agree on stopping (one small all-reduce: stop if
any rank received the signal), so they all stop at the same boundary, each having finished
and written the batch it was on; then rank 0 runs ``scontrol requeue`` when the process runs
under SLURM. The requeued job re-runs the same command in the same folder, which skips the
finished images.

The agreement is a collective, so every rank must reach the start of as many batches: ``fit``
pads the ranks with fewer images with no-op steps (Lightning's training loop needs equal step
counts anyway), and ``predict`` pads them with no-op batches the same way (a rank with no
pending image at all still takes part). ``fit`` stops through ``trainer.should_stop`` (its end
hooks then merge ``metrics.csv``); ``predict`` raises :class:`Requeued` on every rank, which
the CLI turns into exit status 0. Once they agreed to stop under SLURM, the ranks ignore the
SIGTERM that the requeue sends them (:func:`ignore_requeue_sigterm`: they are leaving anyway).
A signal that arrives after the last batch started stops nothing: the run finishes, and no
requeue is needed.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn


class Requeued(Exception):
    """The run stopped between two batches because SIGUSR1 arrived (the job was requeued)."""


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` takes (``<array job>_<task>`` for array jobs), or None."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array and "SLURM_ARRAY_TASK_ID" in os.environ else os.environ.get("SLURM_JOB_ID")
    return job if job and re.fullmatch(r"[0-9_]+", job) else None


def ignore_requeue_sigterm() -> None:
    """Under SLURM, ignore SIGTERM from now on: ``scontrol requeue`` ends the job's tasks with it
    while they are already leaving, and Lightning's SIGTERM handler would answer it with a
    collective that a rank already gone cannot join (a traceback in the job log, a rank that
    exits non-zero). Lightning's teardown gives SIGTERM its default action back, so the CLI calls
    this again before it exits."""
    if slurm_job_id() is not None and hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


class RequeueOnSignal(L.Callback):
    """On ``signum`` (default SIGUSR1): finish the current batch, stop, requeue the SLURM job.

    Args:
        requeue: run ``scontrol requeue`` (rank 0, only under SLURM).
    """

    def __init__(self, *, requeue: bool = True, signum: int = int(getattr(signal, "SIGUSR1", 10))) -> None:
        self.requeue, self.signum = bool(requeue), int(signum)
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame) -> None:
        self.requested = True

    def _install(self) -> None:
        from lightning_redd.lit import signals

        self.requested = signals.take()  # a signal received during start-up counts
        if hasattr(signal, "SIGUSR1"):
            self._previous = signal.signal(self.signum, self._handler)

    def on_fit_start(self, trainer, pl_module) -> None:
        self._install()

    def on_predict_start(self, trainer, pl_module) -> None:
        self._install()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._previous is not None:
            signal.signal(self.signum, self._previous)
            self._previous = None

    def _stop(self, trainer: L.Trainer) -> None:
        """Every rank, once the ranks agreed to stop; rank 0 requeues the job under SLURM."""
        job = slurm_job_id()
        if self.requeue:
            ignore_requeue_sigterm()
        if trainer.is_global_zero and self.requeue and job is not None:
            rank_zero_info(f"lightning-redd: signal {self.signum} received; requeueing SLURM job {job}")
            result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
            if result.returncode != 0:
                rank_zero_warn(f"scontrol requeue {job} failed ({result.returncode}): {result.stderr.strip()}")
        else:
            rank_zero_info(f"lightning-redd: signal {self.signum} received; stopping after the finished batches. "
                           "Re-run the same command to restore the rest.")

    def agree(self, trainer: L.Trainer) -> bool:
        """Whether any rank received the signal (every rank must call this at the same point)."""
        if trainer.world_size == 1:
            return self.requested
        return bool(trainer.strategy.reduce_boolean_decision(self.requested, all=False))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        repeats = max(1, int(pl_module.num_iterates))
        if batch_idx % repeats:
            return
        # every rank is at the first step of a batch here (equal step counts): agree on stopping
        if self.agree(trainer) and not trainer.should_stop:
            self._stop(trainer)
            trainer.should_stop = True

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        # every rank starts as many batches (padded): each has written the batch before this one
        if self.agree(trainer):
            self._stop(trainer)
            raise Requeued(f"stopped before batch {batch_idx} on signal {self.signum}")
