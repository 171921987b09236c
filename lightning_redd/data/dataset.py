"""A folder's images as a dataset of whole batches: the keys a sampler yields -> the batch dict.

:class:`ImageFolderDataset` turns a list of keys ``(index, iterate, pad, done, sample)``
(:data:`~lightning_redd.data.sampling.Key`) into one batch: the images' tensors (read once per
image, also when a batch holds several of its samples; ``fit`` revisits a batch many times in a
row, so the last one is kept) and their bookkeeping (see :mod:`lightning_redd.data.folder`).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from lightning_redd.data.images import crop_resize, load_image
from lightning_redd.data.params import ParamFiles
from lightning_redd.data.sampling import Key


class ImageFolderDataset(Dataset):
    """Batches of images keyed by lists of ``(index, iterate, pad, done, sample)`` (see :class:`ShardedBatches`)."""

    def __init__(self, files: Sequence[Path], image_size: int, channels: int, seed: int, resize: str,
                 params: ParamFiles | None = None, sizes: dict[Path, tuple[int, int]] | None = None) -> None:
        self.files, self.image_size, self.channels, self.seed, self.resize = list(files), image_size, channels, seed, resize
        self.params, self.sizes, self.samples = params or ParamFiles(), sizes or {}, 1
        self._last: tuple[tuple[int, ...], dict] | None = None  # fit revisits a batch many times in a row

    def __len__(self) -> int:
        return len(self.files)

    def fit(self, i: int) -> tuple:
        """``(fit, source size (h, w))``: the crop and resize that turn image ``i``'s file into
        the image the solver sees, for a parameter file of the source's size (nearest)."""
        path = self.files[i]
        w, h = self.sizes.get(path, (0, 0))
        return (lambda im: crop_resize(im, self.image_size, self.resize, path, Image.Resampling.NEAREST)), (h, w)

    def image_hw(self, i: int) -> tuple[int, int]:
        """``(H, W)`` of image ``i`` as the solver sees it: ``image_size`` square, or (``resize:
        none``) the file's own upright size."""
        if self.resize == "none":
            w, h = self.sizes[self.files[i]]
            return int(h), int(w)
        return self.image_size, self.image_size

    def size_keys(self) -> list[tuple[int, int]] | None:
        """Each image's ``(H, W)`` for the batch sampler (None: all one size)."""
        return [self.image_hw(i) for i in range(len(self.files))] if self.resize == "none" else None

    def read_params(self, i: int, hw: tuple[int, int]) -> dict:
        """Image ``i``'s parameter tensors at image size ``hw`` (none without parameter files)."""
        return self.params.read(self.files[i].stem, hw, *self.fit(i)) if self.params else {}

    def tensors(self, i: int) -> dict:
        """Image ``i``'s tensors: ``x`` and, with parameter files, its ``params``."""
        out = {"x": load_image(self.files[i], self.image_size, self.channels, self.resize)}
        if self.params:
            out["params"] = self.params.read(self.files[i].stem, self.image_hw(i), *self.fit(i))
        return out

    def batch_tensors(self, indices: tuple[int, ...]) -> dict:
        if self._last is None or self._last[0] != indices:
            own = {i: self.tensors(i) for i in dict.fromkeys(indices)}  # an image's samples: read once
            items = [own[i] for i in indices]
            batch = {k: torch.stack([it[k] for it in items]) for k in items[0] if k != "params"}
            if "params" in items[0]:
                batch["params"] = self.params.stack([it["params"] for it in items])
            self._last = (indices, batch)
        return self._last[1]

    def __getitem__(self, keys: Sequence[Key]) -> dict:
        indices = tuple(int(k[0]) for k in keys)
        return {
            **self.batch_tensors(indices),
            "index": torch.tensor(indices, dtype=torch.long),
            "seed": torch.full((len(keys),), self.seed, dtype=torch.long),
            "name": [self.files[i].stem for i in indices],
            "iterate": torch.tensor([int(k[1]) for k in keys], dtype=torch.long),
            "pad": torch.tensor([bool(k[2]) for k in keys], dtype=torch.bool),
            "keep": torch.tensor([not (len(k) > 3 and k[3]) for k in keys], dtype=torch.bool),
            "sample": torch.tensor([int(k[4]) if len(k) > 4 else 0 for k in keys], dtype=torch.long),
            "samples": torch.full((len(keys),), self.samples, dtype=torch.long),
        }
