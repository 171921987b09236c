"""``bench.py --pieces``: the per-iterate costs around the denoiser, each timed alone.

What a RED-diff iterate does besides ``prior.eps`` (``lightning_redd/solvers/red_diff.py``,
``seeding.py``, ``lit/module.py``), timed in isolation on the benchmark's batch, each next to
the form it had before the hot-path work (``before:``) or could take (``alt:``), so the gain of
a fix can be read off. The noise and Adam rows are the solver's ``noise`` and ``adam`` settings.
On CUDA the device-copy rows also synchronise the host (pageable host-to-device copies).
"""
from __future__ import annotations

import statistics

import torch

from lightning_redd import seeding
from lightning_redd.solvers.base import NoiseSource, Solver
from lightning_redd.solvers.red_diff import RedDiff

from bench_cases import Clock


def _time(call, device: torch.device, repeats: int) -> float:
    """Median seconds of ``call()`` (one warm-up call first)."""
    call()
    times = []
    for _ in range(repeats):
        clock = Clock(device)
        clock.mark()
        call()
        clock.mark()
        times.append(clock.intervals()[0])
    return statistics.median(times)


def _adam(mu: torch.Tensor, **kw) -> torch.optim.Adam:
    mu = mu.detach().clone().requires_grad_(True)
    mu.grad = torch.randn_like(mu)
    return torch.optim.Adam([mu], lr=0.25, betas=(0.9, 0.99), **kw)


def pieces(prior, problem: dict, device: torch.device, repeats: int) -> dict[str, float]:
    """Seconds per call of each piece (see the module docstring)."""
    y, op, idx = problem["y"], problem["op"], problem["idx"]
    solver = RedDiff(num_steps=100)
    state = solver.init(y, op, prior, seeding.generators(0, idx, "solver"))
    shape, b = tuple(state.mu.shape[1:]), len(idx)
    gens = seeding.generators(0, idx, "solver")
    host, dev = NoiseSource(gens, device, "host"), NoiseSource(gens, device, "device")
    dev_gen = torch.Generator(device=device).manual_seed(0)
    times_cpu = state.times.cpu()
    t_dev = state.times[:, 0, 0]
    out = {
        "noise=host: per-image CPU draws, stacked, to device": lambda: host.randn((1, *shape)),
        "noise=device: one device generator per image": lambda: dev.randn((1, *shape)),
        "alt: one draw for the batch (not batch-independent)": lambda: torch.randn((b, 1, *shape), generator=dev_gen, device=device),
        "before: times[:, k] copied from the host each step": lambda: times_cpu[:, 0].to(device),
        "now: index the grid moved once at init": lambda: state.times[:, 0],
        "before: abar, w recomputed from alphas_cumprod": lambda: _schedule_each_step(solver, prior, state.times[:, 0]),
        "now: index sqrt_abar, sqrt(1-abar), w from init": lambda: (state.sqrt_abar[:, 0], state.sqrt_one_minus_abar[:, 0], state.weight[:, 0]),
        "DiffusionPrior.check_times, sync_checks=True": lambda: _checks(prior, True, t_dev, b, device),
        "DiffusionPrior.check_times, default (no sync)": lambda: _checks(prior, False, t_dev, b, device),
        "freeze_diverged (isfinite + where over mu)": lambda: Solver.freeze_diverged(state, state.mu.detach()),
        "solver.estimate (clone of mu; fit logs PSNR of it)": lambda: solver.estimate(state),
        "PSNR of the estimate (fit logs it each step)": lambda: _psnr(state.mu.detach(), problem["x"]),
    }
    opts = {"Adam.step, adam=for-loop (torch's CPU default)": {"foreach": False},
            "Adam.step, adam=foreach (auto on CPU)": {"foreach": True}}
    if device.type in ("cpu", "cuda"):
        opts["Adam.step, adam=fused (auto on CUDA)"] = {"fused": True}
    for name, kw in opts.items():
        opt = _adam(state.mu, **kw)
        out[name] = opt.step
    return {name: _time(call, device, repeats) for name, call in out.items()}


def _schedule_each_step(solver, prior, t: torch.Tensor):
    from lightning_redd.solvers.weighting import red_diff_weight

    abar = prior.alphas_cumprod[t].float()
    return abar.sqrt(), (1 - abar).sqrt(), red_diff_weight(prior.alphas_cumprod, t, solver.lam, solver.weighting).float()


def _checks(prior, sync_checks: bool, t: torch.Tensor, b: int, device: torch.device) -> torch.Tensor:
    old, prior.sync_checks = prior.sync_checks, sync_checks
    try:
        return prior.check_times(t, b, device)
    finally:
        prior.sync_checks = old


def _psnr(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    from lightning_redd.metrics import psnr

    return psnr(x, ref).mean().float()


def report_pieces(res: dict[str, float], unit_s: float | None) -> None:
    print(f"{'piece (per iterate)':58} {'ms':>9} {'% fwd':>7}")
    for name, sec in res.items():
        share = "" if not unit_s else f"{100 * sec / unit_s:6.2f}"
        print(f"{name:58} {sec * 1e3:9.3f} {share:>7}")
