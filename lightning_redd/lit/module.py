"""The restoration LightningModule: one solver iterate per training step.

One file, over 300 lines: one LightningModule, whose fit (one iterate per step) and predict
(the whole solve) share its state and are best read side by side.

``fit``: the DataModule visits each batch ``num_iterates`` times; at the batch's first
visit the module measures the images and starts a solve (fresh ``mu`` and Adam state), each
``training_step`` runs exactly one ``solver.step``, and the last one returns
``{"restored": Restored}`` (:class:`~lightning_redd.lit.restored.Restored`), which Lightning
hands to the callbacks as ``outputs`` (the image writer saves it). Padding steps (several
processes with unequal shares) do nothing.

``predict``: ``predict_step`` runs ``solver.run`` (= init + every step, the same code) and
returns the :class:`Restored` batch the same way.

``mu`` is a plain tensor owned by the solver's state, not a module parameter: Lightning's
optimizers never see it, and nothing is synchronised between processes (see
:mod:`lightning_redd.lit.strategy`), so each image's result is its own. The frozen prior is
never written into a Lightning checkpoint (it is reloaded from its own file). The prior runs
under the Trainer's precision (autocast only around the denoiser); ``mu``, the data term and
Adam stay float32.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.trainer.states import TrainerFn

from lightning_redd import seeding
from lightning_redd.data.measured import MeasuredFolderData
from lightning_redd.metrics import psnr
from lightning_redd.lit.restored import Restored
from lightning_redd.operators.base import ForwardOperator
from lightning_redd.priors.base import DiffusionPrior
from lightning_redd.solvers.base import Solver, SolverState

AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16, "32-true": None, "32": None, "64-true": None}


class RestorationModule(L.LightningModule):
    """Restores images ``x`` from synthetic measurements ``y = A(x) + noise`` (or given ``y``).

    Args:
        prior: the diffusion prior (default: the embedded 64x64 prior shipped with the package).
        operator: the forward model (a template; per-image parameters are bound per batch).
        solver: the algorithm (default: RED-diff with its defaults).
        log_every: in ``predict``, log statistics every this many iterates (0: only at the end).
        evolution_every: keep the estimate every this many iterates (0: off); the writer saves
            each image's frames as ``evolution/<name>.png`` (a strip) and ``.gif``.
    """

    def __init__(
        self,
        *,
        operator: ForwardOperator,
        prior: DiffusionPrior | None = None,
        solver: Solver | None = None,
        log_every: int = 0,
        evolution_every: int = 0,
    ) -> None:
        super().__init__()
        if prior is None:
            from lightning_redd.priors.embedded import EmbeddedPrior

            prior = EmbeddedPrior()
        if solver is None:
            from lightning_redd.solvers.red_diff import RedDiff

            solver = RedDiff()
        self.prior = prior.eval().requires_grad_(False)
        self.operator = operator
        self.solver = solver
        if log_every < 0 or evolution_every < 0:
            raise ValueError(f"log_every and evolution_every must be >= 0, got {log_every}, {evolution_every}")
        self.log_every, self.evolution_every = int(log_every), int(evolution_every)
        self.automatic_optimization = False
        #: fit: the solve in progress (state, bound operator, y, its observations), between steps
        self._solve: _Solve | None = None

    @property
    def num_iterates(self) -> int:
        return self.solver.num_iterates

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str) -> None:
        precision = str(self.trainer.precision) if self._trainer is not None else "32-true"
        if precision not in AUTOCAST_DTYPES:
            raise ValueError(f"unsupported trainer.precision {precision!r}; allowed: {sorted(AUTOCAST_DTYPES)}")
        self.prior.autocast_dtype = AUTOCAST_DTYPES[precision]
        if precision == "bf16-mixed" and self._trainer is not None and self.trainer.strategy.root_device.type == "cpu":
            _warn_slow_cpu_bf16()
        from lightning_redd.lit.strategy import ImageShardingStrategy

        strategy = self.trainer.strategy if self._trainer is not None else None
        fitting = self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING
        if fitting and isinstance(strategy, DDPStrategy) and not isinstance(strategy, ImageShardingStrategy):
            raise ValueError(
                f"{type(strategy).__name__} would wrap the module in DistributedDataParallel, which has nothing to "
                "synchronise here (the prior is frozen, mu is per image); use "
                "strategy=lightning_redd.lit.strategy.ImageShardingStrategy() (the lightning-redd CLI does this for "
                "--trainer.strategy ddp)"
            )
        self.check_data(self.trainer.datamodule if self._trainer is not None else None)

    def check_data(self, data) -> None:
        """Measured data (checked by its own ``setup`` first): the operator must make
        measurements of the files' shape from images of the data's image shape (raises the
        data's :class:`InputProblems` naming the fix)."""
        if not isinstance(data, MeasuredFolderData) or data.measurement_shape is None:
            return
        params = data.first_params()
        try:
            made = self.measurement_shape(data.image_shape, params)
        except ValueError as err:
            data.raise_problems([f"the operator cannot take {data.image_shape[2]}x{data.image_shape[1]} images: {err}"])
            return
        if tuple(made[-2:]) != tuple(data.measurement_shape[-2:]):
            data.raise_problems([data.shape_mismatch(self.operator, made)])

    def configure_optimizers(self) -> None:
        """No Lightning optimizer: the solver owns an Adam over each batch's ``mu``."""
        return None

    def train(self, mode: bool = True):
        super().train(mode)
        self.prior.eval()  # the prior is frozen: no dropout, ever
        return self

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Leave the frozen prior out of Lightning checkpoints (it is reloaded from its file)."""
        sd = checkpoint.get("state_dict", {})
        for key in [k for k in sd if k.startswith("prior.")]:
            del sd[key]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Put the prior's own weights back so a strict load of such a checkpoint succeeds."""
        checkpoint.setdefault("state_dict", {}).update({f"prior.{k}": v for k, v in self.prior.state_dict().items()})

    # ------------------------------------------------------------------ shared pieces
    def measure(self, batch: dict) -> tuple[ForwardOperator, torch.Tensor]:
        """Bind the operator to the batch (with its ``params`` read from files, else drawn from
        the seeds) and synthesise ``y`` from ``x``, or take the batch's measured ``y`` (only what
        the operator observes of it: e.g. the unmasked pixels)."""
        index, seeds = batch["index"].tolist(), batch["seed"].tolist()
        measured = "y" in batch
        shape = tuple(int(v) for v in batch["shape"]) if "shape" in batch else tuple(batch["x"].shape[1:])
        device = (batch["y"] if measured else batch["x"]).device
        op_seeds = [seeding.image_seed(s, i, "operator") for s, i in zip(seeds, index)]
        given = {"params": batch["params"]} if batch.get("params") else {}  # operators written before params still bind
        op = self.operator.bind(op_seeds, shape, names=list(batch["name"]), device=device, **given)
        if measured:
            return op, op.observed(batch["y"].float())
        gens = [seeding.generator(s, i, "noise") for s, i in zip(seeds, index)]
        with torch.no_grad():
            return op, op.measure(batch["x"].float(), gens)

    def measurement_shape(self, image_shape: tuple[int, ...], params: dict | None = None) -> tuple[int, ...]:
        """The shape of one image's ``y`` for an image of ``image_shape`` (``params``: one
        image's parameter tensors, unbatched, for operators that need them to bind)."""
        given = {"params": {k: v[None] for k, v in params.items()}} if params else {}
        op = self.operator.bind([0], tuple(image_shape), names=["shape-check"], device="cpu", **given)
        with torch.no_grad():
            return tuple(op(torch.zeros(1, *image_shape)).shape[1:])

    @staticmethod
    def consistency(op: ForwardOperator, x_hat: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per image: ``residual`` = ``||y - A(x_hat)||`` over the observed entries (pixels in
        [-1, 1]) and the noise level it implies, ``sigma_y_implied`` = its RMS / 2 (in the
        units of ``sigma_y``, whose noise is ``2 sigma_y n``), next to the operator's ``sigma_y``.
        A consistent restoration has ``sigma_y_implied`` close to ``sigma_y``."""
        with torch.no_grad():
            r = (op.observed(y) - op.measure_clean(x_hat.float())).flatten(1).double()
            count = op.observed(torch.ones_like(y)).flatten(1).sum(1).double().clamp_min(1)
            norm = r.norm(dim=1)
        return {"residual": norm, "sigma_y_implied": norm / count.sqrt() / 2,
                "sigma_y": torch.full_like(norm, float(getattr(op, "sigma_y", 0.0)))}

    @staticmethod
    def batch_device(batch: dict) -> torch.device:
        return (batch["y"] if "y" in batch else batch["x"]).device

    def solver_generators(self, batch: dict) -> list[torch.Generator]:
        return [seeding.generator(s, i, "solver") for s, i in zip(batch["seed"].tolist(), batch["index"].tolist())]

    def solver_context(self, device: torch.device):
        """Outside the denoiser nothing runs under Lightning's autocast."""
        if device.type in ("cuda", "cpu", "xpu", "mps"):
            return torch.autocast(device_type=device.type, enabled=False)
        return contextlib.nullcontext()

    def restored(self, batch: dict, solve: _Solve, state: SolverState) -> Restored:
        """The finished batch as the callbacks receive it (see :class:`Restored`)."""
        x_hat = self.solver.estimate(state)
        return Restored(
            names=tuple(batch["name"]), index=batch["index"], x_hat=x_hat, x_init=state.x_init.detach(),
            y=solve.y.detach(), diverged=state.diverged.detach(), nfe=int(state.nfe),
            seconds=(time.perf_counter() - solve.started) / max(1, len(batch["name"])),
            x=batch["x"].detach().float() if "x" in batch else None,
            consistency=self.consistency(solve.op, x_hat, solve.y) if "y" in batch else None,
            frames=tuple(solve.frames), psnr_curve=torch.stack(solve.psnr, dim=1).cpu() if solve.psnr else None,
            solver=self.solver.label,
        )

    def observe(self, solve: _Solve, k: int, state: SolverState, batch: dict) -> torch.Tensor:
        """After iterate ``k``: keep each image's PSNR (when ``x`` is known, left on the device)
        and, every ``evolution_every`` iterates, the estimate; returns the estimate."""
        estimate = self.solver.estimate(state)
        if "x" in batch:
            solve.psnr.append(psnr(estimate, batch["x"].float()).double())
        if self.evolution_every:
            if k == 0:
                solve.frames.append(state.x_init.detach().float().cpu())
            if (k + 1) % self.evolution_every == 0 or k == self.num_iterates - 1:
                solve.frames.append(estimate.float().cpu())
        return estimate

    @staticmethod
    def stats_to_log(stats: dict[str, torch.Tensor], solve: _Solve) -> dict[str, torch.Tensor]:
        """Batch means of the solver's statistics and of the latest PSNR (0-dim tensors, left on
        the device: no synchronisation per iterate)."""
        out = {k: v.float().mean() for k, v in stats.items() if k != "t"}
        if solve.psnr:
            out["psnr"] = solve.psnr[-1].mean().float()
        return out

    # ------------------------------------------------------------------ fit: one iterate per step
    def training_step(self, batch: dict, batch_idx: int) -> dict | None:
        """One iterate of the batch's solve; the last one returns ``{"restored": Restored}``."""
        if bool(batch["pad"][0]):
            return None  # padding step: this rank has no image left, the others do
        iterate = int(batch["iterate"][0])
        with self.solver_context(self.batch_device(batch)):
            if iterate == 0:
                started = time.perf_counter()
                op, y = self.measure(batch)
                self._solve = _Solve(op, y, started, self.solver.init(y, op, self.prior, self.solver_generators(batch)))
            elif self._solve is None or self._solve.state.k != iterate:
                raise RuntimeError(
                    f"iterate {iterate} of a batch arrived without its first {iterate} iterates; "
                    "restart the run (finished images are kept; the interrupted batch is redone)"
                )
            solve = self._solve
            stats = self.solver.step(solve.state, solve.y, solve.op, self.prior)
            self.observe(solve, iterate, solve.state, batch)
        self.log_dict({f"train/{k}": v for k, v in self.stats_to_log(stats, solve).items()},
                      on_step=True, prog_bar=False, batch_size=len(batch["name"]))
        if iterate < self.num_iterates - 1:
            return None
        self._solve = None
        return {"restored": self.restored(batch, solve, solve.state)}

    def iterate_bar(self, batch_idx: int):
        """A progress bar over one batch's iterates when the Trainer shows progress bars
        (Lightning's own predict bar only counts batches)."""
        callback = self.trainer.progress_bar_callback if self._trainer is not None else None
        if callback is None or not getattr(callback, "is_enabled", False) or self.trainer.global_rank != 0:
            return None
        if hasattr(callback, "iterate_bar"):  # lightning_redd.lit.progress.RestorationProgressBar
            return callback.iterate_bar(self.num_iterates, batch_idx)
        from tqdm.auto import tqdm

        return tqdm(total=self.num_iterates, desc=f"{self.solver.label} iterates (batch {batch_idx})", leave=False,
                    position=1, dynamic_ncols=True)

    # ------------------------------------------------------------------ predict: the whole solve
    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> Restored:
        """Run the whole solve of the batch and return it (:class:`Restored`, on the device)."""
        # predict runs under inference mode by default; the Adam step on mu needs autograd.
        with torch.inference_mode(False), torch.enable_grad(), self.solver_context(self.batch_device(batch)):
            batch = _cloned(batch)
            started = time.perf_counter()
            op, y = self.measure(batch)
            solve = _Solve(op, y, started)
            bar = self.iterate_bar(batch_idx)

            def callback(k: int, state: SolverState, stats: dict) -> None:
                if bar is not None:
                    bar.update(1)
                self.observe(solve, k, state, batch)
                last = k == self.num_iterates - 1
                if self.logger is not None and (last or (self.log_every and (k + 1) % self.log_every == 0)):
                    logged = self.stats_to_log(stats, solve)
                    self.logger.log_metrics({f"predict/{n}": float(v) for n, v in logged.items()},
                                            step=batch_idx * self.num_iterates + k)

            try:
                state = self.solver.run(y, op, self.prior, self.solver_generators(batch), callback=callback)
            finally:
                if bar is not None:
                    bar.close()
        return self.restored(batch, solve, state)


@dataclass
class _Solve:
    """One batch's solve in progress: the bound operator, ``y``, when it started, the solver
    state (fit keeps it between steps) and what :meth:`RestorationModule.observe` keeps."""

    op: ForwardOperator
    y: torch.Tensor
    started: float
    state: SolverState | None = None
    psnr: list[torch.Tensor] = field(default_factory=list)
    frames: list[torch.Tensor] = field(default_factory=list)


def _warn_slow_cpu_bf16() -> None:
    """bf16 convolutions on a CPU without bf16 instructions are emulated: on this project's AVX2
    CPU one bf16 forward of the embedded prior took about 76x the float32 time."""
    capability = str(torch.backends.cpu.get_cpu_capability())
    if "AVX512" not in capability and "AMX" not in capability:
        from lightning.pytorch.utilities import rank_zero_warn

        rank_zero_warn(f"lightning-redd: trainer.precision bf16-mixed on a CPU without bf16 instructions ({capability}) "
                       "runs the denoiser far slower than 32-true (76x measured on an AVX2 CPU); use --trainer.precision 32-true")


def _cloned(batch: dict) -> dict:
    """The batch with every tensor (nested dicts too) cloned out of inference mode."""
    return {k: (v.clone() if torch.is_tensor(v) else _cloned(v) if isinstance(v, dict) else v) for k, v in batch.items()}
