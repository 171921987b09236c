"""Factored SVDs of the circular blurs (real Fourier basis, any real kernel) and of bicubic SR
(Kronecker product of the 1-D SVDs): ``A = U diag(s) V^T``, ``pinv = V diag(1/s) U^T``."""
from __future__ import annotations

import time

import pytest
import torch

from lightning_redd.operators import fft_conv
from lightning_redd.operators.blur import GaussianBlur, KernelBlur, MotionBlur
from lightning_redd.operators.super_resolution import BicubicSR

SEEDS = [3, 4]


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


def _check_svd(op, shape) -> None:
    """``V``, ``U`` orthogonal; ``U s V^T x = A x``; ``V s U^T y = A^T y``; ``V s^+ U^T y = pinv(y)``."""
    b = len(SEEDS)
    x = _rand(b, *shape, seed=1)
    y = op(x)
    xf, yf = x.flatten(1), y.flatten(1)
    n, m = xf.shape[1], yf.shape[1]
    s = op.singulars()
    assert s.shape[-1] == m and s.dtype == torch.float64 and (s >= 0).all()
    vx = op.Vt(xf)
    assert vx.shape == (b, n) and op.Ut(yf).shape == (b, m)
    _close(op.V(vx), xf)  # V V^T = I
    _close(vx.norm(dim=1), xf.norm(dim=1))  # V^T an isometry (square, so V orthogonal)
    z = _rand(b, m, seed=2)
    _close(op.Ut(op.U(z)), z)  # U^T U = I
    _close(op.U(op.Ut(yf)), yf)  # U U^T = I (M x M)
    _close(op.U(s * vx[:, :m]), yf)  # A = U diag(s) V^T
    pad = lambda t: torch.cat([t, t.new_zeros(b, n - m)], dim=1)  # noqa: E731
    _close(op.V(pad(s * op.Ut(yf))), op.adjoint(y).flatten(1))  # A^T = V diag(s) U^T
    inv = op.svd_pinv_scale()
    assert inv.shape == s.shape
    _close(op.V(pad(inv * op.Ut(yf))), op.pinv(y).flatten(1))  # A^+ with the operator's cut-off


def test_motion_kernels_are_not_symmetric():
    k = MotionBlur(kernel_size=9).bind(SEEDS, (3, 32, 32)).kernel
    assert not torch.allclose(k, k.flip(-2, -1), atol=1e-3)


@pytest.mark.parametrize("shape", [(3, 32, 32), (3, 15, 17), (1, 16, 9)])
def test_motion_blur_svd(shape):
    op = MotionBlur(kernel_size=9, channels=shape[0]).bind(SEEDS, shape).double()
    _check_svd(op, shape)
    s = op.singulars()
    assert s.shape == (len(SEEDS), shape[0] * shape[1] * shape[2])  # per-image singular values
    assert not torch.allclose(s[0], s[1])


def test_motion_blur_svd_with_a_large_cutoff():
    op = MotionBlur(kernel_size=9, pinv_rtol=0.2).bind(SEEDS, (3, 32, 32)).double()
    assert (op.svd_pinv_scale() == 0).any()
    _check_svd(op, (3, 32, 32))


def test_given_kernels_blur_as_the_operator_that_drew_them_and_have_an_svd():
    """KernelBlur with a batch's kernels given (as read from files) is the same blur as the
    MotionBlur that drew them, per image, with a valid per-image SVD."""
    drawn = MotionBlur(kernel_size=9).bind(SEEDS, (3, 32, 32)).double()
    given = KernelBlur().bind(SEEDS, (3, 32, 32), params={"kernel": drawn.kernel[:, 0]}).double()
    x = _rand(2, 3, 32, 32)
    _close(given(x), drawn(x))
    _check_svd(given, (3, 32, 32))
    with pytest.raises(ValueError, match="needs each image.s kernel: set data.param_folders.kernel"):
        KernelBlur().bind(SEEDS, (3, 32, 32))
    with pytest.raises(ValueError, match="do not fit 8x8 images"):
        KernelBlur().bind([0], (3, 8, 8), params={"kernel": torch.ones(1, 9, 9) / 81})


def test_anisotropic_gaussian_blur_svd_shared_singulars():
    op = GaussianBlur(kernel_size=7, sigma=(1.5, 0.7), angle=30.0, pinv_rtol=1e-4).bind(SEEDS, (3, 32, 32)).double()
    _check_svd(op, (3, 32, 32))
    assert op.singulars().shape == (3 * 32 * 32,)


@pytest.mark.parametrize("factor", [2, 4])
def test_bicubic_sr_svd(factor):
    op = BicubicSR(factor=factor).bind(SEEDS, (3, 32, 32)).double()
    _check_svd(op, (3, 32, 32))
    s = op.singulars()
    assert s.shape == (3 * (32 // factor) ** 2,)
    # constants: taps sum to 1, so the DC singular value is 1/r (as for block averaging)
    assert torch.isclose(s.max(), torch.tensor(1.0 / factor, dtype=torch.float64))


def test_bicubic_sr_svd_non_square():
    op = BicubicSR(factor=2).bind(SEEDS, (3, 24, 40)).double()
    _check_svd(op, (3, 24, 40))


@pytest.mark.parametrize(
    "op",
    [MotionBlur(kernel_size=5, channels=1), GaussianBlur(kernel_size=3, sigma=(1.0, 0.5), angle=20.0, channels=1)],
    ids=["motion", "gaussian"],
)
@pytest.mark.parametrize("hw", [(6, 7), (7, 6), (5, 5), (6, 6)])
def test_blur_svd_dense_factors_on_tiny_images(op, hw):
    """Dense ``V`` and ``U`` of tiny images (odd/even sizes: DC, Nyquist, duplicate rows) are
    orthogonal and ``U diag(s) V^T`` is the dense ``A``."""
    shape = (1, *hw)
    n = hw[0] * hw[1]
    op = op.bind([5], shape).double()
    eye = torch.eye(n, dtype=torch.float64)
    # the maps act on rows: row i of f(I) is f(e_i), so Vt(I) = (V^T)^T = V, U(I) = U^T, A(I) = A^T
    v, u = op.Vt(eye), op.U(eye).T
    a = op(eye.view(n, *shape)).flatten(1).T
    torch.testing.assert_close(v.T @ v, eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(u.T @ u, eye, atol=1e-12, rtol=0)
    s = op.singulars().reshape(-1)
    torch.testing.assert_close(u @ torch.diag(s) @ v.T, a, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.svdvals(a), s.sort(descending=True).values, atol=1e-12, rtol=0)


def test_real_fourier_basis_is_orthogonal_for_odd_and_even_sizes():
    for h, w in [(1, 1), (1, 4), (3, 1), (4, 6), (5, 7), (6, 5)]:
        n = h * w
        m = fft_conv.real_fourier(torch.eye(n, dtype=torch.float64).view(n, h, w)).reshape(n, n)
        torch.testing.assert_close(m @ m.T, torch.eye(n, dtype=torch.float64), atol=1e-12, rtol=0)
        z = _rand(2, h, w)
        torch.testing.assert_close(fft_conv.real_fourier(fft_conv.inverse_real_fourier(z)), z)


def test_svd_maps_need_bind_and_matching_batch():
    with pytest.raises(RuntimeError, match="bind"):
        MotionBlur(kernel_size=5).singulars()
    with pytest.raises(RuntimeError, match="bind"):
        BicubicSR(factor=2).Vt(torch.zeros(1, 3 * 16 * 16))
    op = MotionBlur(kernel_size=5).bind(SEEDS, (3, 16, 16))
    with pytest.raises(ValueError, match="batch"):
        op.Vt(torch.zeros(3, 3 * 16 * 16))
    with pytest.raises(ValueError, match="flattened"):
        op.Vt(torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="flattened"):
        BicubicSR(factor=2).bind(SEEDS, (3, 16, 16)).Ut(torch.zeros(2, 3 * 16 * 16))


@pytest.mark.parametrize(
    "make",
    [lambda: MotionBlur(kernel_size=61), lambda: BicubicSR(factor=4), lambda: BicubicSR(factor=2)],
    ids=["motion", "bicubic_x4", "bicubic_x2"],
)
def test_svd_at_256_is_matrix_free_and_fast(make):
    shape = (3, 256, 256)
    n = 3 * 256 * 256
    start = time.perf_counter()
    op = make().bind(SEEDS, shape)
    # no dense N x N (or M x N) matrix: no buffer is larger than one image, all of them a few images
    sizes = [b.numel() for b in op.buffers()]
    assert max(sizes) <= n and sum(sizes) < 4 * n
    x = _rand(len(SEEDS), *shape).float()
    y = op(x)
    xf, yf = x.flatten(1), y.flatten(1)
    m = yf.shape[1]
    s = op.singulars()
    vx = op.Vt(xf)
    assert vx.shape == (len(SEEDS), n) and op.Ut(yf).shape == (len(SEEDS), m) and s.shape[-1] == m
    assert op.V(vx).shape == (len(SEEDS), n) and op.U(s * vx[:, :m]).shape == (len(SEEDS), m)
    torch.testing.assert_close(op.V(vx), xf, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(op.U(s * vx[:, :m]), yf, rtol=1e-4, atol=1e-4)
    assert time.perf_counter() - start < 10.0


def test_blur_svd_is_stable_where_the_transfer_vanishes():
    """Where ``|G|`` is at rounding level its phase is noise; ``U`` must not depend on it (the
    same ``U`` in float32 and float64, hence on any device)."""
    op = GaussianBlur(kernel_size=31, sigma=3.0).bind([0], (3, 64, 64))
    z = _rand(2, 3 * 64 * 64)
    torch.testing.assert_close(op.float().U(z.float()).double(), op.double().U(z), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(op.float().Ut(z.float()).double(), op.double().Ut(z), rtol=1e-4, atol=1e-4)
