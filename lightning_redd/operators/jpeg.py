"""JPEG compression as a differentiable torch pipeline (our own; baseline JPEG maths).

``x`` in ``[-1, 1]`` -> ``[0, 255]`` -> YCbCr (JFIF, full range) -> optional 4:2:0 chroma
subsampling (2x2 means) -> 8x8 blocks minus 128 -> orthonormal 2-D DCT-II -> divide by the
quantisation tables (ITU-T T.81 Annex K) scaled by ``quality`` as libjpeg does -> **round** ->
multiply -> inverse DCT -> +128 -> chroma upsampling (nearest, or ``bilinear``: libjpeg's
"fancy" triangular upsampling, which decoders such as PIL apply) -> RGB -> clip to ``[0, 255]`` ->
``[-1, 1]``. ``y`` is the decoded image ``(B, 3, H, W)``.

``measure`` rounds exactly; ``forward`` uses the rounding surrogate of
:mod:`lightning_redd.operators.quantization` (straight-through by default).

Any image size, padded as libjpeg pads: the image is extended at the bottom and right by
repeating its last row and column up to a whole number of MCUs (16 x 16 pixels with 4:2:0
chroma, 8 x 8 without); with 4:2:0, the subsampled chroma keeps its ``ceil(H/2)`` real rows and
repeats the last of them below (libjpeg's encoder pads the subsampled planes' rows, the full-size
image's columns). The decoded image is cropped back to ``H x W``, chroma upsampled from its own
``ceil(H/2) x ceil(W/2)`` samples (the ``bilinear`` filter's edges repeat the last real sample,
as libjpeg's decoder does). Against PIL at sizes that are not multiples of 16 (24x40, 24x48,
21x35, 30x44, 40x24; quality 50-90), the mean difference in the padded edge MCUs (1.1 levels)
is that of the interior (1.05); padding the full-size rows instead gives 1.5 there.
"""
from __future__ import annotations

import copy
import math
from typing import Literal

import torch
import torch.nn.functional as F

from lightning_redd.operators.common import like
from lightning_redd.operators.quantization import RoundingOperator, Surrogate, check_surrogate, round_surrogate

LUMA_TABLE = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
]  # fmt: skip
CHROMA_TABLE = [
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
] + [99] * 32  # fmt: skip
RGB_TO_YCBCR = [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]


def scaled_table(table: list[int], quality: int) -> torch.Tensor:
    """libjpeg's quality scaling: ``5000 // q`` (integer division, as libjpeg) below 50,
    ``200 - 2 q`` above; entries ``(t * scale + 50) // 100`` in [1, 255]."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    t = torch.tensor(table, dtype=torch.float64)
    return torch.floor((t * scale + 50) / 100).clamp(1, 255).view(8, 8)


def jpeg_quality(luma: torch.Tensor) -> int:
    """The libjpeg quality whose scaled standard luma table is closest to ``luma`` (for reports)."""
    errors = [float((scaled_table(LUMA_TABLE, q) - luma.double()).abs().sum()) for q in range(1, 101)]
    return 1 + min(range(100), key=errors.__getitem__)


def dct_matrix(n: int = 8) -> torch.Tensor:
    """Orthonormal DCT-II matrix ``D`` (``coefficients = D block D^T``)."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d


class JPEG(RoundingOperator):
    """JPEG at ``quality`` in [1, 100] of RGB ``(B, 3, H, W)`` images of any size (edge padding to
    whole 16 x 16 MCUs, 8 x 8 without ``chroma_subsampling``: see the module). For real JPEG files (measured data) use
    ``chroma_upsampling="bilinear"``: against PIL's decoder the mean difference drops from
    1.6-2.5 to 0.9-1.3 levels (quality 10-90, the 4 demo images). With ``file_tables``
    (default) a measured JPEG file's own quantisation tables replace the ``quality`` tables."""

    def __init__(
        self,
        *,
        quality: int = 10,
        chroma_subsampling: bool = True,
        surrogate: Surrogate = "straight_through",
        chroma_upsampling: Literal["nearest", "bilinear"] = "nearest",
        file_tables: bool = True,
        sigma_y: float = 0.0,
        channels: int = 3,
    ) -> None:
        super().__init__(sigma_y=sigma_y, channels=channels)
        self.file_tables = bool(file_tables)
        if channels != 3:
            raise ValueError(f"JPEG works on RGB images: channels must be 3, got {channels}")
        if not 1 <= quality <= 100:
            raise ValueError(f"quality must be an integer in [1, 100], got {quality}")
        check_surrogate(surrogate)
        if chroma_upsampling not in ("nearest", "bilinear"):
            raise ValueError(f"unknown chroma_upsampling {chroma_upsampling!r}; allowed: 'nearest', 'bilinear'")
        self.chroma_upsampling = chroma_upsampling
        self.quality, self.chroma_subsampling, self.surrogate = int(quality), bool(chroma_subsampling), surrogate
        self.register_buffer("q_luma", scaled_table(LUMA_TABLE, quality), persistent=False)
        self.register_buffer("q_chroma", scaled_table(CHROMA_TABLE, quality), persistent=False)
        self.register_buffer("dct", dct_matrix(), persistent=False)
        self.register_buffer("rgb2ycc", torch.tensor(RGB_TO_YCBCR, dtype=torch.float64), persistent=False)

    def file_params(self) -> dict:
        """With ``file_tables``: each measured JPEG file's own quantisation tables."""
        from lightning_redd.operators.file_params import JPEG_TABLES

        return {"jpeg_tables": JPEG_TABLES} if self.file_tables else {}

    def bind(self, seeds, shape, names=None, device=None, params=None) -> JPEG:
        """With ``params["jpeg_luma"]`` and ``params["jpeg_chroma"]`` (``(B, 8, 8)``, e.g. the
        quantisation tables of each image's own JPEG file), each image uses its own tables
        instead of the ``quality`` tables."""
        self.check_shape(shape)
        luma, chroma = (None, None) if params is None else (params.get("jpeg_luma"), params.get("jpeg_chroma"))
        if luma is None and chroma is None:
            return self
        if luma is None or chroma is None or luma.shape != (len(seeds), 8, 8) or chroma.shape != (len(seeds), 8, 8):
            raise ValueError(f"given JPEG tables must be jpeg_luma and jpeg_chroma of shape (B={len(seeds)}, 8, 8)")
        out = copy.copy(self)
        out._buffers = dict(self._buffers)
        out.q_luma = luma.double().to(device)[:, None, None]  # (B, 1, 1, 8, 8): broadcast over the blocks
        out.q_chroma = chroma.double().to(device)[:, None, None]
        return out

    @property
    def mcu(self) -> int:
        """Side of a minimum coded unit in pixels: 16 with 4:2:0 chroma, else 8."""
        return 16 if self.chroma_subsampling else 8

    def _codec(self, plane: torch.Tensor, table: torch.Tensor, surrogate: str | None) -> torch.Tensor:
        """Encode + decode one ``(B, h, w)`` plane in ``[0, 255]`` blockwise."""
        b, h, w = plane.shape
        d, q = like(self.dct, plane), like(table, plane)
        blocks = (plane - 128).reshape(b, h // 8, 8, w // 8, 8).transpose(2, 3)
        coef = d @ blocks @ d.T
        coef = round_surrogate(coef / q, surrogate) * q
        out = (d.T @ coef @ d).transpose(2, 3).reshape(b, h, w)
        return out + 128

    def transform(self, x: torch.Tensor, surrogate: str | None) -> torch.Tensor:
        """Decoded JPEG of ``x`` (``(B, 3, H, W)`` in ``[-1, 1]``, any ``H x W``: edge-padded to whole
        MCUs and cropped back, see the module); exact rounding if ``surrogate`` is None."""
        h, w = x.shape[-2:]
        x = F.pad(x, (0, -w % self.mcu, 0, -h % self.mcu), mode="replicate")  # libjpeg's edge expansion
        m = like(self.rgb2ycc, x)
        ycc = torch.einsum("ij,bjhw->bihw", m, (x + 1) * 127.5)
        y = self._codec(ycc[:, 0], self.q_luma, surrogate)[:, :h, :w]
        chroma = ycc[:, 1:] + 128
        if self.chroma_subsampling:  # libjpeg pads the rows of the subsampled chroma by repeating its last row
            chroma = F.avg_pool2d(chroma, 2)
            rows = chroma.shape[-2]
            chroma = F.pad(chroma[..., : (h + 1) // 2, :], (0, 0, 0, rows - (h + 1) // 2), mode="replicate")
        cb, cr = (self._codec(chroma[:, i], self.q_chroma, surrogate) for i in (0, 1))
        chroma = torch.stack([cb, cr], dim=1) - 128
        if self.chroma_subsampling:  # upsample the ceil(H/2) x ceil(W/2) real chroma samples only
            chroma = chroma[..., : (h + 1) // 2, : (w + 1) // 2]
            if self.chroma_upsampling == "bilinear":  # libjpeg's "fancy" upsampling
                chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
            else:
                chroma = chroma.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
        chroma = chroma[..., :h, :w]
        rgb = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(m), torch.cat([y[:, None], chroma], dim=1))
        return rgb.clamp(0, 255) / 127.5 - 1

