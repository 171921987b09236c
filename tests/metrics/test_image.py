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


def _pair(seed=1234, shape=(3, 3, 48, 40), noise=0.2):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(shape, generator=g) * 2 - 1
    return (a + noise * torch.randn(a.shape, generator=g)).clamp(-1, 1), a


def test_psnr_constant_offset_closed_form():
    # x = ref + c everywhere (inside the range): MSE = c^2, PSNR = 20 log10(range / c)
    ref = torch.full((2, 3, 16, 16), -0.5)
    for c in (0.01, 0.25, 1.0):
        expected = 20 * math.log10(2.0 / c)
        assert torch.allclose(psnr(ref + c, ref), torch.full((2,), expected, dtype=torch.float64), atol=1e-10)
    # the same images in [0, 255] units give the same dB
    assert torch.allclose(psnr((ref + 0.25 + 1) * 127.5, (ref + 1) * 127.5, data_range=255.0, low=0.0),
                          torch.full((2,), 20 * math.log10(8.0), dtype=torch.float64))


def test_psnr_against_skimage_and_torchmetrics():
    skm = pytest.importorskip("skimage.metrics")
    tmf = pytest.importorskip("torchmetrics.functional.image")
    x, ref = _pair()
    ours = psnr(x, ref)
    for i in range(x.shape[0]):
        sk = skm.peak_signal_noise_ratio(ref[i].double().numpy(), x[i].double().numpy(), data_range=2.0)
        assert abs(float(ours[i]) - sk) < 1e-4
    tm = tmf.peak_signal_noise_ratio(x.double(), ref.double(), data_range=(-1.0, 1.0), reduction="none", dim=(1, 2, 3))
    assert torch.allclose(ours, tm.double(), atol=1e-4)


# skimage 0.26 structural_similarity(data_range=2, channel_axis=2, gaussian_weights=True,
# sigma=1.5, use_sample_covariance=False) on _pair(); torchmetrics' SSIM differs (~1e-2):
# it pads and crops differently.
SSIM_RECORDED = (0.7587410760612013, 0.7473095866386951, 0.7694277701597692)


def test_ssim_recorded_value_and_identity():
    x, ref = _pair()
    ours = ssim(x, ref)
    assert torch.allclose(ours, torch.tensor(SSIM_RECORDED, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(ssim(ref, ref), torch.ones(3, dtype=torch.float64), atol=1e-12)
    assert ours.shape == (3,) and (ours < 1).all()


def test_ssim_matches_skimage_on_random_images():
    skm = pytest.importorskip("skimage.metrics")
    for seed in (0, 1):
        x, ref = _pair(seed, (2, 3, 33, 37), noise=0.5)
        ours = ssim(x, ref)
        for i in range(2):
            sk = skm.structural_similarity(
                x[i].permute(1, 2, 0).double().numpy(), ref[i].permute(1, 2, 0).double().numpy(), data_range=2.0,
                channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
            )
            assert abs(float(ours[i]) - sk) < 1e-4
