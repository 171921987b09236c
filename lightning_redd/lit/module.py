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
returns the :class:`Restored` batch the same way. Padding batches (several processes with
unequal shares: every rank starts as many batches) do nothing, as in ``fit``.

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
from lightning_redd.priors.tiled import Tiling, at_size
from lightning_redd.solvers.base import Solver, SolverState
from lightning_redd.solvers.latent import for_prior

AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16, "32-true": None, "32": None, "64-true": None}


class RestorationModule(L.LightningModule):
    """Restores images ``x`` from synthetic measurements ``y = A(x) + noise`` (or given ``y``).

    Args:
        prior: the diffusion prior (default: the embedded 64x64 prior shipped with the package).
        operator: the forward model (a template; per-image parameters are bound per batch).
        solver: the algorithm (default: RED-diff with its defaults).
        log_every: in ``predict``, log statistics every this many iterates (0: only the last one
            of each batch); ``fit`` logs every ``trainer.log_every_n_steps`` iterates. Every
            rank's rows reach the logger (:meth:`publish_logs`).
        evolution_every: keep the estimate every this many iterates (0: off); the writer saves
            each image's frames as ``evolution/<name>.png`` (a strip) and ``.gif``.
        tiling: how the prior is evaluated on images of another size than its own (``data.resize:
            none``): :class:`~lightning_redd.priors.tiled.Tiling` (tile, overlap, tile_batch, mode,
            shift, grad_checkpoint); applied by itself per image size, never at the prior's size.
    """

    def __init__(
        self,
        *,
        operator: ForwardOperator,
        prior: DiffusionPrior | None = None,
        solver: Solver | None = None,
        log_every: int = 0,
        evolution_every: int = 0,
        tiling: Tiling = Tiling(),
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
        self.solver = for_prior(solver, self.prior)  # a latent prior: the solver runs on its latents
        if log_every < 0 or evolution_every < 0:
            raise ValueError(f"log_every and evolution_every must be >= 0, got {log_every}, {evolution_every}")
        self.log_every, self.evolution_every = int(log_every), int(evolution_every)
        self.automatic_optimization = False
        #: fit: the solve in progress (state, bound operator, y, its observations), between steps
        self._solve: _Solve | None = None
        #: rows of the CSV log kept until the batch's end: ``(step, {name: value})`` (:meth:`log_row`)
        self._log_rows: list[tuple[int, dict[str, float]]] = []
        self.tiling = tiling
        #: the prior per image size (a TiledPrior away from the prior's own size); not submodules
        self._at_size: dict[tuple[int, int], DiffusionPrior] = {}

    def prior_at(self, hw: tuple[int, int]) -> DiffusionPrior:
        """The prior for ``(H, W)`` images: the prior itself at its own size, else the prior
        wrapped by :func:`~lightning_redd.priors.tiled.at_size` with ``tiling`` (made once per size)."""
        hw = (int(hw[0]), int(hw[1]))
        if hw not in self._at_size:
            self._at_size[hw] = at_size(self.prior, hw, self.tiling)
        wrapped = self._at_size[hw]
        if wrapped is not self.prior and wrapped.alphas_cumprod.device != self.prior.alphas_cumprod.device:
            wrapped.to(self.prior.alphas_cumprod.device)  # the module moved since (its own buffers only)
        return wrapped

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
        if not isinstance(data, MeasuredFolderData):
            self.check_sizes(data)
            return
        if data.measurement_shape is None:
            self.check_sizes(data)  # measurements at their own sizes (resize none): each size's image
            return
        params = data.first_params()
        try:
            made = self.measurement_shape(data.image_shape, params)
        except ValueError as err:
            data.raise_problems([f"the operator cannot take {data.image_shape[2]}x{data.image_shape[1]} images: {err}"])
            return
        if tuple(made[-2:]) != tuple(data.measurement_shape[-2:]):
            data.raise_problems([data.shape_mismatch(self.operator, made)])

    def check_sizes(self, data) -> None:
        """Images at their own sizes (``data.resize: none``): the operator must take each size
        found (e.g. an SR factor dividing H and W); every size it refuses is named with its
        images and the operator's fix, before any compute."""
        dataset = getattr(data, "dataset", None)
        if dataset is None or getattr(dataset, "resize", None) != "none":
            return
        groups: dict[tuple[int, int], list[int]] = {}
        for i in range(len(dataset.files)):
            groups.setdefault(dataset.image_hw(i), []).append(i)
        problems = []
        for (h, w), members in groups.items():
            first = members[0]
            params = dataset.read_params(first, (h, w)) or None
            try:
                self.measurement_shape((dataset.channels, h, w), params)
            except ValueError as err:
                names = ", ".join(dataset.files[i].name for i in members[:5]) + (" ..." if len(members) > 5 else "")
                problems.append(f"{names}: {w}x{h} (data.resize none keeps it): {err}")
        data.raise_problems(problems)

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
    def image_hw(batch: dict) -> tuple[int, int]:
        """``(H, W)`` of the batch's images (its ``shape``, else its ``x``'s)."""
        shape = batch["shape"] if "shape" in batch else batch["x"].shape[1:]
        return int(shape[-2]), int(shape[-1])

    @staticmethod
    def batch_device(batch: dict) -> torch.device:
        return (batch["y"] if "y" in batch else batch["x"]).device

    def solver_generators(self, batch: dict) -> list[torch.Generator]:
        """Each member's solver stream: from ``(seed, index)``, and its sample ``k`` when > 0."""
        index = batch["index"].tolist()
        sample = batch["sample"].tolist() if "sample" in batch else [0] * len(index)
        return [seeding.generator(s, i, "solver", k) for s, i, k in zip(batch["seed"].tolist(), index, sample)]

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
            solver=self.solver.label, keep=batch.get("keep"), sample=batch.get("sample"),
            samples=int(batch["samples"][0]) if "samples" in batch else 1,
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

    # ------------------------------------------------------------------ the CSV log of every rank
    def log_row(self, stage: str, batch: int, k: int, stats: dict[str, torch.Tensor]) -> None:
        """Keep one row of the log: ``stats`` after iterate ``k`` of this rank's ``batch``-th
        batch, at the step ``(batch * W + rank) * num_iterates + k`` (unique across the ``W``
        ranks; with one process, the batch's iterates in order). Rows go to the logger at the
        batch's end (:meth:`publish_logs`)."""
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self._trainer is not None else (1, 0)
        step = (batch * world + rank) * self.num_iterates + k
        self._log_rows.append((step, {f"{stage}/{n}": float(v) for n, v in stats.items()}))

    def publish_logs(self) -> None:
        """Send every rank's kept rows to the logger (which writes on rank 0 only): under several
        processes a collective, so every rank calls it at the same points (each batch's end, every
        rank taking as many batches)."""
        rows, self._log_rows = self._log_rows, []
        if self._trainer is None:
            return
        if self.trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, rows)
            rows = sorted(row for part in gathered for row in part)
        if self.logger is not None and self.trainer.is_global_zero:
            for step, metrics in rows:
                self.logger.log_metrics(metrics, step=step)

    def on_predict_batch_end(self, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.publish_logs()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if (batch_idx + 1) % self.num_iterates == 0:  # a batch's last step (padding steps count alike)
            self.publish_logs()

    def on_train_end(self) -> None:
        self.publish_logs()  # a stop (every rank at the same step) may end a batch early

    def on_predict_end(self) -> None:
        self.publish_logs()

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
                prior = self.prior_at(self.image_hw(batch))
                self._solve = _Solve(op, y, started, self.solver.init(y, op, prior, self.solver_generators(batch)), prior=prior)
            elif self._solve is None or self._solve.state.k != iterate:
                raise RuntimeError(
                    f"iterate {iterate} of a batch arrived without its first {iterate} iterates; "
                    "restart the run (finished images are kept; the interrupted batch is redone)"
                )
            solve = self._solve
            stats = self.solver.step(solve.state, solve.y, solve.op, solve.prior)
            self.observe(solve, iterate, solve.state, batch)
        logged = self.stats_to_log(stats, solve)
        self.log_dict({f"train/{k}": v for k, v in logged.items()}, on_step=True, prog_bar=False, logger=False,
                      batch_size=len(batch["name"]))  # for callbacks; the logger gets every rank's rows (log_row)
        every = max(1, int(self.trainer.log_every_n_steps)) if self._trainer is not None else 1
        if (iterate + 1) % every == 0 or iterate == self.num_iterates - 1:
            self.log_row("train", batch_idx // self.num_iterates, iterate, logged)
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
    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> Restored | None:
        """Run the whole solve of the batch and return it (:class:`Restored`, on the device);
        ``None`` for a padding batch (this rank has no image left, the others do)."""
        if bool(batch["pad"][0]):
            return None
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
                if last or (self.log_every and (k + 1) % self.log_every == 0):
                    self.log_row("predict", batch_idx, k, self.stats_to_log(stats, solve))

            try:
                prior = self.prior_at(self.image_hw(batch))
                state = self.solver.run(y, op, prior, self.solver_generators(batch), callback=callback)
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
    prior: DiffusionPrior | None = None
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
