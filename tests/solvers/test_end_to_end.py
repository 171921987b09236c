"""RED-diff runs end to end on every operator of the registry with the shipped embedded
prior (3 iterates: a smoke test of the whole path, not of quality)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_redd import seeding
from lightning_redd.data.folder import list_images, load_image
from lightning_redd.operators.registry import OPERATORS, build_operator
from lightning_redd.priors.embedded import EmbeddedPrior
from lightning_redd.solvers.red_diff import RedDiff

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"


@pytest.fixture(scope="module")
def prior():
    return EmbeddedPrior()


@pytest.fixture(scope="module")
def images():
    return torch.stack([load_image(p, 64) for p in list_images(DEMO)[:2]])


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_red_diff_solves_every_operator(name, prior, images):
    op = build_operator(name).bind([11, 12], tuple(images.shape[1:]), names=["a", "b"])
    y = op.measure(images, seeding.generators(0, [0, 1], "noise"))
    solver = RedDiff(num_steps=3, lr=0.1)
    state = solver.init(y, op, prior, seeding.generators(0, [0, 1], "solver"))
    start = state.mu.detach().clone()
    while not state.done:
        stats = solver.step(state, y, op, prior)
        assert all(torch.isfinite(v.float()).all() for v in stats.values())
    out = solver.estimate(state)
    assert out.shape == images.shape and torch.isfinite(out).all()
    assert not torch.equal(out, start)
