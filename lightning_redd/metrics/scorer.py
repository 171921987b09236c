"""The one scorer of restorations, used by a run's writer, ``lightning-redd evaluate`` and
``lightning-redd compare`` alike, built on :class:`~lightning_redd.metrics.registry.MetricSuite`.

Scores describe what is saved: the restored image and its reference are quantised to the 8-bit
levels of a PNG first, so scoring a run's output folder later gives the values the run wrote.
For each batch :meth:`Scorer.score` returns

* per-image scores ``{column: (B,) float64}``: the suite's per-image metrics (psnr, ssim,
  lpips), each image's 0/1 ``top1``/``top5`` hit, and the same metrics of the starting
  estimate as ``<metric>_init`` (psnr, ssim, lpips; with ``score_init``);
* per-image feature rows ``{key: (B, D)}`` the dataset-level metrics need (the Inception
  features of the restored image and of its reference, for KID and FID).

Both are stored with each image, so :meth:`Scorer.dataset` computes the dataset-level results
(top-k accuracies, KID, FID) from every finished image, whatever the number of processes and
however many resumes it took.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from lightning_redd.metrics.classifier import DEFAULT_CLASSIFIER
from lightning_redd.metrics.registry import MetricSuite

#: metrics also reported for the starting estimate, as ``<metric>_init``
INIT_METRICS = ("psnr", "ssim", "lpips")


def quantise(x: torch.Tensor) -> torch.Tensor:
    """``[-1, 1]`` values as an 8-bit PNG stores them and the image loader reads them back."""
    levels = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round()
    return levels.div(127.5).sub(1.0)


@dataclass
class Scores:
    """One batch's scores: ``per_image`` ``{column: (B,)}`` and ``arrays`` ``{key: (B, D)}``."""

    per_image: dict[str, torch.Tensor] = field(default_factory=dict)
    arrays: dict[str, torch.Tensor] = field(default_factory=dict)

    def row(self, i: int) -> dict[str, float]:
        """Image ``i``'s scores as plain floats."""
        return {k: float(v[i]) for k, v in self.per_image.items()}


class Scorer:
    """Per-image and dataset-level metrics of restored images.

    Args:
        names: ``psnr``, ``ssim``, ``lpips``, ``top1``, ``top5`` (columns of ``metrics.csv``)
            and ``kid``, ``fid`` (dataset-level, in ``summary.json``; top-k means go there too).
        score_init: also score the starting estimate (``<metric>_init`` columns, for psnr, ssim, lpips).
        lpips_net, lpips_weights: LPIPS backbone (alex, vgg, squeeze) and its torchvision file.
        inception_weights: the FID Inception file (``pt_inception-2015-12-05-6726825d.pth``).
        classifier, classifier_weights, labels, synset_mapping: top-k: a timm model name, its
            weight file, and each image's class (a label file, see :mod:`lightning_redd.metrics.labels`).
        kid_subsets, kid_subset_size: KID's subsets.
    """

    def __init__(
        self,
        names: Sequence[str] = ("psnr", "ssim"),
        *,
        score_init: bool = True,
        lpips_net: str = "alex",
        lpips_weights: str | None = None,
        inception_weights: str | None = None,
        classifier: str = DEFAULT_CLASSIFIER,
        classifier_weights: str | None = None,
        labels: str | None = None,
        synset_mapping: str | None = None,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        **suite_options,
    ) -> None:
        self.score_init = bool(score_init)
        self.suite = MetricSuite(
            names, lpips_net=lpips_net, lpips_weights=lpips_weights, inception_weights=inception_weights,
            classifier=classifier, classifier_weights=classifier_weights, labels=labels, synset_mapping=synset_mapping,
            kid_subsets=int(kid_subsets), kid_subset_size=int(kid_subset_size), **suite_options,
        )
        if self.suite.topk is not None and self.suite.topk.labels is None:
            raise FileNotFoundError("top1/top5 need each image's class: set labels=<label file> on the scorer "
                                    "(JSON {name: index} or CSV name,label; see lightning_redd.metrics.labels)")

    @property
    def names(self) -> tuple[str, ...]:
        return self.suite.names

    def build(self, device: torch.device | str = "cpu") -> Scorer:
        """Build the learned networks now: a missing weight file stops the run before any compute."""
        self.suite.build(device)
        return self

    def score(self, x_hat: torch.Tensor, ref: torch.Tensor, names: Sequence[str],
              x_init: torch.Tensor | None = None) -> Scores:
        """Scores of ``x_hat`` ``(B, C, H, W)`` in ``[-1, 1]`` against ``ref`` (both quantised
        to 8 bits first), and of ``x_init`` as ``<metric>_init`` columns."""
        ref, x_hat = quantise(ref), quantise(x_hat)
        with torch.no_grad():
            out = Scores(self.suite.per_image_scores(x_hat, ref, names), self.suite.features(x_hat, ref))
            if self.score_init and x_init is not None:
                init = self.suite.per_image_scores(quantise(x_init), ref)
                out.per_image.update({f"{k}_init": v for k, v in init.items() if k in INIT_METRICS})
        out.per_image = {k: v.detach().double().cpu() for k, v in out.per_image.items()}
        out.arrays = {k: v.detach().float().cpu() for k, v in out.arrays.items()}
        return out

    def dataset(self, rows: Sequence[Mapping[str, float | None]], arrays: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, float]:
        """Dataset-level results from every finished image's stored ``rows`` (per-image scores)
        and ``arrays`` (feature rows, one ``{key: (D,)}`` per image; images without them are left out)."""
        keys = sorted({k for a in arrays for k in a})
        stacked = {k: torch.stack([a[k] for a in arrays if k in a]) for k in keys}
        return self.suite.dataset_from(list(rows), stacked)

