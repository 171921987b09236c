"""Measured data: restore the user's own degraded images ``y`` (no clean image needed).

One file, over 300 lines: reading, writing and exporting measurements share one file format
(PNG, or ``.npy`` in a checked range), which the folder data checks.

:class:`MeasuredFolderData`: a folder of measurements, matched by name stem to an optional
folder of ground truth (for scores) and to the folders of the operator's parameter files
(``data.param_folders``: masks for inpainting, kernels for deblurring). Measurements are read
at their own size (block SR: ``image_size / factor``; the module checks the operator against
it before any compute):

* PNG/JPEG/... 8-bit or 16-bit: pixel values in ``[0, 1]`` of full scale, mapped to the
  operator's ``[-1, 1]``; grayscale files are replicated to 3 channels (and RGB converted to
  gray for ``channels: 1``);
* ``.npy``: ``(H, W)`` or ``(H, W, C)`` floats in the same ``[0, 1]`` units, not clipped (noisy
  measurements keep their values outside ``[0, 1]``); float64 round-trips ``y`` exactly. Values
  must lie in ``NPY_RANGE`` = ``[-1, 2]`` (``[0, 1]`` plus a full scale of noise either side): an
  array beyond it is refused as saved in other units (0-255 or 0-65535), naming the divisor;
* JPEG files for the JPEG operator are taken as they are: their quantisation tables are read
  from the file and given to the operator (``JPEG(file_tables=True)``), so the quality setting
  need not be known.

Every file is decoded and checked in ``setup``, and every problem (a missing mask or ground
truth, a mask or kernel that does not fit, mixed measurement sizes, a measurement size the
operator cannot produce from the prior's images) is reported in one error before any compute.

``python -m lightning_redd.data.measured export-samples OUT`` writes the bundled sample
folders (``data/measured``) from the demo images.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from lightning_redd import resources
from lightning_redd.data.folder import FolderData, ImageFolderDataset
from lightning_redd.data.images import IMAGE_EXTENSIONS, ImageFileError, check_folder, load_image, open_pixels
from lightning_redd.data.params import ParamFiles

MEASUREMENT_EXTENSIONS = IMAGE_EXTENSIONS + (".npy",)
#: the values a ``.npy`` measurement in ``[0, 1]`` units may take: ``[0, 1]`` plus noise of up to a full scale
NPY_RANGE = (-1.0, 2.0)


def npy_units_problem(path: Path, a: np.ndarray) -> str | None:
    """Why the array's values are not in ``[0, 1]`` units (beyond :data:`NPY_RANGE`), or None."""
    lo, hi = float(a.min()), float(a.max())
    if NPY_RANGE[0] <= lo and hi <= NPY_RANGE[1]:
        return None
    if hi > 255 * 1.5:
        units = "0-65535 (16-bit) units: divide it by 65535"
    elif hi > NPY_RANGE[1]:
        units = "0-255 (8-bit) units: divide it by 255"
    else:
        units = "other units: map it to [0, 1] (black 0, white 1)"
    return (f"{path.name}: values span [{lo:.4g}, {hi:.4g}], beyond the [{NPY_RANGE[0]:g}, {NPY_RANGE[1]:g}] a measurement "
            f"in [0, 1] units can take with noise; it looks saved in {units} before numpy.save")


def _read_npy(path: Path) -> torch.Tensor:
    """A ``.npy`` measurement as ``(C, H, W)`` float64 values ``v`` in ``[0, 1]`` units."""
    try:
        a = np.load(path, allow_pickle=False)
    except Exception as err:
        raise ImageFileError(f"{path.name}: not a readable .npy array ({err}); save it with numpy.save") from err
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3) or not np.issubdtype(a.dtype, np.floating):
        raise ImageFileError(f"{path.name}: array of shape {a.shape} and dtype {a.dtype}; save (H, W) or (H, W, 1 or 3) "
                             "floats in [0, 1] units")
    if not np.isfinite(a).all():
        raise ImageFileError(f"{path.name}: holds NaN or infinite values; save a finite array")
    problem = npy_units_problem(path, a)
    if problem:
        raise ImageFileError(problem)
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64)).permute(2, 0, 1)


def read_measurement_notes(path: Path, channels: int = 3) -> tuple[torch.Tensor, list[str]]:
    """:func:`read_measurement` and the notes of reading the file (e.g. an EXIF rotation)."""
    path, notes = Path(path), []
    if path.suffix.lower() == ".npy":
        v = _read_npy(path)
    else:
        im, notes = open_pixels(path)
        if im.mode == "F":  # 16-bit gray
            v = torch.from_numpy(np.asarray(im, dtype=np.float64).copy())[None].clamp(0, 65535) / 65535.0
        else:
            im = im.convert("RGB" if channels == 3 else "L")
            v = torch.from_numpy(np.asarray(im, dtype=np.float64).copy()).reshape(im.size[1], im.size[0], -1).permute(2, 0, 1) / 255.0
    if v.shape[0] != channels:
        v = v.expand(channels, -1, -1) if v.shape[0] == 1 else v.mean(0, keepdim=True)
    return (v * 2 - 1).float().contiguous(), notes


def read_measurement(path: Path, channels: int = 3) -> torch.Tensor:
    """``(channels, H, W)`` float32 in the operator's units (``2 v - 1`` of the file's ``v`` in
    ``[0, 1]``, upright); raises :class:`ImageFileError` naming the file and the fix."""
    return read_measurement_notes(path, channels)[0]


def write_measurement(path: Path, y: torch.Tensor) -> None:
    """Save ``y`` ``(C, H, W)`` (operator units) as ``read_measurement`` reads it back: ``.npy``
    float64 (exact), ``.png`` 16-bit (gray only, ``1/65535`` steps) or 8-bit (RGB, clipped to
    ``[0, 1]``)."""
    from PIL import Image

    from lightning_redd.runs.fsio import atomic_write

    path = Path(path)
    v = (y.detach().double().cpu() + 1) / 2
    if path.suffix.lower() == ".npy":
        atomic_write(path, lambda fh: np.save(fh, v.permute(1, 2, 0).numpy(), allow_pickle=False))
        return
    q = v.clamp(0, 1)
    if q.shape[0] == 1:
        im = Image.fromarray((q[0] * 65535).round().numpy().astype(np.uint16))
    else:
        im = Image.fromarray((q * 255).round().byte().permute(1, 2, 0).numpy())
    atomic_write(path, lambda fh: im.save(fh, format="PNG"))


def _decode(path: Path) -> tuple[tuple[int, int], list[str], str | None]:
    try:
        y, notes = read_measurement_notes(path)
    except ImageFileError as err:
        return (0, 0), [], str(err)
    return (int(y.shape[2]), int(y.shape[1])), notes, None


def image_size_for(output_shape: Callable[[Sequence[int]], Sequence[int]], channels: int, probe: int,
                   hw: tuple[int, int]) -> tuple[int, int] | None:
    """The image ``(H, W)`` whose measurement (``output_shape((C, H, W))``) is ``hw``, found near
    the ratio the operator has at ``probe x probe`` images (block SR: ``factor`` x; most
    operators: 1; phase retrieval: its padding), or None if no size makes ``hw``."""
    made = output_shape((channels, probe, probe))
    guess = [round(hw[a] * probe / int(made[1 + a])) for a in (0, 1)]
    for h in range(max(1, guess[0] - 2), guess[0] + 3):
        for w in range(max(1, guess[1] - 2), guess[1] + 3):
            if tuple(int(v) for v in output_shape((channels, h, w))[1:]) == tuple(hw):
                return h, w
    return None


class MeasuredFolderDataset(ImageFolderDataset):
    """Batches of measurements (``y``, ``shape``, ``params`` and, with ground truth, ``x``);
    ``image_sizes``: index -> the image ``(H, W)`` of each measurement (``resize: none``), else
    every image is ``image_size`` square."""

    def __init__(self, files: Sequence[Path], image_size: int, channels: int, seed: int, resize: str,
                 params: ParamFiles, truths: dict[str, Path] | None,
                 image_sizes: dict[int, tuple[int, int]] | None = None) -> None:
        super().__init__(files, image_size, channels, seed, resize, params)
        self.truths, self.image_sizes = truths, image_sizes

    def image_hw(self, i: int) -> tuple[int, int]:
        return self.image_sizes[i] if self.image_sizes is not None else (self.image_size, self.image_size)

    def size_keys(self) -> list[tuple[int, int]] | None:
        return [self.image_hw(i) for i in range(len(self.files))] if self.image_sizes is not None else None

    def read_params(self, i: int, hw: tuple[int, int]) -> dict:
        path = self.files[i]
        return self.params.read(path.stem, hw, measurement=path) if self.params else {}

    def tensors(self, i: int) -> dict:
        path = self.files[i]
        out = {"y": read_measurement(path, self.channels)}
        params = self.read_params(i, self.image_hw(i))
        if params:
            out["params"] = params
        if self.truths is not None:
            out["x"] = load_image(self.truths[path.stem], self.image_size, self.channels, self.resize)
        return out

    def __getitem__(self, keys) -> dict:
        batch = super().__getitem__(keys)
        batch["shape"] = (self.channels, *self.image_hw(int(keys[0][0])))
        return batch


class MeasuredFolderData(FolderData):
    """Measurements ``y`` to restore: the user's own degraded images, no clean image needed
    (see the module docstring for the file formats; :class:`FolderData` for the shared
    arguments). Every file is read at its own size, and all must share one size; the module
    checks in its ``setup`` that its operator makes measurements of that size from
    ``image_size`` images (e.g. ``image_size / factor`` for block SR).

    Args:
        ground_truth: an optional folder of the clean images ``<stem>.png`` for scores (read
            like the images of a synthetic run); without it ``metrics.csv`` holds the data
            consistency (``residual``, ``sigma_y_implied``, ``sigma_y``).

    With ``resize: none`` measurements of any and of mixed sizes are restored at the image size
    they come from (block SR x4: 4 times theirs), found from ``output_shape`` (see :class:`FolderData`).
    """

    def __init__(self, *, ground_truth: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ground_truth = None if ground_truth is None else resources.resolve_data(ground_truth)
        #: ``(C, h, w)`` of the measurement files (set by :meth:`check`)
        self.measurement_shape: tuple[int, int, int] | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    def input_folders(self) -> list[Path]:
        return [*super().input_folders(), *([self.ground_truth] if self.ground_truth is not None else [])]

    def check(self) -> MeasuredFolderDataset:
        """Every measurement, ground-truth image and parameter file decoded, all in one size,
        every problem in one :class:`InputProblems`; returns the dataset."""
        report = check_folder(self.root, image_size=0, skip_non_images=self.skip_non_images, limit=self.limit,
                              extensions=MEASUREMENT_EXTENSIONS, decode=_decode)
        problems = list(report.problems)
        stems = [f.stem for f in report.files]
        sizes: dict[tuple[int, int], list[str]] = {}
        for f in report.files:
            sizes.setdefault(report.sizes[f], []).append(f.name)
        own = self.resize == "none"
        if len(sizes) > 1 and not own:
            listed = "; ".join(f"{w}x{h}: {len(v)} file(s) ({', '.join(v[:5])}{' ...' if len(v) > 5 else ''})"
                               for (w, h), v in sorted(sizes.items(), key=lambda kv: -len(kv[1])))
            problems.append(f"measurements of mixed sizes in {self.root} ({listed}); one run restores one size: "
                            "put each size in its own folder, or set data.resize none")
        image_sizes = self._image_sizes(report, problems) if own else None
        truths = self._truths(stems, problems, image_sizes)
        files = {f.stem: f for f in report.files}
        hw = {f.stem: image_sizes.get(i, (0, 0)) for i, f in enumerate(report.files)} if own else (self.image_size,) * 2
        problems += self.params.problems(stems, hw, measurements=files)
        problems += self.run_folder.problems(self.input_folders())
        self.raise_problems(problems)
        self.log_notes(report.notes + self.params.notes(stems, files))
        if own:
            self.measurement_shape = None  # each size checked above; the module checks the operator per size
        else:
            (w, h), = sizes
            self.measurement_shape = (self.channels, h, w)
        return MeasuredFolderDataset(report.files, self.image_size, self.channels, self.seed, self.resize, self.params,
                                     truths, image_sizes)

    def _image_sizes(self, report, problems: list[str]) -> dict[int, tuple[int, int]]:
        """``resize: none``: each measurement's image ``(H, W)`` (a problem per measurement no size makes)."""
        if self.output_shape is None:
            problems.append("data.resize none with measurements needs the operator's output_shape to tell each "
                            "measurement's image size: the CLI links it; in Python pass output_shape=operator.output_shape")
            return {}
        out = {}
        for i, f in enumerate(report.files):
            w, h = report.sizes[f]
            found = image_size_for(self.output_shape, self.channels, self.image_size, (h, w))
            if found is None:
                problems.append(f"{f.name}: a {w}x{h} measurement that the operator makes from no image size; give "
                                "a measurement of a size it makes (e.g. of a side the SR factor divides the image's into)")
            else:
                out[i] = found
        return out

    def _truths(self, stems: list[str], problems: list[str],
                image_sizes: dict[int, tuple[int, int]] | None = None) -> dict[str, Path] | None:
        if self.ground_truth is None:
            return None
        if not self.ground_truth.is_dir():
            problems.append(f"ground-truth folder {self.ground_truth} does not exist; set data.ground_truth to a folder "
                            "of clean images named like the measurements, or null")
            return None
        gt = check_folder(self.ground_truth, image_size=self.image_size, skip_non_images=True)
        problems += gt.problems
        by_stem = {f.stem: f for f in gt.files}
        missing = [s for s in stems if s not in by_stem]
        problems += [f"no ground truth for measurement {s!r} in {self.ground_truth}: add {s}.png, or set "
                     "data.ground_truth null to restore without scores" for s in missing]
        return by_stem

    def first_params(self) -> dict[str, torch.Tensor]:
        """The first measurement's parameter tensors (unbatched), to bind the operator in a check."""
        assert self.dataset is not None, "check() first"
        return self.dataset.read_params(0, self.dataset.image_hw(0))

    def shape_mismatch(self, op, made: Sequence[int]) -> str:
        """Why the measurements do not fit ``op`` (which makes ``made`` from ``image_shape``), and the fix."""
        (_, h, w), s = self.measurement_shape, self.image_size
        msg = (f"the measurements in {self.root} are {w}x{h}, but {type(op).__name__} makes {made[-1]}x{made[-2]} "
               f"measurements of the prior's {s}x{s} images")
        factor = getattr(op, "factor", None)
        if factor is not None and h == w and s % h == 0:
            return msg + (f"; these fit factor {s // h}: set model.operator.init_args.factor {s // h} (or give "
                          f"{s // int(factor)}x{s // int(factor)} measurements for factor {factor})")
        if factor is not None:
            return msg + (f"; no integer factor maps {s} to {h}x{w}: give {s // int(factor)}x{s // int(factor)} "
                          f"measurements for factor {factor}")
        return msg + "; give measurements of that size (or set data.image_size to the prior's size)"


# ---------------------------------------------------------------------- the bundled samples
SAMPLE_TASKS = ("inpainting", "sr4", "deblur", "jpeg")


def export_samples(out: Path, images: Path, image_size: int = 64) -> dict[str, Path]:
    """Degrade the demo images once per sample task and write the measured folders the
    ``configs/measured/*.yaml`` configs read: ``out/<task>/`` with the measurements,
    ``out/masks/``, ``out/kernels/`` and ``out/ground_truth/`` (the clean 64 px images).

    Noise is drawn as a synthetic run with seed 0 draws it for the image; y is then saved as
    a user's file would be: 8-bit PNG (quantised), JPEG files as real JPEGs.

    * inpainting: the demo's stroke masks (``data/masks``), missing pixels black, no noise;
    * sr4: block averaging x4 (16x16), sigma_y 0.01;
    * deblur: a 15x15 Gaussian kernel of std 1.5 px saved as ``.npy``, sigma_y 0.01;
    * jpeg: quality 10, 4:2:0 (PIL's encoder).
    """
    from PIL import Image

    from lightning_redd import seeding
    from lightning_redd.operators.file_params import read_mask
    from lightning_redd.runs.fsio import atomic_write
    from lightning_redd.operators.blur import KernelBlur
    from lightning_redd.operators.kernels import gaussian_kernel
    from lightning_redd.operators.super_resolution import BlockAverageSR

    files = check_folder(images, image_size=image_size).files
    made = {t: out / t for t in SAMPLE_TASKS + ("masks", "kernels", "ground_truth")}
    kernel = gaussian_kernel(15, (1.5, 1.5))
    mask_dir = resources.resolve_data("package:masks")
    sr, blur = BlockAverageSR(factor=4, sigma_y=0.01), KernelBlur(sigma_y=0.01)
    for index, f in enumerate(files):
        x = load_image(f, image_size)[None]
        shape, noise = tuple(x.shape[1:]), [seeding.generator(0, index, "noise")]
        gt = Image.fromarray(((x[0] + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy())
        atomic_write(made["ground_truth"] / f"{f.stem}.png", lambda fh: gt.save(fh, format="PNG"))
        mask = read_mask(next(mask_dir.glob(f"{f.stem}.*")), (image_size, image_size))["mask"]
        m_img = Image.fromarray((mask[0] * 255).byte().numpy())
        atomic_write(made["masks"] / f"{f.stem}.png", lambda fh: m_img.save(fh, format="PNG"))
        write_measurement(made["inpainting"] / f"{f.stem}.png", (x[0] * mask - (1 - mask)))
        with torch.no_grad():
            write_measurement(made["sr4"] / f"{f.stem}.png", sr.bind([0], shape).measure(x, noise)[0])
            noise = [seeding.generator(0, index, "noise")]
            bound = blur.bind([0], shape, params={"kernel": kernel.float()[None]})
            write_measurement(made["deblur"] / f"{f.stem}.png", bound.measure(x, noise)[0])
        atomic_write(made["kernels"] / f"{f.stem}.npy", lambda fh: np.save(fh, kernel.numpy(), allow_pickle=False))
        atomic_write(made["jpeg"] / f"{f.stem}.jpg", lambda fh: gt.save(fh, format="JPEG", quality=10, subsampling=2))
    return made


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lightning_redd.data.measured",
                                     description="Write the sample measured folders from the demo images.")
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export-samples", help="degrade the demo images for each sample task (data/measured)")
    e.add_argument("out", type=Path)
    e.add_argument("--images", default="package:demo", help="clean images (default: the bundled demo)")
    e.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args(argv)
    made = export_samples(args.out, resources.resolve_data(args.images), args.image_size)
    for name, folder in made.items():
        print(f"{name}: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
