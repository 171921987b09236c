"""The configs for images of any size: the bundled 128 px example parses as a run of own-size
images, and every paper config's operator takes 512 px and non-square images (``--data.resize
none``; the 256 px ADM prior is then tiled by the module)."""
from __future__ import annotations


import pytest
import torch
from jsonargparse import Namespace
from test_configs import CONFIGS, PAPER_PRIORS, composition, parse

from lightning_redd.data.images import check_folder
from lightning_redd.resources import resolve_data

PAPER = sorted(p for d in PAPER_PRIORS for p in (CONFIGS / d).glob("*.yaml"))


def test_the_larger_example_restores_held_out_photographs_at_their_own_size():
    c = parse(CONFIGS / "demo128.yaml").parsed.predict
    assert c.data.init_args.resize == "none" and c.data.init_args.image_size == 64
    assert c.model.tiling.tile_batch == 16 and c.model.tiling.mode == "auto"
    report = check_folder(resolve_data(c.data.init_args.root), image_size=0)
    assert not report.problems
    assert sorted(report.sizes.values()) == [(128, 128)] * 4 + [(192, 128)]
    from lightning_redd.data.photos import DEMO_IMAGES, HELDOUT_PHOTOS

    assert {f.name for f in report.files} == {n for n, _, _ in DEMO_IMAGES} | {"motorcycle_wide.png"}
    assert all(stem in HELDOUT_PHOTOS for _, stem, _ in DEMO_IMAGES)


def _instantiate(spec: Namespace):
    import importlib

    module, name = spec.class_path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(**dict(spec.init_args or {}))


@pytest.mark.slow
@pytest.mark.parametrize("path", PAPER, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_paper_config_takes_512_px_and_non_square_images(path):
    """Each paper config's operator, bound at 512x512 and 256x384, measures (the FFHQ and
    ImageNet files share their operators' settings, and both are run: ~1-17 s each loaded)."""
    c = parse(*composition(path)).parsed.predict
    op = _instantiate(c.model.operator)
    for shape in ((3, 512, 512), (3, 256, 384)):
        bound = op.bind([0], shape, names=["x"])
        with torch.no_grad():
            y = bound(torch.zeros(1, *shape))
        assert y.shape[0] == 1 and torch.isfinite(y).all()
