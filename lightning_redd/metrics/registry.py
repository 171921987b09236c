"""Metrics by name, behind one interface (for a Lightning callback or the folder evaluator).

Per-image metrics (``fn(x, ref) -> (B,)`` on the tensors' device; ``x``, ``ref`` are
``(B, C, H, W)`` in ``[-1, 1]``):

- ``psnr``: dB, data range 2 (:func:`~lightning_redd.metrics.image.psnr`), float64;
- ``ssim``: Gaussian-window SSIM, data range 2 (:func:`~lightning_redd.metrics.image.ssim`), float64;
- ``lpips``: LPIPS v0.1, AlexNet backbone by default (:class:`~lightning_redd.metrics.lpips.LPIPS`), float32.

Dataset-level metrics (``update`` per batch, ``compute`` at the end; see
:mod:`lightning_redd.metrics.base` for syncing across processes):

- ``kid``, ``fid``: FID-Inception features (:class:`~lightning_redd.metrics.inception.InceptionMetrics`);
- ``top1``, ``top5``: timm classifier accuracy (:class:`~lightning_redd.metrics.classifier.TopKAccuracy`).

Example in a callback::

    suite = MetricSuite(["psnr", "lpips", "kid"], lpips_weights=..., inception_weights=...)
    rows = suite.per_image_scores(x_hat, x)   # {"psnr": (B,), "lpips": (B,)}
    suite.update(x_hat, x, names=batch["name"])
    results = suite.compute()                 # on every rank: {"kid": ..., "kid_std": ..., ...}
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import torch

from lightning_redd.metrics.base import DatasetMetric, Gather
from lightning_redd.metrics.classifier import DEFAULT_CLASSIFIER, TopKAccuracy
from lightning_redd.metrics.image import psnr, ssim
from lightning_redd.metrics.inception import InceptionMetrics
from lightning_redd.metrics.lpips import LPIPS

PER_IMAGE_METRICS = ("psnr", "ssim", "lpips")
DATASET_METRICS = ("kid", "fid", "top1", "top5")
METRICS = PER_IMAGE_METRICS + DATASET_METRICS

PerImage = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def check_names(names: Sequence[str]) -> tuple[str, ...]:
    """The metric names, validated (duplicates dropped, order kept)."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise ValueError(f"unknown metric name(s) {unknown or list(names)}; allowed: {METRICS}")
    return tuple(dict.fromkeys(names))


class MetricSuite:
    """The requested metrics, built once; learned networks are built on first use.

    Args:
        names: metric names (a list or a comma-separated string), from :data:`METRICS`.
        lpips_net, lpips_weights: LPIPS backbone and its torchvision checkpoint file.
        inception_weights: FID Inception weight file (``weights-inception-2015-12-05-6726825d.pth``).
        inception_extractor: a feature callable used instead (e.g. one shared with
            :func:`~lightning_redd.metrics.folder_stats.folder_features`).
        reference_features: fixed ``(N, 2048)`` reference for kid/fid (e.g. a folder's cached
            features); by default the ``ref`` images passed to :meth:`update` are the reference.
        kid_subsets, kid_subset_size, seed: KID's subset sampling.
        classifier, classifier_weights: timm model name and its weight file, for top1/top5.
        labels, synset_mapping: ``{name: class}`` or a label file (see :mod:`lightning_redd.metrics.labels`).
    """

    def __init__(
        self,
        names: Sequence[str] = ("psnr", "ssim"),
        *,
        lpips_net: str = "alex",
        lpips_weights: str | os.PathLike | None = None,
        inception_weights: str | os.PathLike | None = None,
        inception_extractor: Callable[[torch.Tensor], torch.Tensor] | None = None,
        reference_features: torch.Tensor | None = None,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        seed: int = 0,
        classifier: str = DEFAULT_CLASSIFIER,
        classifier_weights: str | os.PathLike | None = None,
        labels: Mapping[str, int] | str | os.PathLike | None = None,
        synset_mapping: str | os.PathLike | None = None,
    ) -> None:
        self.names = check_names(names)
        self.per_image: dict[str, PerImage] = {}
        for n in self.names:
            if n == "psnr":
                self.per_image[n] = psnr
            elif n == "ssim":
                self.per_image[n] = ssim
            elif n == "lpips":
                self.per_image[n] = LPIPS(lpips_net, weights=lpips_weights)
        self.dataset: list[DatasetMetric] = []
        inception = [n for n in self.names if n in InceptionMetrics.names]
        if inception:
            self.dataset.append(InceptionMetrics(
                metrics=inception, weights=inception_weights, extractor=inception_extractor,
                reference_features=reference_features,
                kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed,
            ))
        ks = [int(n[3:]) for n in self.names if n in TopKAccuracy.names]
        if ks:
            self.dataset.append(TopKAccuracy(classifier, weights=classifier_weights, labels=labels,
                                             synset_mapping=synset_mapping, ks=ks))

    # ------------------------------------------------------------------ per image
    def build(self, device: torch.device | str = "cpu") -> None:
        """Build every learned network now, so a missing or wrong weight file raises before any compute."""
        for fn in self.per_image.values():
            if isinstance(fn, LPIPS):
                fn.network(device)
        if self.topk is not None:
            self.topk.network(device)
        if self.inception is not None and hasattr(self.inception.extractor, "network"):
            self.inception.extractor.network(device)

    @property
    def topk(self) -> TopKAccuracy | None:
        return next((m for m in self.dataset if isinstance(m, TopKAccuracy)), None)

    @property
    def inception(self) -> InceptionMetrics | None:
        return next((m for m in self.dataset if isinstance(m, InceptionMetrics)), None)

    def per_image_scores(self, x: torch.Tensor, ref: torch.Tensor, names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """``{name: (B,)}`` for every requested per-image metric, on the inputs' device; with
        ``names`` (image stems, for their labels) also each image's 0/1 ``top1``/``top5`` hit."""
        out = {n: fn(x, ref) for n, fn in self.per_image.items()}
        topk = self.topk
        if topk is not None and names is not None:
            hits = topk.hits(x, names)
            out.update({f"top{k}": hits[:, i].double() for i, k in enumerate(topk.ks)})
        return out

    def features(self, x: torch.Tensor, ref: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-image feature rows the dataset-level metrics need, ``{key: (B, D)}``: the
        Inception features of ``x`` (``inception``) and, unless a fixed reference was given,
        of ``ref`` (``inception_ref``); empty without kid/fid."""
        inception = self.inception
        if inception is None:
            return {}
        out = {"inception": inception.extractor(x)}
        if inception.reference_features is None and ref is not None:
            out["inception_ref"] = inception.extractor(ref)
        return out

    def dataset_from(self, scores: Sequence[Mapping[str, float | None]], features: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Dataset-level results from stored per-image values: top-k accuracies as the means of
        the per-image hits in ``scores``, KID/FID from the stacked ``features`` (``(N, D)``
        each, as :meth:`features` returns them); metrics without enough images are left out."""
        out: dict[str, float] = {}
        for name in ("top1", "top5"):
            hits = [r[name] for r in scores if name in self.names and r.get(name) is not None]
            if hits:
                out[name] = sum(hits) / len(hits)
        inception = self.inception
        fake = features.get("inception")
        real = inception.reference_features if inception is not None and inception.reference_features is not None \
            else features.get("inception_ref")
        if inception is not None and fake is not None and real is not None and min(len(fake), len(real)) >= 2:
            out.update(inception.results(fake.double().cpu(), real.double().cpu()))
        return out

    def update(self, x: torch.Tensor, ref: torch.Tensor | None = None, names: Sequence[str] | None = None) -> None:
        """Add a batch to every dataset-level metric (``names``: image stems, for top-k labels)."""
        for metric in self.dataset:
            metric.update(x, ref, names)

    def compute(self, gather: Gather | None = None) -> dict[str, float]:
        """Results of every dataset-level metric (collective under DDP: call on all ranks)."""
        out: dict[str, float] = {}
        for metric in self.dataset:
            out.update(metric.compute(gather))
        return out

    def reset(self) -> None:
        for metric in self.dataset:
            metric.reset()
