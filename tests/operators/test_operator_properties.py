"""Properties every registered operator must have, on small CPU images of several sizes.

Registry-driven: every entry of :data:`OPERATORS` is tested, with the settings of
:data:`SMALL_IMAGE_SETTINGS` (kernels that fit tiny images) where it has some, at a square, a
non-square and an odd size. An operator that cannot take a size (a factor that does not divide
it) is tested at the others and must refuse it up front (``check_shape``) with a clear error.
"""
from __future__ import annotations

import pytest
import torch

from lightning_redd import seeding
from lightning_redd.operators.base import SVDOperator
from lightning_redd.operators.registry import OPERATORS, SMALL_IMAGE_SETTINGS, build_small

SHAPE = (3, 16, 16)
#: square, non-square (not a multiple of 16), odd x odd.
SHAPES = [(3, 16, 16), (3, 24, 40), (3, 21, 35)]
#: settings per registry entry on these images (the registry's small-image overrides).
SMALL: dict[str, dict] = {name: SMALL_IMAGE_SETTINGS.get(name, {}) for name in OPERATORS}
NAMES = sorted(OPERATORS)
SEEDS = [11, 22, 33]


def refusal(name: str, shape) -> str | None:
    """The error ``check_shape`` gives for images of ``shape``, or None if the operator takes them."""
    try:
        build_small(name).check_shape(shape)
    except ValueError as err:
        return str(err)
    return None


#: every (operator, shape) the operator takes; the property tests run over these.
CASES = [pytest.param(n, s, id=f"{n}-{s[1]}x{s[2]}") for n in NAMES for s in SHAPES if refusal(n, s) is None]


def make(name: str, seeds=SEEDS, dtype=torch.float64, shape=SHAPE, **extra):
    return build_small(name, **extra).bind(seeds, shape).to(dtype)


def images(n: int, dtype=torch.float64, seed: int = 0, shape=SHAPE) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, *shape, generator=g, dtype=dtype) * 2 - 1).clamp(-0.999, 0.999)


def test_small_settings_name_registry_entries_only():
    assert set(SMALL_IMAGE_SETTINGS) <= set(OPERATORS)


@pytest.mark.parametrize("name", NAMES)
def test_every_operator_takes_square_and_non_square_sizes_and_refuses_others_clearly(name):
    """Every operator works at 16x16 and 24x40; at 21x35 only a factor may refuse, naming the
    size and the nearest sizes that work."""
    assert refusal(name, SHAPES[0]) is None and refusal(name, SHAPES[1]) is None
    msg = refusal(name, SHAPES[2])
    if msg is not None:
        assert "21x35 is not a multiple of factor" in msg and "nearest" in msg, msg


@pytest.mark.parametrize("name, shape", CASES)
def test_shapes_and_dtypes(name, shape):
    op = make(name, dtype=torch.float32, shape=shape)
    x = images(len(SEEDS), torch.float32, shape=shape)
    y = op(x)
    assert y.dtype == torch.float32
    assert tuple(y.shape) == (len(SEEDS), *op.output_shape(shape))
    assert torch.isfinite(y).all()
    x0 = op.pinv(y)
    assert x0.shape == x.shape and x0.dtype == torch.float32


@pytest.mark.parametrize("name, shape", CASES)
def test_bind_is_deterministic_and_seed_dependent_measurement(name, shape):
    x = images(len(SEEDS), shape=shape)
    gens = lambda: seeding.generators(5, range(len(SEEDS)), "noise")  # noqa: E731
    y1 = make(name, sigma_y=0.05, shape=shape).measure(x, gens())
    y2 = make(name, sigma_y=0.05, shape=shape).measure(x, gens())
    assert torch.equal(y1, y2)
    y3 = make(name, sigma_y=0.05, shape=shape).measure(x, seeding.generators(6, range(len(SEEDS)), "noise"))
    assert not torch.equal(y1, y3)


@pytest.mark.parametrize("name, shape", CASES)
def test_batch_independence(name, shape):
    x = images(len(SEEDS), shape=shape)
    gens = seeding.generators(9, range(len(SEEDS)), "noise")
    y = make(name, sigma_y=0.05, shape=shape).measure(x, gens)
    for i, s in enumerate(SEEDS):
        yi = make(name, seeds=[s], sigma_y=0.05, shape=shape).measure(x[i : i + 1], [seeding.generator(9, i, "noise")])
        torch.testing.assert_close(y[i : i + 1], yi, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name, shape", CASES)
def test_moves_dtype_and_device(name, shape):
    op = make(name, dtype=torch.float64, shape=shape)
    x = images(len(SEEDS), shape=shape)
    y64 = op(x)
    op32 = op.to(torch.float32)
    y32 = op32(x.float())
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), y64, rtol=1e-4, atol=1e-4)
    for b in op32.buffers():
        assert b.device.type == "cpu"
    meta = make(name, shape=shape).to("meta")
    assert all(b.device.type == "meta" for b in meta.buffers())


LINEAR = [c for c in CASES if build_small(c.values[0]).linear]
SVD = [c for c in CASES if isinstance(build_small(c.values[0]), SVDOperator)]
NONLINEAR = [c for c in CASES if not build_small(c.values[0]).linear]


@pytest.mark.parametrize("name, shape", LINEAR)
def test_adjointness(name, shape):
    op = make(name, shape=shape)
    x = images(len(SEEDS), seed=1, shape=shape)
    y = torch.randn_like(op(x))
    lhs, rhs = (op(x) * y).sum(), (x * op.adjoint(y)).sum()
    assert abs(lhs - rhs) / max(abs(lhs), abs(rhs)) < 1e-4


@pytest.mark.parametrize("name, shape", LINEAR)
def test_pinv_is_exact_on_the_range(name, shape):
    op = make(name, shape=shape)
    ax = op(images(len(SEEDS), seed=2, shape=shape))
    err = (op(op.pinv(ax)) - ax).norm() / ax.norm()
    assert err < 1e-4


@pytest.mark.parametrize("name, shape", SVD)
def test_svd_reproduces_operator_and_pinv(name, shape):
    op = make(name, shape=shape)
    x = images(len(SEEDS), seed=3, shape=shape).flatten(1)
    y = op(x.view(-1, *shape)).flatten(1)
    s = op.singulars().double()
    m = s.shape[-1]
    assert op.Vt(x).shape == x.shape and op.Ut(y).shape[1] == m
    torch.testing.assert_close(op.V(op.Vt(x)), x, rtol=1e-4, atol=1e-4)  # V orthogonal
    torch.testing.assert_close(op.U(s * op.Vt(x)[:, :m]), y, rtol=1e-4, atol=1e-4)
    s_inv = torch.where(s > 1e-5 * s.max(), 1 / s, torch.zeros_like(s))
    z = torch.cat([s_inv * op.Ut(y), y.new_zeros(len(y), x.shape[1] - m)], dim=1)
    torch.testing.assert_close(op.V(z), op.pinv(y.view(-1, *op.output_shape(shape))).flatten(1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name, shape", NONLINEAR)
def test_surrogate_gradient_nonzero_and_finite(name, shape):
    op = make(name, shape=shape)
    x = images(len(SEEDS), seed=4, shape=shape).requires_grad_(True)
    y = op.measure_clean(x.detach()) + 0.01
    loss = ((op(x) - y) ** 2).mean()
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name, shape", CASES)
def test_cuda_matches_cpu(name, shape):
    x = images(len(SEEDS), shape=shape)
    gens = lambda: seeding.generators(3, range(len(SEEDS)), "noise")  # noqa: E731
    cpu = make(name, sigma_y=0.05, shape=shape)
    gpu = build_small(name, sigma_y=0.05).bind(SEEDS, shape, device="cuda").to("cuda", torch.float64)
    y_cpu, y_gpu = cpu.measure(x, gens()), gpu.measure(x.cuda(), gens())
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gpu.pinv(y_gpu).cpu(), cpu.pinv(y_cpu), rtol=1e-5, atol=1e-5)
    if cpu.linear:
        torch.testing.assert_close(gpu.adjoint(y_gpu).cpu(), cpu.adjoint(y_cpu), rtol=1e-6, atol=1e-6)
