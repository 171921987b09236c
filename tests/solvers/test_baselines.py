"""Properties every baseline shares: results do not depend on batch size or batch mates,
a diverging image is frozen without touching its batch mates, the demo photographs are
restored better than the start, and every baseline runs on every operator of the registry.
(test_lightning_paths.py runs each through the Lightning module in fit and predict.)"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import ConvPrior

from lightning_redd import seeding
from lightning_redd.data.folder import list_images, load_image
from lightning_redd.metrics import psnr
from lightning_redd.operators.base import SVDOperator
from lightning_redd.operators.inpainting import Inpainting
from lightning_redd.operators.registry import OPERATORS, build_operator
from lightning_redd.priors.gaussian import GaussianPrior
from lightning_redd.solvers.classical import Classical
from lightning_redd.solvers.ddim import DDIM
from lightning_redd.solvers.ddrm import DDRM
from lightning_redd.solvers.dps import DPS
from lightning_redd.solvers.pigdm import PiGDM

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"
SEEDS = [101, 102, 103, 104]

#: name -> (solver, bound on max|batched - alone| relative to max|result|). A batched conv
#: differs from per-image convs by ~1e-7 relative on CPU, and a sampler carries that along its
#: trajectory: measured 2.7e-7 (DDIM), 2.9e-7 (DPS), 2.0e-7 (PiGDM), 1.5e-7 (DDRM) of outputs
#: of size ~350 (the random ConvPrior is no image model: its samples are large), shuffled
#: batches exactly equal; we allow 2e-6. Classical has no network: exactly equal. A real
#: dependence on batch mates moves results by > 1e-2 relative.
BASELINES = {
    "ddim": (lambda: DDIM(num_steps=12, eta=0.5), 2e-6),
    "dps": (lambda: DPS(num_steps=12, zeta=0.5), 2e-6),
    "pigdm": (lambda: PiGDM(num_steps=12, eta=0.5), 2e-6),
    "ddrm": (lambda: DDRM(num_steps=12), 2e-6),
    "classical": (lambda: Classical(num_steps=30), 0.0),
}


def batch_problem(indices):
    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    op = Inpainting(mask="random", drop_fraction=0.5, sigma_y=0.02).bind([SEEDS[i] for i in indices], (3, 16, 16))
    y = op.measure(x[indices], seeding.generators(0, indices, "noise"))
    return y, op, seeding.generators(0, indices, "solver")


def solve(solver, indices, prior):
    y, op, gens = batch_problem(indices)
    return solver.run(y, op, prior, gens)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_result_does_not_depend_on_batch_size_or_mates(name):
    make, bound = BASELINES[name]
    prior, solver = ConvPrior(), make()
    together = solver.estimate(solve(solver, [0, 1, 2, 3], prior))
    alone = torch.cat([solver.estimate(solve(solver, [i], prior)) for i in range(4)])
    shuffled = solver.estimate(solve(solver, [2, 0], prior))
    scale = together.abs().max()
    assert (together - alone).abs().max() <= bound * scale, ((together - alone).abs().max(), scale)
    assert (shuffled - together[[2, 0]]).abs().max() <= bound * scale
    assert (together[0] - together[1]).abs().max() > 1e-2 * scale  # the images differ


def poison(t: torch.Tensor) -> torch.Tensor:
    """``(B, 1, 1, 1)`` factors: 1, and NaN for batch row 1."""
    w = torch.ones(t.shape[0], 1, 1, 1, dtype=t.dtype, device=t.device)
    w[1] = float("nan")
    return w


class PoisonedPrior(ConvPrior):
    """ConvPrior whose noise prediction for batch row 1 turns NaN from the 3rd call on."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def predict_eps(self, x_t, t):
        out = super().predict_eps(x_t, t)
        self.calls += 1
        if self.calls >= 3:
            out = out * poison(out)
        return out


class PoisonedInpainting(Inpainting):
    """Inpainting whose forward for batch row 1 turns NaN from the 3rd call on (for Classical,
    which never calls a prior)."""

    calls = 0

    def forward(self, x):
        out = super().forward(x)
        type(self).calls += 1
        if type(self).calls >= 3:  # multiply (not assign) so that the NaN reaches the gradient
            out = out * poison(out)
        return out


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_a_diverging_image_is_frozen_and_its_batch_mate_is_untouched(name):
    make, bound = BASELINES[name]
    solver = make()
    clean = solver.estimate(solve(solver, [0, 1], ConvPrior()))
    y, op, gens = batch_problem([0, 1])
    if name == "classical":
        PoisonedInpainting.calls = 0
        op.__class__ = PoisonedInpainting
        state = solver.run(y, op, None, gens)
    else:
        state = solver.run(y, op, PoisonedPrior(), gens)
    out = solver.estimate(state)
    assert state.diverged.tolist() == [False, True]
    assert torch.equal(out[1], torch.zeros_like(out[1])) and torch.isfinite(out).all()
    assert (out[0] - clean[0]).abs().max() <= bound * clean.abs().max()


@pytest.fixture(scope="module")
def demo():
    from lightning_redd.priors.embedded import EmbeddedPrior

    idx = [0, 2]
    x = torch.stack([load_image(p, 64) for p in list_images(DEMO)])[idx]
    op = Inpainting(mask="random", drop_fraction=0.7).bind([seeding.image_seed(0, i, "operator") for i in idx], (3, 64, 64))
    y = op.measure(x, seeding.generators(0, idx, "noise"))
    return EmbeddedPrior(), x, y, op, idx


@pytest.mark.parametrize(
    "make, gain",
    [
        (lambda: DPS(num_steps=15, zeta=1.0), 1.0),
        (lambda: PiGDM(num_steps=15), 3.0),
        (lambda: DDRM(num_steps=15), 3.0),
        (lambda: Classical(), 3.0),
    ],
    ids=["dps", "pigdm", "ddrm", "classical"],
)
def test_restores_demo_photographs_better_than_the_start(make, gain, demo):
    """70% of the pixels missing, 15 iterates: every baseline gains at least ``gain`` dB on each
    image over the start (pinv: missing pixels at 0; 16.68 and 11.17 dB). Measured gains: DPS
    +1.8 / +2.3 dB (it needs ~1000 steps to fit y: each step moves x_t by only zeta along a
    unit-norm direction), PiGDM +6.3 / +8.2, DDRM +4.6 / +6.7, Classical (TV, 300 Adam steps,
    no network) +8.1 / +10.0. A centre box is not used for the samplers: their fill of a large
    hole (one plausible image) scores below the zero fill in PSNR even when it looks right."""
    prior, x, y, op, idx = demo
    solver = make()
    state = solver.run(y, op, prior, seeding.generators(0, idx, "solver"))
    start, value = psnr(state.x_init, x), psnr(solver.estimate(state), x)
    assert (value > start + gain).all(), (start, value)



@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_every_baseline_runs_on_every_operator(name):
    """3 iterates on each operator of the registry (analytic prior: a smoke test of the
    whole path, not of quality). DDRM refuses operators without an SVD, and Poisson noise,
    with its clear errors; everything else gives finite results."""
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    op = build_operator(name).bind([11, 12], (3, 64, 64), names=["a", "b"])
    y = op.measure(x, seeding.generators(0, [0, 1], "noise"))
    for solver in (DDIM(num_steps=3), DPS(num_steps=3), PiGDM(num_steps=3), DDRM(num_steps=3), Classical(num_steps=3)):
        run = lambda: solver.solve(y, op, GaussianPrior(), seeding.generators(0, [0, 1], "solver"))  # noqa: E731
        if isinstance(solver, DDRM) and not isinstance(op, SVDOperator):
            with pytest.raises(TypeError, match="needs an operator with an SVD"):
                run()
        elif isinstance(solver, DDRM) and op.noise != "gaussian":
            with pytest.raises(ValueError, match="Gaussian measurement noise"):
                run()
        else:
            out = run()
            assert out.shape == x.shape and torch.isfinite(out).all(), solver.label
