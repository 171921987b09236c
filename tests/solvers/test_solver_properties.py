"""Properties every registered solver has, parametrised over ``SOLVERS`` when this module is
collected: a solver class with a registry name gets them with no edit here (a toy solver defined
in a module collected before this one too: see test_solver_registry.py).

Each solver runs in the cheap configuration its ``requirements.settings`` declare, on 8x8 images,
with the operator the suite chooses from the operator registry for it (:func:`operator_name`).
With the analytic Gaussian prior (elementwise, so no kernel rounds differently for a batch) and
an elementwise operator, every property below holds bit for bit:

* batch independence: an image alone equals the same image in a batch with others, in any order
  (with the convolutional ConvPrior: within the solver's declared ``batch_rtol``);
* device-count independence: the batch split into two shards, each solved by its own solver
  with its own operator binding and generators (as two processes would), equals the whole;
* divergence freezing: an image made non-finite is frozen at zero, reported in
  ``state.diverged``, and its batch mates equal a run without it;
* ``run`` equals ``init`` + one ``step`` per call (the predict path equals the fit path), and a
  ``step`` after the last one is refused;
* ``state.nfe`` counts the denoiser's evaluations per image (a counting prior);
* determinism: the same seeds give identical results, other seeds different ones (identical for
  a deterministic solver); ``noise="host"`` is the CPU default, ``"device"`` another stream.
"""
from __future__ import annotations

import inspect

import pytest
import torch
from helpers import ConvPrior

from lightning_redd import seeding
from lightning_redd.operators.base import ForwardOperator
from lightning_redd.operators.registry import OPERATORS
from lightning_redd.priors.base import DiffusionPrior
from lightning_redd.priors.gaussian import GaussianPrior
from lightning_redd.solvers.all import SOLVERS

SHAPE = (3, 8, 8)
SEEDS = [101, 102, 103, 104]  # operator seeds of images 0..3
PREFERRED = "inpainting_random"  # elementwise, linear, with an SVD: fits every built-in solver
NAMES = sorted(SOLVERS)


def noise_modes(name: str) -> tuple[str, ...]:
    """``("auto", "device")`` for solvers with a ``noise`` option, else ``("auto",)``."""
    return ("auto", "device") if "noise" in inspect.signature(SOLVERS[name]).parameters else ("auto",)


CASES = [pytest.param(n, m, id=f"{n}-{m}") for n in NAMES for m in noise_modes(n)]


def operator_name(name: str) -> str:
    """The registry operator the suite uses for solver ``name``: :data:`PREFERRED` when it fits
    the solver's requirements, else the first fitting one in registry order."""
    req = SOLVERS[name].requirements
    for candidate in [PREFERRED, *OPERATORS]:
        if req.fits(OPERATORS[candidate]()):
            return candidate
    raise LookupError(f"no operator of the registry fits {name}'s requirements {req}")


def make_solver(name: str, noise: str = "auto"):
    settings = dict(SOLVERS[name].requirements.settings)
    if noise != "auto":
        settings["noise"] = noise
    return SOLVERS[name](**settings)


def problem(name: str, indices, seed: int = 0):
    """``(y, op, gens)`` of images ``indices`` (fixed 8x8 images; operator, noise and solver
    streams per image, as the data module draws them)."""
    x = torch.rand(4, *SHAPE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    op = OPERATORS[operator_name(name)](sigma_y=0.02).bind([SEEDS[i] for i in indices], SHAPE, names=[f"img{i}" for i in indices])
    y = op.measure(x[list(indices)], seeding.generators(0, indices, "noise"))
    return y, op, seeding.generators(seed, indices, "solver")


def solve(name: str, indices, prior, noise: str = "auto", seed: int = 0):
    solver = make_solver(name, noise)
    y, op, gens = problem(name, indices, seed)
    state = solver.run(y, op, prior, gens)
    return solver.estimate(state), state


def gaussian() -> GaussianPrior:
    return GaussianPrior(mean=0.1, std=0.5)


class CountingPrior(DiffusionPrior):
    """Wraps a prior and counts the images it evaluates (rows of every network call)."""

    def __init__(self, inner: DiffusionPrior) -> None:
        super().__init__(channels=inner.channels)
        self.inner, self.rows, self.calls = inner, 0, 0

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.rows, self.calls = self.rows + x_t.shape[0], self.calls + 1
        return self.inner.predict_eps(x_t, t)


def nan_rows(out: torch.Tensor, batch: int, row: int) -> torch.Tensor:
    """``out`` times 1, and NaN for the rows of image ``row`` (``out`` holds ``batch`` images,
    each as the same number of consecutive rows)."""
    w = torch.ones(out.shape[0], *([1] * (out.ndim - 1)), dtype=out.dtype, device=out.device)
    per = out.shape[0] // batch
    w[row * per : (row + 1) * per] = float("nan")
    return out * w


class PoisonedPrior(CountingPrior):
    """The prior's output for image ``row`` of a ``batch`` turns NaN from its 3rd call on."""

    def __init__(self, inner: DiffusionPrior, batch: int, row: int = 1) -> None:
        super().__init__(inner)
        self.batch, self.row = batch, row

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = super().predict_eps(x_t, t)
        return nan_rows(out, self.batch, self.row) if self.calls >= 3 else out


def poison_operator(op: ForwardOperator, batch: int, row: int = 1) -> None:
    """Make ``op``'s forward NaN for image ``row`` from its 3rd call on (for prior-free solvers)."""
    cls, calls = type(op), [0]

    def forward(self, x):
        calls[0] += 1
        out = cls.forward(self, x)
        return nan_rows(out, batch, row) if calls[0] >= 3 else out

    op.__class__ = type(f"Poisoned{cls.__name__}", (cls,), {"forward": forward})


# --------------------------------------------------------------------------- properties
@pytest.mark.parametrize("name, noise", CASES)
def test_an_image_alone_equals_it_in_a_batch(name, noise):
    prior = gaussian()
    together, _ = solve(name, [0, 1, 2, 3], prior, noise)
    alone = torch.cat([solve(name, [i], prior, noise)[0] for i in range(4)])
    shuffled, _ = solve(name, [2, 0], prior, noise)
    assert torch.equal(together, alone) and torch.equal(shuffled, together[[2, 0]])
    assert (together[0] - together[1]).abs().max() > 1e-3  # the images differ


@pytest.mark.parametrize("name", NAMES)
def test_batch_independence_with_a_conv_network_within_the_declared_bound(name):
    """A batched conv rounds differently from per-image convs (~1e-7 relative on CPU) and a solver
    carries that along; ``requirements.batch_rtol`` bounds it. Measured here (ConvPrior seeds 0-2):
    1.5e-7 for DDIM, DPS, PiGDM and DDRM (bound 2e-6), 3.1e-7 for RED-diff (bound 1e-5: its Adam
    step can amplify rounding near zero gradients), 0 for Classical (no network; bound 0). A real
    dependence on batch mates moves results by > 1e-2 relative."""
    prior = ConvPrior()
    together, _ = solve(name, [0, 1, 2, 3], prior)
    alone = torch.cat([solve(name, [i], prior)[0] for i in range(4)])
    shuffled, _ = solve(name, [2, 0], prior)
    bound = SOLVERS[name].requirements.batch_rtol * alone.abs().max()
    assert (together - alone).abs().max() <= bound and (shuffled - alone[[2, 0]]).abs().max() <= bound


@pytest.mark.parametrize("name, noise", CASES)
def test_two_shards_solved_apart_equal_the_whole_batch(name, noise):
    whole, state = solve(name, [0, 1, 2, 3], gaussian(), noise)
    shards = [solve(name, part, gaussian(), noise) for part in ([0, 1], [2, 3])]
    assert torch.equal(torch.cat([s[0] for s in shards]), whole)
    assert torch.equal(torch.cat([s[1].x_init for s in shards]), state.x_init)
    assert all(s[1].nfe == state.nfe for s in shards) and not state.diverged.any()


@pytest.mark.parametrize("name", NAMES)
def test_a_diverging_image_is_frozen_and_its_batch_mates_are_untouched(name):
    solver = make_solver(name)
    y, op, gens = problem(name, [0, 1, 2])
    if SOLVERS[name].requirements.uses_prior:
        prior = PoisonedPrior(gaussian(), batch=3)
    else:
        prior = gaussian()
        poison_operator(op, batch=3)
    state = solver.run(y, op, prior, gens)
    out = solver.estimate(state)
    assert state.diverged.tolist() == [False, True, False] and state.k == solver.num_iterates
    assert torch.equal(out[1], torch.zeros_like(out[1])) and torch.isfinite(out).all()
    without, _ = solve(name, [0, 2], gaussian())
    assert torch.equal(out[[0, 2]], without)


@pytest.mark.parametrize("name", NAMES)
def test_run_is_init_plus_one_step_per_call(name):
    """The predict path (``run``) and the fit path (``init``, then ``step`` once per training step)
    give the same states and statistics, bit for bit; a further ``step`` is refused."""
    solver = make_solver(name)
    y, op, gens = problem(name, [0, 1])
    seen = []
    ran = solver.run(y, op, gaussian(), gens, callback=lambda k, s, stats: seen.append((k, s.k, dict(stats))))
    y, op, gens = problem(name, [0, 1])
    state = solver.init(y, op, gaussian(), gens)
    assert state.k == 0 and state.nfe == 0 and not state.done and torch.equal(state.x_init, ran.x_init)
    for k in range(solver.num_iterates):
        stats = solver.step(state, y, op, gaussian())
        assert seen[k][:2] == (k, k + 1) and stats.keys() == seen[k][2].keys()
        assert all(torch.equal(v, seen[k][2][n]) and v.shape[0] == 2 for n, v in stats.items())
    assert state.done and state.k == ran.k == solver.num_iterates and state.nfe == ran.nfe
    assert torch.equal(solver.estimate(state), solver.estimate(ran)) and torch.equal(state.diverged, ran.diverged)
    with pytest.raises(RuntimeError, match="already ran"):
        solver.step(state, y, op, gaussian())


@pytest.mark.parametrize("name", NAMES)
def test_nfe_counts_the_denoiser_evaluations_per_image(name):
    solver, prior = make_solver(name), CountingPrior(gaussian())
    y, op, gens = problem(name, [0, 1, 2])
    counts = []
    state = solver.run(y, op, prior, gens, callback=lambda k, s, stats: counts.append((prior.rows, s.nfe)))
    assert all(rows == 3 * nfe for rows, nfe in counts) and prior.rows == 3 * state.nfe
    assert state.nfe == solver.num_iterates * solver.nfe_per_iterate
    assert (state.nfe > 0) == SOLVERS[name].requirements.uses_prior
    if not SOLVERS[name].requirements.uses_prior:  # a prior-free solver needs no prior at all
        y, op, gens = problem(name, [0, 1, 2])
        assert torch.equal(solver.solve(y, op, None, gens), solver.estimate(state))


@pytest.mark.parametrize("name, noise", CASES)
def test_same_seeds_give_identical_results_other_seeds_other_ones(name, noise):
    first, _ = solve(name, [0, 1], gaussian(), noise)
    again, _ = solve(name, [0, 1], gaussian(), noise)
    other, _ = solve(name, [0, 1], gaussian(), noise, seed=1)
    assert torch.equal(first, again)
    if SOLVERS[name].requirements.stochastic:
        assert all((first[i] - other[i]).abs().max() > 1e-4 for i in range(2))
    else:
        assert torch.equal(first, other)


@pytest.mark.parametrize("name", [n for n in NAMES if "device" in noise_modes(n)])
def test_host_noise_is_the_cpu_default_and_device_noise_another_stream(name):
    auto, state = solve(name, [0, 1], gaussian())
    host, _ = solve(name, [0, 1], gaussian(), "host")
    device, _ = solve(name, [0, 1], gaussian(), "device")
    assert state.noise.mode == "host" and torch.equal(auto, host)
    if SOLVERS[name].requirements.stochastic:
        assert (device - host).abs().max() > 1e-4
