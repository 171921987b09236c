"""Operators at sizes the registry suite does not cover: file masks and file kernels of a
non-square image's own size, kernels as large as the image."""
from __future__ import annotations

import pytest
import torch

from lightning_redd.operators.blur import KernelBlur
from lightning_redd.operators.inpainting import Inpainting


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1


def _check_svd(op, shape):
    x = _rand(2, *shape, seed=1)
    y = op(x)
    lhs, rhs = (y * _rand(*y.shape, seed=2)).sum(), (x * op.adjoint(_rand(*y.shape, seed=2))).sum()
    torch.testing.assert_close(lhs, rhs)
    s = op.singulars().double()
    torch.testing.assert_close(op.V(op.Vt(x.flatten(1))), x.flatten(1))
    torch.testing.assert_close(op.U(s * op.Vt(x.flatten(1))[:, : s.shape[-1]]), y.flatten(1))


def test_file_masks_of_a_non_square_image():
    shape = (3, 24, 40)
    given = (torch.rand(2, 1, 24, 40, generator=torch.Generator().manual_seed(0)) > 0.3).float()
    op = Inpainting(mask="file").bind([0, 1], shape, params={"mask": given}).double()
    _check_svd(op, shape)
    with pytest.raises(ValueError, match=r"given masks must be \(B=2, 1 or 3, 24, 40\), got \(2, 1, 40, 24\)"):
        Inpainting(mask="file").bind([0, 1], shape, params={"mask": given.transpose(-1, -2)})


@pytest.mark.parametrize("shape, k", [((3, 21, 40), 21), ((3, 24, 17), 17), ((3, 9, 9), 9)])
def test_file_kernels_as_large_as_the_image(shape, k):
    """Kernels up to the image's smaller side (odd), any H x W: exact adjoint and SVD."""
    kernel = torch.rand(2, k, k, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    op = KernelBlur(pinv_rtol=1e-6).bind([0, 1], shape, params={"kernel": kernel / kernel.sum((1, 2), keepdim=True)}).double()
    _check_svd(op, shape)


def test_kernel_larger_than_the_image_names_both_sizes():
    with pytest.raises(ValueError, match=r"23x23 kernels do not fit 21x40 images; use odd kernels no larger than the image.s smaller side \(21 px\)"):
        KernelBlur().bind([0], (3, 21, 40), params={"kernel": torch.ones(1, 23, 23) / 529})
