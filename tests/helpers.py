"""Small test doubles: a dense linear operator and a tiny convolutional prior."""
from __future__ import annotations

import torch
from torch import nn

from lightning_redd.operators.base import LinearOperator
from lightning_redd.priors.base import DiffusionPrior


class MatrixOperator(LinearOperator):
    """``y = A vec(x)`` for a dense ``(M, N)`` matrix ``A`` (tiny images only)."""

    def __init__(self, A: torch.Tensor, shape: tuple[int, int, int], sigma_y: float = 0.0) -> None:
        super().__init__(sigma_y=sigma_y, channels=shape[0])
        self.shape = shape
        self.register_buffer("A", A.double())
        self.register_buffer("A_pinv", torch.linalg.pinv(A.double()))

    def forward(self, x):
        return (x.flatten(1).double() @ self.A.T).to(x.dtype)

    def adjoint(self, y):
        return (y.double() @ self.A).to(y.dtype).view(-1, *self.shape)

    def pinv(self, y):
        return (y.double() @ self.A_pinv.T).to(y.dtype).view(-1, *self.shape)


class MaskOperator(LinearOperator):
    """Full-size masking with one fixed mask (inpainting without per-image masks)."""

    def __init__(self, mask: torch.Tensor, sigma_y: float = 0.0) -> None:
        super().__init__(sigma_y=sigma_y, channels=mask.shape[0])
        self.register_buffer("mask", mask.float())

    def forward(self, x):
        return x * self.mask

    def adjoint(self, y):
        return y * self.mask

    def pinv(self, y):
        return y * self.mask


class ConvPrior(DiffusionPrior):
    """A small random convolutional eps-network: ``depth`` 3x3 convs of ``width`` channels
    with a per-time bias. Deterministic from ``seed``; any image size."""

    def __init__(self, channels: int = 3, width: int = 16, depth: int = 3, seed: int = 0) -> None:
        super().__init__(channels=channels)
        g = torch.Generator().manual_seed(seed)
        layers, c = [], channels
        for i in range(depth):
            out = channels if i == depth - 1 else width
            conv = nn.Conv2d(c, out, 3, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (0.5 / (9 * c) ** 0.5))
                conv.bias.zero_()
            layers += [conv] + ([nn.SiLU()] if i < depth - 1 else [])
            c = out
        self.net = nn.Sequential(*layers)
        self.time_bias = nn.Parameter(torch.randn(self.num_timesteps, generator=g) * 0.01)

    def predict_eps(self, x_t, t):
        return self.net(x_t) + self.time_bias[t].view(-1, 1, 1, 1)


# --------------------------------------------------------------------------- CLI runs on tiny problems
class OutOfMemoryAbove(ConvPrior):
    """:class:`ConvPrior` that fails as a full device does for batches above ``limit``: torch's
    out-of-memory message of the CUDA allocator, or of the CPU allocator (``cpu=True``)."""

    def __init__(self, limit: int = 4, cpu: bool = False) -> None:
        super().__init__()
        self.limit, self.cpu = int(limit), bool(cpu)
        self.batches: list[int] = []  # every batch size it was called with

    def predict_eps(self, x_t, t):
        self.batches.append(x_t.shape[0])
        if x_t.shape[0] > self.limit:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 GiB (test double)" if self.cpu
                               else "CUDA out of memory. Tried to allocate 1.00 GiB (test double)")
        return super().predict_eps(x_t, t)


def make_images(folder, n: int = 3, size: int = 20, seed: int = 0):
    """``n`` random RGB PNGs ``img{i}.png`` of ``size x (size + 4)`` in ``folder`` (created)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        arr = (rng.random((size, size + 4, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"img{i}.png")
    return folder


def tiny_args(out, images, *extra: str, subcommand: str = "predict", size: int = 16, steps: int = 6) -> list[str]:
    """A ``lightning-redd`` command on the tiny ConvPrior: random-pixel inpainting, RED-diff."""
    return [
        subcommand,
        "--seed_everything", "0",
        "--trainer.accelerator", "cpu",
        "--trainer.devices", "1",
        "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", str(out),
        "--model.prior", "helpers.ConvPrior",
        "--model.operator", "lightning_redd.operators.inpainting.Inpainting",
        "--model.operator.init_args.mask", "random",
        "--model.operator.init_args.drop_fraction", "0.4",
        "--model.operator.init_args.sigma_y", "0.02",
        "--model.solver", "lightning_redd.solvers.red_diff.RedDiff",
        "--model.solver.init_args.num_steps", str(steps),
        "--model.solver.init_args.order", "random",
        "--data.root", str(images),
        "--data.image_size", str(size),
        *extra,
    ]


def output_files(root) -> dict[str, bytes]:
    """Every file a run wrote that must be identical between runs: images, records, grids and
    metrics.csv (not summary.json, which counts what this attempt restored, nor the logs)."""
    from pathlib import Path

    root = Path(root)
    kept = ("restored", "measured", "init", "samples", "std", "records", "grids", "evolution", "metrics.csv")
    keep = [p for p in root.rglob("*") if p.is_file() and p.parts[len(root.parts)] in kept]
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(keep)}


class PoisonedInpainting(LinearOperator):
    """Full-size masking whose forward is infinite for images named in ``poisoned`` (bound by
    name), while their measurement stays finite: RED-diff's data-term gradient of such an
    image is NaN, so its estimate diverges; every other image is plain inpainting."""

    def __init__(self, *, poisoned: tuple[str, ...] = ("zbad",), drop_fraction: float = 0.3, sigma_y: float = 0.0) -> None:
        super().__init__(sigma_y=sigma_y, channels=3)
        self.poisoned, self.drop_fraction = tuple(poisoned), float(drop_fraction)
        self.register_buffer("mask", None, persistent=False)
        self.register_buffer("scale", None, persistent=False)

    def bind(self, seeds, shape, names=None, device=None, params=None):
        import copy

        out = copy.copy(self)
        out._buffers = dict(self._buffers)
        masks = [(torch.rand(shape[1:], generator=torch.Generator().manual_seed(int(s))) > self.drop_fraction).float() for s in seeds]
        out.mask = torch.stack(masks)[:, None].to(device)
        out.scale = torch.tensor([float("inf") if n in self.poisoned else 1.0 for n in names]).view(-1, 1, 1, 1).to(device)
        return out

    def forward(self, x):
        return x * self.mask * self.scale

    def measure_clean(self, x):
        return x * self.mask

    def adjoint(self, y):
        return y * self.mask

    def pinv(self, y):
        return y * self.mask


class SizedConvPrior(ConvPrior):
    """:class:`ConvPrior` declared as trained on ``image_size`` squares: the module evaluates it
    by tiles at other sizes (its zero padding marks every tile edge)."""

    def __init__(self, image_size: int = 16, **kwargs) -> None:
        super().__init__(**kwargs)
        self.image_size = int(image_size)


class SizedGaussianPrior(DiffusionPrior):
    """The analytic Gaussian prior declared as trained on ``image_size`` squares: tiled at other
    sizes, which changes nothing for its independent pixels (the closed form of tiling)."""

    def __init__(self, image_size: int = 16, mean: float = 0.1, std: float = 0.5) -> None:
        from lightning_redd.priors.gaussian import GaussianPrior

        super().__init__(channels=3, image_size=image_size)
        self.inner = GaussianPrior(mean=mean, std=std)

    def predict_eps(self, x_t, t):
        return self.inner.predict_eps(x_t, t)


def capture_writes(monkeypatch) -> list:
    """Record every batch (:class:`~lightning_redd.lit.restored.Restored`) the writer receives."""
    from lightning_redd.lit.writer import RestorationWriter

    seen: list = []
    original = RestorationWriter.write

    def spy(self, trainer, out):
        seen.append(out)
        original(self, trainer, out)

    monkeypatch.setattr(RestorationWriter, "write", spy)
    return seen


def written(batches: list) -> dict:
    """The written members' estimates by name (a resumed batch also solves its finished members, ``keep`` False)."""
    return {n: b.x_hat[i] for b in batches for i, n in enumerate(b.names) if b.keep is None or bool(b.keep[i])}


def run_cli(argv, cwd, processes: int = 1) -> None:
    """``lightning-redd <argv>`` from the folder ``cwd`` on ``processes`` CPU processes.

    Rank 0 runs in this interpreter (a fresh one costs ~4 s of imports). With several processes
    (``--trainer.strategy ddp``, gloo) Lightning's launcher starts ranks 1.. as fresh interpreters
    running ``python -m lightning_redd.lit.cli <argv>`` (the command a console-script launch gives
    them: this interpreter's own command line is pytest's); the run checks that exactly
    ``processes - 1`` of them started and ended with status 0, then closes the process group and
    gives back the environment variables and thread count the launcher changed.
    """
    import os
    import sys
    from pathlib import Path

    import torch
    from lightning.fabric.strategies.launchers.subprocess_script import _ChildProcessObserver
    from lightning.pytorch.strategies.launchers import subprocess_script

    from lightning_redd.lit.cli import cli, close_process_group

    argv = [str(a) for a in argv]
    if processes > 1:
        argv += ["--trainer.devices", str(processes), "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu"]
    children: list = []
    environ, threads, here = dict(os.environ), torch.get_num_threads(), os.getcwd()
    command, observe = subprocess_script._basic_subprocess_cmd, subprocess_script._launch_process_observer
    observers: list = []

    class RankObserver(_ChildProcessObserver):
        """Lightning's watcher of the ranks it started (a failed rank ends them all, this process
        too, as in a real launch: rank 0 may be waiting in a collective that never returns), stood
        down before this function ends the ranks itself."""
        stood_down = False

        def _terminate_all(self) -> None:
            if not self.stood_down:
                super()._terminate_all()

    def observe_ranks(procs):
        children.extend(procs)
        observers.append(RankObserver(main_pid=os.getpid(), child_processes=procs, sleep_period=1))
        observers[-1].start()

    tests = Path(__file__).resolve().parent
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(tests.parent), str(tests), environ.get("PYTHONPATH", "")) if p)
    subprocess_script._basic_subprocess_cmd = lambda: [sys.executable, "-m", "lightning_redd.lit.cli", *argv]
    subprocess_script._launch_process_observer = observe_ranks
    os.chdir(cwd)
    try:
        cli(argv)
        close_process_group()  # as main() does: a barrier, then each rank tears its end down
        for rank, proc in enumerate(children, start=1):
            assert proc.wait(timeout=300) == 0, f"rank {rank} ended with status {proc.returncode}"
    finally:
        for observer in observers:
            observer.stood_down = True
        for proc in children:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        subprocess_script._basic_subprocess_cmd, subprocess_script._launch_process_observer = command, observe
        os.chdir(here)
        os.environ.clear()
        os.environ.update(environ)
        torch.set_num_threads(threads)
    assert len(children) == processes - 1, f"{len(children) + 1} process(es) ran, not {processes}"
