"""Inpainting: ``y = m * x``, ``m`` a per-image 0/1 mask (1 = observed).

``y`` keeps the image's full size with zeros at the missing pixels, as in the paper's runs,
so the data term ``mean((y - A x)^2) / 2`` averages over all pixels (missing ones count as
zero residual) and the published ``lambda`` / ``lr`` keep their meaning.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from lightning_redd.operators import masks
from lightning_redd.operators.base import SVDOperator
from lightning_redd.operators.common import (
    bound_copy,
    check_bound_batch,
    check_input,
    check_seeds,
    check_y,
    not_bound_error,
)

from lightning_redd.operators.file_params import MISSING, mask_param  # noqa: E402

MaskSource = Literal["box", "random", "strokes", "half", "file"]


class Inpainting(SVDOperator):
    """Masked observation of ``(B, C, H, W)`` images in ``[-1, 1]``; ``y`` is ``(B, C, H, W)``.

    Args:
        mask: where masks come from: ``"box"`` (a missing box of side ``box_fraction`` of the
            image), ``"random"`` (exactly ``drop_fraction`` of the pixels missing),
            ``"strokes"`` (free-form brush strokes covering a fraction in ``coverage``),
            ``"half"`` (the ``half`` side missing), ``"file"`` (each image's own mask, read from
            a file by the data module: ``data.param_folders.mask``, ``<image stem>.png``;
            grayscale -> one mask shared by all channels, RGB -> one mask per channel; see
            :func:`lightning_redd.operators.file_params.read_mask`).
        box_position: ``"center"`` or ``"random"`` (uniform, box fully inside the image).
        mask_missing: with ``mask="file"``, the colour of missing pixels in the mask files:
            ``black`` (white = observed) or ``white``.

    Masks are drawn in :meth:`bind` from each image's seed, so an image always gets the same
    mask whatever its batch, or taken from ``params["mask"]``. SVD: ``U = V = I``, singular
    values = the mask, shape ``(B, N)``.
    """

    def __init__(
        self,
        *,
        mask: MaskSource = "box",
        box_fraction: float = 0.5,
        box_position: Literal["center", "random"] = "center",
        drop_fraction: float = 0.5,
        coverage: tuple[float, float] = (0.1, 0.2),
        half: Literal["left", "right", "top", "bottom"] = "right",
        mask_missing: Literal["black", "white"] = "black",
        sigma_y: float = 0.0,
        channels: int = 3,
    ) -> None:
        super().__init__(sigma_y=sigma_y, channels=channels)
        _validate(mask, box_fraction, box_position, drop_fraction, coverage, half)
        if mask_missing not in MISSING:
            raise ValueError(f"unknown mask_missing {mask_missing!r}; allowed: {MISSING}")
        self.mask_source, self.mask_missing = mask, mask_missing
        self.box_fraction, self.box_position = float(box_fraction), box_position
        self.drop_fraction, self.coverage = float(drop_fraction), (float(coverage[0]), float(coverage[1]))
        self.half = half
        self.register_buffer("mask", None, persistent=False)
        self.image_shape: tuple[int, ...] | None = None

    def file_params(self) -> dict:
        """``mask="file"``: one mask file per image (``data.param_folders.mask``)."""
        return {"mask": mask_param(self.mask_missing)} if self.mask_source == "file" else {}

    # ------------------------------------------------------------------ binding
    def draw_mask(self, seed: int, shape: Sequence[int]) -> torch.Tensor:
        """One image's ``(Cm, H, W)`` mask from its seed (CPU)."""
        _, h, w = shape
        g = torch.Generator().manual_seed(int(seed))
        src = self.mask_source
        if src == "box":
            return masks.box_mask(h, w, self.box_fraction, self.box_position, g)
        if src == "random":
            return masks.random_pixel_mask(h, w, self.drop_fraction, g)
        if src == "strokes":
            return masks.stroke_mask(h, w, self.coverage, g)
        if src == "half":
            return masks.half_mask(h, w, self.half)
        raise ValueError(f"unknown mask source {src!r}; allowed: box, random, strokes, half (file: given in bind)")

    def given_masks(self, params, n: int, shape: Sequence[int]) -> torch.Tensor:
        """``params["mask"]`` checked: ``(n, 1 or C, H, W)``, 0/1."""
        m = None if params is None else params.get("mask")
        if m is None:
            raise ValueError("Inpainting(mask='file') needs each image's mask: set data.param_folders.mask to the folder of "
                             "<image stem>.png masks (black = missing)")
        if m.ndim != 4 or m.shape[0] != n or m.shape[1] not in (1, self.channels) or tuple(m.shape[2:]) != tuple(shape[1:]):
            raise ValueError(f"given masks must be (B={n}, 1 or {self.channels}, {shape[1]}, {shape[2]}), got {tuple(m.shape)}")
        return m.float()

    def bind(self, seeds, shape, names=None, device=None, params=None) -> Inpainting:
        self.check_shape(shape)
        check_seeds(seeds, names)
        if self.mask_source == "file":
            stacked = self.given_masks(params, len(seeds), shape)
        else:
            drawn = [self.draw_mask(s, shape) for s in seeds]
            cm = max(m.shape[0] for m in drawn)
            stacked = torch.stack([m.expand(cm, -1, -1) for m in drawn])
        out = bound_copy(self, shape, device)
        out.register_buffer("mask", stacked.to(device=device), persistent=False)
        return out

    # ------------------------------------------------------------------ checks
    def _m(self, t: torch.Tensor) -> torch.Tensor:
        if self.mask is None:
            raise not_bound_error(self)
        check_bound_batch(self, self.mask.shape[0], t)
        return self.mask.to(dtype=t.dtype, device=t.device)

    def check_shape(self, shape: Sequence[int]) -> None:
        super().check_shape(shape)
        if self.image_shape is not None and tuple(shape) != tuple(self.image_shape):
            raise ValueError(
                f"Inpainting was bound for images of shape {tuple(self.image_shape)} but got {tuple(shape)}; "
                "call bind(seeds, shape) with this image shape"
            )

    # ------------------------------------------------------------------ operator
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``m * x``: ``(B, C, H, W)`` -> ``(B, C, H, W)`` with zeros at missing pixels."""
        check_input(self, x)
        return x * self._m(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``m * y`` (the mask is a 0/1 diagonal, hence self-adjoint)."""
        check_input(self, y)
        return y * self._m(y)

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """``m * y``: missing pixels set to 0 (mid-grey in ``[-1, 1]``)."""
        check_y(self, y)
        check_input(self, y)
        return y * self._m(y)

    def observed(self, y: torch.Tensor) -> torch.Tensor:
        """``m * y``: a given measurement's missing pixels (any colour in the file) set to 0."""
        check_input(self, y)
        return y * self._m(y)

    def measure(self, x: torch.Tensor, gens) -> torch.Tensor:
        """``m * (x + 2 sigma_y n)``: noise only where pixels are observed, so missing pixels
        of ``y`` stay exactly 0 (the noise draw still covers the full image)."""
        return super().measure(x, gens) * self._m(x)

    # ------------------------------------------------------------------ SVD (U = V = I)
    def _flat_check(self, z: torch.Tensor) -> torch.Tensor:
        if self.image_shape is None:
            raise not_bound_error(self)
        n = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
        if z.ndim != 2 or z.shape[1] != n:
            raise ValueError(f"Inpainting SVD maps act on flattened (B, {n}) tensors, got {tuple(z.shape)}")
        return z.clone()

    V = Vt = U = Ut = _flat_check

    def singulars(self) -> torch.Tensor:
        """``(B, C*H*W)`` 0/1 singular values (the mask, not sorted), aligned with ``Vt``."""
        if self.mask is None or self.image_shape is None:
            raise not_bound_error(self)
        return self.mask.expand(-1, self.image_shape[0], -1, -1).flatten(1)


def _validate(mask, box_fraction, box_position, drop_fraction, coverage, half) -> None:
    allowed = ("box", "random", "strokes", "half", "file")
    if mask not in allowed:
        raise ValueError(f"unknown mask {mask!r}; allowed: {allowed}")
    if not 0 < box_fraction <= 1:
        raise ValueError(f"box_fraction must be in (0, 1] (side of the missing box / image side), got {box_fraction}")
    if box_position not in ("center", "random"):
        raise ValueError(f"unknown box_position {box_position!r}; allowed: 'center', 'random'")
    if not 0 <= drop_fraction < 1:
        raise ValueError(f"drop_fraction must be in [0, 1) (fraction of missing pixels), got {drop_fraction}")
    if len(coverage) != 2 or not 0 < coverage[0] < coverage[1] < 1:
        raise ValueError(f"coverage must be (low, high) with 0 < low < high < 1, e.g. (0.1, 0.2); got {coverage}")
    if half not in ("left", "right", "top", "bottom"):
        raise ValueError(f"unknown half {half!r}; allowed: 'left', 'right', 'top', 'bottom'")

