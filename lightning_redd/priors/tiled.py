"""Any prior at any image size: :class:`TiledPrior` and :func:`at_size`.

One file, over 300 lines: the tile grid, its windows and :class:`TiledPrior` are one algorithm.

RED-diff needs from the prior only ``eps_theta(x_t, t)``, and a diffusion UNet is a local
denoiser, so an image of any ``H x W`` is regularised by denoising it in prior-sized tiles:

* ``mode="tiles"``: the image is reflect-padded, cut into ``tile x tile`` tiles that overlap by
  ``overlap`` pixels, the tiles go through the network ``tile_batch`` at a time (peak memory of
  the network is that of one chunk, whatever the image size) and the predictions are stitched
  with a separable raised-cosine cross-fade over each overlap (the weights of neighbouring
  tiles sum to one there; tiles at the image's edges keep full weight outwards);
* ``mode="whole"``: the whole image, reflect-padded to a size the network takes
  (:attr:`DiffusionPrior.whole_image_multiple`, e.g. multiples of 8 for the embedded UNet), in
  one call per chunk of images; exact for fully convolutional networks but outside their
  training distribution (global self-attention sees more positions than in training);
* ``mode="auto"``: ``"tiles"`` at every size, on these measurements (embedded 64 px prior, CPU,
  ``benchmarks/tiled_memory.py quality``; noise-prediction error ``mean (eps_hat - eps)^2`` at
  t = 50 / 200 / 400 / 700):

  ======================  ===========================  ===========================
  192 x 256               smooth image                 demo photo (upscaled)
  ======================  ===========================  ===========================
  tiles, overlap 0        0.202 0.033 0.0072 0.0009    0.061 0.017 0.0058 0.0013
  tiles, overlap 16       0.152 0.028 0.0064 0.0007    0.052 0.015 0.0053 0.0012
  tiles, overlap 32       0.136 0.026 0.0060 0.0007    0.051 0.015 0.0051 0.0012
  whole                   0.529 0.126 0.0229 0.0015    0.056 0.017 0.0064 0.0014
  ======================  ===========================  ===========================

  At 80 x 96 whole-image evaluation is 1.6x worse on the smooth image at t = 50, and on the
  photo between 2 % worse (t = 50) and 12 % better (t = 700) than tiles, about twice as fast
  there (1.9 tile areas instead of 4 tiles);
  a short RED-diff inpainting (128 x 192, 70 % missing, 30 iterates, start 11.2 dB) reaches
  17.46 dB with tiles (overlap 16), 16.75 dB without overlap and 16.30 dB whole. The whole
  image is outside the network's training distribution: GroupNorm statistics and global
  self-attention then span far more positions than the 64 px crops it learned from.

Seams: the mean step of the denoised estimate across tile edges over the step inside tiles is
1.9-4.9 without overlap and 0.80-1.18 with the default ``overlap = tile // 4`` (0.95-1.07 on
the smooth image; both sizes, all four t). Optionally (``shift="time"``) the tile grid moves
with the diffusion time: its offset along each axis is the R2 low-discrepancy sequence at
``t``, so successive iterates put the seams in different places. It depends on ``t`` alone (not
on batch mates, batch size, process count or resume), but reads ``t`` on the host (one
synchronisation per call on accelerators) and costs up to one more row and column of tiles;
measured, it changed the inpainting above by +0.003 dB, so it is off by default.

Borders: reflect padding (mirrored about the edge pixels, repeated for images smaller than
half a tile), also for images smaller than a tile; an image of exactly the tile size goes to
the network unchanged (bit-identical to the prior itself).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from lightning_redd.priors.base import DiffusionPrior

Mode = Literal["auto", "tiles", "whole"]
Shift = Literal["none", "time"]
MODES = ("auto", "tiles", "whole")
SHIFTS = ("none", "time")
#: what ``mode="auto"`` uses (measurements in the module docstring).
AUTO_RULE = "tiles"
#: the R2 sequence's constants (1/g, 1/g^2 for the plastic number g): grid offsets per axis.
R2 = (0.7548776662466927, 0.5698402909980532)


@dataclass(frozen=True)
class Tiling:
    """How :func:`at_size` evaluates a prior away from its training size (a config block).

    Args:
        tile: tile side in pixels; None: the prior's ``image_size``.
        overlap: pixels shared by neighbouring tiles, ``0 <= overlap <= tile // 2``; None: ``tile // 4``.
        tile_batch: tiles per network call (bounds the network's peak memory).
        mode: ``"tiles"``, ``"whole"`` or ``"auto"`` (module docstring).
        shift: ``"none"`` (a fixed grid) or ``"time"`` (the grid moves with ``t``).
        grad_checkpoint: when autograd is on (DPS, PiGDM), recompute each chunk's activations
            in the backward pass instead of keeping all of them (memory of one chunk).
    """

    tile: int | None = None
    overlap: int | None = None
    tile_batch: int = 16
    mode: Mode = "auto"
    shift: Shift = "none"
    grad_checkpoint: bool = True

    def __post_init__(self) -> None:
        if self.tile is not None and self.tile < 1:
            raise ValueError(f"tile must be a side in pixels >= 1 (or None: the prior's image_size), got {self.tile}")
        if self.overlap is not None and self.overlap < 0:
            raise ValueError(f"overlap must be >= 0 pixels (or None: tile // 4), got {self.overlap}")
        if self.tile_batch < 1:
            raise ValueError(f"tile_batch must be >= 1 (tiles per network call), got {self.tile_batch}")
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; allowed: {MODES}")
        if self.shift not in SHIFTS:
            raise ValueError(f"unknown shift {self.shift!r}; allowed: {SHIFTS}")


@dataclass(frozen=True)
class AxisTiles:
    """The tiles along one axis: padding (before, after) and tile starts in padded coordinates."""

    front: int
    back: int
    starts: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.starts)


def axis_tiles(n: int, tile: int, overlap: int, offset: int = 0) -> AxisTiles:
    """Tiles of side ``tile`` covering ``n`` pixels with stride ``tile - overlap``.

    ``n <= tile``: one tile, the image centred in it. Otherwise the grid starts ``offset``
    pixels (``0 <= offset < stride``) before the image and ends at the first tile reaching past it.
    """
    if n <= tile:
        return AxisTiles((tile - n) // 2, tile - n - (tile - n) // 2, (0,))
    stride = tile - overlap
    count = math.ceil((offset + n - tile) / stride) + 1
    back = (count - 1) * stride + tile - offset - n
    return AxisTiles(offset, back, tuple(i * stride for i in range(count)))


def grid_offset(t: int, stride: int, axis: int) -> int:
    """Grid offset in ``[0, stride)`` along ``axis`` (0: rows, 1: columns) at time ``t``."""
    return int(stride * ((t * R2[axis]) % 1.0)) % stride


def reflect_index(n: int, front: int, back: int, device: torch.device) -> torch.Tensor:
    """Indices into ``n`` pixels of the ``n + front + back`` reflect-padded pixels (mirror about
    the edge pixels, repeated as often as needed; ``n = 1`` repeats the pixel)."""
    i = torch.arange(-front, n + back, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = i.remainder(period)
    return torch.where(i < n, i, period - i)


def ramp_window(tile: int, overlap: int, first: bool, last: bool) -> torch.Tensor:
    """``(tile,)`` float64 weights: ``sin^2`` ramps over the ``overlap`` pixels shared with the
    previous and next tile (absent at the first / last tile), 1 elsewhere. Two neighbours' ramps
    sum to one at every shared pixel."""
    w = torch.ones(tile, dtype=torch.float64)
    if overlap > 0:
        up = torch.sin(0.5 * math.pi * (torch.arange(overlap, dtype=torch.float64) + 0.5) / overlap) ** 2
        if not first:
            w[:overlap] = up
        if not last:
            w[tile - overlap :] = up.flip(0)
    return w


class TiledPrior(DiffusionPrior):
    """``prior`` evaluated at any ``H x W``: ``eps(x_t, t)`` for ``(B, C, H, W)`` inputs, ``t`` per image.

    Same schedule (``alphas_cumprod``) and channels as ``prior``; the keyword arguments are those
    of :class:`Tiling`. Gradients flow through it (DPS and PiGDM differentiate through the
    denoiser). ``autocast_dtype`` is the wrapped prior's.
    """

    def __init__(self, prior: DiffusionPrior, *, tile: int | None = None, overlap: int | None = None,
                 tile_batch: int = 16, mode: Mode = "auto", shift: Shift = "none", grad_checkpoint: bool = True) -> None:
        cfg = Tiling(tile=tile, overlap=overlap, tile_batch=tile_batch, mode=mode, shift=shift, grad_checkpoint=grad_checkpoint)
        super().__init__(channels=prior.channels, image_size=None, sync_checks=prior.sync_checks)
        self.prior = prior
        self.register_buffer("alphas_cumprod", prior.alphas_cumprod.clone(), persistent=False)
        side = cfg.tile if cfg.tile is not None else prior.image_size
        if side is None:
            raise ValueError(f"{type(prior).__name__} takes any image size (image_size None): use it as it is, "
                             "or set tile= to tile it anyway")
        self.tile = int(side)
        self.overlap = self.tile // 4 if cfg.overlap is None else int(cfg.overlap)
        if self.overlap > self.tile // 2:
            raise ValueError(f"overlap must be at most tile // 2 = {self.tile // 2} pixels, got {self.overlap}")
        self.tile_batch, self.mode, self.shift, self.grad_checkpoint = cfg.tile_batch, cfg.mode, cfg.shift, cfg.grad_checkpoint
        if self.mode == "whole" and prior.whole_image_multiple is None:
            raise ValueError(f"mode='whole' needs a network that takes other sizes than its training size; "
                             f"{type(prior).__name__} does not say it does (whole_image_multiple is None): use mode='tiles'")

    # the wrapped prior's precision setting is the only one (the Lightning module sets it here)
    @property
    def autocast_dtype(self) -> torch.dtype | None:  # type: ignore[override]
        return self.prior.autocast_dtype if "prior" in self._modules else None

    @autocast_dtype.setter
    def autocast_dtype(self, value: torch.dtype | None) -> None:
        if "prior" in self._modules:
            self.prior.autocast_dtype = value

    @property
    def whole_image_multiple(self) -> int | None:
        return self.prior.whole_image_multiple

    def resolved_mode(self, h: int, w: int) -> str:
        """``"tiles"`` or ``"whole"``: the evaluation used for ``h x w`` images."""
        if self.mode == "auto":
            return AUTO_RULE
        return self.mode

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.network_eps(x_t, t)

    def network_eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``eps_hat`` ``(B, C, H, W)`` float32 for ``x_t`` ``(B, C, H, W)``, ``t`` ``(B,)`` (checked by ``eps``)."""
        h, w = x_t.shape[-2:]
        if (h, w) == (self.tile, self.tile):
            return self.prior.network_eps(x_t, t)
        if self.resolved_mode(h, w) == "whole":
            return self._whole(x_t, t)
        return self._tiles(x_t, t)

    # ------------------------------------------------------------------ tiles
    def layout(self, h: int, w: int, t: int) -> tuple[AxisTiles, AxisTiles]:
        """The tiles of one ``h x w`` image at time ``t`` (rows, columns)."""
        stride = self.tile - self.overlap
        offsets = [grid_offset(t, stride, a) if self.shift == "time" else 0 for a in (0, 1)]
        return axis_tiles(h, self.tile, self.overlap, offsets[0]), axis_tiles(w, self.tile, self.overlap, offsets[1])

    def _cut(self, x: torch.Tensor, rows: AxisTiles, cols: AxisTiles) -> torch.Tensor:
        """Images ``(n, C, H, W)`` sharing one layout -> tiles ``(n * L, C, tile, tile)``, image-major,
        then row-major over the ``L = rows.count * cols.count`` tiles."""
        s, step = self.tile, max(1, self.tile - self.overlap)
        ih = reflect_index(x.shape[-2], rows.front, rows.back, x.device)
        iw = reflect_index(x.shape[-1], cols.front, cols.back, x.device)
        padded = x.index_select(-2, ih).index_select(-1, iw)
        tiles = padded.unfold(2, s, step).unfold(3, s, step)  # (n, C, rows, cols, s, s)
        return tiles.permute(0, 2, 3, 1, 4, 5).reshape(-1, x.shape[1], s, s)

    def _stitch(self, eps: torch.Tensor, rows: AxisTiles, cols: AxisTiles, h: int, w: int) -> torch.Tensor:
        """Tiles' predictions ``(n * L, C, tile, tile)`` (as :meth:`_cut` orders them) -> ``(n, C, h, w)``:
        the weighted mean of the tiles covering each pixel."""
        s, c, count = self.tile, eps.shape[1], rows.count * cols.count
        wr = torch.stack([ramp_window(s, self.overlap, i == 0, i == rows.count - 1) for i in range(rows.count)])
        wc = torch.stack([ramp_window(s, self.overlap, j == 0, j == cols.count - 1) for j in range(cols.count)])
        weight = (wr[:, None, :, None] * wc[None, :, None, :]).reshape(count, 1, s, s).to(eps)
        size = (rows.front + h + rows.back, cols.front + w + cols.back)
        step = (max(1, s - self.overlap),) * 2
        fold = lambda v: F.fold(v.reshape(-1, count, v.shape[1] * s * s).transpose(1, 2), size, s, stride=step)  # noqa: E731
        out = fold((eps.view(-1, count, c, s, s) * weight).flatten(0, 1)) / fold(weight)
        return out[..., rows.front : rows.front + h, cols.front : cols.front + w]

    def _tiles(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Images that share a layout (all of them without ``shift``; those at the same ``t`` with
        it) are cut and stitched together; all tiles go through the network in one chunked pass."""
        h, w = x_t.shape[-2:]
        groups: dict[int, list[int]] = {}
        for b, key in enumerate(t.tolist() if self.shift == "time" else [0] * x_t.shape[0]):
            groups.setdefault(key, []).append(b)
        layouts = [self.layout(h, w, key) for key in groups]
        index = [torch.tensor(idx, device=x_t.device) for idx in groups.values()]
        one = len(groups) == 1
        tiles = torch.cat([self._cut(x_t if one else x_t[i], *lay) for i, lay in zip(index, layouts, strict=True)])
        counts = [len(i) * r.count * c.count for i, (r, c) in zip(index, layouts, strict=True)]
        t_tiles = torch.cat([(t if one else t[i]).repeat_interleave(r.count * c.count) for i, (r, c) in zip(index, layouts, strict=True)])
        parts = self._run(tiles, t_tiles).split(counts)
        out = torch.cat([self._stitch(e, *lay, h, w) for e, lay in zip(parts, layouts, strict=True)])
        return out if one else out[torch.argsort(torch.cat(index))]

    def _run(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The wrapped network on ``x`` ``(N, C, h, w)`` in chunks of ``tile_batch`` ``tile^2`` pixels."""
        per_call = max(1, self.tile_batch * self.tile**2 // (x.shape[-2] * x.shape[-1]))
        keep_graph = self.grad_checkpoint and torch.is_grad_enabled() and x.requires_grad
        outs = []
        for xc, tc in zip(x.split(per_call), t.split(per_call), strict=True):
            if keep_graph:
                outs.append(checkpoint(self.prior.network_eps, xc, tc, use_reentrant=False))
            else:
                outs.append(self.prior.network_eps(xc, tc))
        return torch.cat(outs)

    # ------------------------------------------------------------------ whole image
    def _whole(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The whole image reflect-padded (centred) to multiples of ``whole_image_multiple``."""
        m = self.prior.whole_image_multiple
        h, w = x_t.shape[-2:]
        ph, pw = (-h) % m, (-w) % m
        ih = reflect_index(h, ph // 2, ph - ph // 2, x_t.device)
        iw = reflect_index(w, pw // 2, pw - pw // 2, x_t.device)
        out = self._run(x_t.index_select(-2, ih).index_select(-1, iw), t)
        return out[..., ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w]

    def extra_repr(self) -> str:
        return f"tile={self.tile}, overlap={self.overlap}, tile_batch={self.tile_batch}, mode={self.mode!r}, shift={self.shift!r}"


def at_size(prior: DiffusionPrior, size: tuple[int, int], tiling: Tiling | None = None, **options) -> DiffusionPrior:
    """The prior to use for ``size = (H, W)`` images: ``prior`` itself when it takes that size
    (its training size, or any size: ``image_size`` None, or already a :class:`TiledPrior`),
    else a :class:`TiledPrior` with ``tiling`` (a :class:`Tiling`, e.g. from a config) and
    ``options`` (its fields, overriding ``tiling``'s)."""
    cfg = Tiling(**{**(asdict(tiling) if tiling is not None else {}), **options})
    h, w = (int(s) for s in size)
    if isinstance(prior, TiledPrior):
        return prior
    native = prior.image_size
    if cfg.tile is None and (native is None or (h, w) == (native, native)):
        return prior
    return TiledPrior(prior, **asdict(cfg))
