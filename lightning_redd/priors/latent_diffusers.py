"""Latent diffusion priors from a local diffusers folder: Stable Diffusion and unconditional LDMs.

Needs the optional extra ``diffusers`` (``pip install "lightning_redd[diffusers]"``); the text
encoder path also needs ``transformers`` but is never required. The folder is read locally
(:mod:`lightning_redd.priors.diffusers_folder`: nothing downloaded, pickles refused):

* Stable Diffusion: ``vae/`` (``AutoencoderKL``) + ``unet/`` (``UNet2DConditionModel``) +
  ``scheduler/`` (its own betas, e.g. ``scaled_linear`` 0.00085..0.012) [+ ``text_encoder/``,
  ``tokenizer/``];
* an unconditional LDM: ``vqvae/`` (``VQModel``) or ``vae/`` + ``unet/`` (``UNet2DModel``) + ``scheduler/``.

Latents follow the pipelines: ``z = (E(x) - shift) * scaling_factor`` (the VAE's config;
``E(x)`` is the posterior mean of an ``AutoencoderKL``, the pre-quantisation latent of a
``VQModel``), ``D(z) = decode(z / scaling_factor + shift)`` (a ``VQModel`` quantises there, as
its pipeline does, with a straight-through gradient). Outputs are turned into ``eps`` per the
scheduler's ``prediction_type`` (``epsilon``, ``v_prediction``, ``sample``).

Prompt (conditional UNets): ``prompt_embeds`` (a file), else the folder's CLIP text encoder
when ``transformers`` is installed (``text_encoder: auto`` or ``folder``), else, for the empty
prompt, zero embeddings ``(1, 77, D)`` (warned about under ``text_encoder: auto``: they are not
SD's own empty-prompt embedding).
Classifier-free guidance: ``eps = eps_neg + s (eps_cond - eps_neg)`` for ``guidance_scale`` s != 1
(one batched UNet call of ``2B``).
"""
from __future__ import annotations

import json
import warnings
from typing import Literal

import torch
from torch import nn

from lightning_redd.priors import diffusers_folder as folders
from lightning_redd.priors.base import DiffusionPrior
from lightning_redd.priors.diffusers_prior import PREDICTION_TYPES, find_scheduler_config, scheduler_betas
from lightning_redd.priors.latent import LatentPrior

TextEncoder = Literal["auto", "folder", "none"]


class DiffusersAutoencoder(nn.Module):
    """A diffusers ``AutoencoderKL`` or ``VQModel`` with the pipeline's latent scaling."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        cfg = model.config
        self.model = model
        self.kind = type(model).__name__
        self.scaling = float(cfg.scaling_factor if getattr(cfg, "scaling_factor", None) is not None else 1.0)
        self.shift = float(getattr(cfg, "shift_factor", None) or 0.0)
        self.image_channels = int(cfg.in_channels)
        self.latent_channels = int(cfg.latent_channels)
        self.factor = 2 ** (len(cfg.block_out_channels) - 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(E(x) - shift) * scaling``: ``(B, c, H / f, W / f)``."""
        if self.kind == "VQModel":
            h = self.model.encode(x).latents
        else:
            h = self.model.encode(x).latent_dist.mode()
        return (h - self.shift) * self.scaling

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``D(z / scaling + shift)``: ``(B, C, h f, w f)``."""
        return self.model.decode(z / self.scaling + self.shift).sample


class LatentUNet(DiffusionPrior):
    """``eps_theta(z_t, t)`` of a diffusers ``UNet2DModel`` / ``UNet2DConditionModel`` on latents.

    Args:
        unet: the frozen network.
        betas: the scheduler's ``(T,)`` betas.
        prediction_type: the scheduler's (``epsilon``, ``v_prediction``, ``sample``).
        context: ``(1, L, D)`` prompt embedding (conditional UNets), else None.
        negative: ``(1, L, D)`` embedding of the guidance's unconditional branch (``guidance_scale != 1``).
        guidance_scale: classifier-free guidance scale (1: the prompt alone).
    """

    def __init__(self, unet: nn.Module, betas: torch.Tensor, prediction_type: str, context: torch.Tensor | None = None,
                 negative: torch.Tensor | None = None, guidance_scale: float = 1.0) -> None:
        cfg = unet.config
        super().__init__(channels=cfg.in_channels, image_size=None, betas=betas)
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unsupported prediction_type {prediction_type!r}; allowed: {PREDICTION_TYPES}")
        if cfg.out_channels not in (cfg.in_channels, 2 * cfg.in_channels):
            raise ValueError(f"the UNet's out_channels={cfg.out_channels} must be in_channels ({cfg.in_channels}) or twice it")
        self.unet = unet.eval().requires_grad_(False)
        self.prediction_type, self.guidance_scale = prediction_type, float(guidance_scale)
        self.register_buffer("context", context, persistent=False)
        self.register_buffer("negative", negative, persistent=False)
        self.multiple = 2 ** (len(cfg.block_out_channels) - 1)

    @property
    def whole_image_multiple(self) -> int:
        return self.multiple

    def train(self, mode: bool = True) -> "LatentUNet":
        super().train(mode)
        self.unet.eval()
        return self

    def _net(self, z: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        if context is None:
            return self.unet(z, t).sample
        return self.unet(z, t, encoder_hidden_states=context.expand(z.shape[0], -1, -1).to(z.dtype)).sample

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``eps_hat`` ``(B, c, h, w)`` for latents ``x_t`` ``(B, c, h, w)`` and times ``t`` ``(B,)``."""
        m = self.multiple
        if x_t.shape[-2] % m or x_t.shape[-1] % m:
            raise ValueError(f"latents of {x_t.shape[-2]}x{x_t.shape[-1]} are not multiples of the UNet's {m}: set "
                             "data.image_size to a multiple of this times the autoencoder's factor (e.g. 64 for SD)")
        if self.guidance_scale != 1.0:
            both = self._net(torch.cat([x_t, x_t]), torch.cat([t, t]),
                             torch.cat([self.negative.expand(x_t.shape[0], -1, -1), self.context.expand(x_t.shape[0], -1, -1)]))
            neg, cond = both[:, : self.channels].float().chunk(2)
            out = neg + self.guidance_scale * (cond - neg)
        else:
            out = self._net(x_t, t, self.context)[:, : self.channels]
        if self.prediction_type == "epsilon":
            return out
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1).float()
        x, out = x_t.float(), out.float()
        if self.prediction_type == "v_prediction":
            return a.sqrt() * out + (1 - a).sqrt() * x
        return (x - a.sqrt() * out) / (1 - a).sqrt()  # "sample": out is z0


class DiffusersLatentPrior(LatentPrior):
    """A Stable Diffusion or unconditional LDM pipeline folder as a latent prior.

    Args:
        path: the pipeline folder (see the module docstring); required.
        prompt: text prompt (conditional UNets; default empty).
        negative_prompt: the guidance's unconditional prompt (default empty).
        prompt_embeds: a ``.safetensors`` / ``.pt`` file with ``prompt_embeds`` (and optionally
            ``negative_prompt_embeds``), each ``(1, L, D)``; replaces the text encoder.
        guidance_scale: classifier-free guidance scale (1: none, one UNet pass per call).
        text_encoder: ``auto`` (the folder's CLIP text encoder when transformers is installed),
            ``folder`` (require it), ``none`` (never: empty prompts as zero embeddings).
        variant: weights variant, e.g. ``fp16`` (``diffusion_pytorch_model.fp16.safetensors``).
    """

    def __init__(self, *, path: str | None = None, prompt: str = "", negative_prompt: str = "",
                 prompt_embeds: str | None = None, guidance_scale: float = 1.0, text_encoder: TextEncoder = "auto",
                 variant: str | None = None) -> None:
        if text_encoder not in ("auto", "folder", "none"):
            raise ValueError(f"unknown text_encoder {text_encoder!r}; allowed: auto, folder, none")
        if not guidance_scale >= 0:
            raise ValueError(f"guidance_scale must be >= 0 (1: no guidance), got {guidance_scale}")
        folder = folders.pipeline_folder(path, type(self).__name__)
        vae_dir = folders.find_part(folder, ("vae", "vqvae"), folders.AUTOENCODERS, "autoencoder")
        unet_dir = folders.find_part(folder, ("unet",), folders.UNETS, "denoiser UNet")
        sched_cfg = json.loads(find_scheduler_config(folder, "unet").read_text())
        autoencoder = DiffusersAutoencoder(folders.load_part(vae_dir, variant))
        unet = folders.load_part(unet_dir, variant)
        context = negative = None
        if type(unet).__name__ == "UNet2DConditionModel":
            context, negative = _prompt_embeddings(folder, unet.config.cross_attention_dim, prompt, negative_prompt,
                                                   prompt_embeds, text_encoder)
        elif prompt or negative_prompt or prompt_embeds or guidance_scale != 1.0:
            raise ValueError(f"{str(unet_dir)!r} is an unconditional {type(unet).__name__}: leave prompt, negative_prompt, "
                             "prompt_embeds and guidance_scale (1) unset")
        denoiser = LatentUNet(unet, scheduler_betas(sched_cfg), sched_cfg.get("prediction_type", "epsilon"),
                              context, negative if guidance_scale != 1.0 else None, guidance_scale)
        super().__init__(denoiser=denoiser, autoencoder=autoencoder)
        self.folder = str(folder)


def _prompt_embeddings(folder, width: int, prompt: str, negative_prompt: str, prompt_embeds: str | None,
                       text_encoder: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(context, negative)`` ``(1, L, width)`` per the rules of the module docstring."""
    if prompt_embeds is not None:
        if prompt or negative_prompt:
            raise ValueError("set either prompt/negative_prompt or prompt_embeds, not both")
        cond, neg = folders.load_prompt_file(prompt_embeds, width)
        return cond, (neg if neg is not None else torch.zeros_like(cond))
    usable = text_encoder != "none" and _has_transformers() and (folder / "text_encoder").is_dir()
    if text_encoder == "folder" or usable:
        cond, neg = folders.encode_prompts(folder, [prompt, negative_prompt])
        return cond, neg
    if prompt or negative_prompt:
        raise ValueError("a prompt needs the folder's text encoder (pip install transformers; text_encoder: auto or folder) "
                         "or prompt_embeds (a file)")
    if text_encoder == "auto":
        warnings.warn("lightning-redd: no text encoder in use (transformers is not installed or the folder has no "
                      "text_encoder/): the empty prompt is a zero embedding, not Stable Diffusion's own; pass prompt_embeds "
                      "for the exact one, or set text_encoder: none to choose zeros", stacklevel=3)
    zeros = torch.zeros(1, folders.prompt_length(folder), int(width))
    return zeros, zeros.clone()


def _has_transformers() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True
