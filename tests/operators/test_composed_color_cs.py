"""Composition, colorization and compressed sensing specifics."""
from __future__ import annotations

import pytest
import torch

from lightning_redd.operators.blur import GaussianBlur
from lightning_redd.operators.colorization import Colorization
from lightning_redd.operators.composed import Composed
from lightning_redd.operators.compressed_sensing import CompressedSensing
from lightning_redd.operators.hdr import HDR
from lightning_redd.operators.inpainting import Inpainting
from lightning_redd.operators.super_resolution import BlockAverageSR


def x64(n=2, shape=(3, 16, 16), seed=0):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_composed_applies_in_list_order_with_bound_parts():
    op = Composed(operators=[BlockAverageSR(factor=2), Inpainting(mask="half", half="left")]).bind([0, 1], (3, 16, 16))
    x = x64().float()
    y = op(x)
    assert y.shape == (2, 3, 8, 8) and op.output_shape((3, 16, 16)) == (3, 8, 8)
    ref = torch.nn.functional.avg_pool2d(x, 2)
    ref[..., :4] = 0
    torch.testing.assert_close(y, ref)


def test_composed_cg_is_the_minimum_norm_pseudo_inverse():
    parts = [Inpainting(mask="random", drop_fraction=0.5), BlockAverageSR(factor=2)]
    op = Composed(operators=parts, pinv_mode="cg").bind([5], (3, 8, 8)).double()
    eye = torch.eye(3 * 8 * 8, dtype=torch.float64).view(-1, 3, 8, 8)
    dense = op(eye).flatten(1).T  # (M, N), test-only
    y = op(x64(1, (3, 8, 8)))
    ref = (torch.linalg.pinv(dense) @ y.flatten(1).T).T.view(1, 3, 8, 8)
    torch.testing.assert_close(op.pinv(y), ref, rtol=1e-6, atol=1e-6)
    chain = Composed(operators=parts, pinv_mode="chain").bind([5], (3, 8, 8)).double()
    assert (chain(chain.pinv(y)) - y).norm() > 1e-2 * y.norm()  # why "cg" exists


def test_composed_rejects_bad_parts():
    with pytest.raises(ValueError, match="set sigma_y on Composed only"):
        Composed(operators=[BlockAverageSR(factor=2, sigma_y=0.1)])
    with pytest.raises(ValueError, match="must be LinearOperator instances; operator 0 is HDR"):
        Composed(operators=[HDR()])
    with pytest.raises(ValueError, match="needs at least one operator"):
        Composed(operators=[])
    with pytest.raises(ValueError, match="unknown pinv_mode 'svd'; allowed"):
        Composed(operators=[BlockAverageSR(factor=2)], pinv_mode="svd")
    with pytest.raises(ValueError, match="not a multiple of factor 4"):
        Composed(operators=[BlockAverageSR(factor=2), BlockAverageSR(factor=4)]).bind([0], (3, 12, 12))


def test_composed_blur_then_sr_adjoint():
    op = Composed(operators=[GaussianBlur(kernel_size=5, sigma=1.0), BlockAverageSR(factor=2)]).double()
    x, y = x64(), x64(shape=(3, 8, 8), seed=1)
    lhs, rhs = (op(x) * y).sum(), (x * op.adjoint(y)).sum()
    assert abs(lhs - rhs) < 1e-10 * abs(lhs)


@pytest.mark.parametrize("weights, w", [("mean", (1 / 3, 1 / 3, 1 / 3)), ("luma", (0.299, 0.587, 0.114))])
def test_colorization_weights_and_pinv(weights, w):
    op = Colorization(weights=weights).double()
    x = x64()
    y = op(x)
    assert y.shape == (2, 1, 16, 16)
    torch.testing.assert_close(y[:, 0], sum(wi * x[:, i] for i, wi in enumerate(w)))
    if weights == "mean":
        torch.testing.assert_close(op.pinv(y), y.expand(-1, 3, -1, -1))
    with pytest.raises(ValueError, match=r"expects gray measurements \(B, 1, H, W\)"):
        op.pinv(x)


def test_colorization_luma_needs_rgb():
    with pytest.raises(ValueError, match="weights='luma' needs channels=3"):
        Colorization(weights="luma", channels=4)


def test_compressed_sensing_rows_orthonormal_and_seeded():
    op = CompressedSensing(ratio=0.25, seed=3).bind([0], (3, 16, 16)).double()
    y = op(x64())
    assert y.shape == (2, 1, 1, 192)
    z = x64(shape=(1, 1, 192), seed=2)
    torch.testing.assert_close(op(op.adjoint(z)), z)  # A A^T = I
    same = CompressedSensing(ratio=0.25, seed=3).bind([7, 8], (3, 16, 16)).double()
    other = CompressedSensing(ratio=0.25, seed=4).bind([0], (3, 16, 16)).double()
    torch.testing.assert_close(same(x64()), y)  # depends on the operator seed, not the image seeds
    assert not torch.allclose(other(x64()), y)
    with pytest.raises(RuntimeError, match="bind"):
        CompressedSensing()(x64())
    with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\]"):
        CompressedSensing(ratio=0.0)
