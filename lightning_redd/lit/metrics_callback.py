"""Scores of each restored batch, computed on the device, separate from the image writer.

For every batch the module emits (``pl_module.emitted``), :class:`MetricsCallback` adds

* ``emitted["scores"]``: ``{column: (B,) tensor}``, the per-image metrics of the restored image
  (and of the starting estimate, as ``<metric>_init``) against the ground truth ``x``;
* ``emitted["arrays"]``: per-image feature vectors the dataset-level metrics need (the
  Inception features of the restored image and of the ground truth, for KID and FID).

Scores describe what is saved: the estimates are quantised to the 8-bit levels of their PNGs
first, so ``lightning-redd evaluate`` on the output folder gives the same per-image values.
The image writer stores scores and arrays with each image's record; at the end of the run
the dataset-level metrics are computed from every record (whatever the number of processes
and however many resumes it took) and written to ``summary.json`` and the logger.

Learned metrics read local weight files only (see :mod:`lightning_redd.metrics.weights`),
and are checked when the run starts, before any compute.
"""
from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch

from lightning_redd.metrics import psnr, ssim
from lightning_redd.metrics.registry import check_names

#: per-image columns (``top1``/``top5`` are 0/1 per image; their means are the accuracies)
PER_IMAGE = ("psnr", "ssim", "lpips", "top1", "top5")
INCEPTION = ("kid", "fid")


def quantise(x: torch.Tensor) -> torch.Tensor:
    """``[-1, 1]`` values as the 8-bit PNG stores them and :func:`load_image` reads them back."""
    levels = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round()
    return levels.div(127.5).sub(1.0)


class MetricsCallback(L.Callback):
    """Per-image and dataset-level metrics of a restoration run.

    Args:
        metrics: columns of ``metrics.csv`` (psnr, ssim, lpips, top1, top5) and dataset-level
            results in ``summary.json`` (kid, fid; top1/top5 means go there too).
        score_init: also score the starting estimate (``<metric>_init`` columns, for psnr, ssim, lpips).
        lpips_net, lpips_weights: LPIPS backbone (alex, vgg, squeeze) and its torchvision file.
        inception_weights: the FID Inception file (``weights-inception-2015-12-05-6726825d.pth``).
        classifier, classifier_weights, labels, synset_mapping: top-k: a timm model name, its
            weight file, and each image's class (a label file, see :mod:`lightning_redd.metrics.labels`).
        kid_subsets, kid_subset_size: KID's subsets.
    """

    def __init__(
        self,
        *,
        metrics: Sequence[str] = ("psnr", "ssim"),
        score_init: bool = True,
        lpips_net: str = "alex",
        lpips_weights: str | None = None,
        inception_weights: str | None = None,
        classifier: str = "resnet50.tv_in1k",
        classifier_weights: str | None = None,
        labels: str | None = None,
        synset_mapping: str | None = None,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
    ) -> None:
        self.metrics = check_names(list(metrics))
        self.score_init = bool(score_init)
        self.lpips_net, self.lpips_weights, self.inception_weights = lpips_net, lpips_weights, inception_weights
        self.classifier, self.classifier_weights = classifier, classifier_weights
        self.labels, self.synset_mapping = labels, synset_mapping
        self.kid_subsets, self.kid_subset_size = int(kid_subsets), int(kid_subset_size)
        self._lpips = self._inception = self._topk = None

    # ------------------------------------------------------------------ set-up (before compute)
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Build the learned metrics now, so a missing weight file stops the run before any compute."""
        self.build()

    def build(self) -> None:
        if "lpips" in self.metrics and self._lpips is None:
            from lightning_redd.metrics.lpips import LPIPS

            self._lpips = LPIPS(self.lpips_net, weights=self.lpips_weights)
            self._lpips.network("cpu")
        if set(INCEPTION) & set(self.metrics) and self._inception is None:
            from lightning_redd.metrics.inception import InceptionFeatures

            self._inception = InceptionFeatures(self.inception_weights)
            self._inception.network("cpu")
        if {"top1", "top5"} & set(self.metrics) and self._topk is None:
            from lightning_redd.metrics.classifier import TopKAccuracy

            if self.labels is None:
                raise FileNotFoundError("top1/top5 need each image's class: set labels=<label file> on the metrics callback "
                                        "(JSON {name: index} or CSV name,label; see lightning_redd.metrics.labels)")
            self._topk = TopKAccuracy(self.classifier, weights=self.classifier_weights, labels=self.labels,
                                      synset_mapping=self.synset_mapping)
            self._topk.network("cpu")

    # ------------------------------------------------------------------ per batch
    def per_image(self, x: torch.Tensor, ref: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for m in self.metrics:
            if m == "psnr":
                out[m] = psnr(x, ref)
            elif m == "ssim":
                out[m] = ssim(x, ref)
            elif m == "lpips":
                out[m] = self._lpips(x, ref)
        if self._topk is not None:
            hits = self._hits(x, names)
            out.update({k: hits[k] for k in ("top1", "top5") if k in self.metrics})
        return out

    def _hits(self, x: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
        from lightning_redd.metrics.classifier import preprocess

        net = self._topk.network(x.device)
        y = self._topk._targets(list(names), x.shape[0], x.device)
        with torch.no_grad():
            top = net(preprocess(x, self._topk._cfg)).topk(5, dim=1).indices
        return {"top1": (top[:, :1] == y[:, None]).any(1).double(), "top5": (top == y[:, None]).any(1).double()}

    def score(self, emitted: dict) -> dict[str, torch.Tensor]:
        """Add (once) and return ``emitted["scores"]`` (and ``emitted["arrays"]``): the data
        consistency of measured data (``residual``, ``sigma_y_implied``, ``sigma_y``), then the
        scores against the ground truth when there is one."""
        if "scores" in emitted:
            return emitted["scores"]
        x, scores, arrays = emitted.get("x"), {}, {}
        if x is not None:
            self.build()
            ref, names = quantise(x), emitted["names"]
            x_hat = quantise(emitted["x_hat"])
            with torch.no_grad():
                scores = self.per_image(x_hat, ref, names)
                if self.score_init:
                    init = self.per_image(quantise(emitted["x_init"]), ref, names)
                    scores.update({f"{k}_init": v for k, v in init.items() if k in ("psnr", "ssim", "lpips")})
                if self._inception is not None:
                    arrays = {"inception": self._inception(x_hat), "inception_ref": self._inception(ref)}
        if emitted.get("consistency"):  # measured data: what can be checked without ground truth
            scores = {**emitted["consistency"], **scores}
        emitted["scores"], emitted["arrays"] = scores, arrays
        return scores

    def _on_batch_end(self, pl_module: L.LightningModule) -> None:
        emitted = getattr(pl_module, "emitted", None)
        if emitted is not None:
            self.score(emitted)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._on_batch_end(pl_module)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._on_batch_end(pl_module)

    # ------------------------------------------------------------------ end of the run
    def dataset_results(self, run) -> dict[str, float]:
        """KID/FID from every finished image's stored features, and the top-k accuracies
        (means of the per-image hits); called once, on rank 0, after every rank finished."""
        out: dict[str, float] = {}
        records = {n: r for n, r in run.records().items() if r["status"] == "ok"}
        for k in ("top1", "top5"):
            if k in self.metrics:
                hits = [r["scores"][k] for r in records.values() if r["scores"].get(k) is not None]
                if hits:
                    out[k] = sum(hits) / len(hits)
        if set(INCEPTION) & set(self.metrics):
            out.update(self._inception_results(run, sorted(records)))
        return out

    def _inception_results(self, run, names: list[str]) -> dict[str, float]:
        from lightning_redd.metrics.distances import frechet_distance, kernel_inception_distance

        arrays = [run.read_arrays(n) for n in names]
        arrays = [a for a in arrays if "inception" in a]
        if len(arrays) < 2:
            return {}
        fake = torch.stack([a["inception"] for a in arrays]).double()
        real = torch.stack([a["inception_ref"] for a in arrays]).double()
        out = {"inception_n_images": float(len(arrays))}
        if "fid" in self.metrics:
            out["fid"] = float(frechet_distance(fake, real))
        if "kid" in self.metrics:
            mean, std = kernel_inception_distance(fake, real, subsets=self.kid_subsets, subset_size=self.kid_subset_size,
                                                  generator=torch.Generator().manual_seed(0))
            out["kid"], out["kid_std"] = float(mean), float(std)
        return out

