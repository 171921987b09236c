"""Several posterior samples per image (``data.samples_per_image: N > 1``): the writer's side.

The data module makes each image ``N`` units ``(image, sample k)``; every unit is solved like an
image of a one-sample run, with its own solver stream (:func:`lightning_redd.seeding.image_seed`
with ``sample=k``), from the same measurement ``y`` (the operator's parameters and the
measurement noise come from the image alone). All samples of an image are restored by the rank
that owns it, in consecutive units of its share, so they reach that rank's writer in one batch or
in consecutive ones. :class:`SampleGatherer` keeps them (in memory, on the CPU) until the image's
``N`` samples are in, then makes the image's files:

* ``samples/<name>_s<k>.png``: sample ``k`` (written with its batch, as soon as it is solved);
* ``restored/<name>.png``: the pixelwise mean of the ``N`` samples as saved (their 8-bit levels,
  in float64; so it is recomputed exactly from ``samples/``, and it is the same whatever the
  batch layout whenever the sample files are): the estimate that is scored (the usual columns
  of ``metrics.csv``);
* ``std/<name>.png``: the samples' pixelwise standard deviation (with Bessel's ``N - 1``), in the
  units of the saved image (``[0, 1]``), root-mean-square over the colour channels, as an 8-bit
  gray map: black 0, white :data:`STD_WHITE` (= 0.25) or more; the scale is fixed, so maps
  compare across images and solvers;
* ``init/``, ``measured/`` as for one sample (sample 0's), ``evolution/<name>_s<k>.png/.gif``
  when asked for, ``grids/<name>.png`` (one per image: measured | init | samples | mean | std
  | truth) and the record, last, with the scores of the mean and the spread:
  ``std_mean`` (the mean of the standard deviation over pixels and channels, ``[0, 1]`` units),
  and ``<metric>_samples_mean`` / ``<metric>_samples_std`` (each per-image metric over the
  samples: their mean and standard deviation, ``N - 1``). ``nfe`` counts every sample's
  evaluations, ``psnr_per_iterate`` is the samples' mean curve. Measured data without ground
  truth: the consistency columns are the samples' means (the writer does not hold the operator).

An image with a diverged sample gets a ``diverged`` record (naming the samples) and no mean; a
re-run redoes it. The record is written last: an image is finished once its mean and record are
on disk. A run stopped between an image's samples (a crash, a SLURM stop at a batch boundary)
leaves some sample files and no record; the next run solves the whole image again (its batches
keep their composition, so every float is the same) and rewrites those files byte for byte.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lightning_redd import pictures
from lightning_redd.lit.restored import Restored
from lightning_redd.metrics.scorer import Scorer, quantise
from lightning_redd.runs.folder import arrays_bytes, arrays_file, image_file, png_bytes

#: the standard deviation (in ``[0, 1]`` pixel units) shown white in ``std/<name>.png``
STD_WHITE = 0.25


def sample_name(name: str, k: int) -> str:
    """``<name>_s<k>``: sample ``k``'s file stem (``samples/``, ``evolution/``); the last
    ``_s<digits>`` tells the sample, so no two images' samples share a name."""
    return f"{name}_s{k}"


def mean_and_std(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``samples`` ``(N, C, H, W)`` in ``[-1, 1]``, taken as saved (clipped, 8-bit levels) ->
    their pixelwise mean ``(C, H, W)`` in ``[-1, 1]`` (float32) and standard deviation
    ``(C, H, W)`` in ``[0, 1]`` units (float64, Bessel's ``N - 1``)."""
    s = quantise(samples).double()
    return s.mean(0).float(), s.std(0, unbiased=True) / 2


def std_image(std: torch.Tensor) -> torch.Tensor:
    """A standard deviation map ``(C, H, W)`` in ``[0, 1]`` units as a gray image ``(1, H, W)``
    in ``[-1, 1]``: the root mean square over channels, white at :data:`STD_WHITE` or more."""
    rms = std.double().pow(2).mean(0, keepdim=True).sqrt()
    return ((rms / STD_WHITE).clamp(0, 1) * 2 - 1).float()


@dataclass
class _Sample:
    """What the gatherer keeps of one solved sample (CPU tensors of one member)."""

    x_hat: torch.Tensor
    x_init: torch.Tensor
    y: torch.Tensor
    x: torch.Tensor | None
    diverged: bool
    nfe: int
    index: int
    consistency: dict[str, float]
    curve: torch.Tensor | None


class SampleGatherer:
    """Collects the samples of each image across batches and makes its files once all are in.

    Args:
        scorer: scores the mean (and, for the spread, each sample).
        save_measured, save_grids: as the writer's (``init/``, ``measured/``; ``grids/``).
    """

    def __init__(self, scorer: Scorer, *, save_measured: bool = True, save_grids: bool = True) -> None:
        self.scorer, self.save_measured, self.save_grids = scorer, save_measured, save_grids
        self.pending: dict[str, dict[int, _Sample]] = {}

    def add(self, r: Restored) -> tuple[list[tuple[str, bytes]], list[tuple[str, dict]]]:
        """Take a batch (on the CPU): returns its files to write now (the kept samples' own files,
        then every completed image's files but its record) and the completed images' records."""
        keep = [True] * len(r) if r.keep is None else [bool(v) for v in r.keep.tolist()]
        sample = [0] * len(r) if r.sample is None else [int(v) for v in r.sample.tolist()]
        files, completed = [], []
        for i, name in enumerate(r.names):
            if not keep[i]:
                continue
            kept = self._keep(r, i)
            if not kept.diverged:
                files += self._sample_files(r, i, sample_name(name, sample[i]))
            own = self.pending.setdefault(name, {})
            own[sample[i]] = kept
            if len(own) == r.samples:
                completed.append(name)
        records = []
        for name in completed:
            image_files, record = self._image(name, self.pending.pop(name), r.solver)
            files += image_files
            records.append((name, record))
        return files, records

    @staticmethod
    def _keep(r: Restored, i: int) -> _Sample:
        return _Sample(
            x_hat=r.x_hat[i].clone(), x_init=r.x_init[i].clone(), y=r.y[i].clone(),
            x=None if r.x is None else r.x[i].clone(), diverged=bool(r.diverged[i]), nfe=int(r.nfe),
            index=int(r.index[i]), consistency={k: float(v[i]) for k, v in (r.consistency or {}).items()},
            curve=None if r.psnr_curve is None else r.psnr_curve[i].clone(),
        )

    @staticmethod
    def _sample_files(r: Restored, i: int, stem: str) -> list[tuple[str, bytes]]:
        out = [(image_file("samples", stem), png_bytes(r.x_hat[i]))]
        if r.frames:
            own = [f[i] for f in r.frames]
            out += [(f"evolution/{stem}.png", png_bytes(pictures.evolution_strip(own))),
                    (f"evolution/{stem}.gif", pictures.gif_bytes(own))]
        return out

    def _image(self, name: str, samples: dict[int, _Sample], solver: str) -> tuple[list[tuple[str, bytes]], dict]:
        """One completed image: its files (mean, std, init, measured, arrays, grid) and its record."""
        ordered = [samples[k] for k in sorted(samples)]
        first = ordered[0]
        nfe = sum(s.nfe for s in ordered)
        bad = [k for k in sorted(samples) if samples[k].diverged]
        if bad:
            return [], {"status": "diverged", "index": first.index, "samples": len(ordered), "diverged_samples": bad,
                        "nfe": nfe, "scores": {}}
        stack = torch.stack([s.x_hat for s in ordered])
        mean, std = mean_and_std(stack)
        scores, arrays = self._scores(name, stack, mean, ordered)
        scores["std_mean"] = float(std.mean())
        files = [(image_file("restored", name), png_bytes(mean)), (image_file("std", name), png_bytes(std_image(std)))]
        if self.save_measured:
            files.append((image_file("init", name), png_bytes(first.x_init)))
            if first.y.ndim == 3 and tuple(first.y.shape) == tuple(mean.shape):
                files.append((image_file("measured", name), png_bytes(first.y)))
        if arrays:
            files.append((arrays_file(name), arrays_bytes(arrays)))
        if self.save_grids:
            tiles = [first.y, first.x_init, *stack, mean, std_image(std)] + ([first.x] if first.x is not None else [])
            files.append((f"grids/{name}.png", png_bytes(pictures.row_grid(tiles, tuple(mean.shape)))))
        record = {"status": "ok", "index": first.index, "samples": len(ordered), "nfe": nfe, "scores": scores}
        curves = [s.curve for s in ordered if s.curve is not None]
        if curves:
            record["psnr_per_iterate"] = [round(float(v), 6) for v in torch.stack(curves).mean(0)]
        return files, record

    def _scores(self, name: str, stack: torch.Tensor, mean: torch.Tensor, ordered: list[_Sample]) -> tuple[dict, dict]:
        """The samples' mean consistency (measured data), the mean's scores and feature arrays,
        and per metric the samples' mean and std."""
        first = ordered[0]
        scores = {k: sum(s.consistency[k] for s in ordered) / len(ordered) for k in first.consistency}
        if first.x is None:
            return scores, {}
        n = stack.shape[0]
        of_mean = self.scorer.score(mean[None], first.x[None], [name], first.x_init[None])
        of_samples = self.scorer.score(stack, first.x[None].expand(n, -1, -1, -1), [name] * n)
        scores.update(of_mean.row(0))
        for key, values in of_samples.per_image.items():
            if not key.endswith("_init"):
                scores[f"{key}_samples_mean"] = float(values.mean())
                scores[f"{key}_samples_std"] = float(values.std(unbiased=True))
        return scores, {k: v[0] for k, v in of_mean.arrays.items()}
