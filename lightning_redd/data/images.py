"""Reading image files into ``[-1, 1]`` tensors, and checking a whole folder up front.

Every file is decoded completely when a folder is checked, and every problem of the folder
is reported at once, each with its reason and fix. Files are opened by
:func:`lightning_redd.data.decoding.decode_file`: decoded completely (a PNG cut short is
refused), upright by their EXIF orientation (with a note; sizes are the upright ones), one
image per file (multi-page TIFFs and animations refused).

Pixel formats:

* 8-bit RGB / grayscale: as stored (grayscale is replicated to RGB for 3-channel priors).
* 16-bit grayscale (PNG/TIFF ``I;16``): scaled by ``1/65535``, kept in float (never clipped
  to 8 bits). 16-bit RGB PNGs are delivered by Pillow at 8 bits per channel (its high byte).
* RGBA, LA, palette (``P``), CMYK, YCbCr, bilevel: converted to RGB (alpha dropped), with a note.
* 32-bit float images: refused (their range is unknown); convert them to 8 or 16 bits.

Folder entries (:func:`check_folder`, never recursive): regular files and links to them are
read. A problem (fatal): a broken link or a loop of links, a folder or other non-file whose
name has an image extension (``dir.png``), a non-image file (unless ``skip_non_images``). A
note (skipped, named): hidden files with an image extension (names starting with ``.``, such
as ``._photo.png`` or ``...png``), subfolders.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lightning_redd.data.decoding import ImageFileError, decode_file, upright_size  # noqa: F401 (re-exported)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
RESIZE_MODES = ("center_crop_resize", "resize", "center_crop", "none")
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
SUBFOLDERS = "subfolder(s) skipped (folders are not searched recursively)"
_CONVERTED = {"RGBA": "alpha channel dropped", "LA": "alpha channel dropped", "PA": "alpha channel dropped",
              "P": "palette image converted to RGB", "CMYK": "CMYK converted to RGB",
              "YCbCr": "YCbCr converted to RGB", "LAB": "LAB converted to RGB", "HSV": "HSV converted to RGB",
              "1": "bilevel image converted"}


@dataclass
class FolderReport:
    """The outcome of checking a folder: usable files, problems (fatal) and notes (informative)."""

    files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: ``(width, height)`` of each usable file, upright
    sizes: dict[Path, tuple[int, int]] = field(default_factory=dict)


def open_pixels(path: Path) -> tuple[Image.Image, list[str]]:
    """:func:`decode_file` ``path``, in a mode we handle (L, RGB or F for 16-bit data scaled to
    [0, 65535]), with notes about the reading and any conversion."""
    im, notes = decode_file(path)
    mode, fmt = im.mode, im.format
    if mode in ("L", "RGB"):
        return im, notes
    if mode in _SIXTEEN_BIT or (mode == "I" and fmt == "PNG"):
        return im.convert("I").convert("F"), notes + ["16-bit image scaled from [0, 65535]"]
    if mode in _CONVERTED:
        return im.convert("L" if mode in ("LA", "1") else "RGB"), notes + [_CONVERTED[mode]]
    if mode in ("F", "I"):
        raise ImageFileError(f"{path.name}: {mode!r} pixels (32-bit) have no known range; convert it to an 8- or 16-bit PNG")
    raise ImageFileError(f"{path.name}: unsupported pixel mode {mode!r}; convert it to an 8-bit RGB PNG")


def crop_resize(im: Image.Image, size: int, mode: str, path: Path, resample=Image.Resampling.BICUBIC) -> Image.Image:
    """The ``size x size`` view of ``im`` that ``load_image`` takes (``resample``: bicubic for
    images, nearest for masks); ``none``: ``im`` itself."""
    w, h = im.size
    if mode == "none":
        return im
    if mode == "center_crop_resize":
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        return im.crop((left, top, left + s, top + s)).resize((size, size), resample)
    if mode == "resize":
        return im.resize((size, size), resample)
    if mode == "center_crop":
        if min(w, h) < size:
            raise ImageFileError(f"{path.name} is {w}x{h}, smaller than the crop size {size}; use resize='center_crop_resize'")
        left, top = (w - size) // 2, (h - size) // 2
        return im.crop((left, top, left + size, top + size))
    raise ValueError(f"unknown resize mode {mode!r}; allowed: {RESIZE_MODES}")


def load_image(path: Path, size: int, channels: int = 3, mode: str = "center_crop_resize") -> torch.Tensor:
    """Read ``path`` (upright) as ``(channels, size, size)`` float32 in ``[-1, 1]``.

    ``center_crop_resize``: largest centred square, then resize (bicubic, antialiased);
    ``resize``: resize the whole image to a square (aspect ratio not kept);
    ``center_crop``: centred ``size x size`` crop (the image must be at least that large);
    ``none``: the image at its own size, ``(channels, H, W)`` (``size`` unused).
    """
    path = Path(path)
    im, _ = open_pixels(path)
    if im.mode == "F":  # 16-bit data: resize in float, never quantise to 8 bits
        im = crop_resize(im, size, mode, path)
        gray = torch.from_numpy(np.asarray(im, dtype=np.float32).copy()).clamp(0, 65535) / 65535.0
        x = gray[None].expand(channels, -1, -1) if channels == 3 else gray[None]
        return (x * 2 - 1).contiguous()
    im = im.convert("RGB" if channels == 3 else "L")
    im = crop_resize(im, size, mode, path)
    data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(im.size[1], im.size[0], channels)
    return data.permute(2, 0, 1).float().div(127.5).sub(1.0)


# ---------------------------------------------------------------------- checking a folder
def _summarise(notes: dict[str, list[str]]) -> list[str]:
    out = []
    for note, names in notes.items():
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        out.append(f"{len(names)} {note}: {shown}")
    return out


def _decode_for_check(path: Path) -> tuple[tuple[int, int], list[str], str | None]:
    """``(upright size, notes, problem)`` of one file, decoded completely."""
    try:
        im, notes = open_pixels(path)
    except ImageFileError as err:
        return (0, 0), [], str(err)
    return im.size, notes, None


def scan_entries(root: Path, extensions: Sequence[str], skip_non_images: bool) -> tuple[list[Path], list[str], dict[str, list[str]]]:
    """``(image files, problems, notes)`` of the entries directly under ``root``, by the rules of
    the module docstring."""
    images, problems, notes = [], [], {}
    for p in sorted(root.iterdir()):
        named_image = p.suffix.lower() in extensions
        if p.name.startswith("."):
            if named_image:
                notes.setdefault("file(s) skipped as hidden (names starting with '.'); rename them to use them", []).append(p.name)
        elif named_image and p.is_symlink() and not p.exists():
            problems.append(f"{p.name}: a broken symbolic link or a loop of links (to {os.readlink(p)}); fix or remove the link")
        elif named_image and not p.is_file():
            kind = "a folder" if p.is_dir() else "not a regular file"
            problems.append(f"{p.name}: {kind}, named like an image; rename it or move it out of {root}")
        elif p.is_dir():
            notes.setdefault(SUBFOLDERS, []).append(p.name)
        elif named_image:
            images.append(p)
        elif not skip_non_images:
            problems.append(f"{p.name}: not an image (allowed extensions {', '.join(extensions)}); remove it or set "
                            "data.skip_non_images=true")
    return images, problems, notes


def check_folder(root: Path, *, image_size: int, skip_non_images: bool = False, limit: int | None = None,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS, decode=None) -> FolderReport:
    """Decode every image directly under ``root`` and report all problems at once.

    Problems: a missing or empty folder, the entries :func:`scan_entries` refuses, files that do
    not decode (or are cut short, or hold several images), unsupported pixel formats, several
    files sharing a name stem. Notes (not fatal): skipped entries, EXIF rotations, conversions
    (16-bit, alpha, palette, ...) and images smaller than ``image_size`` (accepted; upscaled).

    Args:
        limit: only the first ``limit`` images (sorted by name) are used and decoded.
        extensions: the file kinds taken (lower case, with the dot).
        decode: ``path -> (upright size (w, h), notes, problem)`` decoding one file completely
            (default: as an image).
    """
    decode = decode or _decode_for_check
    report = FolderReport()
    if not root.is_dir():
        report.problems.append(f"image folder {root} does not exist; set data.root to a folder of png/jpg images")
        return report
    images, report.problems, notes = scan_entries(root, extensions, skip_non_images)
    images = images[:limit]
    stems: dict[str, list[str]] = {}
    for p in images:
        stems.setdefault(p.stem, []).append(p.name)
    report.problems += [f"{', '.join(v)}: share the name stem {k!r}, and outputs are named by stem; rename all but one"
                        for k, v in stems.items() if len(v) > 1]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # decoding releases the GIL
        decoded = list(pool.map(decode, images))
    for p, (size, found, problem) in zip(images, decoded):
        if problem:
            report.problems.append(problem)
            continue
        for note in found:
            notes.setdefault(f"image(s) {note}", []).append(p.name)
        report.sizes[p] = size
        if min(size) < image_size:
            notes.setdefault(f"image(s) smaller than {image_size}x{image_size} (upscaled)", []).append(p.name)
        report.files.append(p)
    if not images and not report.problems:
        inside = notes.get(SUBFOLDERS, [])
        report.problems.append(f"no images found in {root}; allowed extensions {', '.join(extensions)}"
                               + (f"; it holds folders ({', '.join(inside[:5])}): point the setting at one of them" if inside else ""))
    report.notes = _summarise(notes)
    return report


def format_problems(title: str, problems: Sequence[str]) -> str:
    """One message listing every problem with a count."""
    lines = "\n".join(f"  - {p}" for p in problems)
    return f"{title}: {len(problems)} problem(s), nothing was restored:\n{lines}"


def list_images(root: Path, skip_non_images: bool = False) -> list[Path]:
    """The sorted, fully decodable image files directly under ``root``; raises
    :class:`ImageFileError` listing every problem."""
    report = check_folder(Path(root), image_size=0, skip_non_images=skip_non_images)
    if report.problems:
        raise ImageFileError(format_problems(str(root), report.problems))
    return report.files
