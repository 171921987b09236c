"""Bad inputs raise errors that name the problem and the fix."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from lightning_redd import seeding
from lightning_redd.operators.blur import GaussianBlur, MotionBlur
from lightning_redd.operators.inpainting import Inpainting
from lightning_redd.operators.registry import OPERATORS, build_operator
from lightning_redd.operators.super_resolution import BicubicSR, BlockAverageSR

sys.path.insert(0, str(Path(__file__).parent))  # the shared settings live next to this file
from test_operator_properties import SHAPE, SMALL, make  # noqa: E402

NAMES = sorted(OPERATORS)


def test_unknown_operator_name_lists_known_names():
    with pytest.raises(ValueError, match="unknown operator 'foo'") as err:
        build_operator("foo")
    assert "inpainting_box" in str(err.value) and "sr_block" in str(err.value)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_channel_count(name):
    op = build_operator(name, **SMALL[name])
    with pytest.raises(ValueError, match=r"expects 3-channel images, got 1 channels; set channels=1"):
        op.bind([0], (1, *SHAPE[1:]))
    bound = make(name, seeds=[0])
    with pytest.raises(ValueError, match="channels"):
        bound(torch.zeros(1, 1, *SHAPE[1:], dtype=torch.float64))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_or_inf_in_x_or_y(name, bad):
    op = make(name, seeds=[0])
    x = torch.zeros(1, *SHAPE, dtype=torch.float64)
    x[0, 0, 3, 3] = bad
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        op.measure(x, [seeding.generator(0, 0, "noise")])
    y = op(torch.zeros(1, *SHAPE, dtype=torch.float64))
    y.view(-1)[1] = bad
    with pytest.raises(ValueError, match="y contains NaN or inf"):
        op.pinv(y)


@pytest.mark.parametrize("name", NAMES)
def test_batch_size_must_match_bound_seeds(name):
    op = make(name, seeds=[1, 2])
    x = torch.zeros(3, *SHAPE, dtype=torch.float64)
    per_image = any(
        getattr(m, "mask", None) is not None or (getattr(m, "kernel", None) is not None and m.kernel.shape[0] > 1)
        for m in op.modules()
    )
    if not per_image:
        assert op(x).shape[0] == 3  # no per-image parameters: any batch size works
        return
    with pytest.raises(ValueError, match="bound for a batch of 2 images but got a batch of 3; call bind"):
        op(x)


def test_per_image_operator_must_be_bound_first():
    with pytest.raises(RuntimeError, match=r"call op = op.bind\(seeds, shape\)"):
        Inpainting(mask="box")(torch.zeros(1, *SHAPE))
    with pytest.raises(RuntimeError, match="bind"):
        MotionBlur(kernel_size=5)(torch.zeros(1, *SHAPE))


def test_bound_operator_rejects_another_image_size():
    op = Inpainting(mask="box").bind([0], SHAPE)
    with pytest.raises(ValueError, match=r"bound for images of shape \(3, 16, 16\) but got \(3, 32, 32\)"):
        op(torch.zeros(1, 3, 32, 32))


@pytest.mark.parametrize("cls", [BlockAverageSR, BicubicSR])
def test_sr_rejects_non_multiple_sizes(cls):
    with pytest.raises(ValueError, match=r"18x20 is not a multiple of factor 4; crop or pad .* nearest: 16x20 \(crop\) and 20x20 \(pad\)"):
        cls(factor=4).bind([0], (3, 18, 20))
    with pytest.raises(ValueError, match=r"3x40 is not a multiple of factor 4; .* nearest: 4x40 \(pad\)$"):
        BlockAverageSR(factor=4).bind([0], (3, 3, 40))
    cls(factor=4).bind([0], (3, 24, 40))  # any H x W whose sides are multiples (24x40: 6x10)
    with pytest.raises(ValueError, match="factor must be one of 2, 4, 8"):
        cls(factor=3)


def test_kernel_larger_than_image():
    with pytest.raises(ValueError, match="61x61 kernel does not fit 16x16 images; use a smaller kernel_size"):
        GaussianBlur().bind([0], SHAPE)
    with pytest.raises(ValueError, match="kernel does not fit"):
        MotionBlur(kernel_size=61).bind([0], SHAPE)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mask": "circle"}, "unknown mask 'circle'; allowed"),
        ({"box_fraction": 1.5}, r"box_fraction must be in \(0, 1\]"),
        ({"drop_fraction": 1.0}, r"drop_fraction must be in \[0, 1\)"),
        ({"coverage": (0.3, 0.2)}, "coverage must be"),
        ({"half": "middle"}, "unknown half 'middle'; allowed"),
        ({"box_position": "corner"}, "unknown box_position"),
        ({"sigma_y": -0.1}, "sigma_y must be"),
    ],
)
def test_inpainting_constructor_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Inpainting(**kwargs)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: GaussianBlur(kernel_size=4), "kernel_size must be an odd integer"),
        (lambda: GaussianBlur(sigma=0.0), "sigma must be a float > 0"),
        (lambda: GaussianBlur(pinv_rtol=2.0), r"pinv_rtol must be in \[0, 1\)"),
        (lambda: MotionBlur(intensity=2.0), r"intensity must be in \[0, 1\]"),
        (lambda: build_operator("denoising", noise="laplace"), "unknown noise 'laplace'; allowed"),
    ],
)
def test_other_constructor_validation(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_measurement_of_wrong_shape_for_pinv():
    op = BlockAverageSR(factor=2).bind([0], SHAPE)
    with pytest.raises(ValueError, match=r"expects low-resolution measurements \(B, 3, h, w\)"):
        op.pinv(torch.zeros(1, 1, 8, 8))
