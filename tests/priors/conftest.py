"""Tiny random diffusers pipelines saved with save_pretrained, once per session, read back as a
user's folder would be: a Stable Diffusion layout (vae/, unet/, scheduler/, text_encoder/,
tokenizer/, model_index.json) and an unconditional LDM one (LDMPipeline: vqvae/, unet/, scheduler/)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

SD_PROMPT_LENGTH = 7  # the stand-in tokenizer's model_max_length (SD's is 77)


def _jitter(model, scale: float = 0.02):
    """Random weights everywhere (diffusers zero-initialises some output layers)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model.eval()


def make_sd(folder: Path, prediction_type: str = "epsilon") -> Path:
    """A Stable Diffusion folder: AutoencoderKL (factor 2, 4 latent channels) + UNet2DConditionModel
    (cross_attention_dim 16) + DDIMScheduler with SD's scaled_linear betas."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    vae = _jitter(diffusers.AutoencoderKL(
        block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4, norm_num_groups=8, layers_per_block=1))
    unet = _jitter(diffusers.UNet2DConditionModel(
        sample_size=8, block_out_channels=(16, 32), layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16, attention_head_dim=4, norm_num_groups=8))
    scheduler = diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                        prediction_type=prediction_type)
    vae.save_pretrained(folder / "vae")
    unet.save_pretrained(folder / "unet")
    scheduler.save_pretrained(folder / "scheduler")
    # what StableDiffusionPipeline.save_pretrained writes besides (its text parts need transformers:
    # stand-ins with the same files, which the prior reads only when it uses the text encoder)
    (folder / "text_encoder").mkdir()
    (folder / "text_encoder" / "config.json").write_text(json.dumps({"architectures": ["CLIPTextModel"], "hidden_size": 16}))
    (folder / "tokenizer").mkdir()
    (folder / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({"model_max_length": SD_PROMPT_LENGTH}))
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "vae": ["diffusers", "AutoencoderKL"],
        "unet": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"]}))
    return folder


def make_ldm(folder: Path) -> Path:
    """An unconditional LDM folder written by LDMPipeline.save_pretrained: VQModel (factor 2, 3
    latent channels) + UNet2DModel + DDIMScheduler (linear betas)."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(1)
    vqvae = _jitter(diffusers.VQModel(
        block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=3, norm_num_groups=8, num_vq_embeddings=32, vq_embed_dim=3, layers_per_block=1))
    unet = _jitter(diffusers.UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8, attention_head_dim=8))
    scheduler = diffusers.DDIMScheduler(beta_schedule="linear")
    diffusers.LDMPipeline(vqvae=vqvae, unet=unet, scheduler=scheduler).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def sd_folder(tmp_path_factory) -> Path:
    return make_sd(tmp_path_factory.mktemp("sd"))


@pytest.fixture(scope="session")
def ldm_folder(tmp_path_factory) -> Path:
    return make_ldm(tmp_path_factory.mktemp("ldm"))


@pytest.fixture
def sd_copy(sd_folder, tmp_path) -> Path:
    """A copy of the SD folder a test may damage."""
    return Path(shutil.copytree(sd_folder, tmp_path / "sd"))
