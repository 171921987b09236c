"""FID and KID estimators against independent computations."""
import numpy as np
import pytest
import torch

from lightning_redd.metrics.distances import frechet_distance, kernel_inception_distance, mmd2_unbiased


def _features(seed, n, d=16, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * 0.5 + shift


def _fid_scipy(f1, f2):
    linalg = pytest.importorskip("scipy.linalg")
    a, b = f1.numpy(), f2.numpy()
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(s1 @ s2).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(root))


@pytest.mark.parametrize("n1,n2", [(40, 50), (8, 12)])  # more images than dims, and fewer
def test_fid_matches_scipy_sqrtm(n1, n2):
    f1, f2 = _features(0, n1), _features(1, n2, shift=0.3)
    assert abs(float(frechet_distance(f1, f2)) - _fid_scipy(f1, f2)) < 1e-6 * max(1.0, _fid_scipy(f1, f2))


def test_fid_both_trace_paths_agree():
    # 20 images in 16 dims takes the D x D path, in 32 dims the factored one: same value up to
    # the zero-padded dims, which leave the trace unchanged
    f1, f2 = _features(2, 20), _features(3, 20, shift=0.1)
    pad = lambda f: torch.cat([f, torch.zeros(f.shape[0], 16, dtype=f.dtype)], dim=1)  # noqa: E731
    assert torch.allclose(frechet_distance(f1, f2), frechet_distance(pad(f1), pad(f2)), rtol=1e-9)
    assert float(frechet_distance(f1, f1)) < 1e-9


def test_mmd_matches_torchmetrics_poly_mmd():
    kid = pytest.importorskip("torchmetrics.image.kid")
    x, y = _features(4, 30), _features(5, 30, shift=0.2)
    assert torch.allclose(mmd2_unbiased(x, y), kid.poly_mmd(x, y, degree=3, gamma=None, coef=1.0), rtol=1e-10)


def test_kid_subsets_small_sets_and_determinism():
    x, y = _features(6, 12), _features(7, 9, shift=1.0)
    mean, std = kernel_inception_distance(x, y, subsets=20, subset_size=1000)  # m = 9
    assert mean > 0 and std > 0
    again = kernel_inception_distance(x, y, subsets=20, subset_size=1000)
    assert torch.equal(mean, again[0])
    # a set against itself: ~0 relative to a shifted set
    same, _ = kernel_inception_distance(x, x, subsets=20)
    assert abs(float(same)) < 0.1 * float(mean)
    # with one subset covering everything it is the plain unbiased MMD
    full, s = kernel_inception_distance(x[:9], y, subsets=1, subset_size=9)
    assert torch.allclose(full, mmd2_unbiased(x[:9], y)) and s == 0


def test_too_few_images_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 2 images"):
        frechet_distance(_features(0, 1), _features(1, 5))
    with pytest.raises(ValueError, match="at least 2 images"):
        kernel_inception_distance(_features(0, 5), _features(1, 1))
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(_features(0, 5, d=3), _features(1, 5, d=4))


def test_kid_precomputed_kernels_match_per_subset_kernels(monkeypatch):
    import lightning_redd.metrics.distances as distances

    x, y = _features(8, 30), _features(9, 25, shift=0.3)
    fast = kernel_inception_distance(x, y, subsets=7, subset_size=10)
    monkeypatch.setattr(distances, "_PRECOMPUTE_MAX", 0)
    slow = kernel_inception_distance(x, y, subsets=7, subset_size=10)
    assert torch.allclose(fast[0], slow[0], rtol=1e-10) and torch.allclose(fast[1], slow[1], rtol=1e-8)
