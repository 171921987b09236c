"""A folder of images as a DataModule: the only place pixels move from files to tensors.

Each batch is a dict: ``x`` ``(B, C, S, S)`` in ``[-1, 1]`` (``resize: none``: ``(B, C, H, W)``,
the images' own size, one size per batch), ``index`` (the images' positions in the sorted file
list), ``seed`` (the run's seed), ``name`` (the files' stems), ``iterate`` and ``pad`` (``fit``'s
bookkeeping), ``keep`` (``(B,)`` bool: the members to write; a resumed batch solves its
finished members again but does not write them), ``sample`` and ``samples`` (which of its image's
``samples_per_image`` posterior samples a member is, and how many there are). The Lightning
module draws each image's operator parameters and measurement noise from ``(seed, index)`` and
its solver noise from ``(seed, index, sample)``, so an image's (a sample's) result does not
depend on batch layout, process count or resume.

Before any compute (``setup``) every file is decoded and the output folder is checked
(writable, apart from the inputs, not holding a foreign ``metrics.csv``); all problems are
reported in one error. Images already finished in the output folder are not written again
(a batch of only finished images is skipped, a partly finished one solved whole), so
re-running a command finishes an interrupted run byte for byte; under several processes each
rank takes its own disjoint share (:mod:`lightning_redd.data.sampling`).

:class:`FolderData` holds what every folder of inputs shares (sharding, resume, the checks,
the operator's parameter files); :class:`ImageFolderData` takes clean images, degraded
synthetically by the module, and :class:`lightning_redd.data.measured.MeasuredFolderData`
takes measurements ``y``. Neither asks the LightningModule anything: the iterate count
(``repeats``), the operator's file parameters (``file_params``) and its ``output_shape`` are
constructor arguments (the CLI links them from the model).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from lightning_redd import resources
from lightning_redd.data.images import RESIZE_MODES, check_folder, format_problems, list_images, load_image  # noqa: F401 (re-exported)
from lightning_redd.runs.errors import FolderProblem
from lightning_redd.runs.folder import RunFolder
from lightning_redd.data.params import ParamFiles
from lightning_redd.data.dataset import ImageFolderDataset  # noqa: F401 (re-exported)
from lightning_redd.data.sampling import ShardedBatches


class InputProblems(ValueError):
    """Every problem found with a run's inputs and output folder, before any compute."""


class InputFolderNotFound(InputProblems, FileNotFoundError):
    """:class:`InputProblems` where the input folder itself is missing."""


class FolderData(L.LightningDataModule):
    """A folder of inputs restored image by image (the base of the two data modules).

    Args:
        root: folder of input files (non-recursive); ``package:NAME`` is a bundled folder (see
            :mod:`lightning_redd.resources`).
        image_size: side of the square images the prior expects (e.g. 64 for the embedded
            prior, 256 for the ADM ImageNet/FFHQ models).
        resize: how an image (or ground truth) becomes ``image_size`` square:
            center_crop_resize, resize, center_crop; or ``none``: kept at its own ``H x W``
            (the module evaluates the prior at that size by tiles, :mod:`lightning_redd.priors.tiled`;
            images of several sizes are batched by size, :mod:`lightning_redd.data.sampling`).
        channels: 3 (RGB) or 1 (grayscale).
        batch_size: images (with ``samples_per_image`` > 1: samples) restored together per process
            (results do not depend on it).
        seed: run seed; image ``i`` draws all its randomness from ``(seed, i)`` (its sample ``k`` > 0
            its solver noise from ``(seed, i, k)``).
        limit: restore only the first ``limit`` images (sorted by name).
        skip_non_images: ignore non-image files instead of failing.
        num_workers: DataLoader workers.
        output_dir: the run's output folder, whose finished images are skipped (default:
            ``trainer.default_root_dir``, where the writer writes; the CLI links both to it).
        repeats: ``fit`` only: training steps per batch, i.e. the solver's ``num_iterates``
            (the CLI links it from the model; in Python pass ``module.num_iterates``).
        param_folders: ``{name: folder}`` of the operator's per-image parameter files, e.g.
            ``{mask: package:masks}`` for ``Inpainting(mask="file")`` or ``{kernel: DIR}`` for
            ``KernelBlur``: ``<folder>/<image stem>.<ext>``, read as the operator declares.
        file_params: the operator's declaration of those files (``operator.file_params()``;
            the CLI links it from the model).
        output_shape: the operator's ``output_shape`` (``(C, H, W)`` -> one measurement's shape;
            the CLI links it from the model); measured data with ``resize: none`` finds each
            measurement's image size with it (unused otherwise).
        samples_per_image: posterior samples per image (default 1): each image is restored this
            many times from one measurement, sample ``k`` with solver noise from ``(seed, index,
            k)`` (sample 0 is the one-sample result); the writer saves every sample, their
            pixelwise mean (``restored/``, scored) and standard deviation (``std/``).
    """

    def __init__(
        self,
        *,
        root: str,
        image_size: int = 64,
        resize: Literal["center_crop_resize", "resize", "center_crop", "none"] = "center_crop_resize",
        channels: int = 3,
        batch_size: int = 4,
        seed: int = 0,
        limit: int | None = None,
        skip_non_images: bool = False,
        num_workers: int = 0,
        output_dir: str | None = None,
        repeats: int | None = None,
        param_folders: dict[str, str] | None = None,
        file_params: Mapping[str, Any] | None = None,
        output_shape: Callable[[Sequence[int]], Sequence[int]] | None = None,
        samples_per_image: int = 1,
    ) -> None:
        super().__init__()
        if resize not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode {resize!r}; allowed: {RESIZE_MODES}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if image_size < 8 or batch_size < 1 or seed < 0 or (limit is not None and limit < 1):
            raise ValueError("need image_size >= 8, batch_size >= 1, seed >= 0 and limit >= 1 (or null)")
        if isinstance(samples_per_image, bool) or int(samples_per_image) != samples_per_image or samples_per_image < 1:
            raise ValueError(f"data.samples_per_image must be an integer >= 1 (posterior samples per image), got "
                             f"{samples_per_image!r}; set it to 1 for one restoration per image (the default)")
        if repeats is not None and repeats < 1:
            raise ValueError(f"repeats must be >= 1 (the solver's iterates), got {repeats}")
        if param_folders and file_params is None:
            raise ValueError("data.param_folders needs the operator's declaration of its files: pass "
                             "file_params=operator.file_params() (the CLI links it from model.operator)")
        self.root, self.image_size, self.resize, self.channels = resources.resolve_data(root), image_size, resize, channels
        self.batch_size, self.seed, self.limit = batch_size, seed, limit
        self.skip_non_images, self.num_workers = skip_non_images, num_workers
        self.output_dir, self.repeats, self.samples_per_image = output_dir, repeats, int(samples_per_image)
        folders = {k: resources.resolve_data(v) for k, v in (param_folders or {}).items()}
        self.params = ParamFiles(file_params, folders)
        self.dataset: ImageFolderDataset | None = None
        self.output_shape = output_shape

    # ------------------------------------------------------------------ checks
    @property
    def run_folder(self) -> RunFolder:
        out = self.output_dir if self.output_dir is not None else (self.trainer.default_root_dir if self.trainer else None)
        if out is None:
            raise RuntimeError(f"{type(self).__name__} needs output_dir (or an attached Trainer's default_root_dir)")
        return RunFolder(out)

    def input_folders(self) -> list[Path]:
        """Folders this DataModule reads (the output folder must stay apart from them)."""
        return [self.root, *self.params.input_folders()]

    def check(self) -> ImageFolderDataset:  # pragma: no cover - abstract
        """Decode every input file and check the output folder; raise :class:`InputProblems`
        listing every problem, else return the dataset (and log conversion notes)."""
        raise NotImplementedError

    def raise_problems(self, problems: list[str]) -> None:
        """Raise every problem in one message: the inputs' titled by ``data.root``, the output
        folder's (:class:`~lightning_redd.runs.errors.FolderProblem`) by the output folder."""
        if problems:
            inputs = [p for p in problems if not isinstance(p, FolderProblem)]
            folder = [p for p in problems if isinstance(p, FolderProblem)]
            blocks = [format_problems(f"data.root {self.root}", inputs)] if inputs else []
            if folder:
                blocks.append(format_problems(f"output folder {self.run_folder.root} (trainer.default_root_dir)", folder))
            error = InputProblems if self.root.is_dir() else InputFolderNotFound
            raise error("\n".join(blocks))

    @staticmethod
    def log_notes(notes: Sequence[str]) -> None:
        for note in notes:
            rank_zero_info(f"lightning-redd: {note}")

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            self.dataset = self.check()
            self.dataset.samples = self.samples_per_image

    #: batch entries the module reads on the host every step: kept on the CPU (no device sync per iterate)
    HOST_KEYS = ("pad", "iterate", "index", "seed", "name", "shape", "keep", "sample", "samples")

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        """Only the tensors the solve uses go to the device; the bookkeeping stays on the host."""
        if not isinstance(batch, dict):
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        host = {k: v for k, v in batch.items() if k in self.HOST_KEYS}
        moved = super().transfer_batch_to_device({k: v for k, v in batch.items() if k not in host}, device, dataloader_idx)
        return {**moved, **host}

    # ------------------------------------------------------------------ what to restore
    def finished_indices(self) -> set[int]:
        """Indices already finished in the output folder (read once on rank 0 and broadcast,
        so every rank forms the same batches)."""
        assert self.dataset is not None
        trainer = self.trainer
        done: set[str] = set()
        if trainer is None or trainer.is_global_zero:
            done = self.run_folder.finished([f.stem for f in self.dataset.files])
        if trainer is not None and trainer.world_size > 1:
            done = trainer.strategy.broadcast(done, src=0)
        return {i for i, f in enumerate(self.dataset.files) if f.stem in done}

    def pending_indices(self) -> list[int]:
        """Indices not yet finished in the output folder."""
        done = self.finished_indices()
        return [i for i in range(len(self.dataset.files)) if i not in done]

    def _sampler(self, repeats: int, pad: bool) -> ShardedBatches:
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        return ShardedBatches(self.dataset, range(len(self.dataset.files)), batch_size=self.batch_size, repeats=repeats,
                              num_replicas=world, rank=rank, pad=pad, done=self.finished_indices(),
                              sizes=self.dataset.size_keys(), samples=self.samples_per_image)

    def _loader(self, sampler: ShardedBatches) -> DataLoader:
        return DataLoader(self.dataset, batch_size=None, sampler=sampler, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        """Each batch repeated once per solver iterate; padded so every rank takes as many steps."""
        if self.repeats is None:
            raise ValueError(f"fit needs {type(self).__name__}(repeats=<the solver's num_iterates>): one training step "
                             "per iterate (the CLI links data.repeats to the model; in Python pass module.num_iterates)")
        self.setup("fit")
        return self._loader(self._sampler(self.repeats, pad=True))

    def predict_dataloader(self) -> DataLoader:
        """Each batch once; padded like ``fit``'s so every rank starts as many batches (the
        ranks agree on stopping at each batch start; a rank with no pending image takes part
        through padding batches, which the module skips)."""
        self.setup("predict")
        return self._loader(self._sampler(1, pad=True))


class ImageFolderData(FolderData):
    """Clean images of one folder, each degraded synthetically by the module's operator and
    restored (see :class:`FolderData` for the arguments): png/jpg/... files, centre-cropped and
    resized to ``image_size`` (``resize``), or at their own size (``resize: none``); parameter
    files (e.g. masks) of an image's source size get the same crop and resize (nearest
    neighbour), or are of the size the solver sees."""

    def check(self) -> ImageFolderDataset:
        size = 0 if self.resize == "none" else self.image_size  # no "upscaled" note: nothing is resized
        report = check_folder(self.root, image_size=size, skip_non_images=self.skip_non_images, limit=self.limit)
        dataset = ImageFolderDataset(report.files, self.image_size, self.channels, self.seed, self.resize,
                                     self.params, report.sizes)
        stems = [f.stem for f in report.files]
        fits = {f.stem: dataset.fit(i) for i, f in enumerate(report.files)}
        sizes = {f.stem: dataset.image_hw(i) for i, f in enumerate(report.files)}
        problems = report.problems + self.params.problems(stems, sizes, fits)
        self.raise_problems(problems + self.run_folder.problems(self.input_folders()))
        self.log_notes(report.notes + self.params.notes(stems))
        return dataset
