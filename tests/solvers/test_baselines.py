"""The baselines on real photographs, and every registered solver on every operator of the
registry. (The properties every solver shares, batch independence, divergence freezing, fit =
predict, NFE counts and determinism, are in test_solver_properties.py, parametrised over the
solver registry; test_lightning_paths.py runs each through the Lightning module in fit and
predict.)"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from lightning_redd import seeding
from lightning_redd.data.folder import list_images, load_image
from lightning_redd.metrics import psnr
from lightning_redd.operators.inpainting import Inpainting
from lightning_redd.operators.registry import OPERATORS, build_operator
from lightning_redd.priors.gaussian import GaussianPrior
from lightning_redd.solvers.all import SOLVERS
from lightning_redd.solvers.classical import Classical
from lightning_redd.solvers.ddrm import DDRM
from lightning_redd.solvers.dps import DPS
from lightning_redd.solvers.pigdm import PiGDM

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"


@pytest.fixture(scope="module")
def demo():
    from lightning_redd.priors.embedded import EmbeddedPrior

    idx = [0, 2]
    x = torch.stack([load_image(p, 64) for p in list_images(DEMO)])[idx]
    op = Inpainting(mask="random", drop_fraction=0.7).bind([seeding.image_seed(0, i, "operator") for i in idx], (3, 64, 64))
    y = op.measure(x, seeding.generators(0, idx, "noise"))
    return EmbeddedPrior(), x, y, op, idx


@pytest.mark.slow
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
def test_every_solver_runs_on_every_operator(name):
    """Every registered solver, in its cheap settings, on each operator of the registry (analytic
    prior: a smoke test of the whole path, not of quality). A solver refuses an operator its
    requirements exclude (DDRM: no SVD, or Poisson noise) with an error naming itself; on every
    other operator it gives finite results of the image's shape."""
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    op = build_operator(name).bind([11, 12], (3, 64, 64), names=["a", "b"])
    y = op.measure(x, seeding.generators(0, [0, 1], "noise"))
    for cls in SOLVERS.values():
        solver = cls(**cls.requirements.settings)
        run = lambda: solver.solve(y, op, GaussianPrior(), seeding.generators(0, [0, 1], "solver"))  # noqa: E731
        if not cls.requirements.fits(op):
            with pytest.raises((TypeError, ValueError), match=rf"^{re.escape(solver.label)} (needs|models|handles)"):
                run()
        else:
            out = run()
            assert out.shape == x.shape and torch.isfinite(out).all(), solver.label
