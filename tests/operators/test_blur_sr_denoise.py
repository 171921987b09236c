"""Family-specific facts: SR pseudo-inverses, blur kernels and cut-offs, Poisson noise."""
from __future__ import annotations

import pytest
import torch

from lightning_redd import seeding
from lightning_redd.operators import kernels
from lightning_redd.operators.blur import GaussianBlur, MotionBlur, UniformBlur
from lightning_redd.operators.denoising import Denoising
from lightning_redd.operators.super_resolution import BicubicSR, BlockAverageSR


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_block_average_values_and_nearest_pinv(factor):
    op = BlockAverageSR(factor=factor)
    x = torch.arange(16 * 16, dtype=torch.float64).view(1, 1, 16, 16).expand(1, 3, 16, 16)
    y = op(x)
    assert y.shape == (1, 3, 16 // factor, 16 // factor)
    assert y[0, 0, 0, 0] == x[0, 0, :factor, :factor].mean()
    up = op.pinv(y)
    assert torch.equal(up[..., :factor, :factor], y[..., :1, :1].expand(-1, -1, factor, factor))


def test_bicubic_reproduces_constants_and_is_smooth_downscale():
    op = BicubicSR(factor=2).double()
    assert torch.allclose(op(torch.full((1, 3, 16, 16), 0.3, dtype=torch.float64)), torch.tensor(0.3, dtype=torch.float64))
    ramp = torch.arange(16, dtype=torch.float64).view(1, 1, 1, 16).expand(1, 3, 16, 16)
    y = op(torch.sin(ramp / 16 * 2 * torch.pi))  # smooth periodic signal: sampled at block centres
    ref = torch.sin((torch.arange(8, dtype=torch.float64) * 2 + 0.5) / 16 * 2 * torch.pi)
    assert (y[0, 0, 0] - ref).abs().max() < 0.02


def test_kernels_are_normalised_and_centred():
    g = kernels.gaussian_kernel(9, (1.5, 1.5))
    assert torch.isclose(g.sum(), torch.tensor(1.0, dtype=torch.float64)) and g.argmax() == 40
    assert torch.allclose(g, g.flip(0, 1))
    vertical = kernels.gaussian_kernel(15, (3.0, 1.0), angle=0.0)  # sigma 3 along rows (vertical)
    assert vertical[:, 7].sum() > 2 * vertical[7, :].sum()
    horizontal = kernels.gaussian_kernel(15, (3.0, 1.0), angle=90.0)
    torch.testing.assert_close(horizontal, vertical.T)
    m = kernels.motion_kernel(15, 0.5, torch.Generator().manual_seed(0))
    assert torch.isclose(m.sum(), torch.tensor(1.0, dtype=torch.float64)) and (m >= 0).all()
    assert (m > 0).sum() > 15  # a path, not a point


def test_motion_kernels_differ_per_image_and_repeat_per_seed():
    a = MotionBlur(kernel_size=9).bind([1, 2], (3, 16, 16)).kernel
    b = MotionBlur(kernel_size=9).bind([2], (3, 16, 16)).kernel
    assert torch.equal(a[1], b[0]) and not torch.equal(a[0], a[1])


def test_blur_pinv_cutoff_bound():
    """With frequencies dropped, A pinv A x differs from A x only by the dropped components."""
    op = GaussianBlur(kernel_size=9, sigma=2.0, pinv_rtol=1e-2).double()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    ax = op(x)
    err = (op(op.pinv(ax)) - ax).norm()
    assert 0 < err <= 1e-2 * x.norm()
    exact = GaussianBlur(kernel_size=9, sigma=2.0, pinv_rtol=0.0).double()
    assert (exact(exact.pinv(ax)) - ax).norm() < 1e-6 * ax.norm()


def test_uniform_blur_matches_direct_circular_average():
    op = UniformBlur(kernel_size=3).double()
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    pad = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="circular")
    ref = torch.nn.functional.avg_pool2d(pad, 3, stride=1)
    torch.testing.assert_close(op(x), ref)


def test_gaussian_noise_std():
    op = Denoising(sigma_y=0.1)
    x = torch.zeros(1, 3, 64, 64)
    y = op.measure(x, [seeding.generator(0, 0, "noise")])
    assert abs(y.std().item() - 0.2) < 0.01  # 2 * sigma_y in [-1, 1] units


def test_poisson_noise_statistics():
    op = Denoising(noise="poisson", poisson_rate=50.0)
    x = torch.full((1, 3, 64, 64), 0.2)  # intensity 0.6 -> mean 30 photons
    y = op.measure(x, [seeding.generator(0, 0, "noise")])
    counts = (y + 1) / 2 * 50.0
    assert torch.allclose(counts, counts.round(), atol=1e-3)
    assert abs(counts.mean().item() - 30) < 0.5 and abs(counts.var().item() - 30) < 3
