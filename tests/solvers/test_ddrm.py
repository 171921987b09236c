"""DDRM against closed forms of a Gaussian prior, and its operator checks."""
from __future__ import annotations

import pytest
import torch
from helpers import MatrixOperator
from test_ddim import ddim_gain_and_variance

from lightning_redd import seeding
from lightning_redd.operators.base import SVDOperator
from lightning_redd.operators.blur import GaussianBlur
from lightning_redd.operators.denoising import Denoising
from lightning_redd.operators.hdr import HDR
from lightning_redd.operators.inpainting import Inpainting
from lightning_redd.operators.registry import OPERATORS
from lightning_redd.priors.gaussian import GaussianPrior
from lightning_redd.priors.schedules import linear_betas
from lightning_redd.solvers.ddrm import DDRM
from lightning_redd.solvers.grids import reverse_pairs

M, S = 0.2, 0.5


def gens(n: int):
    return seeding.generators(0, range(n), "solver")


@pytest.mark.parametrize("eta, eta_b", [(0.85, 1.0), (0.0, 1.0), (1.0, 1.0)])
def test_recovers_the_exact_posterior_mean_when_y_is_the_top_noise_level(eta, eta_b):
    """Denoising ``y = x + sigma_y n`` with a Gaussian prior N(m, s^2).

    Choose the schedule so that the one visited level (S = 1: t = 0) has VE noise
    ``sigma_0 = sqrt(1 - abar_0) / sqrt(abar_0)`` equal to ``sigma_y``. Then DDRM's start
    ``p(x_T | y)`` (noisier-than-y case, ``eta_b = 1``) is ``ybar + sqrt(sigma_0^2 - sigma_y^2) z
    = y`` exactly: ``y`` *is* a VE sample at level 0. Its one denoiser call returns
    ``E[x0 | x_0^VE = y] = m + s^2 / (s^2 + sigma_y^2) (y - m)`` (Gaussian conditioning), and
    the last step (sigma = 0 < sigma_y, less-noisy case) returns ``xbar_theta`` unchanged for
    any ``eta``. So DDRM's output is the exact posterior mean E[x0 | y]."""
    sigma0 = 0.3
    betas = linear_betas()
    betas[0] = 1 - 1 / (1 + sigma0**2)
    prior = GaussianPrior(mean=M, std=S, channels=3, betas=betas)
    a0 = float(prior.alphas_cumprod[0])
    sigma_y = ((1 - a0) / a0) ** 0.5  # == sigma0 up to rounding, computed as DDRM does
    op = Denoising(sigma_y=sigma_y / 2).bind([0, 1], (3, 8, 8))  # operator sigma_y is in [0, 1] units
    x = M + S * torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = op.measure(x, seeding.generators(0, [0, 1], "noise"))
    out = DDRM(num_steps=1, eta=eta, eta_b=eta_b).solve(y, op, prior, gens(2))
    posterior_mean = M + S**2 / (S**2 + sigma_y**2) * (y - M)
    torch.testing.assert_close(out, posterior_mean, rtol=0, atol=1e-5)
    assert (posterior_mean - y).abs().max() > 0.05  # not just returning y


@pytest.mark.parametrize("num_steps", [5, 20])
def test_noise_free_inpainting_keeps_y_and_fills_by_the_ddim_map(num_steps):
    """Inpainting (SVD: U = V = I, s = the per-image mask) with sigma_y = 0, eta = 0, eta_b = 1.

    Observed pixels (s = 1, sigma_y / s = 0 <= sigma_t) are in the noisier-than-y case at every
    step and end at ``ybar = y`` exactly. Missing pixels (s = 0) follow
    ``xbar_theta + sigma_s * Vt(eps_hat)``, which in VP coordinates is DDIM's eta = 0 step; the
    Gaussian prior acts per pixel, so they end at the exact DDIM map of their start
    ``x_T = sqrt(1 - abar_T) z`` (see test_ddim's docstring): ``m + G (x_T - sqrt(abar_T) m)``."""
    prior = GaussianPrior(mean=M, std=S, channels=3)
    op = Inpainting(mask="random", drop_fraction=0.5).bind([5, 6], (3, 8, 8))
    x = (M + S * torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    y = op(x)
    solver = DDRM(num_steps=num_steps, eta=0.0, eta_b=1.0)
    state = solver.init(y, op, prior, gens(2))
    x_T = state.x.double().clone()
    state = solver.run(y, op, prior, gens(2))
    out = solver.estimate(state).double()
    mask = op.mask.expand_as(x).bool()
    assert torch.equal(out[mask], y.double()[mask])
    gain, _ = ddim_gain_and_variance(prior.alphas_cumprod, S**2, num_steps, 0.0)
    a_T = float(prior.alphas_cumprod[int(state.t[0])])
    fill = M + gain * (x_T - a_T**0.5 * M)
    torch.testing.assert_close(out[~mask], fill[~mask], rtol=0, atol=2e-6)
    assert mask.flatten(1).float().mean(1).tolist() != [1.0, 1.0] and not torch.equal(mask[0], mask[1])


def test_blur_keeps_the_observed_spectrum_and_drops_tiny_singular_values():
    """Noise-free Gaussian deblurring: singular values below the operator's pinv_rtol count as
    zero (svd_rtol=None), so y / s never divides by ~0 and the output stays bounded; every kept
    spectral coordinate (s above the cut-off: noisier-than-y case at every step, eta_b = 1)
    ends at ``ybar = (U^T y) / s`` exactly."""
    prior = GaussianPrior(mean=0.0, std=S, channels=3)
    op = GaussianBlur(kernel_size=7, sigma=2.0, pinv_rtol=0.03).bind([0, 1], (3, 16, 16))
    x = (S * torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))).clamp(-1, 1)
    y = op(x)
    s = op.singulars()
    kept = s > 0.03 * s.max()
    assert (~kept).any() and kept.any()
    out = DDRM(num_steps=10).solve(y, op, prior, gens(2))
    assert torch.isfinite(out).all() and out.abs().max() < 5
    ybar = op.Ut(y.flatten(1)) / s
    torch.testing.assert_close(op.Vt(out.flatten(1))[:, kept], ybar[:, kept], rtol=0, atol=1e-4)


@pytest.mark.parametrize("op", [HDR(gain=2.0), MatrixOperator(torch.eye(12), (3, 2, 2))], ids=["HDR", "MatrixOperator"])
def test_operator_without_svd_is_named(op):
    """The message lists the operator registry's SVD operators with Gaussian noise, by class and
    by registry name (and no other)."""
    prior = GaussianPrior()
    y = op(torch.zeros(1, 3, 2, 2))
    named = r"DDRM needs an operator with an SVD \(an SVDOperator: Denoising, Inpainting.*Use RedDiff"
    with pytest.raises(TypeError, match=named) as err:
        DDRM().init(y, op, prior, gens(1))
    built = {name: make() for name, make in OPERATORS.items()}
    for name, instance in built.items():
        takes = isinstance(instance, SVDOperator) and instance.noise == "gaussian"
        assert (f" {name}," in str(err.value) or f" {name})" in str(err.value)) == takes, name
        if isinstance(instance, SVDOperator):
            assert type(instance).__name__ in str(err.value)
    assert "HDR" not in str(err.value).split(";")[0] and "CompressedSensing" in str(err.value)


def test_the_svd_list_follows_the_operator_registry(monkeypatch):
    """An SVD operator added to the registry appears in DDRM's message with no edit of DDRM."""
    from lightning_redd.operators import registry
    from lightning_redd.solvers.ddrm import svd_operators

    class Scaling(Denoising):
        pass

    monkeypatch.setitem(registry.OPERATORS, "scaling_test", Scaling)
    svd_operators.cache_clear()
    try:
        with pytest.raises(TypeError, match=r"Scaling.*scaling_test"):
            DDRM().init(torch.zeros(1, 3, 2, 2), HDR(gain=2.0), GaussianPrior(), gens(1))
    finally:
        monkeypatch.undo()
        svd_operators.cache_clear()
    assert "Scaling" not in svd_operators()[0]


def test_poisson_noise_is_named():
    op = Denoising(noise="poisson").bind([0], (3, 4, 4))
    with pytest.raises(ValueError, match="Gaussian measurement noise"):
        DDRM().init(torch.zeros(1, 3, 4, 4), op, GaussianPrior(), gens(1))


@pytest.mark.parametrize("bad", [dict(eta_b=1.5), dict(eta=2.0), dict(svd_rtol=1.0), dict(num_steps=0)])
def test_bad_options_are_named(bad):
    with pytest.raises(ValueError, match="must be"):
        DDRM(**bad)


# --------------------------------------------------------------------------- fractional eta, by hand
def ddrm_inpainting_by_hand(prior, op, y, num_steps: int, eta: float, eta_b: float, batch: int) -> tuple[torch.Tensor, list]:
    """DDRM on noisy inpainting (``U = V = I``, ``s`` = the mask) with the Gaussian prior, in
    float64 from the paper's factorised distribution written out here (no solver code), per pixel
    with ``sy = 2 sigma_y`` and ``sig_p`` the VE noise level of the next time:

    * start: ``y + sqrt(sig_T^2 - sy^2) z`` where observed (and ``sig_T >= sy``), else ``sig_T z``;
    * missing pixel:                ``x0_hat + sqrt(1 - eta^2) sig_p eps_hat + eta sig_p z``;
    * observed, ``sig_p < sy``:     ``x0_hat + sqrt(1 - eta^2) sig_p (y - x0_hat) / sy + eta sig_p z``;
    * observed, ``sig_p >= sy``:    ``(1 - eta_b) x0_hat + eta_b y + sqrt(sig_p^2 - eta_b^2 sy^2) z``;

    then ``x_p = sqrt(a_p) xbar``. The noise stream is replayed from fresh generators with the
    solver's seeds (the start's ``z``, then one per step with ``sig_p > 0``). Returns the result
    and the case ("less noisy" or "noisier") of the observed pixels at each step.
    """
    gens = seeding.generators(0, range(batch), "solver")
    ac, shape, sy = prior.alphas_cumprod, y.shape[1:], 2 * op.sigma_y
    m, yd = op.mask.expand_as(y).double(), y.double()
    t, t_prev = reverse_pairs(num_steps, ac.numel())
    a = float(ac[t[0]])
    sig = ((1 - a) / a) ** 0.5
    z = seeding.randn(shape, gens).double()
    x = a**0.5 * torch.where(m > 0, yd + (sig**2 - sy**2) ** 0.5 * z, sig * z)
    cases = []
    for ti, pi in zip(t.tolist(), t_prev.tolist()):
        a_t, a_p = float(ac[ti]), 1.0 if pi < 0 else float(ac[pi])
        eps_hat = (1 - a_t) ** 0.5 * (x - a_t**0.5 * M) / (a_t * S**2 + 1 - a_t)
        x0 = (x - (1 - a_t) ** 0.5 * eps_hat) / a_t**0.5
        sig = ((1 - a_p) / a_p) ** 0.5
        z = seeding.randn((m[0].numel(),), gens).double().view_as(x) if sig > 0 else torch.zeros_like(x)
        missing = x0 + (1 - eta**2) ** 0.5 * sig * eps_hat + eta * sig * z
        if sig < sy:
            observed = x0 + (1 - eta**2) ** 0.5 * sig * (yd - x0) / sy + eta * sig * z
        else:
            observed = (1 - eta_b) * x0 + eta_b * yd + (sig**2 - eta_b**2 * sy**2) ** 0.5 * z
        cases.append("less noisy" if sig < sy else "noisier")
        x = a_p**0.5 * torch.where(m > 0, observed, missing)
    return x, cases


def carried_takes_sqrt_one_minus_eta(sigma_s: float, eta: float) -> tuple[float, float]:
    """Mutant of ``ddrm_weights``: ``sqrt(1 - eta)`` in place of ``sqrt(1 - eta^2)``."""
    return (1 - eta) ** 0.5 * sigma_s, eta * sigma_s


def fresh_takes_eta_squared(sigma_s: float, eta: float) -> tuple[float, float]:
    """Mutant of ``ddrm_weights``: ``eta^2 sigma_s`` in place of ``eta sigma_s`` as the noise std."""
    return (1 - eta**2) ** 0.5 * sigma_s, eta**2 * sigma_s


@pytest.mark.parametrize("eta, eta_b", [(0.3, 1.0), (0.7, 0.6)])
def test_fractional_eta_follows_the_three_cases_by_hand(eta, eta_b, monkeypatch):
    """Noisy inpainting (sigma_y 0.1), 20 steps: observed pixels are noisier than ``y`` down to
    t = 100 and less noisy after (t = 50 and 0), missing pixels take the unobserved case
    throughout; DDRM equals :func:`ddrm_inpainting_by_hand` (float32 against float64: measured
    5e-7, allowed 1e-5). Discriminating: with either mutant of ``ddrm_weights`` (sqrt(1 - eta) in
    place of sqrt(1 - eta^2), or eta^2 sigma in place of eta sigma), equal to the right weights
    at eta 0 and 1, the output moves by > 1e-2 (measured 0.38 to 0.77). Checked by hand (editing
    the solver, not automated): ``eta_b`` in place of ``eta_b^2`` in the noisier case's spread
    moves the output at eta_b = 0.6 by 1.0e-2, and this test fails."""
    import lightning_redd.solvers.ddrm as ddrm_module

    prior = GaussianPrior(mean=M, std=S, channels=3)
    op = Inpainting(mask="random", drop_fraction=0.5, sigma_y=0.1).bind([5, 6], (3, 8, 8))
    x = (M + S * torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))).clamp(-1, 1)
    y = op.measure(x, seeding.generators(0, [0, 1], "noise"))
    expected, cases = ddrm_inpainting_by_hand(prior, op, y, 20, eta, eta_b, 2)
    assert cases.count("less noisy") == 3 and cases[:17] == ["noisier"] * 17  # t_prev = 50, 0 and -1

    def run() -> torch.Tensor:
        return DDRM(num_steps=20, eta=eta, eta_b=eta_b).solve(y, op, prior, gens(2)).double()

    torch.testing.assert_close(run(), expected, rtol=0, atol=1e-5)
    for mutant in (carried_takes_sqrt_one_minus_eta, fresh_takes_eta_squared):
        monkeypatch.setattr(ddrm_module, "ddrm_weights", mutant)
        assert (run() - expected).abs().max() > 1e-2, mutant.__name__
