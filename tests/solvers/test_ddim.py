"""DDIM against the exact DDIM map of a Gaussian prior.

Derivation. Prior ``x0 ~ N(m, s^2)`` i.i.d. per pixel; ``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps``
has variance ``v_t = a_t s^2 + 1 - a_t`` and the exact noise prediction (GaussianPrior) is
``eps_hat = sqrt(1 - a_t) (x_t - sqrt(a_t) m) / v_t``. Hence (Eq. 9)

    x0_hat = (x_t - sqrt(1 - a_t) eps_hat) / sqrt(a_t) = m + sqrt(a_t) s^2 (x_t - sqrt(a_t) m) / v_t,

and with ``d_t = x_t - sqrt(a_t) m`` a DDIM step ``t -> p`` (Eq. 12)
``x_p = sqrt(a_p) x0_hat + c2 eps_hat + c1 z`` is affine:

    d_p = g_t d_t + c1 z,     g_t = (sqrt(a_p a_t) s^2 + c2 sqrt(1 - a_t)) / v_t.

So for eta = 0 the whole sampler is ``x_final = m + (prod_t g_t) (x_T - sqrt(a_T) m)`` (the last
step has ``a_p = 1``, ``c2 = 0``), and for eta > 0 the mean and variance of ``d`` follow
``E d_p = g E d`` and ``Var d_p = g^2 Var d + c1^2``. As S grows the product tends to the
probability-flow ODE's exact map ``sqrt(v_final / v_T) = s / sqrt(v_T)``.
"""
from __future__ import annotations

import pytest
import torch
from helpers import MaskOperator

from lightning_redd import seeding
from lightning_redd.priors.gaussian import GaussianPrior
from lightning_redd.solvers.ddim import DDIM, ddim_coefficients
from lightning_redd.solvers.grids import reverse_pairs

M, S2 = 0.3, 0.25


def ddim_gain_and_variance(alphas_cumprod, s2: float, num_steps: int, eta: float) -> tuple[float, float]:
    """``(prod_t g_t, Var d_final)`` for ``Var d_T = 1`` (the module docstring's recursion)."""
    t, t_prev = reverse_pairs(num_steps, alphas_cumprod.numel())
    gain, var = 1.0, 1.0
    for ti, pi in zip(t.tolist(), t_prev.tolist()):
        a_t = float(alphas_cumprod[ti])
        a_p = 1.0 if pi < 0 else float(alphas_cumprod[pi])
        c1, c2 = ddim_coefficients(a_t, a_p, eta)
        g = ((a_p * a_t) ** 0.5 * s2 + c2 * (1 - a_t) ** 0.5) / (a_t * s2 + 1 - a_t)
        gain, var = gain * g, g * g * var + c1 * c1
    return gain, var


def setup(batch: int = 2, shape=(1, 8, 8)):
    prior = GaussianPrior(mean=M, std=S2**0.5, channels=shape[0])
    op = MaskOperator(torch.ones(shape))
    y = torch.zeros(batch, *shape)
    return prior, op, y, seeding.generators(0, range(batch), "solver")


@pytest.mark.parametrize("num_steps", [1, 7, 10, 50])
def test_eta0_is_the_exact_affine_ddim_map(num_steps):
    prior, op, y, gens = setup()
    solver = DDIM(num_steps=num_steps, eta=0.0)
    state = solver.init(y, op, prior, gens)
    x_T = state.x.double().clone()
    a_T = float(prior.alphas_cumprod[int(state.t[0])])
    while not state.done:
        solver.step(state, y, op, prior)
    gain, _ = ddim_gain_and_variance(prior.alphas_cumprod, S2, num_steps, 0.0)
    expected = M + gain * (x_T - a_T**0.5 * M)
    torch.testing.assert_close(solver.estimate(state).double(), expected, rtol=0, atol=2e-6)
    assert state.nfe == num_steps and state.k == num_steps and not state.diverged.any()
    with pytest.raises(RuntimeError, match="already ran"):
        solver.step(state, y, op, prior)


def test_many_steps_approach_the_probability_flow_map():
    """S = 1000: the DDIM gain is within 0.5% of the ODE's exact s / sqrt(v_T) (S = 10 is 25% off)."""
    a = GaussianPrior().alphas_cumprod
    for steps, tol in ((1000, 0.005), (10, 0.3)):
        gain, _ = ddim_gain_and_variance(a, S2, steps, 0.0)
        a_T = float(a[int(reverse_pairs(steps)[0][0])])
        flow = S2**0.5 / (a_T * S2 + 1 - a_T) ** 0.5
        assert abs(gain / flow - 1) < tol, (steps, gain, flow)
    assert abs(ddim_gain_and_variance(a, S2, 10, 0.0)[0] / flow - 1) > 0.2


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_eta_sets_the_output_variance(eta):
    """16384 i.i.d. pixels: sample mean and variance match the recursion (standard errors
    0.003 and 1.1%; tolerances 0.015 and 4%). eta = 0 and eta = 1 differ by 21% here."""
    prior, op, y, gens = setup(batch=4, shape=(1, 64, 64))
    out = DDIM(num_steps=10, eta=eta).solve(y, op, prior, gens).double()
    gain, var = ddim_gain_and_variance(prior.alphas_cumprod, S2, 10, eta)
    a_T = float(prior.alphas_cumprod[900])
    mean = M - gain * a_T**0.5 * M  # E x_T = 0 (start = "noise")
    assert abs(out.mean().item() - mean) < 0.015
    assert abs(out.var().item() / var - 1) < 0.04, (out.var().item(), var)


def test_pinv_start_and_x_init():
    prior, op, _, gens = setup()
    y = torch.full((2, 1, 8, 8), 0.5)
    state = DDIM(num_steps=10, start="pinv").init(y, op, prior, gens)
    z = seeding.randn((1, 8, 8), seeding.generators(0, range(2), "solver"))
    a = float(prior.alphas_cumprod[900])
    torch.testing.assert_close(state.x, a**0.5 * op.pinv(y) + (1 - a) ** 0.5 * z)
    assert torch.equal(state.x_init, op.pinv(y)) and torch.equal(DDIM().estimate(state), op.pinv(y))


@pytest.mark.parametrize("bad", [dict(num_steps=0), dict(eta=1.5), dict(eta=-0.1), dict(start="zeros")])
def test_bad_options_are_named(bad):
    with pytest.raises(ValueError, match="must be|allowed"):
        DDIM(**bad)


def test_too_many_steps_and_wrong_generators_are_named():
    prior, op, y, gens = setup()
    with pytest.raises(ValueError, match="exceeds"):
        DDIM(num_steps=1001).init(y, op, prior, gens)
    with pytest.raises(ValueError, match="one generator per image"):
        DDIM().init(y, op, prior, gens[:1])


# --------------------------------------------------------------------------- fractional eta, by hand
def ddim_by_hand(alphas_cumprod, num_steps: int, eta: float, batch: int, shape) -> torch.Tensor:
    """DDIM (start ``noise``) on the Gaussian prior in float64, from Eq. 9, 12 and 16 written out
    here (no solver code): ``sigma = eta sqrt((1 - a_p) / (1 - a_t)) sqrt(1 - a_t / a_p)``,
    ``x_p = sqrt(a_p) x0_hat + sqrt(1 - a_p - sigma^2) eps_hat + sigma z``. It replays each image's
    noise stream from fresh generators with the solver's seeds: ``x_T``, then one ``z`` per step
    while ``eta > 0``."""
    gens = seeding.generators(0, range(batch), "solver")
    x = seeding.randn(shape, gens).double()
    t, t_prev = reverse_pairs(num_steps, alphas_cumprod.numel())
    for ti, pi in zip(t.tolist(), t_prev.tolist()):
        a_t = float(alphas_cumprod[ti])
        a_p = 1.0 if pi < 0 else float(alphas_cumprod[pi])
        eps_hat = (1 - a_t) ** 0.5 * (x - a_t**0.5 * M) / (a_t * S2 + 1 - a_t)
        x0_hat = (x - (1 - a_t) ** 0.5 * eps_hat) / a_t**0.5
        sigma = eta * ((1 - a_p) / (1 - a_t)) ** 0.5 * (1 - a_t / a_p) ** 0.5
        x = a_p**0.5 * x0_hat + (1 - a_p - sigma**2) ** 0.5 * eps_hat
        if eta > 0:
            x = x + sigma * seeding.randn(shape, gens).double()
    return x


def variance_takes_eta(a_t: float, a_prev: float, eta: float) -> tuple[float, float]:
    """Mutant of ``ddim_coefficients``: ``eta`` in place of ``eta^2`` in the variance ``c1^2``."""
    c1 = (eta * (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
    return c1, max(1 - a_prev - c1**2, 0.0) ** 0.5


def std_takes_eta_squared(a_t: float, a_prev: float, eta: float) -> tuple[float, float]:
    """Mutant of ``ddim_coefficients``: ``eta^2`` in place of ``eta`` in the std ``c1``."""
    c1 = eta**2 * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
    return c1, max(1 - a_prev - c1**2, 0.0) ** 0.5


@pytest.mark.parametrize("eta", [0.3, 0.7])
def test_fractional_eta_follows_the_ddim_update_by_hand(eta, monkeypatch):
    """10 steps at eta 0.3 / 0.7 equal :func:`ddim_by_hand` (float32 against float64: measured
    3e-7, allowed 1e-5). Discriminating: with either mutant of ``ddim_coefficients`` (eta in
    place of eta^2 in the variance, or eta^2 in place of eta in the std), which agree with the
    right coefficients at eta 0 and 1 (the only values of the older multi-step tests, shown
    here at eta 1), the output moves by > 1e-2 (measured 0.24 to 0.53)."""
    import lightning_redd.solvers.ddim as ddim_module

    prior, op, y, _ = setup()

    def run(eta_: float) -> torch.Tensor:
        return DDIM(num_steps=10, eta=eta_).solve(y, op, prior, seeding.generators(0, range(2), "solver")).double()

    expected = ddim_by_hand(prior.alphas_cumprod, 10, eta, 2, (1, 8, 8))
    right, right_at_one = run(eta), run(1.0)
    torch.testing.assert_close(right, expected, rtol=0, atol=1e-5)
    for mutant in (variance_takes_eta, std_takes_eta_squared):
        monkeypatch.setattr(ddim_module, "ddim_coefficients", mutant)
        assert (run(eta) - expected).abs().max() > 1e-2, mutant.__name__
        assert torch.equal(run(1.0), right_at_one), mutant.__name__
