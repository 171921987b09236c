"""RED-diff runs end to end on every operator of the registry with the shipped embedded
prior (3 iterates: a smoke test of the whole path, not of quality)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_redd import seeding
from lightning_redd.data.folder import list_images, load_image
from lightning_redd.operators.registry import OPERATORS, build_operator
from lightning_redd.solvers.red_diff import RedDiff

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"


@pytest.fixture(scope="module")
def prior():
    from lightning_redd.priors.embedded import EmbeddedPrior

    return EmbeddedPrior()


@pytest.fixture(scope="module")
def images():
    return torch.stack([load_image(p, 64) for p in list_images(DEMO)[:2]])


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_red_diff_solves_every_operator(name, prior, images):
    op = build_operator(name).bind([11, 12], tuple(images.shape[1:]), names=["a", "b"])
    y = op.measure(images, seeding.generators(0, [0, 1], "noise"))
    solver = RedDiff(num_steps=3, lr=0.1)
    state = solver.init(y, op, prior, seeding.generators(0, [0, 1], "solver"))
    start = state.mu.detach().clone()
    while not state.done:
        stats = solver.step(state, y, op, prior)
        assert all(torch.isfinite(v.float()).all() for v in stats.values())
    out = solver.estimate(state)
    assert out.shape == images.shape and torch.isfinite(out).all()
    assert not torch.equal(out, start)


def _tiny_adm():
    from lightning_redd.priors.adm import ADMPrior

    return ADMPrior(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="8",
                    num_head_channels=16, learn_sigma=True, use_scale_shift_norm=True, resblock_updown=True,
                    allow_random_init=True)


def _tiny_diffusers(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    from lightning_redd.priors.diffusers_prior import DiffusersPrior

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8, attention_head_dim=8,
    )
    unet.save_pretrained(tmp_path)
    diffusers.DDPMScheduler(num_train_timesteps=1000).save_pretrained(tmp_path)
    return DiffusersPrior(path=str(tmp_path))


@pytest.mark.parametrize("kind", ["gaussian", "adm", "diffusers"])
def test_red_diff_runs_with_each_prior_type(kind, tmp_path):
    from lightning_redd.priors.gaussian import GaussianPrior

    prior = {"gaussian": GaussianPrior, "adm": _tiny_adm, "diffusers": lambda: _tiny_diffusers(tmp_path)}[kind]()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    op = build_operator("inpainting_box").bind([1, 2], (3, 16, 16))
    y = op.measure(x, seeding.generators(0, [0, 1], "noise"))
    out = RedDiff(num_steps=4).solve(y, op, prior, seeding.generators(0, [0, 1], "solver"))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not torch.equal(out, op.pinv(y))
