"""A folder of images as a DataModule: the only place pixels move from files to tensors.

Each batch is a dict: ``x`` ``(B, C, S, S)`` in ``[-1, 1]``, ``index`` (the images' positions
in the sorted file list), ``seed`` (the run's seed), ``name`` (the files' stems), ``iterate``
and ``pad`` (``fit``'s bookkeeping). The Lightning module draws each image's operator
parameters, measurement noise and solver noise from ``(seed, index)``, so an image's result
does not depend on batch layout, process count or resume.

Before any compute (``setup``) every file is decoded and the output folder is checked
(writable, apart from the inputs, not holding a foreign ``metrics.csv``); all problems are
reported in one error. Images already finished in the output folder are left out, so
re-running a command finishes an interrupted run; under several processes each rank takes
its own disjoint share (:mod:`lightning_redd.data.sampling`).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from PIL import Image
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from lightning_redd import resources
from lightning_redd.data.images import RESIZE_MODES, check_folder, format_problems, list_images, load_image  # noqa: F401 (re-exported)
from lightning_redd.data.images import crop_resize
from lightning_redd.runs.folder import RunFolder
from lightning_redd.data.params import ParamFiles, stack
from lightning_redd.data.sampling import Key, ShardedBatches


class InputProblems(ValueError):
    """Every problem found with a run's inputs and output folder, before any compute."""


class InputFolderNotFound(InputProblems, FileNotFoundError):
    """:class:`InputProblems` where the input folder itself is missing."""


class ImageFolderDataset(Dataset):
    """Batches of images keyed by lists of ``(index, iterate, pad)`` (see :class:`ShardedBatches`)."""

    def __init__(self, files: Sequence[Path], image_size: int, channels: int, seed: int, resize: str,
                 params: ParamFiles | None = None, sizes: dict[Path, tuple[int, int]] | None = None) -> None:
        self.files, self.image_size, self.channels, self.seed, self.resize = list(files), image_size, channels, seed, resize
        self.params, self.sizes = params or ParamFiles(), sizes or {}
        self._last: tuple[tuple[int, ...], dict] | None = None  # fit revisits a batch many times in a row

    def __len__(self) -> int:
        return len(self.files)

    def transform(self, i: int) -> tuple:
        """``(transform, source size (h, w))`` that turns image ``i``'s file into the square the
        solver sees: a parameter file of the source's size gets the same crop (nearest)."""
        path = self.files[i]
        w, h = self.sizes.get(path, (0, 0))
        return (lambda im: crop_resize(im, self.image_size, self.resize, path, Image.Resampling.NEAREST)), (h, w)

    def tensors(self, i: int) -> dict:
        """Image ``i``'s tensors: ``x`` and, with parameter files, its ``params``."""
        out = {"x": load_image(self.files[i], self.image_size, self.channels, self.resize)}
        if self.params:
            out["params"] = self.params.read(self.files[i].stem, self.image_size, *self.transform(i))
        return out

    def batch_tensors(self, indices: tuple[int, ...]) -> dict:
        if self._last is None or self._last[0] != indices:
            items = [self.tensors(i) for i in indices]
            batch = {k: torch.stack([it[k] for it in items]) for k in items[0] if k != "params"}
            if "params" in items[0]:
                batch["params"] = stack([it["params"] for it in items])
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
        }


class ImageFolderData(L.LightningDataModule):
    """Images of one folder, to be restored.

    Args:
        root: folder of png/jpg/... images (non-recursive); ``package:demo`` is the bundled demo
            folder (see :mod:`lightning_redd.resources`).
        image_size: side of the square images the prior expects (e.g. 64 for the embedded
            prior, 256 for the ADM ImageNet/FFHQ models).
        resize: how an image becomes ``image_size`` square: center_crop_resize, resize,
            center_crop.
        channels: 3 (RGB) or 1 (grayscale).
        batch_size: images restored together per process (results do not depend on it).
        seed: run seed; image ``i`` draws all its randomness from ``(seed, i)``.
        limit: restore only the first ``limit`` images (sorted by name).
        skip_non_images: ignore non-image files instead of failing.
        num_workers: DataLoader workers.
        output_dir: the run's output folder, whose finished images are skipped (default:
            ``trainer.default_root_dir``, where the writer writes; the CLI links the two).
        repeats: ``fit`` only: training steps per batch, i.e. the solver's ``num_iterates``
            (the CLI links it; ``None``: ask the attached module).
        masks: folder of per-image inpainting masks ``<image stem>.png`` (for
            ``Inpainting(mask="file")``): white = observed (see ``mask_missing``); grayscale =
            one mask for all channels, RGB = one per channel; of the image file's size (cropped
            and resized with it, nearest neighbour) or of ``image_size``. ``package:masks``: the
            demo's stroke masks.
        kernels: folder of per-image blur kernels ``<image stem>.npy`` (``k x k`` floats summing
            to 1) or grayscale ``.png`` (normalised to sum 1), ``k`` odd (for ``KernelBlur``).
        mask_missing: the mask colour of missing pixels, ``black`` or ``white``.
        measured: ``root`` holds measurements ``y`` to restore, not clean images (see
            :mod:`lightning_redd.data.measured`: PNG/JPEG 8- or 16-bit or ``.npy``, one size,
            e.g. ``image_size / factor`` for block SR); masks and kernels are then of
            ``image_size``; without ``ground_truth`` ``metrics.csv`` holds the data
            consistency (``residual``, ``sigma_y_implied``, ``sigma_y``).
        ground_truth: with ``measured``, an optional folder of the clean images
            ``<stem>.png`` for scores (read like the images of a synthetic run).
        jpeg_tables: with ``measured``, give the operator each JPEG file's own quantisation
            tables (``params["jpeg_luma"]``/``["jpeg_chroma"]``).
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
        output_dir: str | None = None,
        repeats: int | None = None,
        masks: str | None = None,
        kernels: str | None = None,
        mask_missing: Literal["black", "white"] = "black",
        measured: bool = False,
        ground_truth: str | None = None,
        jpeg_tables: bool = True,
    ) -> None:
        super().__init__()
        if resize not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode {resize!r}; allowed: {RESIZE_MODES}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if image_size < 8 or batch_size < 1 or seed < 0 or (limit is not None and limit < 1):
            raise ValueError("need image_size >= 8, batch_size >= 1, seed >= 0 and limit >= 1 (or null)")
        if repeats is not None and repeats < 1:
            raise ValueError(f"repeats must be >= 1 (the solver's iterates), got {repeats}")
        self.root, self.image_size, self.resize, self.channels = resources.resolve_data(root), image_size, resize, channels
        self.batch_size, self.seed, self.limit = batch_size, seed, limit
        self.skip_non_images, self.num_workers = skip_non_images, num_workers
        self.output_dir, self.repeats = output_dir, repeats
        self.params = ParamFiles(None if masks is None else resources.resolve_data(masks),
                                 None if kernels is None else resources.resolve_data(kernels), mask_missing)
        if ground_truth is not None and not measured:
            raise ValueError("data.ground_truth is for measured data (data.measured: true); a synthetic run's images are "
                             "their own ground truth")
        self.measured, self.jpeg_tables = bool(measured), bool(jpeg_tables)
        self.ground_truth = None if ground_truth is None else resources.resolve_data(ground_truth)
        self.dataset: ImageFolderDataset | None = None

    # ------------------------------------------------------------------ checks
    @property
    def run_folder(self) -> RunFolder:
        out = self.output_dir if self.output_dir is not None else (self.trainer.default_root_dir if self.trainer else None)
        if out is None:
            raise RuntimeError("ImageFolderData needs output_dir (or an attached Trainer's default_root_dir)")
        return RunFolder(out)

    def input_folders(self) -> list[Path]:
        """Folders this DataModule reads (the output folder must stay apart from them)."""
        return [self.root, *self.params.folders(), *([self.ground_truth] if self.ground_truth is not None else [])]

    def check(self) -> ImageFolderDataset:
        """Decode every input file (images, masks, kernels) and check the output folder; raise
        :class:`InputProblems` listing every problem, else return the dataset (and log
        conversion notes)."""
        if self.measured:
            from lightning_redd.data.measured import check_measured

            return check_measured(self)
        report = check_folder(self.root, image_size=self.image_size, skip_non_images=self.skip_non_images, limit=self.limit)
        dataset = ImageFolderDataset(report.files, self.image_size, self.channels, self.seed, self.resize,
                                     self.params, report.sizes)
        problems = report.problems + self.params.problems(
            [f.stem for f in report.files], self.image_size, {f.stem: dataset.transform(i) for i, f in enumerate(report.files)})
        self.raise_problems(problems + self.run_folder.problems(self.input_folders()))
        for note in report.notes:
            rank_zero_info(f"lightning-redd: {note}")
        return dataset

    def raise_problems(self, problems: list[str]) -> None:
        if problems:
            error = InputProblems if self.root.is_dir() else InputFolderNotFound
            raise error(format_problems(f"data.root {self.root}", problems))

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            self.dataset = self.check()

    #: batch entries the module reads on the host every step: kept on the CPU (no device sync per iterate)
    HOST_KEYS = ("pad", "iterate", "index", "seed", "name", "shape")

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        """Only the tensors the solve uses go to the device; the bookkeeping stays on the host."""
        if not isinstance(batch, dict):
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        host = {k: v for k, v in batch.items() if k in self.HOST_KEYS}
        moved = super().transfer_batch_to_device({k: v for k, v in batch.items() if k not in host}, device, dataloader_idx)
        return {**moved, **host}

    # ------------------------------------------------------------------ what to restore
    def pending_indices(self) -> list[int]:
        """Indices not yet finished in the output folder (read once on rank 0 and broadcast,
        so every rank shards the same list)."""
        assert self.dataset is not None
        trainer = self.trainer
        done: set[str] = set()
        if trainer is None or trainer.is_global_zero:
            done = self.run_folder.finished([f.stem for f in self.dataset.files])
        if trainer is not None and trainer.world_size > 1:
            done = trainer.strategy.broadcast(done, src=0)
        return [i for i, f in enumerate(self.dataset.files) if f.stem not in done]

    def _sampler(self, repeats: int, pad: bool) -> ShardedBatches:
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        return ShardedBatches(self.dataset, self.pending_indices(), batch_size=self.batch_size, repeats=repeats,
                              num_replicas=world, rank=rank, pad=pad)

    def _loader(self, sampler: ShardedBatches) -> DataLoader:
        return DataLoader(self.dataset, batch_size=None, sampler=sampler, num_workers=self.num_workers)

    def fit_repeats(self) -> int:
        if self.repeats is not None:
            return self.repeats
        module = self.trainer.lightning_module if self.trainer is not None else None
        if module is None or not hasattr(module, "num_iterates"):
            raise RuntimeError("fit needs data.repeats = the solver's num_iterates (the CLI links them)")
        return int(module.num_iterates)

    def train_dataloader(self) -> DataLoader:
        """Each batch repeated once per solver iterate; padded so every rank takes as many steps."""
        self.setup("fit")
        return self._loader(self._sampler(self.fit_repeats(), pad=True))

    def predict_dataloader(self) -> DataLoader:
        self.setup("predict")
        return self._loader(self._sampler(1, pad=False))
