"""A folder of images as a DataModule: the only place pixels move from files to tensors.

Each item is one ground-truth image ``x`` ``(C, S, S)`` in ``[-1, 1]`` with its index (its
position in the sorted file list), the run's seed and its name (the file's stem). The
Lightning module draws the image's operator parameters, measurement noise and solver noise
from ``(seed, index)``, so an image's result does not depend on batch layout.

``fit`` visits every batch ``num_iterates`` times in a row (one RED-diff iterate per
training step); ``predict`` visits every batch once (the whole solve in one step).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
RESIZE_MODES = ("center_crop_resize", "resize", "center_crop")


def load_image(path: Path, size: int, channels: int = 3, mode: str = "center_crop_resize") -> torch.Tensor:
    """Read ``path`` as ``(channels, size, size)`` float32 in ``[-1, 1]``.

    ``center_crop_resize``: largest centred square, then resize (bicubic, antialiased);
    ``resize``: resize the whole image to a square (aspect ratio not kept);
    ``center_crop``: centred ``size x size`` crop (the image must be at least that large).
    """
    try:
        with Image.open(path) as im:
            im = im.convert("RGB" if channels == 3 else "L")
    except Exception as err:  # PIL raises several types for broken files
        raise ValueError(f"cannot read image {path}: {err}; remove or replace the file") from err
    w, h = im.size
    if mode == "center_crop_resize":
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        im = im.crop((left, top, left + s, top + s)).resize((size, size), Image.Resampling.BICUBIC)
    elif mode == "resize":
        im = im.resize((size, size), Image.Resampling.BICUBIC)
    elif mode == "center_crop":
        if min(w, h) < size:
            raise ValueError(f"image {path} is {w}x{h}, smaller than the crop size {size}; use resize='center_crop_resize'")
        left, top = (w - size) // 2, (h - size) // 2
        im = im.crop((left, top, left + size, top + size))
    else:
        raise ValueError(f"unknown resize mode {mode!r}; allowed: {RESIZE_MODES}")
    data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(size, size, channels)
    return data.permute(2, 0, 1).float().div(127.5).sub(1.0)


def list_images(root: Path, skip_non_images: bool = False) -> list[Path]:
    """Sorted image files directly under ``root``; checks that each one decodes.

    Raises a clear error for a missing folder, an empty one, a file that is not an image
    (unless ``skip_non_images``) and an image file that does not decode.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist; set data.root to a folder of png/jpg images")
    files = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    others = [p.name for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
    if others and not skip_non_images:
        raise ValueError(
            f"{root} holds files that are not images: {others[:5]}; allowed extensions {IMAGE_EXTENSIONS}. "
            "Remove them or set data.skip_non_images=true"
        )
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    broken = []
    for p in images:
        try:
            with Image.open(p) as im:
                im.verify()
        except Exception:
            broken.append(p.name)
    if broken:
        raise ValueError(f"unreadable image files in {root}: {broken[:5]}; remove or replace them")
    if not images:
        raise ValueError(f"no images found in {root}; allowed extensions {IMAGE_EXTENSIONS}")
    stems = [p.stem for p in images]
    if len(set(stems)) != len(stems):
        dup = sorted({s for s in stems if stems.count(s) > 1})
        raise ValueError(f"several files share the name stem(s) {dup[:5]} in {root}; outputs are named by stem, rename them")
    return images


class ImageFolderDataset(Dataset):
    """Items ``{"x", "index", "seed", "name", "iterate"}``; keys may be an index or an
    ``(index, iterate)`` pair (fit's repeated batches)."""

    def __init__(self, files: Sequence[Path], image_size: int, channels: int, seed: int, resize: str) -> None:
        self.files, self.image_size, self.channels, self.seed, self.resize = list(files), image_size, channels, seed, resize
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, iterate = key if isinstance(key, tuple) else (key, 0)
        x = self._cache.get(index)
        if x is None:
            x = load_image(self.files[index], self.image_size, self.channels, self.resize)
            if len(self._cache) > 64:  # fit revisits a batch many times in a row
                self._cache.clear()
            self._cache[index] = x
        return {"x": x, "index": index, "seed": self.seed, "name": self.files[index].stem, "iterate": iterate}


class RepeatedBatchSampler(Sampler):
    """Yields each batch of consecutive indices ``repeats`` times, as ``(index, iterate)`` keys."""

    def __init__(self, indices: Sequence[int], batch_size: int, repeats: int) -> None:
        self.indices, self.batch_size, self.repeats = list(indices), batch_size, repeats

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size) * self.repeats

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for start in range(0, len(self.indices), self.batch_size):
            chunk = self.indices[start : start + self.batch_size]
            for k in range(self.repeats):
                yield [(i, k) for i in chunk]


class ImageFolderData(L.LightningDataModule):
    """Images of one folder, to be restored.

    Args:
        root: folder of png/jpg/... images (non-recursive).
        image_size: side of the square images the prior expects (e.g. 64 for the embedded
            prior, 256 for the ADM ImageNet/FFHQ models).
        resize: how an image becomes ``image_size`` square: center_crop_resize, resize,
            center_crop.
        channels: 3 (RGB) or 1 (grayscale).
        batch_size: images restored together (results do not depend on it).
        seed: run seed; image ``i`` draws all its randomness from ``(seed, i)``.
        limit: restore only the first ``limit`` images (sorted by name).
        skip_non_images: ignore non-image files instead of failing.
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        *,
        root: str,
        image_size: int = 64,
        resize: Literal["center_crop_resize", "resize", "center_crop"] = "center_crop_resize",
        channels: int = 3,
        batch_size: int = 4,
        seed: int = 0,
        limit: int | None = None,
        skip_non_images: bool = False,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if resize not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode {resize!r}; allowed: {RESIZE_MODES}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if image_size < 8 or batch_size < 1 or seed < 0 or (limit is not None and limit < 1):
            raise ValueError("need image_size >= 8, batch_size >= 1, seed >= 0 and limit >= 1 (or null)")
        self.root, self.image_size, self.resize, self.channels = Path(root), image_size, resize, channels
        self.batch_size, self.seed, self.limit = batch_size, seed, limit
        self.skip_non_images, self.num_workers = skip_non_images, num_workers
        self.dataset: ImageFolderDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            files = list_images(self.root, self.skip_non_images)[: self.limit]
            self.dataset = ImageFolderDataset(files, self.image_size, self.channels, self.seed, self.resize)

    def pending_indices(self) -> list[int]:
        """Indices still to restore: all, minus those the module reports finished."""
        assert self.dataset is not None
        done = set()
        module = self.trainer.lightning_module if self.trainer is not None else None
        if module is not None and hasattr(module, "finished_names"):
            done = module.finished_names([f.stem for f in self.dataset.files])
        return [i for i, f in enumerate(self.dataset.files) if f.stem not in done]

    def train_dataloader(self) -> DataLoader:
        """Each batch repeated once per solver iterate (asked from the module)."""
        self.setup("fit")
        repeats = int(getattr(self.trainer.lightning_module, "num_iterates", 1)) if self.trainer else 1
        sampler = RepeatedBatchSampler(self.pending_indices(), self.batch_size, repeats)
        return DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.num_workers)

    def predict_dataloader(self) -> DataLoader:
        self.setup("predict")
        subset = torch.utils.data.Subset(self.dataset, self.pending_indices())
        return DataLoader(subset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)
