"""Features of a folder of images, computed once and cached on disk.

The cache key is the sha256 of: every image file's name, size in bytes and modification time
(``st_mtime_ns``) — not the pixel bytes, so keying costs one ``stat`` per file and any
rewrite, touch, addition, removal or rename invalidates it — plus the loading settings
(image size, resize mode, channels) and the extractor's ``fingerprint`` (for
:class:`~lightning_redd.metrics.inception.InceptionFeatures`, the sha256 of its weight file).

Cache files are ``<cache_dir>/<kind>-<key[:24]>.safetensors`` holding ``features (N, D)``
float32 in sorted file order (names in the metadata). ``cache_dir`` defaults to a hidden
folder next to the image folder, ``<parent>/.<folder name>.metric_cache/``. Old entries are
not deleted. A cache that cannot be written (read-only place) only warns.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from lightning_redd.data.images import IMAGE_EXTENSIONS, load_image
from lightning_redd.runs.fsio import atomic_write


def image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder`` (by extension, hidden files skipped), sorted by name.

    Only lists (no decoding, so a cache hit stays cheap); unreadable files fail when loaded.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist; pass a folder of png/jpg images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"no images in {folder}; allowed extensions {IMAGE_EXTENSIONS}")
    stems = [p.stem for p in files]
    if len(set(stems)) != len(stems):
        dup = sorted({s for s in stems if stems.count(s) > 1})
        raise ValueError(f"several files in {folder} share the name stem(s) {dup[:5]}; rename them (images are matched by stem)")
    return files


def default_cache_dir(folder: Path) -> Path:
    """``<parent>/.<folder name>.metric_cache``."""
    folder = Path(folder).resolve()
    return folder.parent / f".{folder.name}.metric_cache"


def folder_key(files: list[Path], *, settings: dict, fingerprint: str) -> str:
    """sha256 (hex) of the files' (name, size, mtime_ns), the loading settings and the extractor."""
    entries = []
    for p in files:
        st = p.stat()
        entries.append([p.name, st.st_size, st.st_mtime_ns])
    blob = json.dumps({"files": entries, "settings": settings, "extractor": fingerprint}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _read_cache(path: Path, key: str) -> torch.Tensor | None:
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            if (fh.metadata() or {}).get("key") != key:
                return None
            return fh.get_tensor("features")
    except Exception as err:  # a corrupt cache file is recomputed, not fatal
        warnings.warn(f"ignoring unreadable feature cache {path}: {err}", stacklevel=3)
        return None


def _write_cache(path: Path, features: torch.Tensor, key: str, names: list[str]) -> None:
    from safetensors.torch import save

    data = save({"features": features.contiguous().cpu()}, metadata={"key": key, "names": json.dumps(names)})
    try:
        atomic_write(path, lambda fh: fh.write(data), durable=False)
    except OSError as err:
        warnings.warn(f"cannot write the feature cache {path} ({err}); pass cache_dir= a writable folder", stacklevel=3)


def folder_features(
    folder: str | os.PathLike,
    extractor: Callable[[torch.Tensor], torch.Tensor],
    *,
    image_size: int,
    resize: str = "center_crop_resize",
    channels: int = 3,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    cache_dir: str | os.PathLike | None = None,
) -> torch.Tensor:
    """``(N, D)`` features of the images directly in ``folder``, sorted by file name.

    Images load as the project loads them (``lightning_redd.data.images.load_image``: ``(C,
    image_size, image_size)`` in ``[-1, 1]``); other files are skipped (:func:`image_files`). The
    extractor maps ``(B, C, S, S)`` in ``[-1, 1]`` to ``(B, D)`` and has a ``fingerprint``
    string (and optionally ``kind``, used in the cache file name). Returns float32 on the CPU;
    a second call with unchanged files returns the cached tensor without running ``extractor``.
    """
    folder = Path(folder)
    fingerprint = getattr(extractor, "fingerprint", None)
    if not isinstance(fingerprint, str):
        raise TypeError("folder_features needs an extractor with a string `fingerprint` attribute (its weights' identity)")
    files = image_files(folder)
    settings = {"image_size": image_size, "resize": resize, "channels": channels}
    key = folder_key(files, settings=settings, fingerprint=fingerprint)
    kind = getattr(extractor, "kind", "features")
    path = Path(cache_dir or default_cache_dir(folder)) / f"{kind}-{key[:24]}.safetensors"
    cached = _read_cache(path, key)
    if cached is not None:
        return cached
    blocks = []
    for start in range(0, len(files), batch_size):
        batch = torch.stack([load_image(p, image_size, channels, resize) for p in files[start:start + batch_size]])
        blocks.append(extractor(batch.to(device)).float().cpu())
    features = torch.cat(blocks)
    _write_cache(path, features, key, [p.name for p in files])
    return features
