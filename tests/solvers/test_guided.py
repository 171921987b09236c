"""DPS and PiGDM: their guidance by hand on a Gaussian prior, and their autograd cost.

For the Gaussian prior N(m, s^2) (see test_ddim's docstring) ``x0_hat(x_t) = m + J (x_t -
sqrt(a_t) m)`` with the scalar Jacobian ``J = sqrt(a_t) s^2 / v_t``, ``v_t = a_t s^2 + 1 - a_t``.
With a mask operator (``A = A^T = A^+ = diag(mask)``):

* DPS: ``grad_{x_t} ||y - A x0_hat|| = -J A^T r / ||r||``, ``r = y - A x0_hat``, so the step adds
  ``+zeta J A r / ||r||`` per image.
* PiGDM: ``g = J (A^+ y - A^+ A x0_hat) = J A (y - x0_hat)``; the step adds
  ``w sqrt(a_t a_prev) g``.
"""
from __future__ import annotations

import pytest
import torch
from helpers import ConvPrior, MaskOperator

from lightning_redd import seeding
from lightning_redd.priors.gaussian import GaussianPrior
from lightning_redd.solvers.ddim import ddim_coefficients
from lightning_redd.solvers.dps import DPS
from lightning_redd.solvers.pigdm import PiGDM
from lightning_redd.solvers.red_diff import RedDiff

M, S = 0.1, 0.5


def problem(batch: int = 2, shape=(3, 6, 6)):
    torch.manual_seed(0)
    prior = GaussianPrior(mean=M, std=S, channels=shape[0])
    op = MaskOperator((torch.rand(shape) > 0.4).float())
    y = op((M + S * torch.randn(batch, *shape)).clamp(-1, 1))
    return prior, op, y, seeding.generators(0, range(batch), "solver")


def by_hand(solver, state, y, op, k: int) -> torch.Tensor:
    """Iterate k of DPS / PiGDM (eta = 0) from state.x, in float64."""
    t, p = int(state.t[k]), int(state.t_prev[k])
    a_t, a_p = state.alpha(t), state.alpha(p)
    x = state.x.double()
    v_t = a_t * S**2 + 1 - a_t
    eps_hat = (1 - a_t) ** 0.5 * (x - a_t**0.5 * M) / v_t
    x0_hat = (x - (1 - a_t) ** 0.5 * eps_hat) / a_t**0.5
    jac = a_t**0.5 * S**2 / v_t
    mask, yd = op.mask.double(), y.double()
    _, c2 = ddim_coefficients(a_t, a_p, 0.0)
    move = a_p**0.5 * x0_hat + c2 * eps_hat
    if isinstance(solver, DPS):
        r = yd - mask * x0_hat
        norm = r.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        return move + solver.zeta * jac * mask * r / norm
    return move + solver.guidance * (a_t * a_p) ** 0.5 * jac * mask * (yd - x0_hat)


@pytest.mark.parametrize(
    "solver", [DPS(num_steps=10, zeta=0.7, eta=0.0), PiGDM(num_steps=10, guidance=1.3)], ids=["DPS", "PiGDM"]
)
def test_guidance_matches_the_closed_form_step_by_step(solver):
    prior, op, y, gens = problem()
    state = solver.init(y, op, prior, gens)
    for k in range(10):
        expected = by_hand(solver, state, y, op, k)
        stats = solver.step(state, y, op, prior)
        torch.testing.assert_close(state.x.double(), expected, rtol=1e-5, atol=1e-6)
        assert stats["residual"].shape == (2,) and stats["t"].shape == (2,)
    assert state.nfe == 10 and not state.x.requires_grad and not state.x0_hat.requires_grad


def test_dps_gives_no_guidance_for_a_zero_residual():
    prior, _, y, _ = problem()
    op = MaskOperator(torch.zeros(3, 6, 6))  # A = 0 and y = 0: r = 0, the 0 / 0 case
    y = torch.zeros_like(y)
    out = DPS(num_steps=5).solve(y, op, prior, seeding.generators(0, [0, 1], "solver"))
    plain = DPS(num_steps=5, zeta=0.0).solve(y, op, prior, seeding.generators(0, [0, 1], "solver"))
    assert torch.isfinite(out).all() and torch.equal(out, plain)


def saved_bytes_of_one_step(solver, prior, y, op) -> int:
    state = solver.init(y, op, prior, seeding.generators(0, range(y.shape[0]), "solver"))
    saved: list[int] = []

    def pack(t):
        saved.append(t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        solver.step(state, y, op, prior)
    return sum(saved)


def test_dps_and_pigdm_backpropagate_through_the_denoiser_red_diff_does_not():
    """Bytes saved for backward during one iterate on the same 6-layer, 64-channel network:
    RED-diff keeps only O(image) (its data term, measured 2.5x the image), DPS and PiGDM keep the
    denoiser's activations (measured 240x the image: the 64-channel maps of every layer)."""
    prior = ConvPrior(width=64, depth=6)
    shape = (3, 32, 32)
    op = MaskOperator(torch.ones(shape))
    y = op(torch.zeros(2, *shape))
    image_bytes = y.numel() * 4
    red = saved_bytes_of_one_step(RedDiff(num_steps=5), prior, y, op)
    dps = saved_bytes_of_one_step(DPS(num_steps=5), prior, y, op)
    pigdm = saved_bytes_of_one_step(PiGDM(num_steps=5), prior, y, op)
    assert red <= 4 * image_bytes, red
    assert dps > 50 * image_bytes and pigdm > 50 * image_bytes, (dps, pigdm)
    assert dps > 10 * red and pigdm > 10 * red


@pytest.mark.parametrize("cls", [DPS, PiGDM])
def test_inference_mode_is_named(cls):
    prior, op, y, gens = problem()
    solver = cls(num_steps=3)
    with torch.inference_mode():
        state = solver.init(y, op, prior, gens)
        with pytest.raises(RuntimeError, match="inference_mode"):
            solver.step(state, y, op, prior)


@pytest.mark.parametrize(
    "bad", [(DPS, dict(zeta=-1.0)), (PiGDM, dict(guidance=-1.0)), (DPS, dict(eta=2.0)), (PiGDM, dict(start="x"))]
)
def test_bad_options_are_named(bad):
    cls, kwargs = bad
    with pytest.raises(ValueError, match="must be|allowed"):
        cls(**kwargs)
