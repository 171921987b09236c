"""Score a folder of restored images against a folder of references.

Files are matched by name stem (``restored/0001.png`` with ``reference/0001.jpg``); names
present on one side only are reported, not scored. Images load as the project loads them
(:func:`lightning_redd.data.images.load_image`, ``(C, S, S)`` in ``[-1, 1]``, upright by their
EXIF orientation): restored images at their own size ``S``, and references with ``resize`` to
that size, as the data module prepared them for the run.

Sizes: without ``image_size`` the matched restored images must all be one square size ``S`` (as
the writer saves them); restored images of several sizes, or not square, are refused, naming
the files and sizes and the fix (``--image-size S`` and ``--resize``, or one size per folder).
With ``image_size`` every image is fitted to it by ``resize``. References not ``S x S`` are
fitted by ``resize`` with a note (:attr:`Evaluation.notes`) naming those upscaled.

Per-image metrics and top-k run on the matched pairs. KID and FID compare the matched
restored images with the features of the *whole* reference folder, computed once and
cached next to it (:func:`~lightning_redd.metrics.folder_stats.folder_features`).
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lightning_redd.data.decoding import upright_size
from lightning_redd.data.images import load_image
from lightning_redd.metrics.folder_stats import folder_features, image_files
from lightning_redd.metrics.inception import InceptionFeatures, InceptionMetrics
from lightning_redd.metrics.registry import MetricSuite, check_names


@dataclass
class Evaluation:
    """``rows``: one ``{"name", <per-image metric>: float}`` per matched pair, sorted by name;
    ``dataset``: dataset-level results and counts; ``unmatched_*``: stems found on one side only."""

    rows: list[dict] = field(default_factory=list)
    dataset: dict[str, float] = field(default_factory=dict)
    unmatched_restored: list[str] = field(default_factory=list)
    unmatched_reference: list[str] = field(default_factory=list)
    #: informative remarks on how the images were fitted (e.g. references upscaled)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        """Mean of each per-image metric over the rows (``inf`` PSNRs are left out), the
        dataset-level results, and ``n_matched``."""
        out: dict[str, float] = {"n_matched": float(len(self.rows))}
        keys = [k for k in (self.rows[0] if self.rows else {}) if k != "name"]
        for k in keys:
            vals = [r[k] for r in self.rows if math.isfinite(r[k])]
            out[k] = sum(vals) / len(vals) if vals else float("nan")
        out.update(self.dataset)
        return out


def match_by_stem(restored: Path, reference: Path) -> tuple[list[tuple[str, Path, Path]], list[str], list[str]]:
    """Pairs ``(stem, restored file, reference file)`` sorted by stem, and the unmatched stems."""
    rest = {p.stem: p for p in image_files(restored)}
    refs = {p.stem: p for p in image_files(reference)}
    pairs = [(s, rest[s], refs[s]) for s in sorted(rest.keys() & refs.keys())]
    return pairs, sorted(rest.keys() - refs.keys()), sorted(refs.keys() - rest.keys())


def _listed(sizes: dict[tuple[int, int], list[str]]) -> str:
    """``64x64: 3 file(s) (a.png, ...); 32x32: 1 file(s) (b.png)``, the largest group first."""
    return "; ".join(f"{w}x{h}: {len(v)} file(s) ({', '.join(v[:4])}{' ...' if len(v) > 4 else ''})"
                     for (w, h), v in sorted(sizes.items(), key=lambda kv: -len(kv[1])))


def _image_size(pairs, restored: Path) -> int:
    """The one square size ``S`` of the matched restored images; else a ValueError naming the
    files, their sizes and the fix."""
    sizes: dict[tuple[int, int], list[str]] = {}
    for _, r, _ in pairs:
        sizes.setdefault(upright_size(r), []).append(r.name)
    (w, h) = next(iter(sizes))
    if len(sizes) == 1 and w == h:
        return w
    what = "of several sizes" if len(sizes) > 1 else "not square"
    raise ValueError(f"restored images in {restored} are {what} ({_listed(sizes)}); scores compare images of one size: "
                     "pass --image-size S (image_size=S in Python) and --resize to fit every image to S x S, or score "
                     "each size in its own folder")


def _fit_notes(files: list[Path], side: str, size: int, resize: str) -> list[str]:
    """Notes naming the ``side`` images that are not ``size x size`` (fitted by ``resize``), the
    upscaled ones apart."""
    sizes: dict[tuple[int, int], list[str]] = {}
    for f in files:
        sizes.setdefault(upright_size(f), []).append(f.name)
    other = {k: v for k, v in sizes.items() if k != (size, size)}
    up = {k: v for k, v in other.items() if min(k) < size}
    notes = [f"{sum(map(len, other.values()))} {side} image(s) not {size}x{size}, fitted to it by --resize {resize}"] if other else []
    return notes + ([f"{side} images smaller than {size}x{size} upscaled to it: {_listed(up)}"] if up else [])


def _suite_options(options: dict, reference: Path, size: int, names, resize, channels, batch_size, device, cache_dir):
    """Adds the cached reference-folder features for kid/fid to the suite's options."""
    if not any(n in InceptionMetrics.names for n in names) or "reference_features" in options:
        return options
    extractor = options.get("inception_extractor") or InceptionFeatures(options.get("inception_weights"))
    feats = folder_features(reference, extractor, image_size=size, resize=resize, channels=channels,
                            batch_size=batch_size, device=device, cache_dir=cache_dir)
    return {**options, "reference_features": feats, "inception_extractor": extractor}


def _score_pairs(suite: MetricSuite, pairs, size: int, channels: int, modes: tuple[str, str], batch_size: int, device) -> list[dict]:
    """Per-image rows of the matched pairs; feeds the dataset-level metrics on the way."""
    rows = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        x = torch.stack([load_image(r, size, channels, modes[0]) for _, r, _ in chunk]).to(device)
        ref = torch.stack([load_image(g, size, channels, modes[1]) for _, _, g in chunk]).to(device)
        scores = suite.per_image_scores(x, ref)
        suite.update(x, ref, [s for s, _, _ in chunk])
        for i, (stem, _, _) in enumerate(chunk):
            rows.append({"name": stem, **{k: float(v[i]) for k, v in scores.items()}})
    return rows


def evaluate_folders(
    restored: str | os.PathLike,
    reference: str | os.PathLike,
    metrics: Sequence[str] = ("psnr", "ssim", "lpips"),
    *,
    image_size: int | None = None,
    resize: str = "center_crop_resize",
    channels: int = 3,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    cache_dir: str | os.PathLike | None = None,
    **options,
) -> Evaluation:
    """Score ``restored`` against ``reference`` (see the module docstring).

    Args:
        metrics: names from :data:`~lightning_redd.metrics.registry.METRICS`.
        image_size: side ``S`` both sides are loaded at; default the first restored image's size.
        resize: how references (and, with ``image_size``, restored images) are fitted to ``S``:
            ``center_crop_resize``, ``resize`` or ``center_crop`` (see ``load_image``).
        device: where the metrics run (default CPU).
        cache_dir: where the reference folder's Inception features are cached.
        options: :class:`~lightning_redd.metrics.registry.MetricSuite` options (weight files,
            labels, KID subsets...).
    """
    names = check_names(metrics)
    pairs, only_restored, only_reference = match_by_stem(Path(restored), Path(reference))
    if not pairs:
        raise ValueError(
            f"no restored image in {restored} has a reference of the same name stem in {reference} "
            f"(restored: {only_restored[:5]}, reference: {only_reference[:5]})"
        )
    size = image_size or _image_size(pairs, Path(restored))
    rest_mode = resize if image_size else "center_crop_resize"
    notes = _fit_notes([g for _, _, g in pairs], "reference", size, resize)
    notes += _fit_notes([r for _, r, _ in pairs], "restored", size, rest_mode) if image_size else []
    options = _suite_options(options, Path(reference), size, names, resize, channels, batch_size, device, cache_dir)
    suite = MetricSuite(names, **options)
    rows = _score_pairs(suite, pairs, size, channels, (rest_mode, resize), batch_size, device)
    dataset = suite.compute(gather=lambda t: [t])  # one process: no sync
    return Evaluation(rows, dataset, only_restored, only_reference, notes)
