"""DiffusersLatentPrior reads the SD and LDM folders save_pretrained writes, gives what diffusers'
own networks give (encode/decode with the VAE's scaling, eps from epsilon / v-prediction, the
scheduler's betas, classifier-free guidance), and refuses broken folders in one line."""
from __future__ import annotations

import json
import os
import shutil
import sys

import pytest
import torch

from lightning_redd.priors import schedules
from lightning_redd.priors.loaders import UnsafeCheckpointError

diffusers = pytest.importorskip("diffusers")
from lightning_redd.priors import latent_diffusers  # noqa: E402
from lightning_redd.priors.latent_diffusers import DiffusersLatentPrior  # noqa: E402

from conftest import SD_PROMPT_LENGTH  # noqa: E402


def _reference(folder, part, cls):
    return getattr(diffusers, cls).from_pretrained(str(folder), subfolder=part, local_files_only=True).eval()


def _scaled_linear(start=0.00085, end=0.012, n=1000):
    return torch.cumprod(1 - torch.linspace(start**0.5, end**0.5, n, dtype=torch.float64) ** 2, 0)


def test_sd_folder_matches_diffusers(sd_folder):
    prior = DiffusersLatentPrior(path=str(sd_folder), text_encoder="none")
    vae, unet = _reference(sd_folder, "vae", "AutoencoderKL"), _reference(sd_folder, "unet", "UNet2DConditionModel")
    assert (prior.channels, prior.image_channels, prior.factor, prior.num_timesteps) == (4, 3, 2, 1000)
    torch.testing.assert_close(prior.alphas_cumprod, _scaled_linear(), atol=1e-6, rtol=0)  # SD's betas, not the linear ones
    assert not any(p.requires_grad for p in prior.parameters())
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        z = prior.encode(x)
        torch.testing.assert_close(z, vae.encode(x).latent_dist.mean * 0.18215)
        torch.testing.assert_close(prior.decode(z), vae.decode(z / 0.18215).sample)
        t = torch.tensor([3, 870])
        empty = torch.zeros(2, SD_PROMPT_LENGTH, 16)  # the empty prompt without a text encoder
        torch.testing.assert_close(prior.eps(z, t), unet(z, t, encoder_hidden_states=empty).sample)


def test_v_prediction_prompt_file_and_guidance(sd_copy):
    cfg_path = sd_copy / "scheduler" / "scheduler_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "prediction_type": "v_prediction"}))
    g = torch.Generator().manual_seed(1)
    cond, neg = torch.randn(1, 5, 16, generator=g), torch.randn(5, 16, generator=g)  # (1, L, D) and (L, D) both accepted
    from safetensors.torch import save_file

    save_file({"prompt_embeds": cond, "negative_prompt_embeds": neg}, str(sd_copy / "prompt.safetensors"))
    prior = DiffusersLatentPrior(path=str(sd_copy), prompt_embeds=str(sd_copy / "prompt.safetensors"), guidance_scale=3.0)
    unet = _reference(sd_copy, "unet", "UNet2DConditionModel")
    z, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([10, 500])
    with torch.no_grad():
        v_c = unet(z, t, encoder_hidden_states=cond.expand(2, -1, -1)).sample
        v_n = unet(z, t, encoder_hidden_states=neg.expand(2, -1, -1)).sample
        v = v_n + 3.0 * (v_c - v_n)
        a = prior.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        torch.testing.assert_close(prior.eps(z, t), a.sqrt() * v + (1 - a).sqrt() * z, atol=1e-5, rtol=1e-5)


def test_ldm_folder_matches_diffusers(ldm_folder):
    prior = DiffusersLatentPrior(path=str(ldm_folder))
    vq, unet = _reference(ldm_folder, "vqvae", "VQModel"), _reference(ldm_folder, "unet", "UNet2DModel")
    assert (prior.channels, prior.factor) == (3, 2) and prior.autoencoder.kind == "VQModel"
    torch.testing.assert_close(prior.alphas_cumprod, schedules.alphas_cumprod(schedules.linear_betas()), atol=1e-6, rtol=0)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        z = prior.encode(x)
        torch.testing.assert_close(z, vq.encode(x).latents * 0.18215)
        torch.testing.assert_close(prior.decode(z), vq.decode(z / 0.18215).sample)  # quantised, as LDMPipeline decodes
        torch.testing.assert_close(prior.eps(z, torch.tensor([400])), unet(z, torch.tensor([400])).sample)


def _remove(folder, *parts):
    for p in parts:
        target = folder / p
        shutil.rmtree(target) if target.is_dir() else target.unlink()


@pytest.mark.parametrize("parts, expected", [
    (("vae", "model_index.json"), "no autoencoder in '{folder}': expected a subfolder vae/ or vqvae/ with config.json"),
    (("unet",), "no denoiser UNet in '{folder}': expected a subfolder unet/"),
    (("unet/diffusion_pytorch_model.safetensors",), "no weights in '{folder}/unet': expected diffusion_pytorch_model.safetensors"),
    (("scheduler",), "no scheduler config for the diffusers model in '{folder}'"),
], ids=["vae", "unet", "weights", "scheduler"])
def test_missing_part_is_named_in_one_line(sd_copy, parts, expected):
    _remove(sd_copy, *parts)
    with pytest.raises(FileNotFoundError) as err:
        DiffusersLatentPrior(path=str(sd_copy), text_encoder="none")
    assert expected.format(folder=sd_copy) in str(err.value) and "\n" not in str(err.value)


def test_missing_or_unset_folder_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"set model.prior.init_args.path"):
        DiffusersLatentPrior()
    with pytest.raises(FileNotFoundError, match=r"diffusers folder not found: '.*nowhere'"):
        DiffusersLatentPrior(path=str(tmp_path / "nowhere"))


class _Payload:
    """A pickle that would create a folder when unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickled_weights_refused_without_running_them(sd_copy):
    marker = sd_copy / "payload-ran"
    _remove(sd_copy, "unet/diffusion_pytorch_model.safetensors")
    torch.save({"conv_in.weight": _Payload(str(marker))}, sd_copy / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError) as err:
        DiffusersLatentPrior(path=str(sd_copy), text_encoder="none")
    assert "diffusion_pytorch_model.bin" in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


def test_plain_bin_weights_load_with_weights_only(sd_copy, sd_folder):
    from safetensors.torch import load_file

    sd = load_file(str(sd_copy / "unet" / "diffusion_pytorch_model.safetensors"))
    _remove(sd_copy, "unet/diffusion_pytorch_model.safetensors")
    torch.save(sd, sd_copy / "unet" / "diffusion_pytorch_model.bin")
    a = DiffusersLatentPrior(path=str(sd_copy), text_encoder="none")
    b = DiffusersLatentPrior(path=str(sd_folder), text_encoder="none")
    z = torch.randn(1, 4, 8, 8)
    assert torch.equal(a.eps(z, torch.tensor([5])), b.eps(z, torch.tensor([5])))


def test_prompt_rules_without_a_text_encoder(sd_folder, ldm_folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    with pytest.warns(UserWarning, match="zero embedding"):
        prior = DiffusersLatentPrior(path=str(sd_folder))  # auto: no transformers -> zeros
    assert torch.equal(prior.denoiser.context, torch.zeros(1, SD_PROMPT_LENGTH, 16))
    with pytest.raises(ValueError, match=r"a prompt needs the folder's text encoder \(pip install transformers") as err:
        DiffusersLatentPrior(path=str(sd_folder), prompt="a photo")
    assert "\n" not in str(err.value)
    with pytest.raises(ImportError, match="pip install transformers, or pass prompt_embeds"):
        DiffusersLatentPrior(path=str(sd_folder), text_encoder="folder")
    with pytest.raises(ValueError, match="unconditional UNet2DModel: leave prompt"):
        DiffusersLatentPrior(path=str(ldm_folder), guidance_scale=2.0)


def test_bf16_autocast_runs_the_networks_and_returns_float32(sd_folder):
    prior = DiffusersLatentPrior(path=str(sd_folder), text_encoder="none")
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        ref = (prior.encode(x), prior.decode(prior.encode(x)), prior.eps(prior.encode(x), torch.tensor([50])))
        prior.autocast_dtype = torch.bfloat16
        low = (prior.encode(x), prior.decode(ref[0]), prior.eps(ref[0], torch.tensor([50])))
    for r, lo in zip(ref, low):
        assert lo.dtype == torch.float32 and not torch.equal(r, lo)  # computed in bf16 ...
        torch.testing.assert_close(lo, r, atol=0.1, rtol=0.1)  # ... and still the same function


def test_latent_size_must_fit_the_unet(sd_folder):
    prior = DiffusersLatentPrior(path=str(sd_folder), text_encoder="none")
    with pytest.raises(ValueError, match="not a multiple of the autoencoder's factor 2; set data.image_size to a multiple of 4"):
        prior.encode(torch.zeros(1, 3, 15, 16))
    with pytest.raises(ValueError, match="not multiples of the UNet's 2"):
        prior.eps(torch.zeros(1, 4, 7, 8), torch.tensor([1]))
    assert latent_diffusers.LatentUNet.whole_image_multiple.fget(prior.denoiser) == 2


def _byte_chars() -> list[str]:
    """The 256 printable stand-ins of bytes that byte-level BPE vocabularies use."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in keep]
    return [chr(b) for b in keep] + [chr(256 + i) for i in range(len(extra))]


def test_prompt_through_the_folders_text_encoder(sd_copy, tmp_path):
    """With transformers: the folder's tokenizer/ and text_encoder/ (save_pretrained) give the
    prompt's and the negative prompt's embeddings (skipped where transformers is missing)."""
    transformers = pytest.importorskip("transformers")
    chars = _byte_chars()
    vocab = {t: i for i, t in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(vocab_file=str(tmp_path / "vocab.json"), merges_file=str(tmp_path / "merges.txt"),
                                           model_max_length=SD_PROMPT_LENGTH)
    torch.manual_seed(4)
    encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=SD_PROMPT_LENGTH, bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"])).eval()
    _remove(sd_copy, "tokenizer", "text_encoder")
    tokenizer.save_pretrained(sd_copy / "tokenizer")
    encoder.save_pretrained(sd_copy / "text_encoder")
    prior = DiffusersLatentPrior(path=str(sd_copy), prompt="a cat", guidance_scale=2.0)

    def embed(text):
        ids = tokenizer(text, padding="max_length", max_length=SD_PROMPT_LENGTH, truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            return encoder(ids)[0]

    torch.testing.assert_close(prior.denoiser.context, embed("a cat"))
    torch.testing.assert_close(prior.denoiser.negative, embed(""))
    assert prior.denoiser.context.abs().sum() > 0  # the encoder's output, not the zero fallback
