"""Decoding one image file completely, upright, as one image: what every reader of the project
uses (images, ground truth, measurements, masks, kernel images, ``evaluate``).

:func:`decode_file`:

* decodes the whole file with Pillow's ``LOAD_TRUNCATED_IMAGES`` off (a truncated file
  raises instead of being padded, even where other code turned the setting on), and checks a
  PNG's pixel data for every row its header announces (a PNG cut at a row boundary, checksums
  intact, decodes without an error in Pillow and would read its missing rows as black);
* turns the picture upright by its EXIF orientation (``ImageOps.exif_transpose``, with a
  note), so sizes are always the upright ones (:func:`upright_size` reads them from the header);
* refuses a file holding several images (a multi-page TIFF, an animated PNG or WebP: one file
  is one image); a JPEG carrying extra pictures (MPO: previews, depth maps) uses its first,
  main picture, with a note.
"""
from __future__ import annotations

import struct
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, ImageFile, ImageOps

UPRIGHT_NOTE = "turned upright by their EXIF orientation tag (sizes are the upright ones)"
_ORIENTATION = 0x0112
#: PNG colour type -> samples per pixel; Adam7 passes as (x0, y0, dx, dy)
_PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


class ImageFileError(ValueError):
    """A file that cannot be used as an image (the message names it and the fix)."""


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


def _inflated_size(inflate, compressed: bytes, step: int = 1 << 20) -> int:
    """Bytes ``compressed`` inflates to, ``step`` at a time (a single IDAT chunk of a large image
    is never held inflated at once)."""
    total = 0
    while compressed and not inflate.eof:
        total += len(inflate.decompress(compressed, step))
        compressed = inflate.unconsumed_tail
    return total


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
            got += _inflated_size(inflate, data[pos + 8:pos + 8 + length])
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
        return "with extra pictures (MPO JPEG: previews, depth maps): the first, main picture used"
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
