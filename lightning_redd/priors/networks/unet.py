"""A small UNet of our own that predicts the noise ``eps`` of a VP diffusion.

Layout (DDPM-style): sinusoidal embedding of the integer time ``t`` -> MLP; an encoder of
residual blocks (GroupNorm, SiLU, 3x3 convs, the time embedding added between the convs)
with stride-2 downsampling between levels; a middle block (residual, self-attention,
residual); a decoder that concatenates the encoder's skips and upsamples (nearest + conv);
self-attention at the resolutions listed in ``attention_resolutions``; GroupNorm, SiLU and
a zero-initialised 3x3 output conv, so an untrained network predicts ``eps_hat = 0``.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning_redd.priors.networks.attention import AttentionImpl, attend, check_impl, resolve


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``(B, dim)`` of times ``t`` ``(B,)`` (integers or floats in ``[0, T)``)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def _norm(channels: int, num_groups: int) -> nn.GroupNorm:
    if channels % num_groups:
        raise ValueError(f"channels {channels} not divisible by num_groups {num_groups}; pick num_groups dividing every level's width")
    return nn.GroupNorm(num_groups, channels)


class ResBlock(nn.Module):
    """``x + conv(SiLU(GN(conv(SiLU(GN(x)))) + Linear(emb)))``; 1x1 skip if widths differ.

    ``x`` ``(B, in_ch, H, W)``, ``emb`` ``(B, emb_dim)`` -> ``(B, out_ch, H, W)``. The second
    conv is zero-initialised, so a fresh block is the identity (or its 1x1 skip).
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, num_groups: int) -> None:
        super().__init__()
        self.norm1 = _norm(in_ch, num_groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = _norm(out_ch, num_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None].to(h.dtype)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over the ``H*W`` positions, residual, zero-initialised output.

    ``attention``: the kernel, ``"sdpa"``, ``"math"`` or ``"auto"`` (``"sdpa"``, which this network has always
    used; :mod:`~lightning_redd.priors.networks.attention`);
    a plain attribute, not part of the state dict or of :attr:`UNet.config`.
    """

    def __init__(self, channels: int, num_groups: int, head_dim: int = 32, attention: AttentionImpl = "auto") -> None:
        super().__init__()
        self.attention_impl = check_impl(attention)
        self.heads = max(1, channels // head_dim)
        self.norm = _norm(channels, num_groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        if x.device.type == "cpu":  # strided views, exactly as the network has always run on the CPU
            q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # each (B, heads, HW, d)
        else:  # one copy to (B, heads, HW, 3, d): the fused GPU kernels need unit stride along d
            q, k, v = qkv.permute(0, 2, 4, 1, 3).contiguous().unbind(dim=3)
        out = attend(q, k, v, resolve(self.attention_impl, x.device, cpu="sdpa"))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Stride-2 3x3 conv: ``(B, C, H, W) -> (B, C, H/2, W/2)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest x2 then 3x3 conv: ``(B, C, H, W) -> (B, C, 2H, 2W)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Stage(nn.Sequential):
    """A sequence of layers that all take ``(x, emb)``."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb)
        return x


class UNet(nn.Module):
    """Noise predictor ``eps_theta(x_t, t)``: ``(B, C, S, S)``, ``(B,)`` -> ``(B, C, S, S)``.

    Args:
        image_size: side ``S`` of the square training images; must be divisible by
            ``2 ** (len(channel_mult) - 1)``.
        in_channels: image channels ``C`` (3 for RGB); the output has the same count.
        base_channels: width of the first level; level ``i`` has ``base_channels * channel_mult[i]``.
        channel_mult: width multipliers, one per resolution level (halving between levels).
        num_res_blocks: residual blocks per level in the encoder (the decoder has one more).
        attention_resolutions: resolutions (in pixels, e.g. ``(8,)``) that get self-attention
            after each residual block; the middle block always has one.
        dropout: dropout inside residual blocks.
        num_groups: GroupNorm groups; must divide every level's width.
    """

    def __init__(
        self,
        *,
        image_size: int = 64,
        in_channels: int = 3,
        base_channels: int = 32,
        channel_mult: tuple[int, ...] = (1, 2, 4, 4),
        num_res_blocks: int = 2,
        attention_resolutions: tuple[int, ...] = (8,),
        dropout: float = 0.0,
        num_groups: int = 16,
    ) -> None:
        super().__init__()
        channel_mult, attention_resolutions = tuple(channel_mult), tuple(attention_resolutions)
        self._validate(image_size, in_channels, base_channels, channel_mult, num_res_blocks, dropout)
        self.config: dict[str, Any] = dict(
            image_size=int(image_size), in_channels=int(in_channels), base_channels=int(base_channels),
            channel_mult=list(channel_mult), num_res_blocks=int(num_res_blocks),
            attention_resolutions=list(attention_resolutions), dropout=float(dropout), num_groups=int(num_groups),
        )
        emb_dim = 4 * base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        widths = [base_channels * m for m in channel_mult]
        block = lambda i, o: ResBlock(i, o, emb_dim, dropout, num_groups)  # noqa: E731
        attn = lambda ch, res: [Attention(ch, num_groups)] if res in attention_resolutions else []  # noqa: E731
        self.down = nn.ModuleList()
        skips, ch, res = [base_channels], base_channels, image_size
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                self.down.append(_Stage(block(ch, width), *attn(width, res)))
                ch = width
                skips.append(ch)
            if level < len(widths) - 1:
                self.down.append(_Stage(Downsample(ch)))
                skips.append(ch)
                res //= 2
        self.middle = _Stage(block(ch, ch), Attention(ch, num_groups), block(ch, ch))
        self.up = nn.ModuleList()
        for level, width in reversed(list(enumerate(widths))):
            for i in range(num_res_blocks + 1):
                layers = [block(ch + skips.pop(), width), *attn(width, res)]
                ch = width
                if level > 0 and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    res *= 2
                self.up.append(_Stage(*layers))
        self.norm_out = _norm(ch, num_groups)
        self.conv_out = _zero(nn.Conv2d(ch, in_channels, 3, padding=1))

    @staticmethod
    def _validate(image_size: int, in_channels: int, base_channels: int, channel_mult: tuple[int, ...],
                  num_res_blocks: int, dropout: float) -> None:
        if not channel_mult or min(channel_mult) < 1:
            raise ValueError(f"channel_mult must be a non-empty tuple of positive ints, got {channel_mult}")
        factor = 2 ** (len(channel_mult) - 1)
        if image_size < factor or image_size % factor:
            raise ValueError(f"image_size {image_size} must be divisible by 2**(len(channel_mult)-1) = {factor}")
        if in_channels < 1 or base_channels < 1 or num_res_blocks < 1:
            raise ValueError("in_channels, base_channels and num_res_blocks must be >= 1, got "
                             f"{in_channels}, {base_channels}, {num_res_blocks}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, C, S, S)`` noisy images, ``t`` ``(B,)`` times in ``[0, T)`` -> ``eps_hat`` ``(B, C, S, S)``."""
        emb = self.time_mlp(timestep_embedding(t, self.config["base_channels"]))
        h = self.conv_in(x)
        hs = [h]
        for stage in self.down:
            h = stage(h, emb)
            hs.append(h)
        h = self.middle(h, emb)
        for stage in self.up:
            h = stage(torch.cat([h, hs.pop()], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())
