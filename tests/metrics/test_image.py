"""PSNR and SSIM against closed forms and scikit-image."""
import math

import pytest
import torch

from lightning_redd.metrics import psnr, ssim


def test_psnr_closed_form():
    x = torch.zeros(2, 3, 8, 8)
    y = x.clone()
    y[0] += 0.1  # MSE 0.01 on a range of 2 -> 10 log10(4 / 0.01)
    y[1] -= 0.2
    assert torch.allclose(psnr(y, x), torch.tensor([10 * math.log10(400), 10 * math.log10(100)], dtype=torch.float64))
    assert torch.isinf(psnr(x, x)).all()
    # explicit [0, 1] range: same images, half the range, same dB
    assert torch.allclose(psnr((y + 1) / 2, (x + 1) / 2, data_range=1.0, low=0.0), psnr(y, x))


def test_psnr_clips_to_the_range():
    x = torch.zeros(1, 1, 4, 4)
    assert torch.allclose(psnr(x + 5, x), psnr(x + 1, x))


def test_ssim_identity_and_against_skimage():
    skm = pytest.importorskip("skimage.metrics")
    torch.manual_seed(0)
    a = torch.rand(2, 3, 32, 32) * 2 - 1
    b = (a + 0.3 * torch.randn_like(a)).clamp(-1, 1)
    assert torch.allclose(ssim(a, a), torch.ones(2, dtype=torch.float64))
    ours = ssim(b, a)
    for i in range(2):
        ref = skm.structural_similarity(
            b[i].permute(1, 2, 0).double().numpy(), a[i].permute(1, 2, 0).double().numpy(),
            data_range=2.0, channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        )
        assert abs(float(ours[i]) - ref) < 1e-6


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="equal shapes"):
        psnr(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
