"""Latent diffusion priors: a denoiser on latents ``z`` and the autoencoder that maps images to them.

A :class:`LatentPrior` is a :class:`DiffusionPrior` whose ``eps(z_t, t)`` acts on latents
``(B, c, h, w)`` (``c`` latent channels, ``h = H / f`` for an autoencoder that downsamples by
``f``), plus :meth:`LatentPrior.encode` (images ``(B, C, H, W)`` in ``[-1, 1]`` to latents) and
:meth:`LatentPrior.decode` (back). Solvers run on it through
:class:`~lightning_redd.solvers.latent.LatentSolver`, which sees the operator through the decoder
(:class:`DecodedOperator`: ``z -> A(D(z))``, starting guess ``E(A^+(y))``).

An autoencoder here is any module with ``encode``/``decode`` and the attributes
``image_channels``, ``latent_channels`` and ``factor`` (:class:`IdentityAutoencoder` is the
trivial one: latent = pixel, which makes a latent solve equal to the pixel one);
:mod:`lightning_redd.priors.latent_diffusers` builds one from a diffusers folder.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from lightning_redd.operators.base import ForwardOperator
from lightning_redd.priors.base import DiffusionPrior


class IdentityAutoencoder(nn.Module):
    """``encode = decode = identity``: latent = pixel (``factor`` 1)."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.image_channels = self.latent_channels = int(channels)
        self.factor = 1

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z


class LatentPrior(DiffusionPrior):
    """A denoiser on latents and its autoencoder, as one prior.

    Args:
        denoiser: the latent denoiser (a :class:`DiffusionPrior` on ``latent_channels``
            channels); its schedule is this prior's schedule.
        autoencoder: a module with ``encode(x) -> z``, ``decode(z) -> x`` and the attributes
            ``image_channels``, ``latent_channels``, ``factor`` (see the module docstring).

    :meth:`eps` is the denoiser's, under this prior's :attr:`autocast_dtype`; :meth:`encode`
    and :meth:`decode` run the autoencoder under the same autocast and return float32.
    """

    def __init__(self, *, denoiser: DiffusionPrior, autoencoder: nn.Module) -> None:
        super().__init__(channels=denoiser.channels, image_size=denoiser.image_size, sync_checks=denoiser.sync_checks)
        if int(autoencoder.latent_channels) != denoiser.channels:
            raise ValueError(f"the autoencoder makes {autoencoder.latent_channels}-channel latents but the denoiser "
                             f"takes {denoiser.channels} channels: the two parts do not belong together")
        self.alphas_cumprod = denoiser.alphas_cumprod.clone()
        self.denoiser = denoiser.eval().requires_grad_(False)
        self.autoencoder = autoencoder.eval().requires_grad_(False)

    @property
    def image_channels(self) -> int:
        """Channels ``C`` of the images (the latents have :attr:`channels`)."""
        return int(self.autoencoder.image_channels)

    @property
    def factor(self) -> int:
        """Downsampling factor ``f`` of the autoencoder: latents are ``(H / f, W / f)``."""
        return int(self.autoencoder.factor)

    @property
    def whole_image_multiple(self) -> int | None:
        return self.denoiser.whole_image_multiple

    def train(self, mode: bool = True) -> "LatentPrior":
        """The networks stay in eval mode whatever the parent's mode."""
        super().train(mode)
        self.denoiser.eval()
        self.autoencoder.eval()
        return self

    def _autocast(self, device: torch.device):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)

    def network_eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The denoiser's ``eps_hat`` ``(B, c, h, w)`` (float32) under this prior's autocast."""
        self.denoiser.autocast_dtype = self.autocast_dtype
        return self.denoiser.network_eps(x_t, t)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, c, H / f, W / f)`` float32 of images ``x`` ``(B, C, H, W)`` in ``[-1, 1]``."""
        if x.ndim != 4 or x.shape[1] != self.image_channels:
            raise ValueError(f"{type(self).__name__}.encode expects (B, {self.image_channels}, H, W) images, got {tuple(x.shape)}")
        f = self.factor
        if x.shape[-2] % f or x.shape[-1] % f:
            raise ValueError(f"image size {x.shape[-2]}x{x.shape[-1]} is not a multiple of the autoencoder's factor {f}; "
                             f"set data.image_size to a multiple of {f * (self.whole_image_multiple or 1)}")
        with self._autocast(x.device):
            return self.autoencoder.encode(x).float()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, h f, w f)`` float32 (about ``[-1, 1]``, unclipped) of latents ``z``
        ``(B, c, h, w)``; differentiable (autograd follows the caller's grad mode)."""
        if z.ndim != 4 or z.shape[1] != self.channels:
            raise ValueError(f"{type(self).__name__}.decode expects (B, {self.channels}, h, w) latents, got {tuple(z.shape)}")
        with self._autocast(z.device):
            return self.autoencoder.decode(z).float()


class DecodedOperator(ForwardOperator):
    """An image-space operator seen from a latent prior's latents: ``z -> A(D(z))``.

    ``pinv(y)`` is ``E(A^+(y))``: the encoded pseudo-inverse (or inverse guess). The noise
    model, ``sigma_y`` and :meth:`observed` are the wrapped operator's.

    Args:
        op: the bound image-space operator (the one that measured ``y``).
        prior: the latent prior whose :meth:`~LatentPrior.decode` / ``encode`` are used.
    """

    def __init__(self, op: ForwardOperator, prior: LatentPrior) -> None:
        super().__init__(sigma_y=op.sigma_y, channels=prior.channels)
        self.op, self.prior = op, prior
        self.noise, self.poisson_rate = op.noise, op.poisson_rate

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``A(D(z))`` for latents ``z`` ``(B, c, h, w)``."""
        return self.op(self.prior.decode(z))

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """``E(A^+(y))``: latents ``(B, c, h, w)``."""
        return self.prior.encode(self.op.pinv(y).float())

    def observed(self, y: torch.Tensor) -> torch.Tensor:
        return self.op.observed(y)
