"""Properties every registered operator must have, on small CPU images."""
from __future__ import annotations

import pytest
import torch

from lightning_redd import seeding
from lightning_redd.operators.base import SVDOperator
from lightning_redd.operators.registry import OPERATORS, build_operator

SHAPE = (3, 16, 16)
#: Small-image settings per registry entry (kernels must fit 16x16). Every entry needs one.
SMALL: dict[str, dict] = {
    "denoising": {},
    "denoising_poisson": {},
    "inpainting_box": {},
    "inpainting_random": {},
    "inpainting_strokes": {},
    "inpainting_half": {},
    "sr_block": {"factor": 2},
    "sr_bicubic": {"factor": 2},
    "deblur_gaussian": {"kernel_size": 5, "sigma": 1.0, "pinv_rtol": 1e-5},
    "deblur_anisotropic": {"kernel_size": 7, "sigma": (1.5, 0.7), "angle": 30.0, "pinv_rtol": 1e-5},
    "deblur_uniform": {"kernel_size": 3},
    "deblur_motion": {"kernel_size": 9},
    "colorization": {},
    "compressed_sensing": {"ratio": 0.3},
    "sr_inpainting": {"factor": 2},
    "inpainting_sr": {"factor": 2},
    "phase_retrieval": {},
    "hdr": {},
    "jpeg": {"quality": 50},
    "quantization": {},
    "nonlinear_blur": {"kernel_size": 7},
}
NAMES = sorted(OPERATORS)
SEEDS = [11, 22, 33]


def make(name: str, seeds=SEEDS, dtype=torch.float64, **extra):
    op = build_operator(name, **{**SMALL[name], **extra})
    return op.bind(seeds, SHAPE).to(dtype)


def images(n: int, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, *SHAPE, generator=g, dtype=dtype) * 2 - 1).clamp(-0.999, 0.999)


def test_every_registry_entry_has_small_settings():
    assert sorted(SMALL) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_dtypes(name):
    op = make(name, dtype=torch.float32)
    x = images(len(SEEDS), torch.float32)
    y = op(x)
    assert y.dtype == torch.float32
    assert tuple(y.shape) == (len(SEEDS), *op.output_shape(SHAPE))
    assert torch.isfinite(y).all()
    x0 = op.pinv(y)
    assert x0.shape == x.shape and x0.dtype == torch.float32


@pytest.mark.parametrize("name", NAMES)
def test_bind_is_deterministic_and_seed_dependent_measurement(name):
    x = images(len(SEEDS))
    gens = lambda: seeding.generators(5, range(len(SEEDS)), "noise")  # noqa: E731
    y1 = make(name, sigma_y=0.05).measure(x, gens())
    y2 = make(name, sigma_y=0.05).measure(x, gens())
    assert torch.equal(y1, y2)
    y3 = make(name, sigma_y=0.05).measure(x, seeding.generators(6, range(len(SEEDS)), "noise"))
    assert not torch.equal(y1, y3)


@pytest.mark.parametrize("name", NAMES)
def test_batch_independence(name):
    x = images(len(SEEDS))
    gens = seeding.generators(9, range(len(SEEDS)), "noise")
    y = make(name, sigma_y=0.05).measure(x, gens)
    for i, s in enumerate(SEEDS):
        yi = make(name, seeds=[s], sigma_y=0.05).measure(x[i : i + 1], [seeding.generator(9, i, "noise")])
        torch.testing.assert_close(y[i : i + 1], yi, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_moves_dtype_and_device(name):
    op = make(name, dtype=torch.float64)
    x = images(len(SEEDS))
    y64 = op(x)
    op32 = op.to(torch.float32)
    y32 = op32(x.float())
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), y64, rtol=1e-4, atol=1e-4)
    for b in op32.buffers():
        assert b.device.type == "cpu"
    meta = make(name).to("meta")
    assert all(b.device.type == "meta" for b in meta.buffers())


LINEAR = [n for n in NAMES if build_operator(n, **SMALL[n]).linear]
SVD = [n for n in NAMES if isinstance(build_operator(n, **SMALL[n]), SVDOperator)]


@pytest.mark.parametrize("name", LINEAR)
def test_adjointness(name):
    op = make(name)
    x = images(len(SEEDS), seed=1)
    y = torch.randn_like(op(x))
    lhs, rhs = (op(x) * y).sum(), (x * op.adjoint(y)).sum()
    assert abs(lhs - rhs) / max(abs(lhs), abs(rhs)) < 1e-4


@pytest.mark.parametrize("name", LINEAR)
def test_pinv_is_exact_on_the_range(name):
    op = make(name)
    ax = op(images(len(SEEDS), seed=2))
    err = (op(op.pinv(ax)) - ax).norm() / ax.norm()
    assert err < 1e-4


@pytest.mark.parametrize("name", SVD)
def test_svd_reproduces_operator_and_pinv(name):
    op = make(name)
    x = images(len(SEEDS), seed=3).flatten(1)
    y = op(x.view(-1, *SHAPE)).flatten(1)
    s = op.singulars().double()
    m = s.shape[-1]
    assert op.Vt(x).shape == x.shape and op.Ut(y).shape[1] == m
    torch.testing.assert_close(op.V(op.Vt(x)), x, rtol=1e-4, atol=1e-4)  # V orthogonal
    torch.testing.assert_close(op.U(s * op.Vt(x)[:, :m]), y, rtol=1e-4, atol=1e-4)
    s_inv = torch.where(s > 1e-5 * s.max(), 1 / s, torch.zeros_like(s))
    z = torch.cat([s_inv * op.Ut(y), y.new_zeros(len(y), x.shape[1] - m)], dim=1)
    torch.testing.assert_close(op.V(z), op.pinv(y.view(-1, *op.output_shape(SHAPE))).flatten(1), rtol=1e-4, atol=1e-4)


NONLINEAR = [n for n in NAMES if n not in LINEAR]


@pytest.mark.parametrize("name", NONLINEAR)
def test_surrogate_gradient_nonzero_and_finite(name):
    op = make(name)
    x = images(len(SEEDS), seed=4).requires_grad_(True)
    y = op.measure_clean(x.detach()) + 0.01
    loss = ((op(x) - y) ** 2).mean()
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_matches_cpu(name):
    x = images(len(SEEDS))
    gens = lambda: seeding.generators(3, range(len(SEEDS)), "noise")  # noqa: E731
    cpu = make(name, sigma_y=0.05)
    gpu = build_operator(name, **SMALL[name], sigma_y=0.05).bind(SEEDS, SHAPE, device="cuda").to("cuda", torch.float64)
    y_cpu, y_gpu = cpu.measure(x, gens()), gpu.measure(x.cuda(), gens())
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gpu.pinv(y_gpu).cpu(), cpu.pinv(y_cpu), rtol=1e-5, atol=1e-5)
    if cpu.linear:
        torch.testing.assert_close(gpu.adjoint(y_gpu).cpu(), cpu.adjoint(y_cpu), rtol=1e-6, atol=1e-6)
