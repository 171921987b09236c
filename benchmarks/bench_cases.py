"""What ``bench.py`` measures: the priors, the bound problem, the clock, and the bare modes.

Every mode is timed the same way: a :class:`Clock` marks the start of each unit of work (one
denoiser call, one solver ``step``), back to back, and a unit's cost is the time between two
consecutive marks, so whatever runs between the calls (Lightning's loop, logging, data) is
counted too. CPU: ``time.perf_counter`` (and the process's CPU time, ``time.process_time``). CUDA: events recorded on the stream (no host
synchronisation, so host work that overlaps the GPU is not counted twice; a stalled GPU
shows up as a longer interval). Peaks: on CUDA, ``max_memory_allocated`` above what was
allocated at the interval's start (host-side counters, no sync); on the CPU, the resident
set's high-water mark above the RSS at the interval's start (``VmHWM``, reset through
``/proc/self/clear_refs`` after ``malloc_trim``), measured in a fresh process per mode
(``bench_memory``) because resetting and trimming would disturb the timings.
"""
from __future__ import annotations

import gc
import importlib
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from lightning_redd import seeding
from lightning_redd.operators.inpainting import Inpainting
from lightning_redd.priors.adm import ADMPrior
from lightning_redd.priors.base import DiffusionPrior
from lightning_redd.runs.memory import peak_resident_bytes, process_peak_bytes, reset_peak_rss, resident_bytes
from lightning_redd.solvers.red_diff import RedDiff

#: architectures: guided-diffusion flags for the ADM ones (random weights), the shipped prior.
ARCHS: dict[str, dict] = {
    "embedded64": {},
    "adm256": dict(image_size=256, num_channels=256, num_res_blocks=2, attention_resolutions="32,16,8"),
    "ffhq256": dict(image_size=256, num_channels=128, num_res_blocks=1, attention_resolutions="16"),
    "tiny": dict(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="16",
                 num_head_channels=16),  # for smoke tests
}
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
#: the Trainer precision giving the same autocast as PRECISIONS (lightning_redd.lit.module).
TRAINER_PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed"}
BARE_MODES = ("forward", "iterate", "dps", "graph")


@dataclass
class Switches:
    """The prior's speed switches (``lightning_redd.priors.speed``)."""

    attention: str = "auto"
    channels_last: bool = False
    compile: bool = False
    sync_checks: bool = False

    def kwargs(self) -> dict:
        return asdict(self)


def _randomize_zeroed(net: nn.Module) -> None:
    """Re-initialise the zero-initialised convolutions so every layer does real work."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d)) and not bool(m.weight.any()):
                m.reset_parameters()


def build_prior(arch: str, switches: Switches, device: torch.device, precision: str) -> DiffusionPrior:
    """The prior of ``arch`` on ``device`` with the autocast of ``precision``."""
    torch.manual_seed(0)
    if arch == "embedded64":
        from lightning_redd.priors.embedded import EmbeddedPrior

        prior: DiffusionPrior = EmbeddedPrior(**switches.kwargs())  # the shipped, trained weights
    elif arch in ARCHS:
        prior = ADMPrior(**ARCHS[arch], allow_random_init=True, **switches.kwargs())
        _randomize_zeroed(prior.net)
    else:
        raise ValueError(f"unknown arch {arch!r}; allowed: {sorted(ARCHS)}")
    prior = prior.to(device)
    prior.autocast_dtype = PRECISIONS[precision]
    return prior


def make_problem(prior: DiffusionPrior, batch: int, device: torch.device) -> dict:
    """A centre-box inpainting problem for ``batch`` random images, operator bound per image."""
    size = prior.image_size
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(batch, prior.channels, size, size, generator=g) * 2 - 1).to(device)
    idx = list(range(batch))
    op = Inpainting(mask="box").bind([seeding.image_seed(0, i, "operator") for i in idx], tuple(x.shape[1:]), device=device)
    y = op.measure(x, seeding.generators(0, idx, "noise"))
    return dict(x=x, op=op, y=y, idx=idx)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_bytes() -> int:
    """The current resident size; the process's peak where ``/proc`` is absent."""
    rss = resident_bytes()
    return peak_bytes() if rss is None else rss


def peak_bytes() -> int:
    """The resettable RSS high-water mark (``VmHWM``); ``ru_maxrss`` where ``/proc`` is absent."""
    peak = peak_resident_bytes()
    return process_peak_bytes() if peak is None else peak


def malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Clock:
    """Marks the start of each unit of work; :meth:`intervals` are the units' wall times (s),
    :meth:`cpu_intervals` (CPU only) their process CPU times (all threads), which other jobs
    on a shared machine disturb far less than the wall time.

    ``cpu_memory``: also measure each interval's RSS peak (trims and resets at every mark:
    for memory runs only). On CUDA the peaks are always measured (cheap, no sync).
    """

    def __init__(self, device: torch.device, cpu_memory: bool = False) -> None:
        self.device, self.cpu_memory = device, cpu_memory
        self.marks: list = []
        self.cpu_marks: list[float] = []
        self.peaks_mib: list[float] = []
        self._base: int | None = None

    def mark(self) -> None:
        if self.device.type == "cuda":
            if self._base is not None:
                self.peaks_mib.append((torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
            return
        if self.cpu_memory:
            if self._base is not None:
                self.peaks_mib.append((peak_bytes() - self._base) / 2**20)
            gc.collect()
            malloc_trim()
            reset_peak_rss()
            self._base = rss_bytes()
        self.cpu_marks.append(time.process_time())
        self.marks.append(time.perf_counter())

    def intervals(self) -> list[float]:
        if self.device.type == "cuda":
            sync(self.device)
            return [a.elapsed_time(b) / 1e3 for a, b in zip(self.marks, self.marks[1:])]
        return [b - a for a, b in zip(self.marks, self.marks[1:])]

    def cpu_intervals(self) -> list[float]:
        return [b - a for a, b in zip(self.cpu_marks, self.cpu_marks[1:])]


class TimedRedDiff(RedDiff):
    """RED-diff that marks ``self.clock`` at the entry of every ``step`` (set ``clock`` first)."""

    clock: Clock | None = None

    def step(self, state, y, op, prior):
        if self.clock is not None:
            self.clock.mark()
        return super().step(state, y, op, prior)


def load_dps():
    """``lightning_redd.solvers.dps.DPS`` or a string saying why it cannot be benchmarked."""
    try:
        cls = importlib.import_module("lightning_redd.solvers.dps").DPS
    except (ImportError, AttributeError) as err:
        return f"DPS not available ({err})"
    missing = [m for m in ("init", "step") if not callable(getattr(cls, m, None))]
    return f"DPS lacks {missing}" if missing else cls


def bare_call(mode: str, prior: DiffusionPrior, problem: dict, device: torch.device, steps: int,
              solver_kw: dict | None = None):
    """A zero-argument callable doing one unit of ``mode`` (or a string: why it is skipped);
    ``solver_kw``: extra ``RedDiff`` arguments (``noise``, ``adam``) of the iterate."""
    b, size = len(problem["idx"]), prior.image_size
    x_t = torch.randn(b, prior.channels, size, size, generator=torch.Generator().manual_seed(2)).to(device)
    t = torch.full((b,), 500, dtype=torch.long, device=device)
    y, op = problem["y"], problem["op"]
    if mode == "forward":
        return lambda: _no_grad_eps(prior, x_t, t)
    if mode == "graph":  # the reference's defect: the forward keeps autograd's graph until the next call
        return lambda: prior.eps(x_t.detach().requires_grad_(True), t).sum()
    if mode == "iterate":
        solver = RedDiff(num_steps=steps, lr=0.25, lam=0.25, **(solver_kw or {}))
        state = solver.init(y, op, prior, seeding.generators(0, problem["idx"], "solver"))
        return lambda: solver.step(state, y, op, prior)
    if mode == "dps":
        cls = load_dps()
        if isinstance(cls, str):
            return cls
        try:
            solver = cls(num_steps=steps, zeta=1.0)
            state = solver.init(y, op, prior, seeding.generators(0, problem["idx"], "solver"))
        except TypeError as err:
            return f"DPS API differs from (num_steps, zeta) / init(y, op, prior, gens): {err}"
        return lambda: solver.step(state, y, op, prior)
    raise ValueError(f"unknown mode {mode!r}; allowed: {BARE_MODES}")


def _no_grad_eps(prior: DiffusionPrior, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return prior.eps(x_t, t)


def run_marked(call, clock: Clock, warmup: int, repeats: int) -> None:
    """``warmup + repeats`` calls back to back, a mark before each and one after the last."""
    keep = None
    for _ in range(warmup + repeats):
        clock.mark()
        keep = call()  # a graph-mode result lives until the next call replaces it, as in the reference
    clock.mark()
    del keep
