"""DiffusersPrior: a tiny UNet2DModel saved with save_pretrained gives the eps diffusers gives."""
from __future__ import annotations

import json
import sys

import pytest
import torch

from lightning_redd.priors import schedules


def _tiny_unet(out_channels: int = 6, **extra):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=16, in_channels=3, out_channels=out_channels, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8, attention_head_dim=8, **extra,
    )
    with torch.no_grad():  # diffusers zero-initialises nothing we rely on, but make outputs non-trivial anyway
        for p in unet.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return unet.eval()


def _save(folder, unet, **sched):
    diffusers = pytest.importorskip("diffusers")
    unet.save_pretrained(folder)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, **sched)
    scheduler.save_pretrained(folder)
    return scheduler


@pytest.mark.slow
def test_matches_diffusers_with_learned_variance(tmp_path):
    from lightning_redd.priors.diffusers_prior import DiffusersPrior

    unet = _tiny_unet(out_channels=6)
    scheduler = _save(tmp_path, unet, beta_schedule="linear", variance_type="learned_range")
    prior = DiffusersPrior(path=str(tmp_path))
    assert prior.image_size == 16 and prior.channels == 3 and prior.num_timesteps == 1000
    # the scheduler's float32 betas, accumulated in float64
    torch.testing.assert_close(prior.alphas_cumprod, scheduler.alphas_cumprod.double(), atol=1e-6, rtol=0)
    torch.testing.assert_close(prior.alphas_cumprod, schedules.alphas_cumprod(schedules.linear_betas()), atol=1e-6, rtol=0)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([7, 941])
    with torch.no_grad():
        direct = unet(x, t).sample
    assert direct.shape == (2, 6, 16, 16)
    torch.testing.assert_close(prior.eps(x, t), direct[:, :3])
    assert not any(p.requires_grad for p in prior.parameters())


def test_pipeline_layout_scaled_linear_and_v_prediction(tmp_path):
    from lightning_redd.priors.diffusers_prior import DiffusersPrior

    unet = _tiny_unet(out_channels=3)
    unet.save_pretrained(tmp_path / "unet")
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDIMScheduler(beta_schedule="scaled_linear", prediction_type="v_prediction")
    scheduler.save_pretrained(tmp_path / "scheduler")
    prior = DiffusersPrior(path=str(tmp_path), subfolder="unet")
    torch.testing.assert_close(prior.alphas_cumprod.float(), scheduler.alphas_cumprod, atol=1e-5, rtol=0)
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([300])
    with torch.no_grad():
        v = unet(x, t).sample
    a = scheduler.alphas_cumprod[300]
    torch.testing.assert_close(prior.eps(x, t), a.sqrt() * v + (1 - a).sqrt() * x, atol=1e-5, rtol=1e-5)


def test_unsupported_schedules_are_explained(tmp_path):
    from lightning_redd.priors.diffusers_prior import DiffusersPrior, scheduler_betas

    pytest.importorskip("diffusers")
    with pytest.raises(ValueError, match="unsupported beta_schedule 'cubic'"):
        scheduler_betas({"_class_name": "DDPMScheduler", "beta_schedule": "cubic"})
    with pytest.raises(ValueError, match="no discrete VP betas"):
        scheduler_betas({"_class_name": "ScoreSdeVeScheduler"})
    unet = _tiny_unet(out_channels=3)
    unet.save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="scheduler_config.json"):
        DiffusersPrior(path=str(tmp_path))
    (tmp_path / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDPMScheduler", "prediction_type": "flow"}))
    with pytest.raises(ValueError, match="unsupported prediction_type 'flow'"):
        DiffusersPrior(path=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not found"):
        DiffusersPrior(path=str(tmp_path / "missing"))


def test_missing_diffusers_names_the_extra(monkeypatch):
    from lightning_redd.priors import diffusers_prior

    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(ImportError, match=r'pip install "lightning_redd\[diffusers\]"'):
        diffusers_prior.DiffusersPrior(path="anything")
