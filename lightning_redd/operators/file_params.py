"""Per-image operator parameters read from files, declared by the operators that take them.

An operator lists what it reads with ``file_params()`` (``{name: FileParam}``); the data
module reads the files the declaration names, matched to the images by name stem
(``<folder>/<stem>.<ext>``), and hands the tensors to :meth:`ForwardOperator.bind` as
``params``. So the data module knows no parameter kind itself: masks, kernels and JPEG tables
are described here, next to their readers.

* ``mask`` (:class:`~lightning_redd.operators.inpainting.Inpainting` with ``mask="file"``):
  any image file; gray -> one mask for every channel, RGB -> one per channel. A file of 8-bit
  values is thresholded at half of full scale; a file whose largest value is 1 (masks saved
  as 0/1 integers, ``mask.astype(uint8)``) is read as 0/1 with a note. ``missing`` says which
  colour marks missing pixels; a mask marking every pixel missing is refused. A mask of the image's size is used as it is; a mask of the source file's size gets
  the image's own crop and resize (nearest neighbour, so it stays 0/1).
* ``kernel`` (:class:`~lightning_redd.operators.blur.KernelBlur`): ``.npy`` (a ``k x k``
  finite float array summing to 1) or a grayscale image (normalised to sum 1); ``k`` odd and
  at most the image size. A ``.npy`` holding NaN or infinite values is refused.
* ``jpeg_tables`` (:class:`~lightning_redd.operators.jpeg.JPEG`): the luma and chroma
  quantisation tables of the measurement file itself, when it is a baseline JPEG (one with an
  EXIF rotation is refused: its 8x8 blocks would not be the operator's).

Image files are read as every image of the project is
(:func:`lightning_redd.data.images.decode_file`: decoded completely, upright by their EXIF
orientation, one image per file). Readers raise :class:`ParamFileError` naming the file and
the fix; several files for one image stem are refused by :mod:`lightning_redd.data.params`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lightning_redd.data.decoding import ImageFileError, decode_file

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
KERNEL_EXTENSIONS = (".npy",) + IMAGE_EXTENSIONS
KERNEL_SUM_TOLERANCE = 1e-3
MISSING = ("black", "white")
#: ``fit(image) -> image``: the crop and resize that turned a source file into the image the solver sees
Fit = Callable[[Image.Image], Image.Image]


class ParamFileError(ValueError):
    """A parameter file that cannot be used (the message names it and the fix)."""


@dataclass(frozen=True)
class FileParam:
    """One per-image parameter an operator reads from a file.

    Attributes:
        name: the key of its folder in the data settings (``data.param_folders.<name>``).
        what: a noun for messages ("mask").
        extensions: the file kinds taken (lower case, with the dot), in order of preference.
        read: ``read(path, size=(H, W), fit=None, source=None) -> {params key: tensor}``, one
            image's tensors (``fit``/``source``: a file of the source image's size is fitted).
        stack: ``{key: [tensor per image]} -> {key: (B, ...)}``, one batch's tensors.
        required: the operator cannot bind without it (a missing folder is an error).
        from_measurement: read from the measurement file itself (no folder of its own).
        note: ``note(path) -> [str]``, informative remarks on how a file was read.
        keys: the ``params`` keys ``read`` returns (default: ``(name,)``).
    """

    name: str
    what: str
    extensions: tuple[str, ...]
    read: Callable[..., dict[str, torch.Tensor]]
    stack: Callable[[dict[str, list[torch.Tensor]]], dict[str, torch.Tensor]]
    required: bool = True
    from_measurement: bool = False
    note: Callable[[Path], list[str]] | None = None
    keys: tuple[str, ...] = ()

    @property
    def produces(self) -> tuple[str, ...]:
        return self.keys or (self.name,)


def stack_plain(values: dict[str, list[torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack(v) for k, v in values.items()}


# ---------------------------------------------------------------------- masks
def read_mask(path: Path, size: tuple[int, int], fit: Fit | None = None, source: tuple[int, int] | None = None, *,
              missing: str = "black") -> dict[str, torch.Tensor]:
    """``{"mask": (1 or 3, H, W)}`` float 0/1 (1 = observed) at ``size = (H, W)``."""
    if missing not in MISSING:
        raise ValueError(f"unknown missing colour {missing!r}; allowed: {MISSING}")
    im = _mask_mode(_image(path, "mask")[0])
    w, h = im.size
    if (h, w) != tuple(size):
        if fit is None or source is None or (w, h) != (source[1], source[0]):
            raise ParamFileError(f"mask {path} is {w}x{h} but its image is {size[1]}x{size[0]}"
                                 + (f" (source {source[1]}x{source[0]})" if source else "")
                                 + "; give masks of the image's size")
        im = fit(im)
    t = torch.from_numpy(np.asarray(im, dtype=np.float32).copy())
    t = t.permute(2, 0, 1) if t.ndim == 3 else t[None]
    top = float(t.max())
    white = t >= (0.5 if top <= 1 else 127.5)  # a 0/1 file (its maximum is 1) is read as 0/1
    mask = (white if missing == "black" else ~white).float()
    if not bool(mask.any()):
        raise ParamFileError(f"mask {path} marks every pixel missing (nothing observed, with missing colour {missing}); "
                             "check the file, or set model.operator.init_args.mask_missing to the other colour if that one marks the missing "
                             "pixels")
    return {"mask": mask}


def _image(path: Path, what: str) -> tuple[Image.Image, list[str]]:
    """The decoded, upright image file of a ``what`` parameter, and the notes of reading it."""
    try:
        return decode_file(path)
    except ImageFileError as err:
        raise ParamFileError(f"{what} {path}: {err}") from None


def _mask_mode(im: Image.Image) -> Image.Image:
    """A mask image as ``RGB`` (per-channel masks) or ``L``."""
    return im.convert("RGB" if im.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr") else "L")


def mask_note(path: Path) -> list[str]:
    """Notes on a mask file: 0/1 values (its largest value is 1) read as 0/1, not as 8-bit; an
    EXIF rotation."""
    im, notes = _image(path, "mask")
    top = max(hi for _, hi in _extrema(_mask_mode(im)))
    return notes + (["mask files of values 0/1 (largest value 1) read as 0/1, not as 8-bit levels"] if top == 1 else [])


def _extrema(im: Image.Image) -> list[tuple[int, int]]:
    """``(low, high)`` of every channel of ``im``."""
    found = im.getextrema()
    return [found] if not isinstance(found[0], tuple) else list(found)


def stack_masks(values: dict[str, list[torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Masks of one batch expanded to a common channel count and stacked."""
    masks = values["mask"]
    c = max(v.shape[0] for v in masks)
    return {"mask": torch.stack([v.expand(c, -1, -1) for v in masks])}


def mask_param(missing: str = "black") -> FileParam:
    return FileParam("mask", "mask", IMAGE_EXTENSIONS, partial(read_mask, missing=missing), stack_masks, note=mask_note)


# ---------------------------------------------------------------------- kernels
def read_kernel(path: Path, size: tuple[int, int], fit: Fit | None = None, source=None) -> dict[str, torch.Tensor]:
    """``{"kernel": (k, k)}`` float32 summing to 1; ``k`` odd and at most the image's sides."""
    if path.suffix.lower() == ".npy":
        try:
            k = np.load(path, allow_pickle=False)
        except Exception as err:
            raise ParamFileError(f"kernel {path}: not a readable .npy array ({err})") from err
        if k.ndim != 2 or not np.issubdtype(k.dtype, np.floating) and not np.issubdtype(k.dtype, np.integer):
            raise ParamFileError(f"kernel {path} has shape {k.shape} and dtype {k.dtype}; save a 2-D float array (k x k)")
        if not np.isfinite(k).all():
            raise ParamFileError(f"kernel {path} holds NaN or infinite values; save a finite k x k array summing to 1")
        total = float(k.sum())
        if abs(total - 1.0) > KERNEL_SUM_TOLERANCE:
            raise ParamFileError(f"kernel {path} sums to {total:.6g}, not 1; divide it by its sum before saving")
    else:
        k = np.asarray(_image(path, "kernel")[0].convert("F"), dtype=np.float64)
        if k.sum() <= 0:
            raise ParamFileError(f"kernel {path} is all zero; a kernel image needs positive pixels")
        k = k / k.sum()
    if k.shape[0] != k.shape[1] or k.shape[0] % 2 == 0:
        raise ParamFileError(f"kernel {path} is {k.shape[0]}x{k.shape[1]}; kernels must be square with an odd side (centred)")
    if k.shape[0] > min(size):
        raise ParamFileError(f"kernel {path} is {k.shape[0]}x{k.shape[1]}, larger than the {size[1]}x{size[0]} image; crop it")
    return {"kernel": torch.from_numpy(np.ascontiguousarray(k, dtype=np.float32))}


def stack_kernels(values: dict[str, list[torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Kernels of one batch zero-padded (centred, so each blur is unchanged) to the largest and stacked."""
    kernels = values["kernel"]
    k = max(v.shape[0] for v in kernels)
    return {"kernel": torch.stack([torch.nn.functional.pad(v, [(k - v.shape[0]) // 2] * 4) for v in kernels])}


def kernel_note(path: Path) -> list[str]:
    """Notes on reading a kernel image (an EXIF rotation); none for ``.npy`` kernels."""
    return [] if path.suffix.lower() == ".npy" else _image(path, "kernel")[1]


KERNEL = FileParam("kernel", "kernel", KERNEL_EXTENSIONS, read_kernel, stack_kernels, note=kernel_note)


# ---------------------------------------------------------------------- JPEG tables
def read_jpeg_tables(path: Path, size=None, fit=None, source=None) -> dict[str, torch.Tensor]:
    """The file's ``jpeg_luma`` and ``jpeg_chroma`` tables ``(8, 8)`` float64 (natural order);
    ``{}`` for a file that is not a JPEG."""
    with Image.open(path) as im:
        if im.format not in ("JPEG", "MPO"):
            return {}
        tables = getattr(im, "quantization", None) or {}
        turned = im.getexif().get(0x0112, 1) in range(2, 9)
    if turned:
        raise ParamFileError(f"JPEG file {path} carries an EXIF rotation, so its 8x8 blocks are not those of the upright "
                             "picture the operator compresses; save it upright without the tag, losslessly (jpegtran -perfect "
                             "-copy none with the -rotate or -flip its orientation names)")
    if 0 not in tables:
        raise ParamFileError(f"JPEG file {path} has no quantisation table; re-save it as a baseline JPEG")
    luma = torch.tensor(list(tables[0]), dtype=torch.float64).view(8, 8)
    chroma = torch.tensor(list(tables.get(1, tables[0])), dtype=torch.float64).view(8, 8)
    return {"jpeg_luma": luma, "jpeg_chroma": chroma}


JPEG_TABLES = FileParam("jpeg_tables", "JPEG quantisation tables", (".jpg", ".jpeg"), read_jpeg_tables, stack_plain,
                        required=False, from_measurement=True, keys=("jpeg_luma", "jpeg_chroma"))


def merge(declared: Sequence[dict[str, FileParam]]) -> dict[str, FileParam]:
    """The union of several operators' declarations (a composed operator's parts)."""
    out: dict[str, FileParam] = {}
    for d in declared:
        out.update(d)
    return out
