"""The ADM UNet (Dhariwal & Nichol, "Diffusion Models Beat GANs on Image Synthesis", 2021).

One file, over 300 lines: the blocks below are one network whose ``state_dict`` must match the
released checkpoints key for key, which is easiest to check with every block in view.

Our own implementation of the architecture of the guided-diffusion checkpoints, written so
that its ``state_dict`` has the released checkpoints' parameter names and shapes, key for key,
and its numerics follow the released network:

* sinusoidal timestep embedding ``[cos(t f_k), sin(t f_k)]`` with
  ``f_k = 10000^(-k / half)``, ``k = 0..half-1`` (cosines first), then Linear-SiLU-Linear
  to ``4 * model_channels``;
* GroupNorm with 32 groups, evaluated in float32 and cast back to the input's dtype;
* residual blocks with FiLM-like scale-shift conditioning ``norm(h) * (1 + s) + b``
  (or additive embedding when ``use_scale_shift_norm`` is off), optional up/down-sampling
  inside the block (nearest x2 / average-pool /2) or separate (conv) resampling layers;
* self-attention over spatial positions with ``q, k`` each scaled by ``ch^-1/4`` and a
  float32 softmax; "legacy" order splits heads before q/k/v, "new" order splits q/k/v first;
* zero-initialised last convolution of every residual branch, attention projection and
  output layer;
* ``out_channels = 2 * in_channels`` for learned-variance models (first half is ``eps``).

Sub-module names (``time_embed``, ``input_blocks``, ``middle_block``, ``output_blocks``,
``out``; ``in_layers``, ``emb_layers``, ``out_layers``, ``skip_connection``; ``norm``, ``qkv``,
``proj_out``; ``op``, ``conv``; ``label_emb``) and the Sequential indices inside them are
what make the state dicts compatible.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lightning_redd.priors.networks.attention import AttentionImpl, attend, check_impl, resolve

#: guided-diffusion's default ``channel_mult`` per image size (used when none is given).
DEFAULT_CHANNEL_MULT: dict[int, tuple[float, ...]] = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}
#: number of ImageNet classes of the class-conditional checkpoints.
NUM_CLASSES = 1000


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) times ``t`` ``(B,)`` -> ``(B, dim)`` float32.

    ``emb[:, k] = cos(t * f_k)`` and ``emb[:, half + k] = sin(t * f_k)`` with
    ``f_k = exp(-ln(max_period) * k / half)``, ``half = dim // 2``; an odd ``dim`` gets a zero
    last column.
    """
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(-math.log(max_period) * k / half)
    angles = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm evaluated in float32 whatever the input dtype or autocast; output in the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps)
        return y.to(x.dtype)


def _norm(channels: int) -> GroupNorm32:
    return GroupNorm32(32, channels)


def _zeroed(module: nn.Module) -> nn.Module:
    """Zero ``module``'s parameters in place (a no-op on the meta device) and return it."""
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    return module


class TimestepBlock(nn.Module):
    """A module whose forward takes the embedding ``emb`` ``(B, E)`` besides ``x``."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class EmbedSequential(nn.Sequential):
    """A Sequential that hands ``emb`` to the children that take it."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling ``(B, C, H, W) -> (B, C, 2H, 2W)``, optionally followed by a 3x3 conv."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.use_conv = use_conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """/2 downsampling ``(B, C, H, W) -> (B, C, H/2, W/2)`` by a stride-2 3x3 conv or 2x2 average pooling."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(TimestepBlock):
    """Residual block ``(B, C_in, H, W) -> (B, C_out, H', W')`` conditioned on ``emb`` ``(B, E)``.

    ``up``/``down`` resample both branches between the first norm-SiLU and the first conv
    (``H' = 2H`` or ``H/2``). The skip is the identity when ``C_in == C_out``, else a 1x1 conv.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = False,
        up: bool = False,
        down: bool = False,
    ) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(_norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        emb_out = 2 * out_channels if use_scale_shift_norm else out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, emb_out))
        self.out_layers = nn.Sequential(
            _norm(out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            _zeroed(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        if out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if self.updown:
            h = self.in_layers[1](self.in_layers[0](x))
            h = self.in_layers[2](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            for layer in self.out_layers[1:]:
                h = layer(h)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


def qkv_attention(qkv: torch.Tensor, num_heads: int, legacy: bool, impl: str = "math") -> torch.Tensor:
    """Multi-head self-attention ``(B, 3 * C, L) -> (B, C, L)``.

    ``legacy``: the channel axis is laid out ``[head][q|k|v][ch]`` (heads split first);
    otherwise ``[q|k|v][head][ch]``. ``impl``: ``"math"`` scales ``q`` and ``k`` each by
    ``ch^-1/4`` before the product (friendlier to half precision) and runs the softmax in
    float32, as the released network does; ``"sdpa"`` hands the same heads to
    :func:`~torch.nn.functional.scaled_dot_product_attention` (equal in exact arithmetic; the
    ``(L, L)`` weights are never stored); ``"auto"``: ``"math"`` on the CPU (bit-identical to
    earlier releases; SDPA is not faster there, see ``docs/PERFORMANCE.md``), ``"sdpa"`` elsewhere.
    """
    b, width, length = qkv.shape
    ch = width // (3 * num_heads)
    impl = resolve(impl, qkv.device, cpu="math")
    if impl == "sdpa":  # one copy to (B, heads, L, 3, ch): fused kernels need unit stride along ch
        if legacy:
            z = qkv.reshape(b, num_heads, 3, ch, length).permute(0, 1, 4, 2, 3)
        else:
            z = qkv.reshape(b, 3, num_heads, ch, length).permute(0, 2, 4, 1, 3)
        q, k, v = z.contiguous().unbind(dim=3)
        return attend(q, k, v, impl).transpose(-1, -2).reshape(b, num_heads * ch, length)
    check_impl(impl)
    if legacy:
        q, k, v = qkv.reshape(b * num_heads, 3 * ch, length).split(ch, dim=1)
    else:
        q, k, v = (z.reshape(b * num_heads, ch, length) for z in qkv.chunk(3, dim=1))
    scale = ch ** -0.25
    logits = torch.bmm((q * scale).transpose(1, 2), k * scale)  # (B*heads, L_query, L_key)
    weight = torch.softmax(logits.float(), dim=-1).to(logits.dtype)
    out = torch.bmm(v, weight.transpose(1, 2))  # (B*heads, ch, L_query)
    return out.reshape(b, num_heads * ch, length)


class AttentionBlock(nn.Module):
    """Residual spatial self-attention ``(B, C, H, W) -> (B, C, H, W)``.

    ``num_head_channels > 0`` fixes the width per head (``heads = C / num_head_channels``);
    otherwise ``num_heads`` heads are used. ``attention``: the kernel (see :func:`qkv_attention`).
    """

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1, new_order: bool = False,
                 attention: AttentionImpl = "auto") -> None:
        super().__init__()
        if num_head_channels > 0:
            if channels % num_head_channels:
                raise ValueError(f"attention channels {channels} not divisible by num_head_channels {num_head_channels}")
            num_heads = channels // num_head_channels
        if num_heads < 1 or channels % num_heads:
            raise ValueError(f"attention channels {channels} not divisible into num_heads={num_heads} heads")
        self.num_heads = num_heads
        self.legacy = not new_order
        #: ``"auto"``, ``"sdpa"`` or ``"math"`` (:mod:`~lightning_redd.priors.networks.attention`); not in the state dict.
        self.attention_impl = check_impl(attention)
        self.norm = _norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = _zeroed(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        x = x.reshape(b, c, hgt * wid)
        h = qkv_attention(self.qkv(self.norm(x)), self.num_heads, self.legacy, self.attention_impl)
        return (x + self.proj_out(h)).reshape(b, c, hgt, wid)


class ADMUNet(nn.Module):
    """guided-diffusion's ``UNetModel`` (2-D): ``(x (B, C_in, H, W), t (B,), y (B,)?) -> (B, C_out, H, W)``.

    Args:
        in_channels / out_channels: image channels in and out (out = 2 * in for learned sigma).
        model_channels: base width; the embedding is ``4 * model_channels`` wide.
        num_res_blocks: residual blocks per level.
        attention_ds: downsampling *rates* (1, 2, 4, ...) at which attention blocks are used.
        dropout: dropout rate inside residual blocks (inactive in eval mode).
        channel_mult: width multiplier per level (``len`` levels, ``len - 1`` downsamplings).
        conv_resample: learned convs in the separate up/down layers (unused with ``resblock_updown``).
        num_classes: class-conditional with this many classes (adds ``label_emb``), or None.
        num_heads, num_head_channels, num_heads_upsample: attention heads (see AttentionBlock);
            ``num_heads_upsample == -1`` means ``num_heads``.
        use_scale_shift_norm, resblock_updown, use_new_attention_order: as in guided-diffusion.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        model_channels: int,
        out_channels: int = 3,
        num_res_blocks: int,
        attention_ds: Sequence[int] = (),
        dropout: float = 0.0,
        channel_mult: Sequence[float] = (1, 2, 4, 8),
        conv_resample: bool = True,
        num_classes: int | None = None,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
    ) -> None:
        super().__init__()
        self.model_channels = model_channels
        self.num_classes = num_classes
        self.num_levels = len(channel_mult)
        emb_dim = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb_dim)

        def res(c_in: int, c_out: int | None = None, up: bool = False, down: bool = False) -> ResBlock:
            return ResBlock(c_in, emb_dim, dropout, c_out, use_scale_shift_norm, up=up, down=down)

        def attn(c: int, heads: int) -> AttentionBlock:
            return AttentionBlock(c, heads, num_head_channels, use_new_attention_order)

        heads_up = num_heads if num_heads_upsample == -1 else num_heads_upsample
        ch = int(channel_mult[0] * model_channels)
        first_ch = ch
        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skip_chans, ds = [ch], 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_ds:
                    layers.append(attn(ch, num_heads))
                self.input_blocks.append(EmbedSequential(*layers))
                skip_chans.append(ch)
            if level != len(channel_mult) - 1:
                down = res(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample)
                self.input_blocks.append(EmbedSequential(down))
                skip_chans.append(ch)
                ds *= 2

        self.middle_block = EmbedSequential(res(ch), attn(ch, num_heads), res(ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skip_chans.pop(), int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_ds:
                    layers.append(attn(ch, heads_up))
                if level and i == num_res_blocks:
                    layers.append(res(ch, ch, up=True) if resblock_updown else Upsample(ch, conv_resample))
                    ds //= 2
                self.output_blocks.append(EmbedSequential(*layers))

        self.out = nn.Sequential(_norm(ch), nn.SiLU(), _zeroed(nn.Conv2d(first_ch, out_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(B, C_in, H, W)`` (H, W divisible by ``2^(levels-1)``), ``t`` ``(B,)`` times,
        ``y`` ``(B,)`` class labels iff class-conditional. Returns ``(B, C_out, H, W)``."""
        if (y is not None) != (self.num_classes is not None):
            need = "needs class labels y (B,)" if self.num_classes is not None else "takes no class labels"
            raise ValueError(f"this ADM network {need}")
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(self.time_embed[0].weight.dtype))
        if y is not None:
            if y.shape != (x.shape[0],):
                raise ValueError(f"class labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")
            emb = emb + self.label_emb(y)
        skips = []
        h = x
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)


def adm_kwargs(
    *,
    image_size: int,
    num_channels: int,
    num_res_blocks: int,
    channel_mult: str = "",
    learn_sigma: bool = False,
    class_cond: bool = False,
    attention_resolutions: str = "16",
    num_heads: int = 1,
    num_head_channels: int = -1,
    num_heads_upsample: int = -1,
    use_scale_shift_norm: bool = False,
    dropout: float = 0.0,
    resblock_updown: bool = False,
    use_new_attention_order: bool = False,
    in_channels: int = 3,
) -> dict:
    """:class:`ADMUNet` keyword arguments from guided-diffusion's script-level flags.

    ``channel_mult`` is a comma string (``""``: the default for ``image_size``);
    ``attention_resolutions`` a comma string of feature-map *resolutions*, converted to
    downsampling rates ``image_size // res``.
    """
    if channel_mult:
        mult: tuple[float, ...] = tuple(float(m) if "." in m else int(m) for m in channel_mult.split(","))
    elif image_size in DEFAULT_CHANNEL_MULT:
        mult = DEFAULT_CHANNEL_MULT[image_size]
    else:
        raise ValueError(
            f"no default channel_mult for image_size={image_size} (defaults exist for "
            f"{sorted(DEFAULT_CHANNEL_MULT)}); pass channel_mult, e.g. '1,2,2,2'"
        )
    resolutions = [int(r) for r in attention_resolutions.split(",") if r.strip()]
    bad = [r for r in resolutions if r <= 0 or image_size % r]
    if bad:
        raise ValueError(f"attention_resolutions {bad} do not divide image_size={image_size}")
    return dict(
        in_channels=in_channels,
        model_channels=num_channels,
        out_channels=2 * in_channels if learn_sigma else in_channels,
        num_res_blocks=num_res_blocks,
        attention_ds=tuple(image_size // r for r in resolutions),
        dropout=dropout,
        channel_mult=mult,
        num_classes=NUM_CLASSES if class_cond else None,
        num_heads=num_heads,
        num_head_channels=num_head_channels,
        num_heads_upsample=num_heads_upsample,
        use_scale_shift_norm=use_scale_shift_norm,
        resblock_updown=resblock_updown,
        use_new_attention_order=use_new_attention_order,
    )
