"""Per-image operator parameters read from files: inpainting masks, blur kernels, JPEG tables.

Files are matched to images by name stem (``masks/<stem>.png`` for the image ``<stem>.jpg``).
Readers return tensors for :meth:`ForwardOperator.bind` (``params``) and raise
:class:`ParamFileError` with the file and the fix; :func:`check_params` collects every problem
of a run at once, before any compute.

* masks: any image file; grayscale -> one mask shared by the channels, RGB -> one per channel;
  pixels >= half of full scale are white; ``missing`` says which colour marks missing pixels.
  A mask of the measurement's size is used as it is; with ``transform``, a mask of the source
  image's size gets the image's own crop and resize (nearest neighbour, so it stays 0/1).
* kernels: ``.npy`` (a ``k x k`` float array summing to 1) or a grayscale image (normalised to
  sum 1); ``k`` odd and at most the image size.
* JPEG tables: the luma and chroma quantisation tables of a baseline JPEG file (natural order).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lightning_redd.data.images import IMAGE_EXTENSIONS

KERNEL_EXTENSIONS = (".npy",) + IMAGE_EXTENSIONS
KERNEL_SUM_TOLERANCE = 1e-3
MISSING = ("black", "white")


class ParamFileError(ValueError):
    """A mask, kernel or JPEG file that cannot be used (the message names it and the fix)."""


def find(folder: Path, stem: str, extensions: Sequence[str], what: str) -> Path:
    """The file ``folder/<stem>.<ext>``."""
    hits = [folder / f"{stem}{ext}" for ext in extensions if (folder / f"{stem}{ext}").is_file()]
    hits += [p for p in folder.glob(f"{stem}.*") if p.suffix.lower() in extensions and p not in hits]
    if not hits:
        raise ParamFileError(f"no {what} for image {stem!r} in {folder}: add {stem}{extensions[0]} (same stem as the image)")
    return hits[0]


def read_mask(path: Path, size: tuple[int, int], missing: str = "black",
              transform: Callable[[Image.Image], Image.Image] | None = None, source: tuple[int, int] | None = None) -> torch.Tensor:
    """``(1 or 3, H, W)`` float 0/1 (1 = observed) at ``size = (H, W)``.

    ``transform`` and ``source``: the crop-and-resize that turned the ``source``-sized image
    into the measurement; a mask of the source's size gets it too (nearest neighbour).
    """
    if missing not in MISSING:
        raise ValueError(f"unknown missing colour {missing!r}; allowed: {MISSING}")
    try:
        with Image.open(path) as im:
            im.load()
            rgb = im.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr")
            im = im.convert("RGB" if rgb else "L")
    except Exception as err:
        raise ParamFileError(f"mask {path}: cannot be decoded ({err}); replace the file") from err
    w, h = im.size
    if (h, w) != tuple(size):
        if transform is None or source is None or (w, h) != (source[1], source[0]):
            raise ParamFileError(f"mask {path} is {w}x{h} but its image is {size[1]}x{size[0]}"
                                 + (f" (source {source[1]}x{source[0]})" if source else "")
                                 + "; give masks of the image's size")
        im = transform(im)
    arr = np.asarray(im, dtype=np.float32) / 255.0
    t = torch.from_numpy(arr.copy())
    t = t.permute(2, 0, 1) if t.ndim == 3 else t[None]
    white = t >= 0.5
    return (white if missing == "black" else ~white).float()


def read_kernel(path: Path, image_size: int) -> torch.Tensor:
    """``(k, k)`` float32 summing to 1; ``k`` odd and ``<= image_size``."""
    if path.suffix.lower() == ".npy":
        try:
            k = np.load(path, allow_pickle=False)
        except Exception as err:
            raise ParamFileError(f"kernel {path}: not a readable .npy array ({err})") from err
        if k.ndim != 2 or not np.issubdtype(k.dtype, np.floating) and not np.issubdtype(k.dtype, np.integer):
            raise ParamFileError(f"kernel {path} has shape {k.shape} and dtype {k.dtype}; save a 2-D float array (k x k)")
        total = float(k.sum())
        if abs(total - 1.0) > KERNEL_SUM_TOLERANCE:
            raise ParamFileError(f"kernel {path} sums to {total:.6g}, not 1; divide it by its sum before saving")
    else:
        try:
            with Image.open(path) as im:
                k = np.asarray(im.convert("F"), dtype=np.float64)
        except Exception as err:
            raise ParamFileError(f"kernel {path}: cannot be decoded ({err})") from err
        if k.sum() <= 0:
            raise ParamFileError(f"kernel {path} is all zero; a kernel image needs positive pixels")
        k = k / k.sum()
    if k.shape[0] != k.shape[1] or k.shape[0] % 2 == 0:
        raise ParamFileError(f"kernel {path} is {k.shape[0]}x{k.shape[1]}; kernels must be square with an odd side (centred)")
    if k.shape[0] > image_size:
        raise ParamFileError(f"kernel {path} is {k.shape[0]}x{k.shape[1]}, larger than the {image_size}x{image_size} image; crop it")
    return torch.from_numpy(np.ascontiguousarray(k, dtype=np.float32))


def read_jpeg_tables(path: Path) -> dict[str, torch.Tensor] | None:
    """The file's ``jpeg_luma`` and ``jpeg_chroma`` tables ``(8, 8)`` (natural order), or None
    for a file that is not a JPEG."""
    with Image.open(path) as im:
        if im.format != "JPEG":
            return None
        tables = getattr(im, "quantization", None) or {}
    if 0 not in tables:
        raise ParamFileError(f"JPEG file {path} has no quantisation table; re-save it as a baseline JPEG")
    luma = torch.tensor(list(tables[0]), dtype=torch.float64).view(8, 8)
    chroma = torch.tensor(list(tables.get(1, tables[0])), dtype=torch.float64).view(8, 8)
    return {"jpeg_luma": luma, "jpeg_chroma": chroma}


def jpeg_quality(luma: torch.Tensor) -> int:
    """The libjpeg quality whose scaled standard luma table is closest to ``luma`` (for reports)."""
    from lightning_redd.operators.jpeg import LUMA_TABLE, scaled_table

    errors = [float((scaled_table(LUMA_TABLE, q) - luma.double()).abs().sum()) for q in range(1, 101)]
    return 1 + int(np.argmin(errors))


def stack(params: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One batch's parameters stacked: masks expanded to a common channel count, kernels
    zero-padded (centred, so the blur is unchanged) to the largest size."""
    out: dict[str, torch.Tensor] = {}
    for key in params[0] if params else []:
        values = [p[key] for p in params]
        if key == "mask":
            c = max(v.shape[0] for v in values)
            values = [v.expand(c, -1, -1) for v in values]
        elif key == "kernel":
            k = max(v.shape[0] for v in values)
            values = [torch.nn.functional.pad(v, [(k - v.shape[0]) // 2] * 4) for v in values]
        out[key] = torch.stack(values)
    return out


class ParamFiles:
    """A run's per-image parameter files, matched to its images by stem: ``masks/<stem>.png``
    (inpainting) and ``kernels/<stem>.npy`` or ``.png`` (deblurring with known kernels).

    Args:
        masks: folder of masks, or None.
        kernels: folder of kernels, or None.
        mask_missing: the colour that marks missing pixels in the masks (``black``/``white``).
    """

    def __init__(self, masks: Path | None = None, kernels: Path | None = None, mask_missing: str = "black") -> None:
        if mask_missing not in MISSING:
            raise ValueError(f"unknown mask_missing {mask_missing!r}; allowed: {MISSING}")
        self.masks, self.kernels, self.mask_missing = masks, kernels, mask_missing

    def __bool__(self) -> bool:
        return self.masks is not None or self.kernels is not None

    def folders(self) -> list[Path]:
        return [p for p in (self.masks, self.kernels) if p is not None]

    def _mask(self, stem: str, size: int, transform=None, source=None) -> torch.Tensor:
        return read_mask(find(self.masks, stem, IMAGE_EXTENSIONS, "mask"), (size, size), self.mask_missing, transform, source)

    def _kernel(self, stem: str, size: int) -> torch.Tensor:
        return read_kernel(find(self.kernels, stem, KERNEL_EXTENSIONS, "kernel"), size)

    def read(self, stem: str, size: int, transform: Callable[[Image.Image], Image.Image] | None = None,
             source: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
        """One image's parameters (``mask`` ``(1 or 3, size, size)``, ``kernel`` ``(k, k)``);
        ``transform``/``source``: as :func:`read_mask`."""
        out: dict[str, torch.Tensor] = {}
        if self.masks is not None:
            out["mask"] = self._mask(stem, size, transform, source)
        if self.kernels is not None:
            out["kernel"] = self._kernel(stem, size)
        return out

    def problems(self, stems: Sequence[str], size: int, transforms: dict[str, tuple] | None = None) -> list[str]:
        """Every problem of every image's files (missing, undecodable, wrong size, bad kernel),
        each message naming the file and the fix; ``transforms``: stem -> (transform, source)."""
        if not self:
            return []
        problems = [f"{what} folder {folder} does not exist; set data.{what}s to the folder of <image stem> files"
                    for what, folder in (("mask", self.masks), ("kernel", self.kernels)) if folder is not None and not folder.is_dir()]
        if problems:
            return problems

        def one(stem: str) -> list[str]:
            readers = ([lambda: self._mask(stem, size, *(transforms or {}).get(stem, (None, None)))] if self.masks else []) \
                + ([lambda: self._kernel(stem, size)] if self.kernels else [])
            found = []
            for read in readers:
                try:
                    read()
                except ParamFileError as err:
                    found.append(str(err))
            return found

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # decoding releases the GIL
            return [p for found in pool.map(one, stems) for p in found]
