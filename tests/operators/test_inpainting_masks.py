"""Inpainting mask sources: sizes, fractions, determinism, files."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_redd.operators.inpainting import Inpainting


def missing_fraction(op: Inpainting) -> torch.Tensor:
    return 1 - op.mask.float().mean(dim=(1, 2, 3))


def test_box_center_exact_and_random_inside():
    op = Inpainting(mask="box", box_fraction=0.5).bind([0], (3, 32, 32))
    m = op.mask[0, 0]
    assert m[8:24, 8:24].sum() == 0 and m.sum() == 32 * 32 - 16 * 16
    ops = Inpainting(mask="box", box_position="random", box_fraction=0.25).bind(list(range(8)), (3, 32, 32))
    assert torch.all(missing_fraction(ops) == 1 / 16)
    assert len({tuple(torch.nonzero(m[0] == 0)[0].tolist()) for m in ops.mask}) > 1  # positions vary


def test_random_pixels_exact_fraction():
    op = Inpainting(mask="random", drop_fraction=0.7).bind([1, 2], (3, 20, 20))
    assert torch.all(missing_fraction(op) == 280 / 400)
    assert not torch.equal(op.mask[0], op.mask[1])


def test_half_masks():
    for side, region in [("left", (slice(None), slice(0, 8))), ("top", (slice(0, 8), slice(None)))]:
        m = Inpainting(mask="half", half=side).bind([0], (3, 16, 16)).mask[0, 0]
        assert m[region].sum() == 0 and m.sum() == 128


@pytest.mark.parametrize("coverage", [(0.1, 0.2), (0.2, 0.3), (0.05, 0.06)])
def test_strokes_coverage_in_range(coverage):
    op = Inpainting(mask="strokes", coverage=coverage).bind(list(range(6)), (3, 48, 48))
    frac = missing_fraction(op)
    assert torch.all(frac >= coverage[0]) and torch.all(frac <= coverage[1])


def test_masks_depend_only_on_the_image_seed():
    a = Inpainting(mask="strokes").bind([5, 6, 7], (3, 32, 32)).mask
    b = Inpainting(mask="strokes").bind([7], (3, 32, 32)).mask
    assert torch.equal(a[2], b[0]) and not torch.equal(a[0], a[1])


def test_forward_adjoint_pinv_apply_the_mask():
    op = Inpainting(mask="half", half="right").bind([0], (3, 8, 8))
    x = torch.rand(1, 3, 8, 8) + 0.5
    y = op(x)
    assert torch.all(y[..., 4:] == 0) and torch.equal(y[..., :4], x[..., :4])
    assert torch.equal(op.pinv(y), y) and torch.equal(op.adjoint(x), y)


def _save(path, arr):
    Image.fromarray(arr).save(path)


def test_file_masks_gray_and_rgb(tmp_path):
    from lightning_redd.operators.file_params import read_mask

    gray = np.full((8, 8), 255, np.uint8)
    gray[:, :3] = 0
    _save(tmp_path / "cat.png", gray)
    rgb = np.full((8, 8, 3), 255, np.uint8)
    rgb[0, 0, 1] = 0
    _save(tmp_path / "dog.png", rgb)
    masks = [read_mask(tmp_path / f"{n}.png", (8, 8))["mask"] for n in ("cat", "dog")]
    assert masks[0].shape == (1, 8, 8) and masks[1].shape == (3, 8, 8)
    given = torch.stack([masks[0].expand(3, -1, -1), masks[1]])
    op = Inpainting(mask="file").bind([0, 1], (3, 8, 8), names=["cat", "dog"], params={"mask": given})
    assert op.mask.shape == (2, 3, 8, 8)
    assert torch.all(op.mask[0, :, :, :3] == 0) and torch.all(op.mask[0, :, :, 3:] == 1)
    assert op.mask[1].sum() == 3 * 64 - 1 and op.mask[1, 1, 0, 0] == 0
    inv = read_mask(tmp_path / "cat.png", (8, 8), missing="white")["mask"]
    assert torch.all(inv[:, :, :3] == 1) and torch.all(inv[:, :, 3:] == 0)


def test_file_mask_errors(tmp_path):
    from lightning_redd.data.params import ParamFiles
    from lightning_redd.operators.file_params import ParamFileError, read_mask

    _save(tmp_path / "cat.png", np.zeros((8, 6), np.uint8))
    with pytest.raises(ParamFileError, match=r"cat.png is 6x8 but its image is 8x8; give masks of the image's size"):
        read_mask(tmp_path / "cat.png", (8, 8))
    with pytest.raises(ParamFileError, match="no mask for image 'owl'.*add owl.png"):
        ParamFiles(Inpainting(mask="file").file_params(), {"mask": tmp_path}).find("mask", "owl")
    with pytest.raises(ValueError, match="needs each image's mask: set data.param_folders.mask"):
        Inpainting(mask="file").bind([0], (3, 8, 6))
    with pytest.raises(ValueError, match=r"given masks must be \(B=1, 1 or 1, 8, 6\), got \(1, 3, 8, 6\)"):
        Inpainting(mask="file", channels=1).bind([0], (1, 8, 6), params={"mask": torch.ones(1, 3, 8, 6)})


def test_noisy_measurement_keeps_missing_pixels_zero():
    from lightning_redd import seeding

    op = Inpainting(mask="half", half="right", sigma_y=0.1).bind([0], (3, 8, 8))
    y = op.measure(torch.zeros(1, 3, 8, 8), [seeding.generator(0, 0, "noise")])
    assert torch.all(y[..., 4:] == 0) and torch.all(y[..., :4] != 0)
