"""Nonlinear operators: exact measurement vs differentiable surrogate, ambiguities, JPEG maths."""
from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_redd import seeding
from lightning_redd.operators.hdr import HDR
from lightning_redd.operators.jpeg import JPEG, dct_matrix, scaled_table
from lightning_redd.operators.nonlinear_blur import NonlinearBlur
from lightning_redd.operators.phase_retrieval import PhaseRetrieval
from lightning_redd.operators.quantization import Quantization, round_surrogate


def rand_images(n=2, c=3, h=16, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w, generator=g, dtype=torch.float64) * 2 - 1


def test_phase_retrieval_shape_and_ambiguities():
    op = PhaseRetrieval(pad_ratio=0.25)
    x = rand_images()
    y = op(x)
    assert y.shape == (2, 3, 24, 24) and (y >= 0).all()
    torch.testing.assert_close(op(-x), y)  # global sign
    torch.testing.assert_close(op(torch.flip(x, dims=(-2, -1))), y)  # conjugate reflection
    assert not torch.allclose(op(torch.flip(x, dims=(-1,))), y)  # a one-axis flip is not an ambiguity
    torch.testing.assert_close((y**2).sum(dim=(-2, -1)), (x**2).sum(dim=(-2, -1)))  # Parseval
    assert op.pinv(y).shape == x.shape


def test_phase_retrieval_pad_ratio_scales_with_image_size():
    assert PhaseRetrieval(pad_ratio=0.25).output_shape((3, 256, 256)) == (3, 384, 384)
    assert PhaseRetrieval(pad_ratio=0.5).output_shape((1, 32, 16)) == (1, 64, 32)
    with pytest.raises(ValueError, match="pad_ratio must be in"):
        PhaseRetrieval(pad_ratio=-1)


@pytest.mark.parametrize("surrogate", ["straight_through", "smooth"])
def test_quantization_exact_measure_and_surrogate_forward(surrogate):
    op = Quantization(bits=2, surrogate=surrogate)
    x = rand_images().requires_grad_(True)
    exact = op.measure_clean(x.detach())
    assert set(torch.unique(((exact + 1) / 2 * 3).round()).tolist()) <= {0.0, 1.0, 2.0, 3.0}
    torch.testing.assert_close(exact, ((x.detach() + 1) / 2 * 3).round() / 3 * 2 - 1)
    torch.testing.assert_close(op.measure(x.detach(), seeding.generators(0, range(2), "noise")), exact)
    out = op(x)
    if surrogate == "straight_through":
        torch.testing.assert_close(out, exact)  # same values, identity gradient
    else:
        assert (out - exact).abs().max() < 1 / 3 and not torch.allclose(out, exact)
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad != 0).float().mean() > 0.9
    assert torch.equal(torch.autograd.grad(torch.round(x * 3).sum(), x)[0], torch.zeros_like(x))  # why a surrogate


def test_smooth_round_matches_round_at_integers():
    u = torch.tensor([0.0, 1.0, 2.0, 3.0], requires_grad=True)
    r = round_surrogate(u, "smooth")
    torch.testing.assert_close(r, u.detach())
    with pytest.raises(ValueError, match="unknown surrogate 'floor'; allowed"):
        round_surrogate(u, "floor")


def test_hdr_clip_gradient_and_pinv():
    op = HDR(gain=2.0)
    x = torch.tensor([-0.9, -0.2, 0.3, 0.7], dtype=torch.float64).view(1, 1, 2, 2).expand(1, 3, 2, 2).clone()
    x.requires_grad_(True)
    y = op(x)
    torch.testing.assert_close(y[0, 0].flatten(), torch.tensor([-1.0, -0.4, 0.6, 1.0], dtype=torch.float64))
    y.sum().backward()
    torch.testing.assert_close(x.grad[0, 0].flatten(), torch.tensor([0.0, 2.0, 2.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(op.pinv(y.detach())[0, 0, 0, 1], torch.tensor(-0.2, dtype=torch.float64))


def test_jpeg_tables_and_dct():
    d = dct_matrix()
    torch.testing.assert_close(d @ d.T, torch.eye(8, dtype=torch.float64))
    assert scaled_table([16] * 64, 50)[0, 0] == 16 and scaled_table([16] * 64, 100)[0, 0] == 1
    assert scaled_table([16] * 64, 10)[0, 0] == 80


@pytest.mark.parametrize("pad_ratio", [0.0, 0.1, 0.25, 0.3, 1.0])
def test_phase_retrieval_pinv_recovers_every_image_size(pad_ratio):
    """The pads are rounded per side, so ``padded / (1 + 2 pad_ratio)`` can be off by more than
    1/2 (pad_ratio 0.1, 5 px: 5 / 1.2 rounds to 4); the pinv finds the one size that fits."""
    op = PhaseRetrieval(pad_ratio=pad_ratio)
    for h, w in [(5, 7), (15, 25), (21, 35), (64, 63), (1, 2)]:
        y = op(rand_images(1, 3, h, w))
        assert tuple(y.shape[-2:]) == op.output_shape((3, h, w))[1:]
        assert op.pinv(y).shape == (1, 3, h, w)


def _pil_jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    arr = ((x[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality, subsampling=2)
    out = torch.from_numpy(np.asarray(Image.open(buf)).astype(np.float64)).permute(2, 0, 1)[None]
    return out / 127.5 - 1


def _psnr(a, b):
    return 10 * torch.log10(4 / ((a - b) ** 2).mean()).item()


@pytest.mark.parametrize("quality", [10, 50])
def test_jpeg_agrees_with_a_real_codec(quality):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    x = 0.8 * torch.stack([torch.sin(6 * xx + yy), torch.cos(4 * yy * xx + 1), xx - yy])[None].double()
    x = (x + 0.1 * rand_images(1, 3, 32, 32)).clamp(-1, 1)
    ours = JPEG(quality=quality).double().measure_clean(x)
    pil = _pil_jpeg(x, quality)
    # much closer to the real codec than the codec is to the input (remaining differences:
    # chroma upsampling filter, integer YCbCr)
    assert _psnr(ours, pil) > _psnr(pil, x) + 4 and _psnr(ours, pil) > 33
    assert abs(_psnr(ours, x) - _psnr(pil, x)) < 1.5


def test_jpeg_quality_orders_error_and_surrogate_gradients():
    x = rand_images(1, 3, 16, 16)
    errs = [(JPEG(quality=q).double().measure_clean(x) - x).norm().item() for q in (5, 30, 95)]
    assert errs[0] > errs[1] > errs[2]
    op = JPEG(quality=30).double()
    xg = x.clone().requires_grad_(True)
    out = op(xg)
    torch.testing.assert_close(out, op.measure_clean(x))  # straight-through: exact values
    out.sum().backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0
    assert op.bind([0], (3, 24, 20)) is op  # any size: edge padding to whole MCUs (next test)


def _smooth_noisy(h, w, seed):
    """A smooth colour image plus 5% noise, on the 8-bit grid (what a JPEG file holds)."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    x = 0.8 * torch.stack([torch.sin(6 * xx + yy + seed), torch.cos(4 * yy * xx + 1 + seed), xx - yy])[None].double()
    x = (x + 0.1 * rand_images(1, 3, h, w, seed=seed)).clamp(-1, 1)
    return ((x + 1) * 127.5).round() / 127.5 - 1


def test_jpeg_pads_sizes_that_are_not_whole_mcus_as_libjpeg_does():
    """At sizes that are not multiples of 16 the padded edge MCUs (last 16 rows / columns that
    hold real pixels) differ from PIL's codec by no more than the interior does: 0.1 level of
    slack on means of about 1 level (here: edge 1.20, interior 1.22; over 5 sizes, 3 qualities,
    3 images: 1.10 and 1.05, while padding the full-size rows instead of the subsampled chroma
    rows gives 1.48 at the edge)."""
    interior, edge = [], []
    for (h, w), q in itertools.product([(24, 40), (21, 35), (40, 24)], [50, 90]):
        x = _smooth_noisy(h, w, seed=h)
        ours = JPEG(quality=q, chroma_upsampling="bilinear").double().measure_clean(x)
        d = ((ours - _pil_jpeg(x, q)).abs() * 127.5)[0].mean(0)
        band = torch.zeros(h, w, dtype=torch.bool)
        band[h - (h % 16 or 16) :] = True
        band[:, w - (w % 16 or 16) :] = True
        interior.append(d[~band].mean())
        edge.append(d[band].mean())
        assert ours.shape == x.shape and _psnr(ours, _pil_jpeg(x, q)) > 38
    assert torch.stack(edge).mean() < torch.stack(interior).mean() + 0.1, (edge, interior)
    assert torch.stack(interior).mean() < 1.5


def test_nonlinear_blur_same_kernel_for_measure_and_solve():
    op = NonlinearBlur(kernel_size=7).bind([3, 4], (3, 16, 16)).double()
    x = rand_images()
    torch.testing.assert_close(op.measure(x, seeding.generators(0, range(2), "noise")), op(x))
    torch.testing.assert_close(op(x), op(x))
    assert not torch.equal(op.kernel[0], op.kernel[1])
    again = NonlinearBlur(kernel_size=7).bind([4], (3, 16, 16)).double()
    torch.testing.assert_close(again(x[1:]), op(x)[1:])
    torch.testing.assert_close(op.pinv(op.crf(x)), x.clamp(-1, 1))
    assert (op(x) <= 1).all() and (op(x) >= -1).all()
