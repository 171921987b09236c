"""The classical baseline: the Laplace option against its closed form, recorded PSNRs on the
demo photographs, nonlinear operators, and its options."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import ConvPrior, MaskOperator

from lightning_redd import seeding
from lightning_redd.data.folder import list_images, load_image
from lightning_redd.metrics import psnr
from lightning_redd.operators.hdr import HDR
from lightning_redd.operators.inpainting import Inpainting
from lightning_redd.solvers.classical import Classical, differences

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"


def gens(n: int):
    return seeding.generators(0, range(n), "solver")


@pytest.mark.slow
def test_laplace_option_converges_to_its_closed_form():
    """The loss ``(1/N) [||M (mu - y)||^2 / 2 + lam mu^T L mu / 2]`` (mask M, ``L = Dx^T Dx +
    Dy^T Dy`` from the same forward differences) is a convex quadratic with minimiser
    ``(M + lam L)^{-1} M y``. Adam reaches it to 4.9e-4 (measured, lr 0.01, 2000 steps);
    we allow 1.5e-3, and lam x2 or x0.5 moves the minimiser by >= 0.17."""
    torch.manual_seed(0)
    shape, lam = (1, 8, 8), 0.5
    mask = (torch.rand(shape) > 0.5).float()
    op = MaskOperator(mask)
    y = op(torch.rand(2, *shape) * 2 - 1)
    eye = torch.eye(64, dtype=torch.float64).view(64, 1, 8, 8)
    dx, dy = (d.reshape(64, 64).T for d in differences(eye))
    lap = dx.T @ dx + dy.T @ dy
    m = torch.diag(mask.flatten().double())
    solution = torch.linalg.solve(m + lam * lap, m @ y.flatten(1).double().T).T
    out = Classical(regulariser="laplace", lam=lam, lr=0.01, num_steps=2000).solve(y, op, None, gens(2))
    assert (out.flatten(1).double() - solution).abs().max() < 1.5e-3


# Recorded on the four demo photographs (data/demo, 64x64), operator seeds image_seed(0, i,
# "operator"), default options (300 Adam steps). Per-image PSNR in dB.
RECORDED = {
    ("box", "pinv"): [19.667, 19.230, 15.421, 17.988],
    ("box", "tv"): [23.253, 22.497, 18.007, 19.906],
    ("box", "laplace"): [23.274, 24.443, 19.006, 20.113],
    ("strokes", "pinv"): [20.350, 18.922, 15.292, 18.191],
    ("strokes", "tv"): [26.643, 25.528, 23.323, 21.703],
    ("strokes", "laplace"): [27.691, 26.488, 23.613, 22.593],
}


@pytest.mark.slow
@pytest.mark.parametrize("mask", ["box", "strokes"])
def test_restores_the_demo_photographs_as_recorded(mask):
    """Both regularisers beat the start (pinv: missing pixels at 0) on every image, and the
    Laplace (harmonic) fill beats smoothed TV on average (box 21.709 vs 20.916 dB, strokes
    (the demo's mask) 25.096 vs 24.299 dB)."""
    x = torch.stack([load_image(p, 64) for p in list_images(DEMO)])
    kwargs = dict(mask="box") if mask == "box" else dict(mask="strokes", coverage=(0.2, 0.3))
    op = Inpainting(**kwargs).bind([seeding.image_seed(0, i, "operator") for i in range(4)], (3, 64, 64))
    y = op.measure(x, seeding.generators(0, range(4), "noise"))
    start = psnr(op.pinv(y), x)
    torch.testing.assert_close(start.tolist(), RECORDED[mask, "pinv"], rtol=0, atol=1e-3)
    means = {}
    for reg in ("tv", "laplace"):
        state = Classical(regulariser=reg).run(y, op, ConvPrior(), gens(4))  # any prior: ignored
        value = psnr(Classical().estimate(state), x)
        # smoothed TV is sensitive to float32 rounding: on another CPU (Sapphire Rapids, torch
        # 2.14.1) its values moved by up to 0.0096 dB from those recorded; the Laplace fill by 3e-4
        torch.testing.assert_close(value.tolist(), RECORDED[mask, reg], rtol=0, atol=0.02 if reg == "tv" else 1e-3)
        assert (value > start + 0.5).all() and state.nfe == 0 and torch.equal(state.x_init, op.pinv(y))
        means[reg] = value.mean()
    assert means["laplace"] > means["tv"] + 0.5


def test_works_for_a_nonlinear_operator():
    """HDR (a clipped gain, not linear): only forward (and pinv) are used; the data term falls
    from a zero start by more than half in 50 steps."""
    op = HDR(gain=2.0)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = op(x)
    solver = Classical(num_steps=50, lam=0.001, init="zeros")  # pinv would fit y exactly already
    losses = []
    solver.run(y, op, None, gens(2), callback=lambda k, s, stats: losses.append(stats["loss_obs"]))
    assert (losses[-1] < 0.5 * losses[0]).all() and all(torch.isfinite(v).all() for v in losses)


def test_zeros_init_and_state():
    op = MaskOperator(torch.ones(1, 4, 4))
    y = torch.full((1, 1, 4, 4), 0.5)
    state = Classical(init="zeros", num_steps=2).init(y, op, None, gens(1))
    assert torch.equal(state.mu.detach(), torch.zeros_like(y)) and torch.equal(state.x_init, y)


@pytest.mark.parametrize(
    "bad",
    [dict(regulariser="l1"), dict(init="random"), dict(lr=0), dict(tv_eps=0), dict(num_steps=0), dict(adam_betas=(1.0, 0.9))],
)
def test_bad_options_are_named(bad):
    with pytest.raises(ValueError, match="allowed|need|must be"):
        Classical(**bad)
