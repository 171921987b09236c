"""Reading image files into ``[-1, 1]`` tensors, and checking a whole folder up front.

Every file is decoded completely when a folder is checked, and every problem of the folder
is reported at once, each with its reason and fix. Every reader of the project (images,
ground truth, measurements, masks, kernel images, ``evaluate``) opens files through
:func:`decode_file`, which:

* decodes the whole file with Pillow's ``LOAD_TRUNCATED_IMAGES`` off (a truncated file
  raises instead of being padded), and checks a PNG's pixel data for every row its header
  announces (a PNG cut at a row boundary, checksums intact, decodes without an error in
  Pillow and would read its missing rows as black);
* turns the picture upright by its EXIF orientation (``ImageOps.exif_transpose``, with a note),
  so sizes are always the upright ones;
* refuses a file holding several images (a multi-page TIFF, an animated PNG or WebP: one file
  is one image); a JPEG carrying extra pictures (MPO: previews, depth maps) uses its first,
  main picture, with a note.

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
import struct
import threading
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
RESIZE_MODES = ("center_crop_resize", "resize", "center_crop")
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_CONVERTED = {"RGBA": "alpha channel dropped", "LA": "alpha channel dropped", "PA": "alpha channel dropped",
              "P": "palette image converted to RGB", "CMYK": "CMYK converted to RGB",
              "YCbCr": "YCbCr converted to RGB", "LAB": "LAB converted to RGB", "HSV": "HSV converted to RGB",
              "1": "bilevel image converted"}
UPRIGHT_NOTE = "turned upright by their EXIF orientation tag (sizes are the upright ones)"
_ORIENTATION = 0x0112
#: PNG colour type -> samples per pixel; Adam7 passes as (x0, y0, dx, dy)
_PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


class ImageFileError(ValueError):
    """A file that cannot be used as an image (the message names it and the fix)."""


@dataclass
class FolderReport:
    """The outcome of checking a folder: usable files, problems (fatal) and notes (informative)."""

    files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: ``(width, height)`` of each usable file, upright
    sizes: dict[Path, tuple[int, int]] = field(default_factory=dict)


# ---------------------------------------------------------------------- decoding one file
_truncation = threading.Lock()
_decoding = [0, False]  # decodes in progress, the LOAD_TRUNCATED_IMAGES setting found before them


@contextmanager
def truncated_files_refused() -> Iterator[None]:
    """Pillow's ``LOAD_TRUNCATED_IMAGES`` off while any decode of ours runs (restored after the
    last one), so a truncated file raises even where other code turned the setting on."""
    with _truncation:
        if _decoding[0] == 0:
            _decoding[1], ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
        _decoding[0] += 1
    try:
        yield
    finally:
        with _truncation:
            _decoding[0] -= 1
            if _decoding[0] == 0:
                ImageFile.LOAD_TRUNCATED_IMAGES = _decoding[1]


def png_shortfall(path: Path) -> str | None:
    """Why the PNG's compressed pixel data holds fewer rows than its header announces, or None
    (Pillow zero-fills such rows without an error when the deflate stream ends cleanly)."""
    data, pos, header, got = path.read_bytes(), 8, None, 0
    inflate = zlib.decompressobj()
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", data[pos + 8:pos + 21])
        elif kind == b"IDAT":
            got += len(inflate.decompress(data[pos + 8:pos + 8 + length]))
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        return None
    w, h, depth, colour, _, _, interlace = header
    bits = depth * _PNG_SAMPLES.get(colour, 1)
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    sizes = [(-(-(w - x0) // dx), -(-(h - y0) // dy)) for x0, y0, dx, dy in passes]
    need = sum(ph * (1 + (pw * bits + 7) // 8) for pw, ph in sizes if pw > 0 and ph > 0)
    if got >= need:
        return None
    held = f"{got // (1 + (w * bits + 7) // 8)} of its {h} rows" if not interlace else f"{got} of the {need} bytes"
    return (f"{path.name}: its pixel data ends after {held} (the file was cut short, though its checksums pass), "
            "so the rest would be read as black; replace the file")


def _frames_note(path: Path, im: Image.Image) -> str | None:
    """A note for a JPEG with extra pictures; raises for any other file holding several images."""
    frames = getattr(im, "n_frames", 1)
    if frames <= 1:
        return None
    if im.format == "MPO":
        return "JPEG files holding extra pictures (MPO: previews, depth maps): the first, main picture used"
    kind = "pages" if im.format == "TIFF" else "frames"
    raise ImageFileError(f"{path.name}: holds {frames} {kind}, and one file is one image; save each of its {kind} as a "
                         f"file of its own (or keep only the first)")


def decode_file(path: Path) -> tuple[Image.Image, list[str]]:
    """``path`` decoded completely and turned upright (see the module docstring), detached from
    the file (its ``format`` kept), with notes; raises :class:`ImageFileError` naming the file and the fix."""
    path = Path(path)
    try:
        with truncated_files_refused(), Image.open(path) as im:
            notes = [n for n in [_frames_note(path, im)] if n]
            im.load()
            short = png_shortfall(path) if im.format == "PNG" else None
            if short:
                raise ImageFileError(short)
            upright = im.getexif().get(_ORIENTATION, 1) in range(2, 9)
            out = ImageOps.exif_transpose(im) if upright else im.copy()
            out.format = im.format  # kept: a 32-bit TIFF and a 16-bit PNG share mode "I"
            return out, notes + ([UPRIGHT_NOTE] if upright else [])
    except ImageFileError:
        raise
    except Exception as err:  # PIL raises many types for broken files
        reason = str(err).strip() or type(err).__name__
        raise ImageFileError(f"unreadable image {path.name}: it cannot be decoded ({reason}); replace or remove the file") from err


def upright_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of the picture in ``path`` upright (EXIF orientations 5-8 swap the
    sides), read from its header without decoding."""
    try:
        with Image.open(path) as im:
            (w, h), turned = im.size, im.getexif().get(_ORIENTATION, 1) in range(5, 9)
    except Exception as err:  # PIL raises many types for broken files
        raise ImageFileError(f"unreadable image {Path(path).name}: {str(err).strip() or type(err).__name__}; "
                             "replace or remove the file") from err
    return (h, w) if turned else (w, h)


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
    images, nearest for masks)."""
    w, h = im.size
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
    ``center_crop``: centred ``size x size`` crop (the image must be at least that large).
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
    data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(size, size, channels)
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
            notes.setdefault("subfolder(s) skipped (folders are not searched recursively)", []).append(p.name)
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
        report.problems.append(f"no images found in {root}; allowed extensions {', '.join(extensions)}")
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
